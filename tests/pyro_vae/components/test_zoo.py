"""The model zoo: every density normalizes, learned priors learn, and every prior x likelihood x guide x estimator
combination either trains and is evaluated, or is refused with its own clear error before training."""

import itertools
import math

import pyro
import pytest
import torch
import torch.nn.functional as F

from inference import ESTIMATORS, Trainer, estimator, log_marginal_likelihood, log_px_method
from pyro_vae import build_vae
from pyro_vae.components import GUIDES, LIKELIHOODS, PRIORS
from pyro_vae.components.likelihoods import fused_sum_softplus, sum_softplus
from pyro_vae.data import fixed_binarization, load_dataset


def grid(lows, highs, num):
    axes = [torch.linspace(low, high, num, dtype=torch.float64) for low, high in zip(lows, highs)]
    points = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(axes))
    cell = math.prod((high - low) / (num - 1) for low, high in zip(lows, highs))
    return points, cell


@pytest.mark.parametrize("logit", [-6.0, -1.0, -1e-4, 0.0, 1e-4, 2.0, 8.0])
def test_continuous_bernoulli_integrates_to_one_near_one_half_too(logit):
    x = torch.linspace(0, 1, 20001, dtype=torch.float64)
    likelihood = LIKELIHOODS.build("continuous-bernoulli", data_dim=1)
    density = likelihood(torch.full((len(x), 1), logit, dtype=torch.float64)).log_prob(x[:, None]).exp()
    assert torch.trapezoid(density, x).item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("raw", [(-1.0, 0.5), (0.5, 0.5), (2.0, 3.0)])
def test_beta_integrates_to_one(raw):
    t = torch.linspace(-200, 30, 400001, dtype=torch.float64)  # x = sigmoid(t) smooths the end-point spikes
    x = torch.sigmoid(t)
    likelihood = LIKELIHOODS.build("beta", data_dim=1)
    output = torch.tensor(raw, dtype=torch.float64).expand(len(t), 2)
    log_density = likelihood(output).log_prob(x[:, None]) + torch.log(x * (1 - x))  # dx = x (1 - x) dt
    assert torch.trapezoid(log_density.exp(), t).item() == pytest.approx(1.0, abs=1e-6)


def test_bernoulli_likelihood_equals_pyros_bernoulli_and_sums_to_one_over_binary_vectors(float64):
    """Against ``pyro.distributions.Bernoulli(logits).to_event(1)`` on broadcast and extreme logits, and
    normalized by enumerating all 2^4 binary vectors."""
    likelihood = LIKELIHOODS.build("bernoulli", data_dim=4)
    logits = torch.tensor([[-80.0, -3.0, 0.0, 40.0], [1e-3, 2.0, -25.0, 7.0]]).expand(3, 2, 4)
    x = torch.bernoulli(torch.full((2, 4), 0.5), generator=torch.Generator().manual_seed(0))
    expected = pyro.distributions.Bernoulli(logits=logits).to_event(1).log_prob(x)
    torch.testing.assert_close(likelihood(logits).log_prob(x), expected, rtol=1e-12, atol=1e-12)
    every_vector = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)), dtype=torch.float64)
    total = likelihood(logits[0, :1]).log_prob(every_vector).exp().sum()
    assert total.item() == pytest.approx(1.0, abs=1e-12)
    expanded = likelihood(logits[0]).expand((5, 2))
    assert expanded.batch_shape == (5, 2) and expanded.log_prob(x).shape == (5, 2)
    for distribution in (likelihood(logits), expanded):  # an expanded one checks its values too
        with pytest.raises(ValueError, match="support"):
            distribution.log_prob(torch.full((2, 4), 0.5))


