"""IWAE, IWAE-STL and IWAE-DReG against a linear-Gaussian model whose IWAE gradient is computed independently.

The problem and its reference gradients are in ``gradient_problem.py``; estimator means are compared with them
within 4 combined standard errors.
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import RenyiELBO, config_enumerate

from inference.importance import GradientNeeds, LogWeightParts, ParticleDraw, per_example_log_weight_parts
from inference.objectives.estimators import estimator
from inference.objectives.objective import log_mean_exp, normalized_weights
from inference.stop_gradient import detach_distribution_parameters
from tests.inference.gradient_problem import (
    BATCH,
    GUIDE_PARAMS,
    MODEL_PARAMS,
    LinearGaussianProblem,
    deviations,
    iwae_bound,
)


@pytest.mark.parametrize("kl_weight", [1.0, 0.5])
def test_iwae_and_dreg_gradients_are_unbiased_for_the_iwae_gradient(problem, kl_weight):
    K = 5
    pyro.set_rng_seed(0)
    reference = problem.reference_gradient(iwae_bound, K, kl_weight=kl_weight)
    # the comparison has power: the standard errors are small next to the gradients
    ref_mean, ref_se = reference
    assert all((ref_se[n] < 0.02 * ref_mean[n].abs().max()).all() for n in ref_mean)
    for name in ("iwae", "iwae-dreg"):
        estimate = problem.estimator_gradient(estimator(name, num_particles=K, kl_weight=kl_weight))
        assert deviations(estimate, reference, MODEL_PARAMS + GUIDE_PARAMS) < 4.0, name


def test_iwae_stl_guide_gradient_is_biased_and_the_check_detects_it(problem):
    K = 5
    pyro.set_rng_seed(1)
    reference = problem.reference_gradient(iwae_bound, K)
    estimate = problem.estimator_gradient(estimator("iwae-stl", num_particles=K))
    assert deviations(estimate, reference, MODEL_PARAMS) < 4.0
    assert deviations(estimate, reference, GUIDE_PARAMS) > 10.0


def test_guide_gradient_vanishes_at_the_exact_posterior(float64):
    problem = LinearGaussianProblem()
    problem.set_params(problem.exact)
    pyro.set_rng_seed(2)
    for name in ("iwae-stl", "iwae-dreg", "iwae"):
        estimate_mean, estimate_se = problem.estimator_gradient(
            estimator(name, num_particles=4), replicates=10, num_groups=5
        )
        guide_se = max(estimate_se[n].abs().max().item() for n in GUIDE_PARAMS)
        model_se = max(estimate_se[n].abs().max().item() for n in MODEL_PARAMS)
        assert model_se > 1e-3, name
        if name == "iwae":
            assert guide_se > 1e-3
        else:
            assert guide_se < 1e-12, name
            assert max(estimate_mean[n].abs().max().item() for n in GUIDE_PARAMS) < 1e-12, name


def split_model_and_guide_surrogate(
    parts: LogWeightParts, model_weights: torch.Tensor, guide_surrogate: torch.Tensor, guide_weights: torch.Tensor
) -> torch.Tensor:
    """A per-example surrogate whose model gradient and guide gradient follow two different objectives.

    ``model_weights`` ``a_k`` give the model gradient ``sum_k a_k grad_theta log p(x, z_k)``; ``guide_surrogate`` is
    differentiated for the guide, its own model gradient ``sum_k b_k grad_theta log p(x, z_k)`` (``b`` =
    ``guide_weights``) being cancelled by evaluating the model at detached ``z``. Parameters shared by model and
    guide receive both parts. Returns a ``(B,)`` tensor.
    """
    log_p = parts.log_joint_at_detached_z
    return (model_weights.detach() * log_p).sum(0) + guide_surrogate - (guide_weights.detach() * log_p).sum(0)


def two_pass_dreg_loss(model, guide, args, num_particles, kl_weight, vectorize_particles=True):
    """DReG as it was formed before the one-pass surrogate: the model replayed a second time at detached ``z`` keeps
    the model's gradient (weights ``wbar``) apart from the guide's (``(1 - beta) wbar + beta wbar^2``)."""
    draw = ParticleDraw(num_particles, 1, kl_weight=kl_weight, vectorize_particles=vectorize_particles)
    parts = per_example_log_weight_parts(
        model, guide, args, {}, draw, GradientNeeds(stop_guide_parameters=True, model_at_detached_z=True)
    )
    wbar = normalized_weights(parts.log_weights)
    guide_weights = (1 - kl_weight) * wbar + kl_weight * wbar**2
    guide_surrogate = (guide_weights * parts.log_weights_stopped).sum(0)
    surrogate = split_model_and_guide_surrogate(parts, wbar, guide_surrogate, guide_weights)
    value = log_mean_exp(parts.log_weights)
    return -parts.scale * (value.detach() + surrogate - surrogate.detach()).sum()


def dreg_gradients(loss_fn, params, seed):
    pyro.set_rng_seed(seed)
    loss = loss_fn()
    return loss.item(), torch.autograd.grad(loss, params, allow_unused=True)


def assert_same_dreg_gradients(model, guide, args, params, kl_weight, vectorize, K=5):
    ours = dreg_gradients(
        lambda: estimator(
            "iwae-dreg", num_particles=K, kl_weight=kl_weight, max_plate_nesting=1, vectorize_particles=vectorize
        ).differentiable_loss(model, guide, *args),
        params,
        seed=7,
    )
    old = dreg_gradients(lambda: two_pass_dreg_loss(model, guide, args, K, kl_weight, vectorize), params, seed=7)
    assert ours[0] == pytest.approx(old[0], rel=1e-6)
    for p, ours_grad, old_grad in zip(params, ours[1], old[1]):
        if old_grad is None:
            assert ours_grad is None or not ours_grad.any()
            continue
        scale = old_grad.abs().max().clamp_min(1e-12)
        assert (ours_grad - old_grad).abs().max() <= 1e-5 * scale, tuple(p.shape)


@pytest.mark.parametrize("vectorize", [True, False])
@pytest.mark.parametrize("kl_weight", [1.0, 0.5])
def test_one_pass_dreg_gives_the_two_pass_gradients_on_the_same_draws(problem, kl_weight, vectorize):
    """DReG runs the model once, weighing the path through z apart from the model's parameters; model and guide
    gradients equal those of the two-pass formula (the model replayed at detached z) on the same draws."""
    leaves = problem.leaves()
    params = [leaves[n] for n in MODEL_PARAMS + GUIDE_PARAMS]
    assert_same_dreg_gradients(problem.model, problem.guide, (problem.x,), params, kl_weight, vectorize)


@pytest.mark.parametrize("two_layers", [False, True])
@pytest.mark.parametrize("kl_weight", [1.0, 0.3])
def test_one_pass_dreg_gives_the_two_pass_gradients_for_vaes(kl_weight, two_layers):
    """The same in float32 on MLP VAEs, with a learned prior (parameters on the model side of z) and, with two
    stochastic layers, a guide whose second latent depends on the first."""
    from pyro_vae.config import Component, ModelConfig
    from pyro_vae.vae import build_model

    config = ModelConfig(
        latent_dim=4,
        top_latent_dim=3 if two_layers else None,
        top_hidden_sizes=[8],
        prior=Component("normal" if two_layers else "learned-normal", {}),
        likelihood=Component("bernoulli", {}),
        guide=Component("diagonal-normal", {}),
        encoder=Component("mlp", {"hidden_sizes": [16], "activation": "softplus"}),
        decoder=Component("mlp", {"hidden_sizes": [16], "activation": "softplus"}),
    )
    vae = build_model(config, data_dim=12, num_data=100)
    x = torch.bernoulli(torch.full((6, 12), 0.4), generator=torch.Generator().manual_seed(0))
    params = list(vae.parameters())
    assert_same_dreg_gradients(vae.model, vae.guide, (x,), params, kl_weight, vectorize=True)


def test_one_pass_dreg_refuses_a_surrogate_without_its_gradient_factor(problem):
    """An estimator that needs the model's pathwise gradient rescaled must return the factor with its surrogate:
    a plain tensor would silently give the path through z the model's weights."""
    from inference.objectives.iwae import DReGIWAE

    class Forgetful(DReGIWAE):
        def per_example_surrogate(self, parts):
            return super().per_example_surrogate(parts).value

    est = Forgetful(num_particles=3, max_plate_nesting=1)
    with pytest.raises(TypeError, match="must return a PathwiseScaledSurrogate"):
        est.differentiable_loss(problem.model, problem.guide, problem.x)


