"""Property tests (hypothesis): the weight arithmetic and the estimators stay finite and right over random shapes
and extreme log weights."""

import math

import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from inference import estimator, log_marginal_likelihood
from inference.evaluation.diagnostics import effective_sample_size
from inference.evaluation.log_marginal_likelihood import summarize_log_weights
from inference.objectives.objective import log_mean_exp, normalized_weights
from pyro_vae.data import LinearGaussian

EXTREME = st.one_of(st.floats(-1e30, 1e30, allow_nan=False), st.just(-math.inf))


@st.composite
def log_weight_matrices(draw):
    """``(K, N)`` log weights in [-1e30, 1e30] mixed with -inf, every column with at least one finite weight."""
    k, n = draw(st.integers(1, 40)), draw(st.integers(1, 5))
    values = draw(st.lists(EXTREME, min_size=k * n, max_size=k * n))
    log_w = torch.tensor(values, dtype=torch.float64).reshape(k, n)
    finite_row = draw(st.integers(0, k - 1))
    log_w[finite_row] = torch.tensor(draw(st.lists(st.floats(-1e30, 1e30), min_size=n, max_size=n)))
    return log_w


@settings(max_examples=200, deadline=None)
@given(log_weight_matrices())
@example(torch.tensor([[4.5036e15], [4.5036e15], [0.0]], dtype=torch.float64))  # once gave an ESS of 7.4 for K = 3
def test_log_mean_exp_and_weights_stay_finite_and_exact(log_w):
    k = log_w.shape[0]
    top = log_w.max(0).values
    reference = top + torch.log(torch.exp(log_w - top).sum(0)) - math.log(k)  # the textbook stable form
    assert torch.equal(torch.isfinite(log_mean_exp(log_w)), torch.ones(log_w.shape[1], dtype=torch.bool))
    assert torch.allclose(log_mean_exp(log_w), reference, rtol=1e-12, atol=0)
    weights = normalized_weights(log_w)
    assert torch.isfinite(weights).all() and torch.allclose(weights.sum(0), torch.ones_like(weights[0]))
    ess = effective_sample_size(log_w)
    assert torch.isfinite(ess).all() and (ess >= 1 - 1e-9).all() and (ess <= k + 1e-9).all()
    log_px, elbo, mc_stderr, ess2 = summarize_log_weights(log_w)
    assert torch.isfinite(log_px).all() and torch.isfinite(mc_stderr).all() and torch.equal(ess, ess2)
    assert (elbo <= log_px + 1e-9 * log_px.abs() + 1e-12).all()  # Jensen, up to rounding


@settings(max_examples=25, deadline=None)
@given(
    num_samples=st.integers(1, 300),
    num_examples=st.integers(1, 7),
    latent_dim=st.integers(1, 3),
    data_dim=st.integers(1, 4),
    data_batch_size=st.integers(1, 8),
    particle_batch_size=st.one_of(st.none(), st.integers(1, 64)),
)
def test_importance_sampling_with_the_exact_posterior_is_exact(
    num_samples, num_examples, latent_dim, data_dim, data_batch_size, particle_batch_size
):
    """With q(z | x) = p(z | x) every weight is p(x): any K, batch, latent dimension and chunking gives log p(x)."""
    lg = LinearGaussian.random(data_dim=data_dim, latent_dim=latent_dim, seed=num_examples, dtype=torch.float64)
    x = lg.sample(num_examples, seed=1)
    result = log_marginal_likelihood(
        lg.model,
        lg.exact_guide,
        x,
        num_samples=num_samples,
        data_batch_size=data_batch_size,
        particle_batch_size=particle_batch_size,
    )
    assert result.log_px.shape == (num_examples,)
    assert torch.allclose(result.log_px, lg.log_marginal(x), atol=1e-9)
    assert torch.allclose(result.elbo, result.log_px, atol=1e-9)


CONTINUOUS = ["elbo-stl", "iwae", "iwae-stl", "iwae-dreg", "renyi", "ciwae", "piwae", "miwae"]


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(CONTINUOUS),
    num_particles=st.integers(1, 12),
    num_examples=st.integers(1, 6),
    latent_dim=st.integers(1, 3),
)
def test_every_bound_equals_log_px_at_the_exact_posterior(name, num_particles, num_examples, latent_dim):
    options = {"num_particles": max(num_particles, 2) if name == "renyi" else num_particles}
    if name == "piwae":
        options["num_inner"] = 1
    lg = LinearGaussian.random(data_dim=3, latent_dim=latent_dim, seed=latent_dim, dtype=torch.float64)
    x = lg.sample(num_examples, seed=2)
    loss = estimator(name, **options).loss(lg.model, lg.exact_guide, x)
    assert math.isfinite(loss)
    assert abs(loss + lg.log_marginal(x).sum().item()) < 1e-8 * max(1.0, abs(loss))


def test_a_very_large_number_of_samples_stays_exact_and_bounded_in_memory():
    lg = LinearGaussian.random(data_dim=2, latent_dim=1, seed=0, dtype=torch.float64)
    x = lg.sample(2, seed=0)
    result = log_marginal_likelihood(lg.model, lg.exact_guide, x, num_samples=200_000, particle_batch_size=20_000)
    assert torch.allclose(result.log_px, lg.log_marginal(x), atol=1e-9) and result.num_samples == 200_000