@pytest.mark.parametrize("sum_softplus", [sum_softplus, fused_sum_softplus], ids=["cpu-passes", "fused"])
@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-12), (torch.float32, 1e-4)])
def test_sum_softplus_equals_torchs_softplus_and_its_gradient_is_the_sigmoid(dtype, atol, sum_softplus):
    """Across the cap (40), at 0 and far below, where ``exp`` underflows; the gradient must be ``sigmoid(l)`` even
    at 0 and at the cap. The fused form is what other devices than the CPU run."""
    logits = torch.tensor([-1e4, -800.0, -40.0, -3.0, 0.0, 1e-3, 2.5, 39.0, 40.0, 45.0, 1e4], dtype=dtype)
    logits = torch.stack([logits, logits.flip(0) / 3]).requires_grad_()
    total = sum_softplus(logits)
    torch.testing.assert_close(total, F.softplus(logits.double()).sum(-1).to(dtype), rtol=1e-6, atol=atol)
    with torch.no_grad():  # the in-place passes of evaluation, with logits above the cap and without
        torch.testing.assert_close(sum_softplus(logits), total.detach(), rtol=0, atol=atol)
        below = logits.clamp(max=39.0)
        torch.testing.assert_close(sum_softplus(below), F.softplus(below).sum(-1), rtol=1e-6, atol=atol)
    total.sum().backward()
    torch.testing.assert_close(logits.grad, torch.sigmoid(logits.detach()), rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("name", ["gaussian", "laplace"])
def test_location_scale_likelihoods_integrate_to_one(name):
    x = torch.linspace(-8, 8, 160001, dtype=torch.float64)
    likelihood = LIKELIHOODS.build(name, data_dim=1, scale=0.3)
    density = likelihood(torch.full((len(x), 1), 0.2, dtype=torch.float64)).log_prob(x[:, None]).exp()
    assert torch.trapezoid(density, x).item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(
    "name, options",
    [("discretized-logistic", {}), ("discretized-logistic-mixture", {"num_components": 4}), ("categorical-256", {})],
)
def test_eight_bit_likelihoods_sum_to_one_over_the_256_levels(name, options, float64):
    torch.manual_seed(0)
    likelihood = LIKELIHOODS.build(name, data_dim=3, **options)
    output = 3 * torch.randn(likelihood.num_params * 3, dtype=torch.float64)
    levels = torch.arange(256, dtype=torch.float64)[:, None].expand(256, 3)
    per_pixel = likelihood(output.expand(256, -1)).base_dist.log_prob(levels)  # (256 levels, 3 pixels)
    assert torch.allclose(torch.logsumexp(per_pixel, 0), torch.zeros(3, dtype=torch.float64), atol=1e-9)
    draws = likelihood(output).sample((2000,))
    assert draws.min() >= 0 and draws.max() <= 255 and torch.equal(draws, draws.round())


def test_decoder_outputs_are_read_parameter_major():
    """Entries p*D .. (p+1)*D - 1 are parameter p for the D pixels (for the mixture, one block per component)."""
    d, k = 3, 2
    likelihood = LIKELIHOODS.build("discretized-logistic-mixture", data_dim=d, num_components=k)
    output = torch.arange(3 * k * d, dtype=torch.float64)
    mixture = likelihood(output).base_dist
    for component in range(k):
        for pixel in range(d):
            assert mixture.loc[pixel, component] == 127.5 + 127.5 * output[(k + component) * d + pixel]
            assert mixture.logits[pixel, component] == output[component * d + pixel]


def test_low_rank_kl_is_right_at_the_guides_floor_with_a_rank_deficient_factor():
    from torch.distributions import Independent, LowRankMultivariateNormal, MultivariateNormal, Normal, kl_divergence

    import inference  # noqa: F401  (registers the closed form)

    guide = GUIDES.build("low-rank-normal", latent_dim=4)
    floor = guide.min_scale  # the smallest diagonal the guide can give
    q = LowRankMultivariateNormal(torch.zeros(4), 30 * torch.ones(4, 2), torch.full((4,), floor))  # W W^T: rank 1
    p = Independent(Normal(torch.zeros(4), torch.ones(4)), 1)
    exact = kl_divergence(
        MultivariateNormal(q.loc.double(), q.covariance_matrix.double()),
        MultivariateNormal(p.mean.double(), torch.eye(4).double()),
    )
    assert torch.isfinite(kl_divergence(q, p)) and kl_divergence(q, p).item() == pytest.approx(exact.item(), rel=1e-4)


def test_a_discretized_logistic_far_in_its_tails_stays_finite():
    likelihood = LIKELIHOODS.build("discretized-logistic", data_dim=2)
    output = torch.tensor([[40.0, -40.0, -7.0, -7.0]])  # locations far outside 0..255, narrowest scale
    log_mass = likelihood(output).base_dist.log_prob(torch.tensor([[0.0, 255.0]]))
    assert torch.isfinite(log_mass).all()


@pytest.mark.parametrize("name", ["normal", "learned-normal", "mixture", "flow", "vamp"])
@pytest.mark.parametrize("latent_dim", [1, 2])
def test_every_continuous_prior_integrates_to_one(name, latent_dim, float64):
    pyro.set_rng_seed(latent_dim)
    vae = build_vae(5, latent_dim=latent_dim, hidden_sizes=(8,), prior=name)
    with torch.no_grad():  # move the learned parameters away from their initial values
        for parameter in vae.prior.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
        with pyro.settings.context(module_local_params=True):  # as inside the VAE's model
            prior = vae.prior()
    points, cell = grid([-12.0] * latent_dim, [12.0] * latent_dim, 4001 if latent_dim == 1 else 601)
    with torch.no_grad():
        total = prior.log_prob(points).exp().sum().item() * cell
    assert total == pytest.approx(1.0, abs=2e-3)


def test_vampprior_pseudo_inputs_and_weights_learn():
    splits = load_dataset("digits", seed=0)
    x = fixed_binarization(splits.train[:200], seed=0)
    pyro.set_rng_seed(0)
    vae = build_vae(64, latent_dim=3, hidden_sizes=(32,), prior="vamp", prior_options={"num_pseudo_inputs": 10})
    before = {name: p.detach().clone() for name, p in vae.prior.named_parameters()}
    trainer = Trainer(vae.model, vae.guide, estimator("elbo"), module=vae, optimizer_options={"lr": 1e-2})
    trainer.step(x[:50])
    assert set(before) == {"logits", "pseudo_inputs"}
    for name, p in vae.prior.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    for step in range(20):
        trainer.step(x[50 * (step % 4) : 50 * (step % 4 + 1)])
    for name, p in vae.prior.named_parameters():
        assert (p.detach() - before[name]).abs().max() > 1e-3, name


@pytest.mark.parametrize("activation", ["none", "hardtanh"])
def test_vampprior_log_density_is_the_mixture_of_the_guide_at_the_pseudo_inputs(activation, float64):
    pyro.set_rng_seed(0)
    options = {"num_pseudo_inputs": 7, "activation": activation}
    vae = build_vae(6, latent_dim=3, hidden_sizes=(8,), prior="vamp", prior_options=options)
    with torch.no_grad():
        vae.prior.logits.copy_(torch.randn(7))
        vae.prior.pseudo_inputs.copy_(torch.linspace(-0.5, 1.5, 42).reshape(7, 6))  # some outside [0, 1]
    z = torch.randn(5, 3)
    with pyro.settings.context(module_local_params=True):
        log_p = vae.prior().log_prob(z)
    # by hand: log sum_k w_k N(z; mu(u_k), diag sigma(u_k)^2), u_k clipped to [0, 1] under hardtanh
    u = vae.prior.pseudo_inputs.clamp(0, 1) if activation == "hardtanh" else vae.prior.pseudo_inputs
    loc, raw_scale = vae.encoder(u).split(3, dim=-1)
    components = torch.distributions.Normal(loc, torch.nn.functional.softplus(raw_scale) + 1e-4)
    log_w = torch.log_softmax(vae.prior.logits, 0)
    expected = torch.logsumexp(log_w + components.log_prob(z[:, None, :]).sum(-1), dim=-1)
    assert torch.allclose(log_p, expected, rtol=0, atol=1e-12)


def test_vampprior_reference_initialisation_by_default_and_clipping():
    pyro.set_rng_seed(0)
    options = {"num_pseudo_inputs": 200, "activation": "hardtanh"}
    prior = build_vae(64, latent_dim=2, hidden_sizes=(8,), prior="vamp", prior_options=options).prior
    a = prior.pseudo_inputs.detach()
    assert a.mean().item() == pytest.approx(0.05, abs=1e-3) and a.std().item() == pytest.approx(0.01, abs=1e-3)
    with torch.no_grad():
        prior.pseudo_inputs[0, :3] = torch.tensor([-0.3, 0.4, 1.7])
    assert prior.inputs()[0, :3].tolist() == pytest.approx([0.0, 0.4, 1.0])


def test_vampprior_pseudo_inputs_of_8_bit_data_move_as_fast_as_those_of_binarized_data():
    """The pseudo-inputs are held on the encoder's [0, 1] scale, so that an optimizer step moves them as far for
    8-bit data (which the encoder reads divided by 255) as for 0/1 data: Adam's first step is ``lr`` per entry."""
    x = torch.randint(0, 256, (20, 16)).float()
    pyro.set_rng_seed(0)
    options = {"num_pseudo_inputs": 5, "learned_weights": False}
    vae = build_vae(
        16, latent_dim=2, hidden_sizes=(8,), likelihood="discretized-logistic", prior="vamp", prior_options=options
    )
    assert vae.input_scale == 1 / 255
    before = vae.prior.inputs().detach() * vae.input_scale  # what the encoder reads
    assert 0 <= before.min() and before.max() <= 1
    trainer = Trainer(vae.model, vae.guide, estimator("elbo"), module=vae, optimizer_options={"lr": 1e-2})
    trainer.step(x)
    step = (vae.prior.inputs().detach() * vae.input_scale - before).abs()
    assert step.max().item() == pytest.approx(1e-2, rel=1e-3)


def test_analytic_kl_of_a_multivariate_normal_against_a_diagonal_normal():
    from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence

    import inference  # noqa: F401  (registers the closed form)

    torch.manual_seed(0)
    a = torch.randn(4, 3, 3, dtype=torch.float64)
    q = MultivariateNormal(torch.randn(4, 3, dtype=torch.float64), a @ a.mT + 0.1 * torch.eye(3))
    loc, scale = torch.randn(3, dtype=torch.float64), torch.rand(3, dtype=torch.float64) + 0.5
    ours = kl_divergence(q, Independent(Normal(loc, scale), 1))
    torchs = kl_divergence(q, MultivariateNormal(loc, torch.diag(scale**2)))
    assert torch.allclose(ours, torchs, atol=1e-10)


# -- the combination matrix -----------------------------------------------------------------------------------

BINARY_PRIORS = {"bernoulli", "concrete"}
NOT_REPARAMETERIZED = {"bernoulli"}  # guides without rsample
MODULE_FLOWS = {"iaf"}  # guides whose distributions read an nn.Module's parameters
CLOSED_FORM_KL = {("normal", "diagonal-normal"), ("learned-normal", "diagonal-normal"), ("bernoulli", "bernoulli")}
CLOSED_FORM_KL |= {(prior, guide) for prior in ("normal", "learned-normal") for guide in ("low-rank-normal",)}
CLOSED_FORM_KL |= {(prior, "full-rank-normal") for prior in ("normal", "learned-normal")}


def latent_kind(prior_or_guide, name):
    if name == "concrete":
        return "binary" if prior_or_guide == "guide" else "relaxed-binary"
    return "binary" if name == "bernoulli" else "continuous"


def expected_refusal(prior, likelihood, guide, name):
    """The clear error the combination must end in, or None where the math allows it (the rules of the docs)."""
    if latent_kind("prior", prior) != latent_kind("guide", guide):
        return "would compare densities on different spaces"
    est = ESTIMATORS.get(name)
    needs = getattr(est, "needs", est)  # importance-weighted estimators declare GradientNeeds; Pyro's ELBOs flags
    if getattr(needs, "require_rsample", False) and guide in NOT_REPARAMETERIZED:
        return "needs reparameterized guide samples"
    if getattr(needs, "stop_guide_parameters", False) and guide in MODULE_FLOWS:
        return "cannot detach the parameters"
    if guide == "delta" and prior == "vamp":
        return "mixture of point masses"
    # Pyro's rule KL(Delta || p) = -log p(v) (the point mass's entropy dropped) makes every delta pair closed-form
    if name == "elbo-analytic-kl" and (prior, guide) not in CLOSED_FORM_KL and guide != "delta":
        return "needs KL(q || p) in closed form"
    if guide == "delta" and not getattr(needs, "require_rsample", True):
        return "is a point mass"
    return None


def data_for(likelihood, x):
    """The digits as each likelihood reads them: binarized, 8-bit, grey levels in [0, 1], or inside (0, 1)."""
    if LIKELIHOODS.get(likelihood).data_representation == "binarized":
        return fixed_binarization(x, seed=0)
    if LIKELIHOODS.get(likelihood).data_representation == "8-bit":
        return (255 * x).round()
    return 0.01 + 0.98 * x if likelihood == "beta" else x


def all_combinations():
    return list(itertools.product(PRIORS.names(), LIKELIHOODS.names(), GUIDES.names(), ESTIMATORS.names()))


def pairwise_combinations():
    """A small set of combinations in which every pair of values of any two factors occurs at least once."""
    combos = all_combinations()
    uncovered = {
        (i, a, j, b) for c in combos for i, j in itertools.combinations(range(4), 2) for a, b in [(c[i], c[j])]
    }
    chosen = []
    while uncovered:
        best = max(
            combos, key=lambda c: sum((i, c[i], j, c[j]) in uncovered for i, j in itertools.combinations(range(4), 2))
        )
        chosen.append(best)
        uncovered -= {(i, best[i], j, best[j]) for i, j in itertools.combinations(range(4), 2)}
    return chosen


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0).train[:100]