def test_iwae_equals_pyro_renyi_alpha_zero_on_a_full_batch(problem):
    K = 6
    results = []
    for est in (
        estimator("iwae", num_particles=K, max_plate_nesting=1),
        RenyiELBO(alpha=0, num_particles=K, vectorize_particles=True, max_plate_nesting=1),
    ):
        pyro.set_rng_seed(3)
        leaves = problem.leaves()
        for leaf in leaves.values():
            leaf.grad = None
        loss = est.loss_and_grads(problem.model, problem.guide, problem.x)
        results.append((loss, {n: leaf.grad.clone() for n, leaf in leaves.items()}))
    (ours, our_grads), (pyros, pyro_grads) = results
    assert ours == pytest.approx(pyros, rel=1e-12)
    for name in our_grads:
        assert torch.allclose(our_grads[name], pyro_grads[name], rtol=1e-10, atol=1e-12), name


def test_minibatch_loss_is_the_full_data_scaling_of_per_example_bounds(problem):
    """With the data plate subsampled (N = 30, |B| = 3), the loss is (N / |B|) times the batch's own loss."""
    K, num_data = 6, 30
    scale = num_data / BATCH

    def loss(est, **kwargs):
        pyro.set_rng_seed(4)
        return est.loss(problem.model, problem.guide, problem.x, **kwargs)

    iwae = estimator("iwae", num_particles=K, max_plate_nesting=1)
    assert loss(iwae, num_data=num_data) == pytest.approx(scale * loss(iwae), rel=1e-12)
    renyi = RenyiELBO(alpha=0, num_particles=K, vectorize_particles=True, max_plate_nesting=1)
    assert loss(renyi) == pytest.approx(loss(iwae), rel=1e-12)
    # Pyro scales the log weights inside the log-sum-exp: its objective s * (1/s) log mean_k w^s with s = N / |B|
    # is a power mean above s * IWAE (here by about 25 nats), not the full-data IWAE bound
    assert loss(renyi, num_data=num_data) < scale * loss(renyi) - 10.0


