"""ELBO estimators against the closed-form ELBO of the linear-Gaussian problem (see ``test_iwae.py``)."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import inference.objectives.elbo  # noqa: F401 (registers the ELBO estimators)
from inference.objectives.estimators import estimator
from tests.inference.gradient_problem import (
    BATCH,
    DATA_DIM,
    GUIDE_PARAMS,
    LATENT_DIM,
    MODEL_PARAMS,
    SIGMA,
    LinearGaussianProblem,
    deviations,
)

ELBOS = ("elbo", "elbo-analytic-kl", "elbo-stl")


def closed_form_elbo(problem, p, kl_weight=1.0):
    """``sum_n E_q[log p(x_n | z)] + beta (E_q[log p(z)] + H[q])`` for the Gaussian guide, exactly."""
    x, W, b = problem.x, p["W"], p["b"]
    m = x @ p["A"].T + p["c"]
    tril = problem.scale_tril(p)
    cov = tril @ tril.T
    expected_log_lik = -0.5 * DATA_DIM * math.log(2 * math.pi * SIGMA**2) - (
        (x - m @ W.T - b).pow(2).sum(-1) + torch.trace(W @ cov @ W.T)
    ) / (2 * SIGMA**2)
    expected_log_prior = -0.5 * LATENT_DIM * math.log(2 * math.pi) - 0.5 * (m.pow(2).sum(-1) + torch.trace(cov))
    entropy = 0.5 * LATENT_DIM * (1 + math.log(2 * math.pi)) + p["log_diag"].sum()
    return (expected_log_lik + kl_weight * (expected_log_prior + entropy)).sum()


@pytest.mark.parametrize("kl_weight", [1.0, 0.5])
@pytest.mark.parametrize("name", ELBOS)
def test_gradient_is_unbiased_for_the_closed_form_elbo_gradient(problem, name, kl_weight):
    leaves = problem.leaves()
    exact = dict(zip(leaves, torch.autograd.grad(closed_form_elbo(problem, leaves, kl_weight), list(leaves.values()))))
    reference = (exact, {n: torch.zeros_like(g) for n, g in exact.items()})
    pyro.set_rng_seed(0)
    estimate = problem.estimator_gradient(estimator(name, num_particles=2, kl_weight=kl_weight), replicates=1000)
    assert deviations(estimate, reference, MODEL_PARAMS + GUIDE_PARAMS) < 4.0
    # the check has power: standard errors are below 2% of each parameter's largest gradient
    assert all((estimate[1][n] < 0.02 * exact[n].abs().max()).all() for n in exact)


def test_loss_is_minus_the_elbo_on_average(problem):
    """The loss averages to -ELBO (within 4 standard errors of 200 draws); elbo-analytic-kl only has the KL exact."""
    exact = closed_form_elbo(problem, problem.leaves()).item()
    pyro.set_rng_seed(1)
    for name in ELBOS:
        est = estimator(name, num_particles=10)
        losses = torch.tensor([est.loss(problem.model, problem.guide, problem.x) for _ in range(200)])
        assert abs(losses.mean().item() + exact) < 4 * losses.std().item() / math.sqrt(200), name


def test_sticking_the_landing_guide_gradient_is_zero_at_the_exact_posterior(float64):
    problem = LinearGaussianProblem()
    problem.set_params(problem.exact)
    pyro.set_rng_seed(2)
    _, stl_se = problem.estimator_gradient(estimator("elbo-stl", num_particles=3), replicates=10, num_groups=5)
    _, elbo_se = problem.estimator_gradient(estimator("elbo", num_particles=3), replicates=10, num_groups=5)
    assert max(stl_se[n].max().item() for n in GUIDE_PARAMS) < 1e-12
    assert min(elbo_se[n].max().item() for n in GUIDE_PARAMS) > 1e-3


@pytest.mark.parametrize("name", ELBOS)
def test_minibatch_loss_is_scaled_to_the_full_data_set(problem, name):
    num_data = 30
    est = estimator(name, num_particles=4, max_plate_nesting=1)
    pyro.set_rng_seed(3)
    full = est.loss(problem.model, problem.guide, problem.x)
    pyro.set_rng_seed(3)
    sub = est.loss(problem.model, problem.guide, problem.x, num_data=num_data)
    assert sub == pytest.approx(num_data / BATCH * full, rel=1e-12)


def test_kl_weight_zero_leaves_only_the_likelihood(problem):
    """At beta = 0 the loss is -E_q[log p(x | z)], which is free of the prior: W's gradient matches it exactly."""
    leaves = problem.leaves()
    exact = torch.autograd.grad(closed_form_elbo(problem, leaves, kl_weight=0.0), [leaves["c"]])[0]
    pyro.set_rng_seed(4)
    mean, se = problem.estimator_gradient(estimator("elbo-analytic-kl", kl_weight=0.0), replicates=1000)
    assert ((mean["c"] - exact).abs() < 4 * se["c"]).all()