def run_combination(prior, likelihood, guide, name, digits):
    pyro.set_rng_seed(0)
    x = data_for(likelihood, digits)
    options = {"num_particles": 2}
    vae = build_vae(
        64,
        latent_dim=2,
        hidden_sizes=(16,),
        prior=prior,
        likelihood=likelihood,
        guide=guide,
        num_data=len(x),
        prior_options={"num_pseudo_inputs": 5} if prior == "vamp" else None,
    )
    trainer = Trainer(vae.model, vae.guide, estimator(name, max_plate_nesting=1, **options), module=vae)
    for batch in x.split(50):  # one epoch
        trainer.step(batch)
    assert all(torch.isfinite(p).all() for p in vae.parameters())
    point_mass = getattr(vae.guide_family, "point_mass", False)  # no density to propose with: the prior instead
    method = log_px_method("is-prior" if point_mass else "is", num_samples=10)
    result = log_marginal_likelihood(vae.model, vae.guide, x[:20], method=method)
    assert torch.isfinite(result.log_px).all() and torch.isfinite(result.elbo).all()


def check_combination(prior, likelihood, guide, name, digits):
    refusal = expected_refusal(prior, likelihood, guide, name)
    if refusal is None:
        run_combination(prior, likelihood, guide, name, digits)
    else:
        with pytest.raises(ValueError, match=refusal.replace("(", r"\(").replace(")", r"\)").replace("|", r"\|")):
            run_combination(prior, likelihood, guide, name, digits)


