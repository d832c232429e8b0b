import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from inference.objectives import estimators
from inference.objectives.rws import ReweightedWakeSleep
from pyro_vae.components.discrete import EnumerableBinaryModel
from pyro_vae.data.linear_gaussian import LinearGaussian
from tests.inference.objectives.test_score import assert_mean_matches, draw_gradients, exact_gradient, float64  # noqa: F401


@pytest.mark.parametrize("insomnia", [1.0, 0.0, 0.5])
def test_rws_matches_enumerated_targets(float64, insomnia):  # noqa: F811
    """Model: the exact IWAE-K gradient (wake-theta). Guide: the exact expected wake-phi direction (all 8^K tuples)
    and the exact sleep-phi gradient (all (z, x) pairs), mixed by ``insomnia``; scaled by N / B."""
    pyro.set_rng_seed(4)
    num_particles, num_data = 3, 10
    toy = EnumerableBinaryModel(num_data=num_data)
    x = toy.sample(4, seed=1)
    scale = num_data / x.shape[0]
    params = toy.model_params + toy.guide_params
    estimator = ReweightedWakeSleep(num_particles=num_particles, insomnia=insomnia)
    draws, losses = draw_gradients(estimator, toy.model, toy.guide, (x,), params, 300)
    bound = scale * toy.exact_iwae(x, num_particles).sum()
    wake_phi = scale * toy.exact_wake_phi_target(x, num_particles).sum()
    sleep_phi = scale * x.shape[0] * toy.exact_sleep_phi_target()  # one model draw per data point
    theta = exact_gradient(-bound, toy.model_params)
    phi = exact_gradient(-(insomnia * wake_phi + (1 - insomnia) * sleep_phi), toy.guide_params)
    assert_mean_matches(draws, torch.cat([theta, phi]))
    assert abs(losses.mean() + bound.item()) < 4.5 * losses.std() / math.sqrt(len(losses))


def test_exact_guide_gives_exact_log_marginal(float64):  # noqa: F811
    lg = LinearGaussian.random(data_dim=4, latent_dim=2, seed=0)
    x = lg.sample(3, seed=1)
    loss = ReweightedWakeSleep(num_particles=4).loss(lg.model, lg.exact_guide, x)
    assert loss == pytest.approx(-lg.log_marginal(x).sum().item(), rel=1e-10)


def test_sleep_needs_to_find_the_observations(float64):  # noqa: F811
    def model(n):
        with pyro.plate("data", n):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=torch.zeros(n))

    def guide(n):
        with pyro.plate("data", n):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="sleep_args"):
        ReweightedWakeSleep(num_particles=2, insomnia=0.0).loss_and_grads(model, guide, 3)


def test_registered_by_name():
    assert isinstance(estimators.estimator("rws", num_particles=3, insomnia=0.5), ReweightedWakeSleep)


@pytest.mark.parametrize("options", [{"num_particles": 1}, {"insomnia": 1.5}, {"kl_weight": -0.1}])
def test_bad_options_raise(options):
    with pytest.raises(ValueError):
        ReweightedWakeSleep(**options)
