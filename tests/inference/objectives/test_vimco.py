import itertools
import math

import pyro
import pytest
import torch

from inference.objectives import estimators
from inference.objectives.vimco import VIMCO, vimco_learning_signals
from pyro_vae.components.discrete import EnumerableBinaryModel
from pyro_vae.data.linear_gaussian import LinearGaussian
from tests.inference.objectives.test_score import assert_mean_matches, draw_gradients, exact_gradient, float64  # noqa: F401


@pytest.mark.parametrize("num_particles", [2, 3])
def test_vimco_matches_enumerated_iwae_gradient(float64, num_particles):  # noqa: F811
    """Mean gradient over draws equals the exact gradient of the IWAE-K bound, summed over all 8^K tuples."""
    pyro.set_rng_seed(3)
    toy = EnumerableBinaryModel(num_data=10)
    x = toy.sample(4, seed=1)
    params = toy.model_params + toy.guide_params
    draws, losses = draw_gradients(VIMCO(num_particles=num_particles), toy.model, toy.guide, (x,), params, 300)
    bound = 10 / 4 * toy.exact_iwae(x, num_particles).sum()
    assert_mean_matches(draws, exact_gradient(-bound, params))
    assert abs(losses.mean() + bound.item()) < 4.5 * losses.std() / math.sqrt(len(losses))


def test_vimco_is_not_the_elbo_gradient(float64):  # noqa: F811
    """The test above can fail: the same draws are far from the gradient of the (different) ELBO."""
    pyro.set_rng_seed(3)
    toy = EnumerableBinaryModel(num_data=10)
    x = toy.sample(4, seed=1)
    params = toy.model_params + toy.guide_params
    draws, _ = draw_gradients(VIMCO(num_particles=2), toy.model, toy.guide, (x,), params, 300)
    with pytest.raises(AssertionError):
        assert_mean_matches(draws, exact_gradient(-10 / 4 * toy.exact_elbo(x).sum(), params))


def test_learning_signals_match_their_definition(float64):  # noqa: F811
    torch.manual_seed(0)
    log_w = torch.randn(4, 3) * 3
    signals = vimco_learning_signals(log_w)
    for k, n in itertools.product(range(4), range(3)):
        w = log_w[:, n].exp()
        others = torch.cat([log_w[:k, n], log_w[k + 1 :, n]])
        replaced = w.clone()
        replaced[k] = others.mean().exp()
        expected = (w.mean().log() - replaced.mean().log()).item()
        assert signals[k, n].item() == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_exact_guide_gives_exact_log_marginal(float64):  # noqa: F811
    """With q = p(z | x) every weight is p(x_n): the loss is -sum_n log p(x_n), particles vectorized or not."""
    lg = LinearGaussian.random(data_dim=4, latent_dim=2, seed=0)
    x = lg.sample(3, seed=1)
    for vectorize in (True, False):
        loss = VIMCO(num_particles=3, vectorize_particles=vectorize).loss(lg.model, lg.exact_guide, x)
        assert loss == pytest.approx(-lg.log_marginal(x).sum().item(), rel=1e-10)


def test_registered_by_name():
    assert isinstance(estimators.estimator("vimco", num_particles=4), VIMCO)


@pytest.mark.parametrize("options", [{"num_particles": 1}, {"kl_weight": float("nan")}])
def test_bad_options_raise(options):
    with pytest.raises(ValueError):
        VIMCO(**options)
