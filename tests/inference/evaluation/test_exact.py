import pyro
import pyro.distributions as dist
import pytest
import torch

from inference.evaluation.exact import exact_log_marginal
from pyro_vae.data.linear_gaussian import LinearGaussian


def test_linear_gaussian_uses_its_analytic_marginal(float64):
    lg = LinearGaussian.random(data_dim=4, latent_dim=2, sigma=0.3, seed=1)
    x = lg.sample(7, seed=2)
    # independent check: x ~ N(b, W W^T + sigma^2 I) written out by hand
    cov = lg.weight @ lg.weight.T + 0.09 * torch.eye(4)
    diff = x - lg.bias
    expected = -0.5 * (diff @ torch.linalg.inv(cov) * diff).sum(-1) - 0.5 * torch.logdet(2 * torch.pi * cov)
    assert torch.allclose(exact_log_marginal(lg.model, x), expected, atol=1e-10)


def test_two_discrete_latents_are_summed_by_enumeration(float64):
    # z1 ~ Bernoulli(0.3), z2 | z1 ~ Categorical(probs[z1]), x_n (3 pixels in a nested plate) ~ N(mu[z1, z2], 1)
    probs = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    mu = torch.tensor([[-2.0, 0.0, 1.0], [3.0, -1.0, 0.5]])
    x = torch.tensor([[0.1, -0.3, 0.2], [2.5, 3.1, 2.9], [-2.0, -1.5, -2.2], [0.0, 0.0, 0.0]])

    def model(x):
        with pyro.plate("data", x.shape[0], dim=-2):
            z1 = pyro.sample("z1", dist.Bernoulli(0.3).expand([x.shape[0], 1])).long()
            z2 = pyro.sample("z2", dist.Categorical(probs[z1]))
            with pyro.plate("pixels", 3, dim=-1):
                pyro.sample("x", dist.Normal(mu[z1, z2], 1.0), obs=x)

    expected = torch.empty(4)
    for n in range(4):
        terms = [
            torch.tensor([0.7, 0.3])[a].log() + probs[a, b].log() + dist.Normal(mu[a, b], 1.0).log_prob(x[n]).sum()
            for a in range(2)
            for b in range(3)
        ]
        expected[n] = torch.logsumexp(torch.stack(terms), 0)
    assert torch.allclose(exact_log_marginal(model, x), expected, atol=1e-10)


def test_continuous_latents_without_analytic_marginal_are_a_clear_error():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    with pytest.raises(ValueError, match="latent site 'z' is not enumerable.*log_marginal"):
        exact_log_marginal(model, torch.zeros(3))