def _diagonal_guide(x, num_data=None):
    """The problem's guide with a diagonal covariance (a closed-form KL to the prior)."""
    loc = x @ pyro.param("A").T + pyro.param("c")
    with pyro.plate("data", num_data or len(x), subsample=torch.arange(len(x))):
        pyro.sample("z", dist.Normal(loc, pyro.param("log_diag").exp()).to_event(1))


def test_analytic_kl_is_exact_for_a_diagonal_guide(problem):
    """Same draws at beta = 1 and beta = 0: the losses differ by exactly sum_n KL(q(z | x_n) || N(0, I))."""

    loc = problem.x @ pyro.param("A").T + pyro.param("c")
    log_scale = pyro.param("log_diag")
    exact_kl = 0.5 * (torch.exp(2 * log_scale) + loc**2 - 1 - 2 * log_scale).sum()
    losses = []
    for kl_weight in (1.0, 0.0):
        pyro.set_rng_seed(5)
        est = estimator("elbo-analytic-kl", num_particles=3, kl_weight=kl_weight)
        losses.append(est.loss(problem.model, _diagonal_guide, problem.x))
    assert losses[0] - losses[1] == pytest.approx(exact_kl.item(), rel=1e-10)


def test_negative_kl_weight_is_refused():
    for name in ELBOS:
        with pytest.raises(ValueError, match="kl_weight"):
            estimator(name, kl_weight=-1.0)


class _ShiftHeldInADict(torch.distributions.transforms.Transform):
    """``z -> z + shift`` with ``shift`` kept where detaching a distribution's tensors cannot reach it."""

    domain = codomain = torch.distributions.constraints.real
    bijective = True

    def __init__(self, shift):
        super().__init__()
        self.held = {"shift": shift}

    def _call(self, x):
        return x + self.held["shift"]

    def _inverse(self, y):
        return y - self.held["shift"]

    def log_abs_det_jacobian(self, x, y):
        return torch.zeros_like(x)


def test_sticking_the_landing_refuses_a_guide_it_cannot_stop_even_when_first_called_without_gradients():
    """The trainer's first call of the loss (finding the parameters) runs without gradients; the check that the
    guide's parameters can be stopped must still see them."""
    from inference import Trainer

    shift = torch.nn.Parameter(torch.tensor(0.5))

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        pyro.module("shift", torch.nn.ParameterDict({"shift": shift}))
        with pyro.plate("data", x.shape[0]):
            base = dist.Normal(torch.zeros(x.shape[0]), 1.0)
            pyro.sample("z", dist.TransformedDistribution(base, [_ShiftHeldInADict(shift)]))

    trainer = Trainer(model, guide, estimator("elbo-stl"))
    with pytest.raises(ValueError, match="still depends on parameters after detaching"):
        trainer.step(torch.tensor([0.1, -0.3]))


def _discrete_and_continuous_model(x, num_data=None):
    """A Bernoulli latent (a score-function site in the guide) and a normal one, in a subsampled data plate."""
    with pyro.plate("data", num_data or len(x), subsample=torch.arange(len(x))):
        s = pyro.sample("s", dist.Bernoulli(0.3))
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z + 2.0 * s + pyro.param("shift", torch.tensor(0.1)), 0.8), obs=x)


def _discrete_and_continuous_guide(x, num_data=None):
    p = torch.sigmoid(pyro.param("a", torch.tensor(0.2)) * x)
    with pyro.plate("data", num_data or len(x), subsample=torch.arange(len(x))):
        pyro.sample("s", dist.Bernoulli(p))
        pyro.sample("z", dist.Normal(pyro.param("b", torch.tensor(0.5)) * x, 0.9))