def test_unvectorized_particles_give_the_same_bound(float64):
    problem = LinearGaussianProblem()
    problem.set_params(problem.exact)
    exact = -problem.truth.log_marginal(problem.x).sum().item()
    for vectorize in (True, False):
        assert estimator("iwae", num_particles=3, vectorize_particles=vectorize).loss(
            problem.model, problem.guide, problem.x
        ) == pytest.approx(exact, rel=1e-10)


def test_detached_distribution_has_gradient_only_through_the_value(float64):
    loc = torch.tensor([0.3, -0.2], requires_grad=True)
    log_scale = torch.tensor([0.1, 0.4], requires_grad=True)
    fn = dist.TransformedDistribution(
        dist.Normal(torch.zeros(2), 1.0), [dist.transforms.AffineTransform(loc, log_scale.exp())]
    ).to_event(1)
    z = fn.rsample()
    stopped = detach_distribution_parameters(fn)
    assert torch.allclose(stopped.log_prob(z), fn.log_prob(z))
    (grad_loc,) = torch.autograd.grad(stopped.log_prob(z), [loc])
    # d/dloc log q_stop(loc + s eps) = -(z - loc) / s^2 = -eps / s, not the zero of the full derivative
    eps = ((z - loc) / log_scale.exp()).detach()
    assert torch.allclose(grad_loc, -eps / log_scale.exp().detach())


@pytest.mark.parametrize("name", ["elbo-stl", "iwae-stl", "iwae-dreg"])
def test_path_derivative_estimators_vanish_at_the_posterior_of_a_transformed_guide(name, float64):
    """``z ~ LogNormal(mu0, 1)``, ``x | z ~ N(log z, 1)``: the posterior is ``LogNormal((mu0 + x) / 2, 1 / sqrt 2)``.
    A LogNormal guide (a transformed distribution, whose transform holds its inverse after ``log_prob``) at that
    posterior gets a guide gradient of zero from every draw; one step off it does not."""
    mu0, x = 0.3, torch.tensor([0.5, -1.2])
    loc = torch.nn.Parameter((mu0 + x) / 2)
    scale = torch.nn.Parameter(torch.full((2,), 0.5**0.5))

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.LogNormal(mu0, 1.0))
            pyro.sample("x", dist.Normal(z.log(), 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.LogNormal(loc, scale))

    def guide_gradient(seed):
        pyro.set_rng_seed(seed)
        loss = estimator(name, num_particles=3, max_plate_nesting=1).differentiable_loss(model, guide, x)
        return torch.cat(torch.autograd.grad(loss, [loc, scale])).abs().max().item()

    assert max(guide_gradient(seed) for seed in range(5)) < 1e-10
    with torch.no_grad():
        loc += 0.1
    assert guide_gradient(0) > 1e-2


def test_non_reparameterizable_guide_is_refused_with_the_fix(float64):
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        p = pyro.param("p", torch.tensor(0.3))
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Bernoulli(p))

    x = torch.tensor([0.0, 1.0, 2.5])
    for name in ("iwae", "iwae-dreg", "iwae-stl"):
        with pytest.raises(ValueError, match="reparameterized.*'z'.*Use 'vimco'.*'score' or 'rws'.*'elbo'.*enumerat"):
            estimator(name, num_particles=2).loss(model, guide, x)
    # the fixes it names work: VIMCO as it is, and 'iwae' once the site is marked, where the enumerated sum over z
    # is log p(x) itself, exactly, whatever the guide
    assert math.isfinite(estimator("vimco", num_particles=2).loss(model, guide, x))
    exact = torch.logsumexp(torch.stack([dist.Normal(z, 1.0).log_prob(x) for z in (0.0, 1.0)]), 0) + math.log(0.5)
    for name in ("iwae", "iwae-dreg"):
        loss = estimator(name, num_particles=2).loss(model, config_enumerate(guide), x)
        assert loss == pytest.approx(-exact.sum().item(), rel=1e-12)
    with pytest.raises(ValueError, match="marked for enumeration, which 'iwae' sums exactly and 'iwae-stl' does not"):
        estimator("iwae-stl", num_particles=2).loss(model, config_enumerate(guide), x)


def test_bad_options_are_refused(float64):
    with pytest.raises(ValueError, match="num_particles"):
        estimator("iwae", num_particles=0)
    with pytest.raises(ValueError, match="kl_weight"):
        estimator("iwae-dreg", kl_weight=float("nan"))
