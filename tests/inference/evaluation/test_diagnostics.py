import math

import arviz
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from inference.evaluation.diagnostics import (
    active_units,
    effective_sample_size,
    importance_resampled_latents,
    kl_per_dimension,
    latent_activity,
    pareto_khat,
    save_inference_data,
)
from inference.evaluation.log_marginal_likelihood import log_marginal_likelihood
from inference.importance import per_example_log_weights
from pyro_vae.data.linear_gaussian import LinearGaussian


@pytest.fixture
def linear_gaussian(float64):
    model = LinearGaussian.random(data_dim=5, latent_dim=2, sigma=0.5, seed=0)
    return model, model.sample(10, seed=1)


def test_khat_is_small_for_a_slightly_wide_guide_and_large_for_a_far_too_narrow_one(linear_gaussian):
    lg, x = linear_gaussian
    pyro.set_rng_seed(0)
    with torch.no_grad():
        # the exact posterior gives constant weights; stretching it a little keeps the weights bounded
        good = per_example_log_weights(lg.model, lg.shifted_guide(shift=0.0, scale_factor=1.1), x, num_particles=2000)
        bad = per_example_log_weights(lg.model, lg.shifted_guide(shift=0.0, scale_factor=0.1), x, num_particles=2000)
    assert (pareto_khat(good) < 0.5).all()
    assert (pareto_khat(bad) > 0.7).all()


def test_khat_of_the_exact_posterior_guide_is_below_one_half(linear_gaussian):
    lg, x = linear_gaussian
    pyro.set_rng_seed(0)
    result = log_marginal_likelihood(lg.model, lg.exact_guide, x, num_samples=500)
    assert (result.khat < 0.5).all()


def test_effective_sample_size_is_kongs_formula():
    log_w = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    assert torch.allclose(effective_sample_size(log_w), torch.tensor([16 / 10, 2.0]))


def _encoder():
    gen = torch.Generator().manual_seed(0)
    loc_weight = torch.randn(4, 3, generator=gen) * torch.tensor([1.0, 0.05, 0.0])
    scale_weight = 0.3 * torch.randn(4, 3, generator=gen)

    def encode(x):
        return x @ loc_weight, (x @ scale_weight).exp()

    def guide(x):
        loc, scale = encode(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    return encode, guide


def _model_with_prior(prior):
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", prior.expand([x.shape[0], 3]).to_event(1))
            pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True), 1.0).expand([x.shape[0], 4]).to_event(1), obs=x)

    return model


def test_kl_per_dimension_and_active_units_match_a_direct_computation(float64):
    encode, guide = _encoder()
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(1))
    loc, scale = encode(x)
    direct_kl = (0.5 * (scale**2 + loc**2 - 1) - scale.log()).mean(0)
    kl = kl_per_dimension(_model_with_prior(dist.Normal(0.0, 1.0)), guide, x)
    assert torch.allclose(kl, direct_kl, atol=1e-12)
    activity = latent_activity(guide, x)
    assert torch.allclose(activity, loc.var(0), atol=1e-12)
    # dimension 0 carries the data, dimension 1 barely (weights scaled by 0.05), dimension 2 not at all
    assert activity[1] > 0 and activity[2] == 0
    assert active_units(guide, x) == int((loc.var(0) > 0.01).sum()) == 1 + int(loc.var(0)[1] > 0.01)


def test_kl_without_a_closed_form_falls_back_to_monte_carlo(float64):
    encode, guide = _encoder()
    x = torch.randn(20, 4, generator=torch.Generator().manual_seed(2))
    loc, scale = encode(x)
    b = 0.7
    # KL(N(m, s) || Laplace(0, b)) = -H(N) + log(2b) + E|z| / b, with E|z| the folded-normal mean
    normal = torch.distributions.Normal(0.0, 1.0)
    mean_abs = scale * math.sqrt(2 / math.pi) * torch.exp(-(loc**2) / (2 * scale**2)) + loc * (
        1 - 2 * normal.cdf(-loc / scale)
    )
    entropy = 0.5 * math.log(2 * math.pi * math.e) + scale.log()
    direct_kl = (-entropy + math.log(2 * b) + mean_abs / b).mean(0)
    pyro.set_rng_seed(0)
    kl = kl_per_dimension(_model_with_prior(dist.Laplace(0.0, b)), guide, x, num_samples=20000)
    # Monte Carlo error: sd of the log-ratio (< 2 nats here) over sqrt(20000 draws * 20 examples)
    assert torch.allclose(kl, direct_kl, atol=4 * 2 / math.sqrt(20000 * 20))


def test_saved_inference_data_opens_in_arviz(linear_gaussian, tmp_path):
    lg, x = linear_gaussian
    pyro.set_rng_seed(0)
    result = log_marginal_likelihood(lg.model, lg.shifted_guide(), x, num_samples=100)
    draws = importance_resampled_latents(lg.model, lg.shifted_guide(), x[:2], num_draws=50, num_samples=200)
    assert draws.shape == (50, 2, 2)
    path = save_inference_data(
        result, tmp_path / "eval.nc", latent_draws={0: draws[:, 0], 1: draws[:, 1]}, attrs=result.summary()
    )
    data = arviz.from_netcdf(path)
    saved = data["log_marginal_likelihood"]
    np.testing.assert_allclose(saved["log_px"].values, result.log_px.numpy())
    np.testing.assert_allclose(saved["khat"].values, result.khat.numpy())
    np.testing.assert_allclose(saved["ess"].values, result.ess.numpy())
    assert saved.attrs["method"] == "is"
    assert data["posterior"]["z"].shape == (1, 50, 2, 2)


def test_importance_resampling_recovers_the_posterior_mean(linear_gaussian):
    lg, x = linear_gaussian
    pyro.set_rng_seed(0)
    draws = importance_resampled_latents(
        lg.model, lg.shifted_guide(shift=0.1, scale_factor=1.5), x[:3], num_draws=4000, num_samples=20000
    )
    posterior = lg.posterior(x[:3])
    sd = posterior.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt()
    # resampled draws are correlated through the shared particles; allow 8 naive standard errors
    assert ((draws.mean(0) - posterior.loc).abs() < 8 * sd / math.sqrt(4000)).all()


def test_kl_from_prior_is_closed_form_where_it_can_be_and_bounded_monte_carlo_for_a_mixture_prior():
    from inference.evaluation.diagnostics import kl_from_prior, kl_per_dimension
    from pyro_vae import build_vae

    x = torch.bernoulli(torch.full((30, 64), 0.3))
    normal = build_vae(64, latent_dim=3, hidden_sizes=(8,))
    assert torch.allclose(
        kl_from_prior(normal.model, normal.guide, x).mean(), kl_per_dimension(normal.model, normal.guide, x).sum()
    )
    mixture = build_vae(64, latent_dim=3, hidden_sizes=(8,), prior="mixture", prior_options={"num_components": 1})
    with torch.no_grad():
        mixture.prior.locs.zero_()  # one component at N(0, I): the same prior as `normal`, written as a mixture
    mixture.encoder.load_state_dict(normal.encoder.state_dict())
    monte_carlo = kl_from_prior(mixture.model, mixture.guide, x, num_samples=4000).mean()
    closed_form = kl_from_prior(normal.model, normal.guide, x).mean()
    assert abs(monte_carlo - closed_form) < 0.05 * closed_form + 0.02
    with pytest.raises(ValueError, match="does not factor over dimensions"):
        kl_per_dimension(mixture.model, mixture.guide, x)
