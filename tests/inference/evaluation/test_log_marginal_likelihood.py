import math

import pyro
import pytest
import torch
from pyro.infer.importance import vectorized_importance_weights

from inference import allocator
from inference.evaluation.log_marginal_likelihood import (
    DRAWS_PER_PASS,
    LOG_PX_METHODS,
    draws_within_memory,
    importance_log_weights,
    log_marginal_likelihood,
    particles_per_pass,
)
from pyro_vae.data.linear_gaussian import LinearGaussian


@pytest.fixture
def linear_gaussian(float64):
    model = LinearGaussian.random(data_dim=5, latent_dim=2, sigma=0.5, seed=0)
    return model, model.sample(30, seed=1)


@pytest.mark.parametrize("num_samples", [1, 7, 100])
def test_exact_posterior_guide_gives_exact_log_px_for_any_k(linear_gaussian, num_samples):
    lg, x = linear_gaussian
    pyro.set_rng_seed(0)
    result = log_marginal_likelihood(lg.model, lg.exact_guide, x, num_samples=num_samples)
    assert torch.allclose(result.log_px, lg.log_marginal(x), atol=1e-4)
    assert torch.allclose(result.elbo, lg.log_marginal(x), atol=1e-4)


def test_mismatched_guide_elbo_below_exact_and_k5000_within_four_stderr(linear_gaussian):
    lg, x = linear_gaussian
    pyro.set_rng_seed(0)
    result = log_marginal_likelihood(lg.model, lg.shifted_guide(), x, num_samples=5000)
    exact = lg.log_marginal(x)
    assert (result.elbo < exact).all()
    assert (result.log_px - exact).abs().le(4 * result.mc_stderr).all()
    assert result.summary()["gap"] > 0


def test_one_example_matches_pyro_vectorized_importance_weights(linear_gaussian):
    lg, x = linear_gaussian
    guide = lg.shifted_guide()
    pyro.set_rng_seed(3)
    ours = log_marginal_likelihood(lg.model, guide, x[:1], num_samples=200, particle_batch_size=None)
    pyro.set_rng_seed(3)
    log_w, _, _ = vectorized_importance_weights(lg.model, guide, x[:1], num_samples=200, max_plate_nesting=1)
    assert torch.allclose(ours.log_px, torch.logsumexp(log_w, 0) - math.log(200), atol=1e-10)


def test_chunking_does_not_change_the_estimate(linear_gaussian):
    lg, x = linear_gaussian
    guide = lg.shifted_guide()
    pyro.set_rng_seed(5)
    whole = log_marginal_likelihood(
        lg.model, guide, x[:8], num_samples=60, data_batch_size=None, particle_batch_size=None
    )
    # particle chunks of one data batch draw from the generator in the same order as one big pass
    pyro.set_rng_seed(5)
    chunked = log_marginal_likelihood(lg.model, guide, x[:8], num_samples=60, data_batch_size=8, particle_batch_size=20)
    assert torch.allclose(whole.log_px, chunked.log_px, atol=1e-10)
    assert torch.allclose(whole.khat, chunked.khat, atol=1e-10)


def test_auto_particle_passes_make_the_cpu_draw_budget_and_keep_the_estimate(linear_gaussian, monkeypatch):
    """``"auto"`` passes hold ``DRAWS_PER_PASS["cpu"] // examples`` particles (2048 // 16 = 128 here; 8192 // 16 =
    512 where malloc keeps freed memory), at least one, at most K; the estimate is the one-pass estimate on the same
    draws."""
    lg, x = linear_gaussian
    guide = lg.shifted_guide()
    monkeypatch.setattr(allocator, "_applied", False)  # the state of this process's malloc, whatever ran before
    assert DRAWS_PER_PASS["cpu"] == 2048
    assert particles_per_pass("auto", 1200, (x[:16],), "data") == 128
    assert particles_per_pass("auto", 1200, (x[:16],), None) == 1200  # one data point: K at most
    assert particles_per_pass("auto", 1200, (torch.zeros(10000, 5),), "data") == 1
    assert particles_per_pass(None, 1200, (x[:16],), "data") == 1200 and particles_per_pass(7, 1200, (), "data") == 7
    monkeypatch.setattr(allocator, "_applied", True)
    assert particles_per_pass("auto", 1200, (x[:16],), "data") == 512
    passes = []
    pyro.set_rng_seed(5)
    auto = importance_log_weights(
        lg.model,
        guide,
        x[:16],
        num_samples=1200,
        particle_batch_size="auto",
        max_plate_nesting=1,
        on_particles=passes.append,
    )
    pyro.set_rng_seed(5)
    whole = importance_log_weights(lg.model, guide, x[:16], num_samples=1200, max_plate_nesting=1)
    assert passes == [512, 512, 176]
    torch.testing.assert_close(auto, whole, rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match='particle_batch_size must be a positive integer or "auto" or None'):
        LOG_PX_METHODS.build("is", particle_batch_size="big")


def test_data_chunks_give_the_same_numbers_as_separate_calls(linear_gaussian):
    lg, x = linear_gaussian
    guide = lg.shifted_guide()
    pyro.set_rng_seed(2)
    chunked = log_marginal_likelihood(lg.model, guide, x[:10], num_samples=50, data_batch_size=4)
    pyro.set_rng_seed(2)
    parts = [
        log_marginal_likelihood(lg.model, guide, x[a:b], num_samples=50, data_batch_size=None)
        for a, b in [(0, 4), (4, 8), (8, 10)]
    ]
    assert torch.allclose(chunked.log_px, torch.cat([p.log_px for p in parts]), atol=1e-12)