@pytest.mark.parametrize("prior, likelihood, guide, name", pairwise_combinations())
def test_combination_pairwise(prior, likelihood, guide, name, digits):
    check_combination(prior, likelihood, guide, name, digits)


@pytest.mark.slow
@pytest.mark.parametrize("prior, likelihood, guide, name", all_combinations())
def test_combination_full_matrix(prior, likelihood, guide, name, digits):
    check_combination(prior, likelihood, guide, name, digits)


def test_vampprior_pseudo_inputs_can_start_at_training_examples():
    from pyro_vae.config import RunConfig, apply_overrides
    from pyro_vae.runs import model_for, prepare_data

    options = {"num_pseudo_inputs": 20, "init": "data"}
    config = apply_overrides(RunConfig(), [("model.prior", {"name": "vamp", "options": options})])
    splits = prepare_data(config)
    u = model_for(config, splits).prior.pseudo_inputs
    assert all(any(torch.equal(row, x) for x in splits.train) for row in u)
    assert torch.equal(u, model_for(config, splits).prior.pseudo_inputs)  # the training seed picks them


@pytest.mark.parametrize(
    "table, base_name",
    [(PRIORS, "Prior"), (LIKELIHOODS, "Likelihood"), (GUIDES, "GuideFamily"), (ESTIMATORS, "Estimator")],
)
def test_every_registered_class_declares_its_capabilities_through_its_base(table, base_name, monkeypatch):
    """Each table's classes subclass the base that documents their capabilities; one that does not is refused at
    registration, and the fix the message gives (subclass the base) then registers."""
    assert table.base.__name__ == base_name
    for name in table.names():
        assert issubclass(table.get(name), table.base), name
    monkeypatch.setattr(table, "_builders", dict(table._builders))  # leave the real table as it was
    with pytest.raises(TypeError, match=f"subclasses .*{base_name}.*class Stray\\({base_name}\\)"):
        table.register("stray-test")(type("Stray", (torch.nn.Module,), {}))
    with pytest.raises(TypeError, match=f"must be a class that subclasses .*{base_name}"):
        table.register("stray-test")(lambda **options: None)  # a function declares no capabilities
    table.register("stray-test")(type("Stray", (table.base,), {}))
    assert "stray-test" in table.names()
