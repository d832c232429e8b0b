import math
import os

import pytest

from tests.conftest import load_script

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def load_example(name):
    return load_script(EXAMPLES, name)


def test_custom_model_estimates_match_exact_log_px():
    results = load_example("custom_model").main(steps=150, num_data=500, verbose=False)
    for name, (exact, estimate) in results.items():
        # The importance-sampled estimate of a learned model lies within 5 Monte Carlo standard errors (plus the
        # O(1/K) bias of the log) of that model's exact log p(x), and above its ELBO.
        assert abs(estimate.mean - exact) < 5 * estimate.mc_stderr_of_mean + 0.01, name
        assert estimate.elbo_mean < estimate.mean, name


def test_custom_components_work_from_python_config_and_the_command_line(tmp_path):
    import json
    import subprocess
    import sys

    report = load_example("custom_components").main(epochs=2, progress=False)
    assert report["elbo"] < report["log_px"] < 0 and report["data_representation"] == "continuous"
    plugin = os.path.join(EXAMPLES, "custom_components.py")
    out = str(tmp_path / "run")
    command = [sys.executable, "-m", "pyro_vae.cli"]
    repository = {**os.environ, "PYTHONPATH": os.path.dirname(EXAMPLES)}  # this checkout's pyro_vae, from tmp_path
    train = ["train", "--plugin", plugin, "--prior", "wide-normal", "--prior-options", '{"scale": 3.0}']
    train += ["--likelihood", "cauchy", "--dataset", "linear-gaussian", "--num-train", "300", "--epochs", "1"]
    subprocess.run(
        [*command, *train, "--no-progress", "--out", out], check=True, capture_output=True, cwd=tmp_path, env=repository
    )
    evaluate = ["evaluate", out, "--num-samples", "20", "--posterior-examples", "--no-progress"]
    unnamed = subprocess.run([*command, *evaluate], capture_output=True, text=True, cwd=tmp_path, env=repository)
    assert unnamed.returncode == 2 and f"add --plugin {plugin}" in unnamed.stderr  # config.json only records it
    subprocess.run(
        [*command, *evaluate, "--plugin", plugin], check=True, capture_output=True, cwd=tmp_path, env=repository
    )
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    assert config["plugins"] == [os.path.abspath(plugin)] and config["model"]["prior"]["options"] == {"scale": 3.0}


def test_score_and_reparameterization_gradients_match_the_analytic_answers():
    import math

    import torch

    toy = load_example("score_vs_reparameterization")
    generator = torch.Generator().manual_seed(0)
    n = 200_000
    problems = [(toy.square, toy.analytic_square, theta) for theta in (-1.0, 0.5, 2.0)]
    problems += [(toy.sine(2.0), lambda t: toy.analytic_sine(t, 2.0), theta) for theta in (0.3, 1.0)]
    for f, analytic, theta in problems:
        exact = analytic(theta)
        for name in ("score", "reparameterization"):
            draws = toy.gradient_draws(f, theta, n, name, generator)
            stderr = draws.std().item() / math.sqrt(n)
            assert abs(draws.mean().item() - exact["mean"]) < 4 * stderr, (name, theta)
            assert draws.var().item() == pytest.approx(exact[name], rel=0.06), (name, theta)
    # x^2: the reparameterized estimator has the lower variance; sin(2x): the score function has
    assert toy.analytic_square(0.0)["reparameterization"] < toy.analytic_square(0.0)["score"]
    assert toy.analytic_sine(1.0, 2.0)["score"] < toy.analytic_sine(1.0, 2.0)["reparameterization"]


def test_score_vs_reparameterization_figure_is_written(tmp_path):
    import matplotlib.image

    path = load_example("score_vs_reparameterization").figure(str(tmp_path / "toy.png"), num_draws=500)
    assert matplotlib.image.imread(path).shape[0] > 300


