"""The two-stochastic-layer VAE against a linear-Gaussian two-layer model whose log p(x) is known in closed form."""

import math

import pyro
import torch

from inference import log_marginal_likelihood
from pyro_vae.config import Component, ModelConfig
from pyro_vae.vae import TwoLayerVAE, build_model


def inverse_softplus(y):
    return torch.log(torch.expm1(y))


def set_linear(layer, weight, bias):
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)


def full_rank_outputs(weight, bias, cov):
    """Linear-layer weight and bias whose outputs the full-rank guide reads as N(weight @ in + bias, cov)."""
    d = cov.shape[0]
    tril = torch.linalg.cholesky(cov)
    rows, cols = torch.tril_indices(d, d)
    entries = tril[rows, cols].clone()
    diagonal = rows == cols
    entries[diagonal] = inverse_softplus(entries[diagonal] - 1e-4)
    zeros = torch.zeros(len(entries), weight.shape[1], dtype=weight.dtype)
    return torch.cat([weight, zeros]), torch.cat([bias, entries])


def test_two_layer_log_px_is_exact_with_the_exact_posterior(float64):
    torch.manual_seed(0)
    d2, d1, dx, s1, s2 = 1, 2, 3, 0.7, 0.4
    A, a = torch.randn(d1, d2), torch.randn(d1)
    B, b = torch.randn(dx, d1), torch.randn(dx)
    mlp = Component("mlp", {"hidden_sizes": []})  # one linear layer
    config = ModelConfig(
        latent_dim=d1,
        top_latent_dim=d2,
        top_hidden_sizes=[],
        likelihood=Component("gaussian", {"scale": s2}),
        guide=Component("full-rank-normal"),
        encoder=mlp,
        decoder=mlp,
    )
    vae = build_model(config, data_dim=dx, num_data=50)
    assert isinstance(vae, TwoLayerVAE)
    # model: z2 ~ N(0, I), z1 | z2 ~ N(A z2 + a, s1^2 I), x | z1 ~ N(B z1 + b, s2^2 I)
    set_linear(vae.decoder[0], B, b)
    raw = inverse_softplus(torch.tensor(s1 - 1e-4)).expand(d1)
    set_linear(vae.conditional[0], torch.cat([A, torch.zeros(d1, d2)]), torch.cat([a, raw]))
    # exact posteriors: q(z1 | x) = p(z1 | x), q(z2 | z1) = p(z2 | z1) = p(z2 | z1, x)
    c1 = A @ A.T + s1**2 * torch.eye(d1)
    cov1 = torch.linalg.inv(torch.linalg.inv(c1) + B.T @ B / s2**2)
    weight1 = cov1 @ B.T / s2**2
    bias1 = cov1 @ (torch.linalg.solve(c1, a) - B.T @ b / s2**2)
    set_linear(vae.encoder[0], *full_rank_outputs(weight1, bias1, cov1))
    cov2 = torch.linalg.inv(torch.eye(d2) + A.T @ A / s1**2)
    weight2 = cov2 @ A.T / s1**2
    set_linear(vae.top_encoder[0], *full_rank_outputs(weight2, -weight2 @ a, cov2))

    marginal = torch.distributions.MultivariateNormal(B @ a + b, B @ c1 @ B.T + s2**2 * torch.eye(dx))
    x = marginal.sample((50,))
    pyro.set_rng_seed(0)
    result = log_marginal_likelihood(vae.model, vae.guide, x, num_samples=7)
    assert torch.allclose(result.log_px, marginal.log_prob(x), atol=1e-8)
    assert torch.allclose(result.elbo, result.log_px, atol=1e-8)  # every weight is p(x): zero variance
    assert math.isfinite(result.mean)
