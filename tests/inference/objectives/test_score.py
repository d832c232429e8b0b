import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI
from pyro.optim import Adam

from inference.objectives import estimators
from inference.objectives.score import ScoreFunctionELBO, leave_one_out_mean
from pyro_vae.components.discrete import EnumerableBinaryModel
from pyro_vae.data.linear_gaussian import LinearGaussian

# |mean - exact| < Z_TOL standard errors of the mean over draws, for every gradient coordinate (a few dozen of
# them: under the null, P(max |z| > 4.5) < 1e-3).
Z_TOL = 4.5


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    pyro.clear_param_store()
    yield
    torch.set_default_dtype(old)
    pyro.clear_param_store()


def flat_grads(params):
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])


def draw_gradients(estimator, model, guide, args, params, num_draws):
    """Gradients (and losses) of ``num_draws`` independent calls of ``loss_and_grads``."""
    grads, losses = [], []
    for _ in range(num_draws):
        for p in params:
            p.grad = None
        losses.append(estimator.loss_and_grads(model, guide, *args))
        grads.append(flat_grads(params))
    return torch.stack(grads), torch.tensor(losses)


def exact_gradient(objective, params):
    grads = torch.autograd.grad(objective, params, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])


def assert_mean_matches(draws, exact, z_tol=Z_TOL):
    mean = draws.mean(0)
    stderr = draws.std(0) / math.sqrt(draws.shape[0])
    z = (mean - exact).abs() / (stderr + 1e-12)
    assert z.max() < z_tol, f"max |z| = {z.max():.2f}; mean {mean}, exact {exact}"


class LearnableGaussianGuide:
    """A diagonal-Gaussian guide per data point with leaf-tensor parameters, and the linear-Gaussian ELBO in closed
    form (Gaussian expectations of quadratics)."""

    def __init__(self, lg: LinearGaussian, x):
        post = lg.posterior(x)
        self.lg = lg
        self.loc = (post.loc + 0.3).detach().requires_grad_()
        self.log_scale = torch.full_like(self.loc, -0.5).requires_grad_()

    @property
    def params(self):
        return [self.loc, self.log_scale]

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.loc, self.log_scale.exp()).to_event(1))

    def exact_elbo(self, x):
        lg, m, s2 = self.lg, self.loc, (2 * self.log_scale).exp()
        data_dim, latent_dim = lg.weight.shape
        residual = x - m @ lg.weight.T - lg.bias
        expected_sq = residual.pow(2).sum(-1) + (s2 * lg.weight.pow(2).sum(0)).sum(-1)
        log_lik = -0.5 * data_dim * math.log(2 * math.pi * lg.sigma**2) - expected_sq / (2 * lg.sigma**2)
        log_prior = -0.5 * latent_dim * math.log(2 * math.pi) - 0.5 * (m.pow(2) + s2).sum(-1)
        entropy = (0.5 * math.log(2 * math.pi * math.e) + self.log_scale).sum(-1)
        return log_lik + log_prior + entropy


@pytest.mark.parametrize("baseline", ["none", "average", "leave-one-out", "learned"])
def test_score_matches_exact_elbo_gradient_linear_gaussian(float64, baseline):
    pyro.set_rng_seed(0)
    lg = LinearGaussian.random(data_dim=4, latent_dim=2, seed=1)
    x = lg.sample(3, seed=2)
    q = LearnableGaussianGuide(lg, x)
    estimator = ScoreFunctionELBO(num_particles=4, baseline=baseline)
    draws, losses = draw_gradients(estimator, lg.model, q.guide, (x,), q.params, 300)
    elbo = q.exact_elbo(x).sum()
    assert_mean_matches(draws, exact_gradient(-elbo, q.params))
    assert abs(losses.mean() + elbo.item()) < Z_TOL * losses.std() / math.sqrt(len(losses))


def test_score_is_noisier_than_the_pathwise_gradient(float64):
    """The point of the estimator: for a reparameterizable guide its variance exceeds Pyro's Trace_ELBO's."""
    pyro.set_rng_seed(0)
    lg = LinearGaussian.random(data_dim=4, latent_dim=2, seed=1)
    x = lg.sample(3, seed=2)
    q = LearnableGaussianGuide(lg, x)
    score, _ = draw_gradients(ScoreFunctionELBO(baseline="none"), lg.model, q.guide, (x,), q.params, 200)
    pathwise, _ = draw_gradients(pyro.infer.Trace_ELBO(), lg.model, q.guide, (x,), q.params, 200)
    assert (score.var(0).sum() > 3 * pathwise.var(0).sum()).item()


@pytest.mark.parametrize("baseline, num_particles", [("leave-one-out", 3), ("average", 1), ("learned", 2)])
def test_score_matches_enumerated_elbo_gradient_binary_latents(float64, baseline, num_particles):
    pyro.set_rng_seed(1)
    toy = EnumerableBinaryModel(num_data=10)
    x = toy.sample(4, seed=1)
    params = toy.model_params + toy.guide_params
    estimator = ScoreFunctionELBO(num_particles=num_particles, baseline=baseline)
    draws, losses = draw_gradients(estimator, toy.model, toy.guide, (x,), params, 300)
    elbo = 10 / 4 * toy.exact_elbo(x).sum()  # the data plate's subsample scale N / B
    assert_mean_matches(draws, exact_gradient(-elbo, params))
    assert abs(losses.mean() + elbo.item()) < Z_TOL * losses.std() / math.sqrt(len(losses))


def test_learned_baseline_converges_to_the_mean_learning_signal(float64):
    """Trained by SVI through its squared error, the scalar baseline approaches E_q[f] = the per-example ELBO."""
    pyro.set_rng_seed(2)
    toy = EnumerableBinaryModel()
    x = toy.sample(1, seed=3)
    estimator = ScoreFunctionELBO(num_particles=8, baseline="learned")
    svi = SVI(toy.model, toy.guide, Adam({"lr": 0.2}), estimator)
    for _ in range(300):
        svi.step(x)  # only the baseline is a Pyro param, so only it moves
    assert estimator.baseline_net.value.item() == pytest.approx(toy.exact_elbo(x).item(), abs=0.3)


def test_leave_one_out_mean():
    values = torch.tensor([[1.0, 2.0], [3.0, 4.0], [8.0, 0.0]])
    expected = torch.tensor([[5.5, 2.0], [4.5, 1.0], [2.0, 3.0]])
    assert torch.equal(leave_one_out_mean(values), expected)


def test_registered_by_name():
    estimator = estimators.estimator("score", num_particles=3, kl_weight=0.5)
    assert isinstance(estimator, ScoreFunctionELBO)
    assert (estimator.num_particles, estimator.kl_weight) == (3, 0.5)


def test_unvectorized_particles_give_the_same_loss(float64):
    lg = LinearGaussian.random(data_dim=3, latent_dim=2, seed=0)
    x = lg.sample(2, seed=1)
    estimator = ScoreFunctionELBO(num_particles=3, vectorize_particles=False)
    # with the exact posterior as guide every log weight is log p(x_n)
    assert estimator.loss(lg.model, lg.exact_guide, x) == pytest.approx(-lg.log_marginal(x).sum().item(), rel=1e-10)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"baseline": "mean"}, "unknown baseline"),
        ({"baseline": "leave-one-out", "num_particles": 1}, "num_particles"),
        ({"kl_weight": -1.0}, "kl_weight"),
        ({"baseline": "none", "baseline_net": torch.nn.Linear(2, 1)}, "baseline_net"),
    ],
)
def test_bad_options_raise(options, message):
    with pytest.raises(ValueError, match=message):
        ScoreFunctionELBO(**options)
