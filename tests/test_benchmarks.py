"""The benchmark scripts' reference implementations compute our objectives, and the scripts run in a quick mode
(no time is asserted)."""

import os

import pytest

from tests.conftest import load_script, require_module

BENCHMARKS = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks")


def load(name):
    return load_script(BENCHMARKS, name)


#: One case of every estimator train_speed.py times, with the fewest draws it is timed with.
CASES = [
    ("elbo", 1), ("elbo-analytic-kl", 1), ("elbo-stl", 1), ("iwae", 5), ("iwae-dreg", 5), ("iwae-stl", 5),
    ("renyi", 5), ("miwae", 50), ("ciwae", 5), ("piwae", 5), ("rws", 5),
]  # fmt: skip


@pytest.mark.parametrize("name, k", CASES)
def test_hand_written_objectives_equal_ours_on_the_same_draws(name, k):
    ours, hand = load("train_speed").check_same_objective(name, k, batch_size=8)
    assert ours == pytest.approx(hand, rel=1e-5)


@pytest.mark.parametrize("name", ["elbo", "elbo-analytic-kl"])
def test_the_minimal_pyro_program_computes_our_objective_on_the_same_draws(name):
    ours, pyro_minimal = load("train_speed").check_pyro_minimal_objective(name, batch_size=8)
    assert ours == pytest.approx(pyro_minimal, rel=1e-5)


def test_train_speed_benchmark_runs_in_quick_mode():
    script = load("train_speed")
    rows = script.main(["--quick", "--threads", "1", "--device", "cpu"])
    assert len(rows) == len(script.ESTIMATORS) == 25 and all(
        r["ours_ms"] > 0 and r["hand_ms"] > 0 and r["hand_fused_ms"] > 0 for r in rows
    )
    assert [r["estimator"] for r in rows if r["pyro_ms"] is not None] == ["elbo", "elbo-analytic-kl"]


