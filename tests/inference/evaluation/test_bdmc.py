import pyro
import pytest
import torch

from inference.evaluation.bdmc import bdmc, simulate_from_model
from inference.evaluation.log_marginal_likelihood import summarize_log_weights
from pyro_vae.data.linear_gaussian import LinearGaussian


@pytest.fixture
def simulated(float64):
    lg = LinearGaussian.random(data_dim=5, latent_dim=2, sigma=0.5, seed=0)
    pyro.set_rng_seed(0)
    data = simulate_from_model(lg.model, torch.zeros(30, 5))
    return lg, data.observed["x"], data.latents


def test_simulation_separates_observed_and_latent_sites(simulated):
    lg, x, latents = simulated
    assert set(latents) == {"z"} and latents["z"].shape == (30, 2) and x.shape == (30, 5)
    # x given z is the model's Gaussian: the standardized residuals have unit variance
    residual = (x - latents["z"] @ lg.weight.T - lg.bias) / lg.sigma
    assert abs(residual.var().item() - 1) < 4 * (2 / residual.numel()) ** 0.5


def test_bracket_contains_exact_and_gap_shrinks_with_more_steps(simulated):
    lg, x, latents = simulated
    exact = lg.log_marginal(x).mean().item()
    gaps = []
    for num_steps in (3, 30):
        pyro.set_rng_seed(1)
        result = bdmc(
            lg.model,
            None,
            x,
            latents=latents,
            num_steps=num_steps,
            num_chains=8,
            num_leapfrog_steps=5,
            proposal="prior",
        )
        summary = result.summary()
        assert summary["log_px_lower"] <= exact <= summary["log_px_upper"]
        gaps.append(summary["gap"])
    assert gaps[1] < gaps[0] - 4 * summary["gap_stderr"]


def _mc_stderr_of_mean(log_weights):
    _, _, mc_stderr, _ = summarize_log_weights(log_weights)
    return (mc_stderr.pow(2).sum().sqrt() / mc_stderr.numel()).item()


def test_bdmc_from_a_mismatched_guide_brackets_exact_within_monte_carlo_error(simulated):
    lg, x, latents = simulated
    exact = lg.log_marginal(x).mean().item()
    pyro.set_rng_seed(2)
    result = bdmc(lg.model, lg.shifted_guide(), x, latents=latents, num_steps=20, num_chains=16, num_leapfrog_steps=5)
    summary = result.summary()
    assert summary["log_px_lower"] <= summary["log_px_upper"]
    assert summary["log_px_lower"] <= exact + 4 * _mc_stderr_of_mean(result.forward.log_weights)
    assert summary["log_px_upper"] >= exact - 4 * _mc_stderr_of_mean(result.reverse.log_weights)
