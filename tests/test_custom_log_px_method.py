"""examples/custom_log_px_method.py: a log p(x) method written as one class works from Python and from the command
line, and nothing else in the project needs to know its name."""

import json
import math
import os
import subprocess
import sys

import pyro
import pytest
import torch

from inference import LOG_PX_METHODS, LogPxMethod, log_marginal_likelihood
from pyro_vae.data.linear_gaussian import LinearGaussian
from tests.conftest import load_script

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
PLUGIN = os.path.join(EXAMPLES, "custom_log_px_method.py")


@pytest.fixture(scope="module")
def defensive():
    """The example loaded, its registration undone afterwards: other tests see the built-in methods alone."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LOG_PX_METHODS, "_builders", dict(LOG_PX_METHODS._builders))
        yield load_script(EXAMPLES, "custom_log_px_method")


def test_every_built_in_method_declares_what_a_method_provides():
    for name in LOG_PX_METHODS.names():
        method = LOG_PX_METHODS.build(name)
        assert isinstance(method, LogPxMethod) and method.name == name and method.num_draws >= 1
    assert LOG_PX_METHODS.get("ais").draws_name == "chains" and LOG_PX_METHODS.get("is").draws_name == "samples"
    assert LOG_PX_METHODS.build("is").needs_guide_density and not LOG_PX_METHODS.build("is-prior").needs_guide_density
    assert not LOG_PX_METHODS.build("ais", proposal="prior").needs_guide_density
    assert not LOG_PX_METHODS.build("exact").monte_carlo


def _within(a, b, stderr, bias):
    """``|a - b|`` within 4 standard errors plus the bias of the log."""
    return abs(a - b) < 4 * stderr + bias


def _log_bias(result):
    """The bias of ``log p_K``, ``E[log p_K] - log p ~ -Var(p_K) / (2 p^2)`` (delta method), averaged over examples:
    half the mean squared per-example Monte Carlo error."""
    return 0.5 * result.mc_stderr.pow(2).mean().item()


def test_defensive_importance_sampling_agrees_with_the_exact_log_px_and_with_is(defensive, float64):
    lg = LinearGaussian.random(data_dim=5, latent_dim=2, sigma=0.5, seed=0)
    x = lg.sample(100, seed=1)
    guide = lg.shifted_guide(shift=0.2, scale_factor=1.5)  # a fair guide: "is" and its errors can be trusted
    exact = lg.log_marginal(x).mean().item()
    pyro.set_rng_seed(0)
    ours = log_marginal_likelihood(lg.model, guide, x, method="is-defensive", num_samples=1000, alpha=0.8)
    plain = log_marginal_likelihood(lg.model, guide, x, method="is", num_samples=1000)
    assert (
        ours.method == "is-defensive"
        and ours.num_samples == 1000
        and ours.mc_stderr_reliable
        and plain.mc_stderr_reliable
    )
    assert _within(ours.mean, exact, ours.mc_stderr_of_mean, _log_bias(ours))
    both = math.hypot(ours.mc_stderr_of_mean, plain.mc_stderr_of_mean)
    assert _within(ours.mean, plain.mean, both, _log_bias(ours) + _log_bias(plain))
    assert (ours.elbo < ours.log_px).all() and ours.elbo_mean < exact


def test_the_prior_in_the_mixture_rescues_a_guide_whose_tails_are_too_light(defensive):
    exact, results = defensive.main(num_samples=1000, num_data=50, scale_factor=0.3)
    plain, ours = exact - results["is"].mean, exact - results["is-defensive"].mean
    assert plain > 0.3 and ours < plain / 3  # "is" lies far below log p(x); the mixture's weights are bounded


def test_what_it_cannot_use_is_refused_by_name(defensive):
    from pyro.infer.autoguide import AutoDiagonalNormal

    lg = LinearGaussian.random(data_dim=5, latent_dim=2, sigma=0.5, seed=0)
    x = lg.sample(10, seed=1)
    for alpha in (0, 1, 1.5):
        with pytest.raises(ValueError, match="alpha must lie strictly between 0 and 1"):
            LOG_PX_METHODS.build("is-defensive", alpha=alpha)

    def point_mass(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", pyro.distributions.Delta(torch.zeros(x.shape[0], 2), event_dim=1))

    with pytest.raises(ValueError, match="guide site 'z' is a point mass"):
        log_marginal_likelihood(lg.model, point_mass, x, method="is-defensive", num_samples=10)
    autoguide = AutoDiagonalNormal(lg.model)
    with pytest.raises(ValueError, match="must draw exactly the model's latent sites"):
        log_marginal_likelihood(lg.model, autoguide, x, method="is-defensive", num_samples=10, data_batch_size=None)


def test_the_command_line_evaluates_with_a_method_a_plugin_registers(tmp_path):
    out = str(tmp_path / "run")
    command = [sys.executable, "-m", "pyro_vae.cli"]
    repository = {**os.environ, "PYTHONPATH": os.path.dirname(EXAMPLES)}  # this checkout's pyro_vae, from tmp_path
    train = ["train", "--dataset", "digits", "--epochs", "1", "--hidden-sizes", "16", "--latent-dim", "2"]
    subprocess.run([*command, *train, "--no-progress", "--out", out], check=True, cwd=tmp_path, env=repository)
    evaluate = ["evaluate", out, "--method", "is-defensive", "--num-samples", "50", "--method-options"]
    evaluate += ['{"alpha": 0.8}', "--posterior-examples", "--no-progress"]
    unnamed = subprocess.run([*command, *evaluate], capture_output=True, text=True, cwd=tmp_path, env=repository)
    assert unnamed.returncode == 2 and "unknown log p(x) method 'is-defensive'" in unnamed.stderr
    named = subprocess.run(
        [*command, *evaluate, "--plugin", PLUGIN], capture_output=True, text=True, cwd=tmp_path, env=repository
    )
    assert named.returncode == 0, named.stderr
    assert "(is-defensive, 50 samples per example)" in named.stdout
    with open(os.path.join(out, "eval", "is-defensive-test.json")) as f:
        report = json.load(f)
    assert report["method"] == "is-defensive" and report["method_options"] == {"alpha": 0.8, "num_samples": 50}
    assert report["num_samples"] == 50 and report["elbo"] < report["log_px"] < 0


def test_a_point_mass_guide_is_refused_by_what_the_method_declares(defensive, tmp_path):
    from pyro_vae.config import ConfigError, RunConfig, apply_overrides
    from pyro_vae.runs import train_run

    assert LOG_PX_METHODS.build("is-defensive").needs_guide_density  # LogPxMethod's default, not its name
    config = apply_overrides(
        RunConfig(),
        [
            ("data.num_train", 100),
            ("model.latent_dim", 2),
            ("model.guide", "delta"),
            ("eval.method", {"name": "is-defensive", "options": {"num_samples": 10}}),
            ("device", "cpu"),
        ],
    )
    with pytest.raises(ConfigError, match="point mass.*eval.method=is-prior"):
        train_run(config, str(tmp_path / "run"), progress=False)
    assert not (tmp_path / "run").exists()