@pytest.mark.parametrize("kl_weight", [1.0, 0.5])
@pytest.mark.parametrize("num_particles", [1, 3])
@pytest.mark.parametrize(
    "name, pyros, pair",
    [
        ("elbo", pyro.infer.Trace_ELBO, "discrete"),
        ("elbo", pyro.infer.Trace_ELBO, "gaussian"),
        ("elbo-analytic-kl", pyro.infer.TraceMeanField_ELBO, "gaussian"),
    ],
)
def test_elbos_equal_pyros_own_in_value_and_gradient(problem, name, pyros, pair, num_particles, kl_weight):
    """Our tensor-only particle losses against Pyro's ``Trace_ELBO`` and ``TraceMeanField_ELBO`` on the same draws,
    minibatch-scaled (30 data points, 3 in the batch): the value, and every parameter's gradient, including the
    score-function term with Pyro's Rao-Blackwellization for a Bernoulli latent."""
    from inference.objectives.elbo import ScaleLatents

    model, guide = (
        (_discrete_and_continuous_model, _discrete_and_continuous_guide) if pair == "discrete"
        else (problem.model, _diagonal_guide)
    )  # fmt: skip
    x = problem.x[:, 0] if pair == "discrete" else problem.x
    options = dict(num_particles=num_particles, max_plate_nesting=1)
    pyro.set_rng_seed(7)
    ours = estimator(name, kl_weight=kl_weight, **options).differentiable_loss(model, guide, x, num_data=30)
    params = {name: pyro.param(name).unconstrained() for name in pyro.get_param_store().keys()}
    our_grads = torch.autograd.grad(ours, list(params.values()), allow_unused=True)
    pyro.set_rng_seed(7)
    weighted = (ScaleLatents(kl_weight)(model), ScaleLatents(kl_weight)(guide)) if kl_weight != 1 else (model, guide)
    theirs = pyros(vectorize_particles=num_particles > 1, **options).differentiable_loss(*weighted, x, num_data=30)
    their_grads = torch.autograd.grad(theirs, list(params.values()), allow_unused=True)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)
    for key, a, b in zip(params, our_grads, their_grads):
        assert (a is None) == (b is None), key
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8, msg=key)


@pytest.mark.parametrize("name", ELBOS)
def test_the_elbos_read_nothing_back_from_the_device(problem, name):
    """A value read into Python waits for a GPU's queued work; Pyro's ``Trace_ELBO`` reads every site's (the
    reference has reads, so the count can see them). Pyro's checks of arguments and values, which read too, are
    off as in training (``validate_every_step=False``)."""
    from inference.host_reads import HostReads

    loss = estimator(name, num_particles=2, max_plate_nesting=1)
    loss.differentiable_loss(problem.model, _diagonal_guide, problem.x)  # the first call checks the pair
    with pyro.validation_enabled(False):
        with HostReads() as reads:
            loss.differentiable_loss(problem.model, _diagonal_guide, problem.x).backward()
        assert not reads.calls, reads.report()
        with HostReads() as reads:
            pyro.infer.Trace_ELBO(max_plate_nesting=1).differentiable_loss(problem.model, _diagonal_guide, problem.x)
    assert sum(reads.calls.values()) >= 3, reads.report()


def test_stop_parameters_after_drawing_keeps_the_path_through_z_and_stops_log_q():
    """Wrapped outside Pyro's particle plate: the draw has the particles' shape and its gradient to ``loc`` (one
    per draw), and the recorded distribution has the same parameters, detached."""
    import pyro.poutine as poutine

    from inference.stop_gradient import StopParametersAfterDrawing

    loc = torch.tensor([0.5, -1.0], requires_grad=True)

    def guide():
        with pyro.plate("data", 2):
            pyro.sample("z", dist.Normal(loc, 2.0))

    particles = pyro.plate("particles", 3, dim=-2)(guide)
    site = poutine.trace(StopParametersAfterDrawing()(particles)).get_trace().nodes["z"]
    assert site["value"].shape == (3, 2) and site["fn"].batch_shape == (3, 2)
    assert torch.equal(torch.autograd.grad(site["value"].sum(), loc)[0], torch.full((2,), 3.0))
    assert torch.equal(site["fn"].loc, loc.detach().expand(3, 2)) and not site["fn"].loc.requires_grad
    assert not site["fn"].log_prob(site["value"].detach()).requires_grad
