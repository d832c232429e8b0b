import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Trace_ELBO

from inference import log_marginal_likelihood, per_example_log_weights
from pyro_vae import GUIDES, LIKELIHOODS, build_vae
from pyro_vae.components.guides import positive_scale


def test_guide_scale_is_finite_and_positive_at_extremes():
    raw = torch.tensor([-1e4, -50.0, 0.0, 50.0, 1e4])
    scale = positive_scale(raw, 1e-4)
    assert torch.isfinite(scale).all() and (scale >= 1e-4).all()
    assert scale[-1] == pytest.approx(1e4, rel=1e-6)  # linear growth, not exp overflow
    guide = GUIDES.build("diagonal-normal", latent_dim=5)
    q = guide(torch.cat([torch.zeros(5), raw]))
    assert torch.isfinite(q.log_prob(q.sample())).all()


def test_model_and_guide_shapes_and_plate_scale():
    vae = build_vae(64, latent_dim=3, hidden_sizes=(16,), num_data=1000)
    x = torch.bernoulli(torch.full((10, 64), 0.3))
    guide_trace = poutine.trace(vae.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x)
    assert guide_trace.nodes["z"]["value"].shape == (10, 3)
    assert model_trace.nodes["x"]["fn"].event_shape == (64,)
    assert model_trace.nodes["x"]["scale"] == pytest.approx(100.0)  # num_data / batch_size
    assert model_trace.nodes["z"]["scale"] == pytest.approx(100.0)


def test_trace_elbo_equals_scaled_sum_of_per_example_weights():
    """Pyro's Trace_ELBO on a minibatch is -(N / B) * sum_n log w_n for the same draws of z."""
    vae = build_vae(64, latent_dim=3, hidden_sizes=(16,), num_data=1000)
    x = torch.bernoulli(torch.full((10, 64), 0.3))
    pyro.set_rng_seed(7)
    loss = Trace_ELBO().loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(7)
    log_w = per_example_log_weights(vae.model, vae.guide, x, num_particles=1)
    assert log_w.shape == (1, 10)
    assert loss == pytest.approx(-100.0 * log_w.sum().item(), rel=1e-5)


@pytest.mark.parametrize("scale", ["learned", 0.2])
def test_gaussian_likelihood_scale(scale):
    lik = LIKELIHOODS.build("gaussian", data_dim=4, scale=scale)
    p = lik(torch.zeros(4))
    expected = 0.1 if scale == "learned" else 0.2
    assert p.base_dist.scale.detach() == pytest.approx(torch.full((4,), expected), rel=1e-5)
    assert ("raw_scale" in dict(lik.named_parameters())) == (scale == "learned")


def test_bad_component_options_are_clear():
    with pytest.raises(ValueError, match="unknown likelihood 'bernouli'. Did you mean 'bernoulli'"):
        build_vae(64, likelihood="bernouli")
    with pytest.raises(ValueError, match="scale must be a positive number, 'learned' or 'learned-global'; got -1"):
        LIKELIHOODS.build("gaussian", data_dim=4, scale=-1)
    with pytest.raises(ValueError, match="unknown activation"):
        build_vae(64, activation="swishy")


def test_iwae_estimate_is_at_least_the_elbo_per_example():
    vae = build_vae(64, latent_dim=3, hidden_sizes=(16,))
    x = torch.bernoulli(torch.full((20, 64), 0.3))
    result = log_marginal_likelihood(vae.model, vae.guide, x, num_samples=50)
    # log mean exp >= mean log of the same draws (Jensen), example by example.
    assert (result.log_px >= result.elbo - 1e-5).all()
    assert result.log_px.shape == (20,)