def test_methods_are_listed():
    assert LOG_PX_METHODS.names() == ["ais", "exact", "is", "is-prior"]


def test_exact_method_matches_analytic_value(linear_gaussian):
    lg, x = linear_gaussian
    pyro.set_rng_seed(0)
    result = log_marginal_likelihood(lg.model, lg.shifted_guide(), x, num_samples=100, method="exact")
    assert torch.allclose(result.log_px, lg.log_marginal(x), atol=1e-12)
    assert (result.mc_stderr == 0).all()
    assert (result.elbo < result.log_px).all()


def test_prior_proposal_is_worse_than_guide(linear_gaussian):
    lg, _ = linear_gaussian
    x = lg.sample(300, seed=2)
    exact = lg.log_marginal(x)
    guide = lg.shifted_guide(shift=0.1, scale_factor=1.2)  # a good but imperfect guide
    pyro.set_rng_seed(0)
    guided = log_marginal_likelihood(lg.model, guide, x, num_samples=20)
    prior = log_marginal_likelihood(lg.model, guide, x, num_samples=20, method="is-prior")
    # both are lower bounds in expectation; the prior's is further below, by many paired standard errors
    improvement = guided.log_px - prior.log_px
    assert improvement.mean() > 4 * improvement.std() / math.sqrt(len(x))
    assert (exact - prior.log_px).mean() > 1.0
    assert prior.elbo_mean < guided.elbo_mean
    assert prior.ess.mean() < guided.ess.mean()


def test_ais_within_005_nats_of_exact_on_average(linear_gaussian):
    lg, x = linear_gaussian
    pyro.set_rng_seed(0)
    result = log_marginal_likelihood(
        lg.model, lg.shifted_guide(), x[:20], method="ais", num_steps=200, num_chains=16, num_leapfrog_steps=5
    )
    exact = lg.log_marginal(x[:20])
    assert abs((result.log_px - exact).mean().item()) < 0.05
    assert result.khat is None
    assert result.num_samples == 16
    summary = result.summary()
    assert summary["method"] == "ais" and "khat_mean" not in summary


def test_unknown_method_names_the_choices(linear_gaussian):
    lg, x = linear_gaussian
    with pytest.raises(ValueError, match="ais, exact, is, is-prior"):
        log_marginal_likelihood(lg.model, lg.exact_guide, x, method="annealed")


def test_summary_keeps_its_keys(linear_gaussian):
    lg, x = linear_gaussian
    pyro.set_rng_seed(0)
    summary = log_marginal_likelihood(lg.model, lg.exact_guide, x, num_samples=20).summary()
    for key in [
        "method",
        "log_px",
        "log_px_stderr",
        "log_px_mc_stderr",
        "elbo",
        "elbo_stderr",
        "gap",
        "ess_mean",
        "num_samples",
        "num_examples",
        "khat_mean",
        "khat_max",
        "khat_fraction_above_0.7",
    ]:
        assert key in summary


def test_progress_moves_after_every_pass_of_particles(linear_gaussian, monkeypatch):
    """30 examples in chunks of 20 and 10, 50 particles in passes of 20, 20 and 10: the bar counts draws."""
    import inference.evaluation.log_marginal_likelihood as module

    updates = []

    class RecordingBar(module.tqdm):
        def update(self, n=1):
            updates.append(n)
            return super().update(n)

    monkeypatch.setattr(module, "tqdm", RecordingBar)
    lg, x = linear_gaussian
    log_marginal_likelihood(
        lg.model, lg.shifted_guide(), x, num_samples=50, particle_batch_size=20, data_batch_size=20, progress=True
    )
    assert updates == [400, 400, 200, 0, 200, 200, 100, 0]  # the zeros: nothing left over after a chunk
    assert sum(updates) == 30 * 50


def test_a_seed_fixes_the_draws_and_leaves_the_global_generator_alone(linear_gaussian):
    lg, x = linear_gaussian
    guide = lg.shifted_guide()
    estimates = []
    for global_seed in (1, 123):
        pyro.set_rng_seed(global_seed)
        estimates.append(log_marginal_likelihood(lg.model, guide, x, num_samples=40, data_batch_size=10, seed=7))
        after = torch.rand(1)
        pyro.set_rng_seed(global_seed)
        assert torch.equal(after, torch.rand(1))  # as if the estimate had drawn nothing
    assert torch.equal(estimates[0].log_px, estimates[1].log_px)
    other_seed = log_marginal_likelihood(lg.model, guide, x, num_samples=40, data_batch_size=10, seed=8)
    assert not torch.equal(estimates[0].log_px, other_seed.log_px)


def test_progress_of_an_unsplit_batch_counts_every_example(linear_gaussian, monkeypatch):
    import inference.evaluation.log_marginal_likelihood as module

    totals = []

    class RecordingBar(module.tqdm):
        def __init__(self, *args, **kwargs):
            totals.append(kwargs["total"])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(module, "tqdm", RecordingBar)
    lg, x = linear_gaussian
    log_marginal_likelihood(lg.model, lg.shifted_guide(), x, num_samples=20, data_batch_size=None, progress=True)
    assert totals == [30 * 20]


def test_gpu_passes_shrink_to_fit_a_small_cards_free_memory():
    # 784 values per example: an 8 GiB card with 6 GiB free takes 128,397 draws a pass (a quarter of it at 16 bytes
    # per draw and value), below the 200,000 that a large card gets
    assert draws_within_memory(6 * 2**30, 784) == 6 * 2**30 // 4 // (16 * 784) == 128_397
    assert draws_within_memory(130 * 2**30, 784) > DRAWS_PER_PASS["cuda"]