def test_beta_sweep_trades_rate_for_distortion(tmp_path):
    from pyro_vae.compare import run_comparison

    rd = load_example("rate_distortion")
    grid = rd.sweep_grid(epochs=15, seeds=[0], betas=[0.25, 1.0, 4.0], likelihoods=["gaussian", "laplace"])
    curves = rd.curves(run_comparison(grid, str(tmp_path / "sweep"), progress=False, pictures=False))
    for likelihood, c in curves.items():
        assert c["beta"] == [0.25, 1.0, 4.0]
        assert all(a > b for a, b in zip(c["rate"], c["rate"][1:])), (likelihood, c["rate"])
        assert all(a < b for a, b in zip(c["distortion"], c["distortion"][1:])), (likelihood, c["distortion"])
        assert all(a < b for a, b in zip(c["mse"], c["mse"][1:])), (likelihood, c["mse"])


def test_delta_guide_is_a_plain_autoencoder_evaluated_with_the_prior(tmp_path):
    from pyro_vae.compare import run_comparison

    rd = load_example("rate_distortion")
    result = run_comparison(rd.autoencoder_grid(epochs=3, seeds=[0]), str(tmp_path / "ae"), progress=False,
                            pictures=False)  # fmt: skip
    assert not result["failures"]
    for row in result["runs"]:
        assert row["method"] == "is-prior" and row["kl"] is None and math.isfinite(row["distortion"])


def test_decoder_bandit_example_runs_in_a_quick_mode(tmp_path):
    import json

    results = load_example("decoder_bandit").main(
        ["--dataset", "digits", "--steps", "40", "--out", str(tmp_path), "--figure", str(tmp_path / "b.png"),
         "--no-progress"]
    )  # fmt: skip
    assert set(results) == {"ucb1", "thompson", "epsilon-greedy", "uniform"}
    assert all(sum(r["pulls"]) == 40 and len(r["val_elbo"]) == 4 for r in results.values())
    with open(tmp_path / "bandit.json") as f:
        assert json.load(f)["uniform"]["pulls"] == [10, 10, 10, 10]
    assert os.path.getsize(tmp_path / "b.png") > 0


def test_latent_space_example_runs_and_the_vae_grid_is_smoother(tmp_path):
    latent = load_example("latent_space")
    results = latent.main(["--epochs", "30", "--out", str(tmp_path), "--figure", str(tmp_path / "l.png"),
                           "--no-progress"])  # fmt: skip
    vae, autoencoder = results["VAE"], results["autoencoder"]
    assert vae["codes"].shape == (179, 2) and vae["grid"].shape == (12, 12, 64) and vae["paths"].shape == (5, 10, 64)
    # neighbouring codes of the VAE's prior grid decode to closer images than the autoencoder's
    assert latent.smoothness(vae["grid"]) < latent.smoothness(autoencoder["grid"])
    assert os.path.getsize(tmp_path / "l.png") > 0
    assert latent.digit_labels("test").shape == (179,)


def test_compare_estimators_example_is_a_grid_of_the_compare_api(tmp_path):
    from pyro_vae.compare import run_comparison

    example = load_example("compare_estimators")
    grid = example.estimator_grid(["elbo", "iwae"], num_particles=2, epochs=1, num_samples=20, seeds=[0])
    assert [cell.label for cell in grid.expand()] == ["estimator=elbo", "estimator=iwae"]
    result = run_comparison(grid, str(tmp_path), progress=False, pictures=False)
    assert not result["failures"] and [s["seeds"] for s in result["cells"]] == [1, 1]


def test_rate_distortion_example_runs_in_a_quick_mode(tmp_path):
    rd, autoencoder = load_example("rate_distortion").main(
        ["--epochs", "1", "--seeds", "0", "--out", str(tmp_path), "--figure", str(tmp_path / "rd.png"), "--no-progress"]
    )
    assert set(rd) == set(autoencoder) == {"gaussian", "laplace"}
    assert all(len(c["rate"]) == 5 for c in rd.values())
    assert os.path.getsize(tmp_path / "rd.png") > 0
