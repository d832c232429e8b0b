"""The aggregate-posterior regularizers: MMD and Jensen-Shannon against their defining properties."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from inference import estimator
from inference.objectives.divergences import mixture_log_density, mmd_squared


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
def test_mmd_is_zero_for_identical_samples_and_positive_otherwise(kernel):
    torch.manual_seed(0)
    x = torch.randn(200, 3)
    assert mmd_squared(x, x.clone(), kernel).item() == pytest.approx(0.0, abs=1e-6)
    same = mmd_squared(x, torch.randn(200, 3), kernel).item()
    shifted = mmd_squared(x, torch.randn(200, 3) + 1.0, kernel).item()
    assert 0 < same < shifted
    assert shifted > 10 * same  # a unit shift stands far above the two-sample noise


def test_mmd_matches_its_definition_for_two_points():
    x, y = torch.tensor([[0.0]]), torch.tensor([[2.0]])
    # k(x,x) + k(y,y) - 2 k(x,y) with the imq kernel C / (C + r^2), C = 2 d = 2
    assert mmd_squared(x, y, "imq").item() == pytest.approx(2 - 2 * 2 / (2 + 4))


def test_mixture_log_density_of_identical_components_is_the_component_density():
    q = dist.Normal(torch.zeros(4, 5, 2), 1.0).to_event(1)
    z = torch.randn(7, 2)
    assert torch.allclose(mixture_log_density(q, z, 2), dist.Normal(0.0, 1.0).log_prob(z).sum(-1), atol=1e-6)


def model(x, scale_q=None):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)


def guide_at(loc, scale):
    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc.expand(x.shape[0], 2), scale).to_event(1))

    return guide


def js_divergence(loc, scale, batch=400):
    objective = estimator("js", weight=1.0, num_particles=1, max_plate_nesting=1)
    parts = objective.log_weight_parts(model, guide_at(torch.tensor(loc), scale), (torch.zeros(batch, 2),), {})
    return objective.divergence(next(iter(parts.sites.values()))).item()


def test_jensen_shannon_is_zero_for_the_prior_itself_and_log_2_for_disjoint_distributions():
    torch.manual_seed(0)
    assert abs(js_divergence([0.0, 0.0], 1.0)) < 0.01
    assert js_divergence([20.0, 0.0], 0.5) == pytest.approx(math.log(2), abs=1e-3)
    assert 0.05 < js_divergence([1.5, 0.0], 1.0) < math.log(2)


def test_divergences_refuse_models_with_two_latent_sites():
    def two_latents(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("a", dist.Normal(torch.zeros(x.shape[0], 1), 1.0).to_event(1))
            pyro.sample("b", dist.Normal(torch.zeros(x.shape[0], 1), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(torch.zeros(x.shape[0], 1), 1.0).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("a", dist.Normal(torch.zeros(x.shape[0], 1), 1.0).to_event(1))
            pyro.sample("b", dist.Normal(torch.zeros(x.shape[0], 1), 1.0).to_event(1))

    with pytest.raises(ValueError, match="one latent code"):
        estimator("mmd", max_plate_nesting=1).differentiable_loss(two_latents, guide, torch.zeros(5, 1))