def test_hand_written_log_px_equals_ours_on_the_same_draws():
    import torch

    script = load("log_px_speed")
    vae = script.build()
    x = torch.bernoulli(torch.full((30, script.DATA), 0.3), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    ours = script.ours_log_px(vae, x, 60)
    torch.manual_seed(0)
    hand = script.hand_written_log_px(vae, x, 60)
    torch.testing.assert_close(ours, hand, rtol=1e-5, atol=1e-3)
    torch.manual_seed(1)
    assert (script.ours_log_px(vae, x, 60) - ours).abs().max() > 1e-3  # other draws, other numbers


def test_log_px_speed_benchmark_runs_in_quick_mode():
    report = load("log_px_speed").main(["--quick", "--chunks", "--threads", "1", "--device", "cpu"])
    assert report["compare"]["max_abs_difference"] < 1e-3 and len(report["scaling"]) == 2
    assert [row["draws_per_pass"] for row in report["chunks"]] == [500, 2000]


def test_memory_mapped_benchmark_runs():
    rows = load("memory_mapped").main(["--megabytes", "8", "--skip-whole"])
    assert [(r["case"], r["command"]) for r in rows] == [
        ("small file, mapped", "train"), ("small file, mapped", "evaluate"),
        ("large file, mapped", "train"), ("large file, mapped", "evaluate"),
    ]  # fmt: skip
    assert all(r["peak_bytes"] > 0 for r in rows)


def test_data_parallel_benchmark_runs():
    rows = load("data_parallel").main(["--epochs", "1", "--batch-size", "200", "--device", "cpu"])
    assert [r["processes"] for r in rows] == [1, 2] and all(r["seconds_per_epoch"] > 0 for r in rows)


@pytest.mark.parametrize("name, k", CASES)
def test_hand_written_gradients_equal_ours_on_the_same_draws(name, k, float64):
    """The hand-written step's gradients (for DReG and PIWAE: two backward passes through one decoder pass) are
    ours, in double precision (in single precision the two ways of summing the log-likelihood differ by about
    2e-5)."""
    import torch

    script = load("train_speed")
    batch_size, num_data = 8, 60000
    x = torch.bernoulli(torch.full((batch_size, 784), 0.3), generator=torch.Generator().manual_seed(0))
    ours_vae = script.build(0, num_data)
    hand_vae = script.HandWritten(script.build(0, num_data))
    trainer = script.our_trainer(name, k, ours_vae)
    trainer.setup(x)
    torch.manual_seed(1)
    trainer.loss.differentiable_loss(ours_vae.model, ours_vae.guide, x).backward()
    torch.manual_seed(1)
    eps = torch.randn(k, batch_size, 20)  # the draws Pyro's rsample made
    script.hand_step(name, hand_vae, x, eps, num_data, torch.optim.SGD(hand_vae.parameters(), lr=0.0))
    for (param_name, ours), hand in zip(ours_vae.named_parameters(), hand_vae.parameters()):
        scale = hand.grad.abs().max()
        assert (ours.grad - hand.grad).abs().max() <= 1e-9 * scale, param_name


def test_allocator_benchmark_runs_in_quick_mode_and_the_settings_do_not_change_the_estimate():
    # quick mode's K = 40 on 20 examples is one pass under either setting, so the draws are the same; at full size
    # the larger passes of kept memory draw other numbers
    report = load("allocator").main(["--quick"])
    assert report["default"]["log_px"] == report["kept"]["log_px"]
    assert report["default"]["median_seconds"] > 0 and report["kept"]["median_seconds"] > 0


def test_step_variants_compute_the_same_steps_and_run_in_quick_mode():
    """Each pair of step_variants.py trains alike: queued and checked steps, and STL scored once or twice, give
    the same parameters bit for bit after 3 steps on the same draws; PyroModule and plain networks too."""
    rows = load("step_variants").main(["--quick", "--threads", "1", "--batch-size", "16", "--device", "cpu"])
    assert [r["variant"] for r in rows] == ["queued", "stl", "networks"]
    assert all(r["parameter_difference"] == 0.0 and r["a_ms"] > 0 and r["b_ms"] > 0 for r in rows)


def test_the_whole_run_mode_trains_ours_and_the_hand_written_loop_on_the_same_stream():
    import torch

    script = load("train_speed")
    train = torch.rand(120, 784, generator=torch.Generator().manual_seed(0))
    result = script.whole_run(train, epochs=2, batch_size=40)
    assert all(len(times) == 2 and min(times) > 0 for times in result["seconds"].values())
    objective = result["objective"]  # mean per-example ELBO of the last epoch, the same draws in all four
    assert objective["ours, on"] == pytest.approx(objective["hand-written, on"], rel=1e-5)
    assert objective["ours, on"] == pytest.approx(objective["ours, off"], rel=1e-6)
    assert -800 < objective["ours, on"] < -300
    assert all(0 <= f < 1 for fractions in result["denormal_fraction"].values() for f in fractions)
    adam = torch.optim.Adam([torch.tensor([1e-39, 1.0, 0.0, 2e-39])])
    assert script.denormal_fraction(adam) == 0.5
    summary = script.whole_run_summary({"a": [1.0] * 8 + [1.5] * 12})["a"]
    assert summary["late_over_early"] == pytest.approx(1.5) and summary["total_s"] == pytest.approx(26.0)


@pytest.mark.slow
def test_the_pythae_side_by_side_runs_both_tools_and_three_evaluations():
    require_module("pythae", "pip install -e '.[bench]'")
    rows = load("pythae_side_by_side").main(["--epochs", "1", "--num-train", "300", "--num-test", "5",
                                             "--num-samples", "10", "--threads", "1"])  # fmt: skip
    assert [r["model"] for r in rows] == ["vae", "iwae"]
    for r in rows:
        assert all(len(times) == 1 for times in r["seconds"].values())
        assert all(-800 < value < -100 for value, _ in r["log_px"].values())  # nats per example, 784 pixels
