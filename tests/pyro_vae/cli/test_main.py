"""End-to-end runs of the ``pyro-vae`` command line on real data."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from PIL import Image

from pyro_vae.cli.main import build_parser, main
from tests.conftest import require_fashion_mnist

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

SMALL = ["--hidden-sizes", "64", "--latent-dim", "4", "--no-progress"]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("runs") / "digits")
    assert main(["train", "--dataset", "digits", "--epochs", "8", "--out", out, *SMALL]) == 0
    return out


def test_train_writes_config_metrics_and_checkpoint(digits_run):
    with open(os.path.join(digits_run, "config.json")) as f:
        config = json.load(f)
    assert config["data"]["name"] == "digits" and config["train"]["epochs"] == 8
    assert config["model"]["encoder"]["options"]["hidden_sizes"] == [64]
    with open(os.path.join(digits_run, "metrics.json")) as f:
        metrics = json.load(f)
    assert [m["epoch"] for m in metrics] == list(range(1, 9))
    assert all(m["seconds"] > 0 for m in metrics)
    assert metrics[-1]["val_elbo"] > metrics[0]["val_elbo"]
    state = torch.load(os.path.join(digits_run, "checkpoint.pt"), weights_only=True)
    assert state["epoch"] == 8 and "config" not in state  # config.json is the run's one copy of its configuration


def test_evaluate_reports_log_px_above_elbo(digits_run, capsys):
    assert main(["evaluate", digits_run, "--num-samples", "200", "--no-progress"]) == 0
    with open(os.path.join(digits_run, "eval", "is-test.json")) as f:
        report = json.load(f)
    for key in ("log_px", "log_px_stderr", "elbo", "num_samples", "num_examples", "dataset", "split"):
        assert key in report
    assert report["num_samples"] == 200 and report["num_examples"] == 179
    assert report["dataset"] == "digits" and report["split"] == "test"
    assert report["elbo"] < report["log_px"] < 0
    assert 0 < report["log_px_stderr"] < 2
    assert "log p(x) ~ " in capsys.readouterr().out


def test_evaluate_with_ais_writes_netcdf_that_arviz_opens(digits_run):
    import arviz

    args = ["--method", "ais", "--ais-steps", "20", "--ais-chains", "4", "--ais-leapfrog-steps", "5"]
    assert main(["evaluate", digits_run, *args, "--posterior-examples", "0", "5", "--no-progress"]) == 0
    with open(os.path.join(digits_run, "eval", "ais-test.json")) as f:
        report = json.load(f)
    assert report["method"] == "ais" and report["method_options"]["num_steps"] == 20 and report["num_samples"] == 4
    assert report["elbo"] < report["log_px"] < 0
    assert len(report["kl_per_dimension"]) == 4 and report["kl"] == pytest.approx(sum(report["kl_per_dimension"]))
    assert 0 <= report["active_units"] <= 4
    data = arviz.from_netcdf(os.path.join(digits_run, report["inference_data"]))
    per_example = data.log_marginal_likelihood
    assert per_example.sizes["example"] == 179
    assert float(per_example.log_px.mean()) == pytest.approx(report["log_px"], rel=1e-6)
    assert data.posterior.z.shape == (1, 200, 2, 4)  # chain, draw, chosen example, latent dimension


def test_sample_writes_image_grids(digits_run):
    assert main(["sample", digits_run, "--num-samples", "16", "--nrow", "4"]) == 0
    for name in ("samples.png", "reconstructions.png"):
        with Image.open(os.path.join(digits_run, name)) as image:
            width, height = image.size
        assert width == 4 * (8 * 14 + 2) + 2  # four 8x8 images, upscaled 14x, with 2-pixel padding
        assert height >= 4 * 8 * 14


def test_resume_continues_to_more_epochs(tmp_path):
    out = str(tmp_path / "run")
    assert main(["train", "--dataset", "digits", "--epochs", "2", "--out", out, *SMALL]) == 0
    assert main(["train", "--dataset", "digits", "--epochs", "3", "--out", out, *SMALL]) == 2  # no --resume
    assert main(["train", "--epochs", "4", "--out", out, "--resume", "--no-progress"]) == 0  # nothing retyped
    with open(os.path.join(out, "metrics.json")) as f:
        assert [m["epoch"] for m in json.load(f)] == [1, 2, 3, 4]
    assert main(["train", "--epochs", "5", "--lr", "0.1", "--out", out, "--resume", "--no-progress"]) == 2


def test_synthetic_data_reports_the_generating_models_exact_log_px(tmp_path):
    from pyro_vae.data.datasets import load_dataset

    out = str(tmp_path / "lg")
    args = ["--dataset", "linear-gaussian", "--likelihood", "gaussian", "--num-train", "500", "--num-test", "50"]
    assert main(["train", *args, "--epochs", "2", "--latent-dim", "2", "--out", out, "--no-progress"]) == 0
    assert main(["evaluate", out, "--num-samples", "50", "--posterior-examples", "--no-progress"]) == 0
    with open(os.path.join(out, "eval", "is-test.json")) as f:
        report = json.load(f)
    splits = load_dataset("linear-gaussian", seed=0, num_test=50)
    exact = splits.source.log_marginal(splits.test).mean().item()
    assert report["generating_model_log_px"] == pytest.approx(exact, rel=1e-6)
    assert report["log_px"] < exact  # two epochs from scratch are far from the generating model


def test_errors_name_the_problem_and_the_fix(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "pyro-vae train" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "x"), "--dataset", "nope"]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err
    out = str(tmp_path / "lg")
    assert main(["train", "--dataset", "linear-gaussian", "--likelihood", "bernoulli", "--out", out, *SMALL]) == 2
    assert "--likelihood gaussian" in capsys.readouterr().err


def test_every_option_is_explained():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.choices and "train" in a.choices).choices
    for name, sub in subparsers.items():
        for action in sub._actions:
            assert action.help, f"`pyro-vae {name} {action.option_strings}` has no help text"


def test_console_script_help():
    exe = shutil.which("pyro-vae")
    command = [exe] if exe else [sys.executable, "-m", "pyro_vae.cli"]
    out = subprocess.run([*command, "--help"], capture_output=True, text=True, check=True).stdout
    for sub in ("train", "evaluate", "sample"):
        assert sub in out


def test_fashion_mnist_subset_end_to_end(tmp_path):
    require_fashion_mnist()
    out = str(tmp_path / "fmnist")
    args = ["--dataset", "fashion-mnist", "--num-train", "500", "--num-val", "100", "--num-test", "100"]
    assert main(["train", *args, "--epochs", "2", "--batch-size", "50", "--out", out, *SMALL]) == 0
    assert main(["evaluate", out, "--num-samples", "20", "--no-progress"]) == 0
    with open(os.path.join(out, "eval", "is-test.json")) as f:
        report = json.load(f)
    assert report["num_examples"] == 100 and report["dataset"] == "fashion-mnist"
    # 784 binary pixels: far below 0 nats and far above the uniform model's -784 log 2 = -543.4
    assert -543.4 < report["elbo"] < report["log_px"] < -100
    assert main(["sample", out, "--num-samples", "16"]) == 0


TINY = ["--epochs", "1", "--num-train", "200", "--num-val", "50", "--num-test", "50", *SMALL]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--prior", "bernoulli", "--prior-options", '{"learnd": true}'], "Did you mean 'learned'? Valid options"),
        (["--set", "train.epochs=abc"], "'train.epochs' must be an integer, got 'abc'"),
        (["--set", "model.prior=bernoulli", "--set", "model.prior.options.probs=high"], "must be a number"),
        (["--set", "trian.epochs=2"], "Did you mean 'train'?"),
        (["--set", "train.epochs"], "is not PATH=VALUE"),
        (["--epochs", "abc"], "argument --epochs: invalid int value: 'abc'"),
        (["--latent-dim"], "argument --latent-dim: expected one argument"),
        (["--estimator", "iwea"], "Did you mean 'iwae'?"),
        (["--estimator", "vimco", "--num-particles", "1"], "num_particles must be an integer >= 2"),
        (["--lr", "inf"], "must be a positive finite number"),
        (["--num-particles", "0"], "num_particles must be an integer >= 1"),
        (["--estimator-options", '{"kl_weight": 1e999}'], "kl_weight must be a finite number >= 0"),
        (["--set", "eval.method.options.num_samples=0"], "num_samples must be a positive integer"),
        (["--set", "train.on_non_finite=retry"], "on_non_finite must be 'stop' or 'rollback'"),
        (["--dataset", "missing-file.npy"], "no data file 'missing-file.npy'"),
        (["--estimator", "iwae-dreg", "--prior", "bernoulli", "--guide", "bernoulli"], "needs reparameterized"),
        (["--batch-size", "5000"], "larger than the 200 training examples"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--likelihood", "gaussian", "--likelihood-scale", "wide"], "'learned' or 'learned-global'"),
        (["--dataset", "linear-gaussian"], "choose --likelihood gaussian"),
        (["--estimator", "elbo-analytic-kl", "--prior", "vamp"], "use 'elbo', which estimates the KL by Monte Carlo"),
        (["--likelihood", "beta"], "outside the support of the 'beta' likelihood"),  # digits have exact 0s
        (["--estimator", "elbo-analytic-kl", "--set", "model.top_latent_dim=2"], "in the model's order, or use 'elbo'"),
        (["--prior", "bernoulli", "--guide", "bernoulli", "--set", "model.top_latent_dim=2"], "a continuous guide"),
        (["--set", "model.top_latent_dim=0"], "must be positive"),
        (["--plugin", "no-such-plugin.py"], "no plugin file"),
        (["--set", "model.top_latent_dim=2", "--prior", "vamp"], "with two stochastic layers the prior is on z2"),
        (["--estimator", "iwae-dreg", "--guide", "iaf"], "cannot detach the parameters of AffineAutoregressive"),
        (["--config", "missing.toml"], "no configuration file"),
    ],
)
def test_every_refusal_is_one_paragraph_and_leaves_no_folder(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    assert main(["train", *TINY, *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("pyro-vae train: error: ") and "\n" not in err
    assert "Traceback" not in err and not out.exists()


def test_vimco_takes_its_own_number_of_particles(tmp_path):
    out = tmp_path / "vimco"
    assert main(["train", *TINY, "--estimator", "vimco", "--out", str(out)]) == 0
    from inference import VIMCO

    with open(out / "config.json") as f:
        assert json.load(f)["train"]["estimator"] == {"name": "vimco", "options": {}}
    assert VIMCO().num_particles == 5


def test_config_file_then_flags_then_set(tmp_path):
    config = tmp_path / "experiment.toml"
    config.write_text(
        """
[data]
name = "digits"
num_train = 200

[model]
latent_dim = 3
prior = { name = "bernoulli", options = { learned = true } }
guide = "bernoulli"

[train]
estimator = { name = "vimco", options = { num_particles = 3 } }
epochs = 1
"""
    )
    out = tmp_path / "run"
    args = ["--config", str(config), "--epochs", "2", "--set", "train.estimator.options.num_particles=4"]
    assert main(["train", *args, "--hidden-sizes", "16", "--no-progress", "--out", str(out)]) == 0
    with open(out / "config.json") as f:
        saved = json.load(f)
    assert saved["model"]["prior"] == {"name": "bernoulli", "options": {"learned": True}}
    assert saved["model"]["latent_dim"] == 3 and saved["train"]["epochs"] == 2
    assert saved["train"]["estimator"] == {"name": "vimco", "options": {"num_particles": 4}}
    assert saved["model"]["decoder"]["options"]["hidden_sizes"] == [16]


def test_compare_lays_config_over_the_grid_files_base_then_flags(tmp_path):
    """The base of `compare --grid G --config C` is the grid's [base], then C's keys, then the flags (as its help
    says): C's sections change only the keys they hold, and a component C names replaces the grid's whole."""
    from pyro_vae.cli.compare import compare_grid

    (tmp_path / "grid.toml").write_text(
        """
[base]
data = { num_train = 200, num_val = 30 }
model = { latent_dim = 3, prior = { name = "vamp", options = { num_pseudo_inputs = 7 } } }

[grid]
"train.estimator" = ["elbo", "iwae"]
"""
    )
    (tmp_path / "c.toml").write_text('[data]\nnum_val = 40\n\n[model]\nprior = "mixture"\n\n[train]\nepochs = 1\n')
    args = ["compare", "--out", "x", "--grid", str(tmp_path / "grid.toml"), "--config", str(tmp_path / "c.toml")]
    base = compare_grid(build_parser().parse_args([*args, "--epochs", "2"])).base
    assert (base["data"]["num_train"], base["data"]["num_val"], base["model"]["latent_dim"]) == (200, 40, 3)
    assert base["model"]["prior"] == {"name": "mixture", "options": {}} and base["train"]["epochs"] == 2


def test_list_json_gives_every_component_with_options_and_defaults(capsys):
    assert main(["list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    components = listing["components"]
    assert components["model.prior"]["bernoulli"]["options"] == {"probs": 0.5, "learned": False}
    assert components["train.estimator"]["vimco"]["options"]["num_particles"] == 5
    assert components["eval.method"]["is"]["options"] == {
        "num_samples": 5000,
        "particle_batch_size": "auto",
        "vectorize_particles": True,
    }
    assert "latent_dim" not in components["model.guide"]["diagonal-normal"]["options"]  # the run supplies it
    assert all(entry["doc"] for table in components.values() for entry in table.values())
    assert listing["defaults"]["train"]["optimizer"] == {"name": "adam", "options": {"lr": 0.001}}
    assert "digits" in listing["datasets"]


def _list_json(cache, *extra):
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    code = (
        f"import sys\nfrom pyro_vae.cli import main\nmain(['list', '--json', *{list(extra)!r}])\n"
        "print('torch imported' if 'torch' in sys.modules else 'no torch', file=sys.stderr)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr[-800:]
    return json.loads(result.stdout), result.stderr.strip().splitlines()[-1]


def test_list_is_what_the_registries_hold_now_and_cached_without_torch(tmp_path):
    """`list` builds the catalogue from the registries once per version of the sources, then reads it from the
    cache without importing torch; nothing is regenerated by hand."""
    from pyro_vae.cli.catalogue import build_catalogue

    first, imported = _list_json(tmp_path)
    assert first == build_catalogue() and imported == "torch imported"
    again, imported = _list_json(tmp_path)
    assert again == first and imported == "no torch"
    (cached,) = (tmp_path / "pyro-vae").glob("catalogue-*.json")
    cached.write_text('{"a": "catalogue of another shape"}')  # damaged, or of another version: built again
    (tmp_path / "pyro-vae" / "catalogue-of-older-sources.json").write_text("{}")
    rebuilt, imported = _list_json(tmp_path)
    assert rebuilt == first and imported == "torch imported"
    assert [path.name for path in (tmp_path / "pyro-vae").iterdir()] == [cached.name]  # the older one is gone


def test_a_changed_source_changes_the_catalogues_fingerprint(tmp_path):
    from pyro_vae.cli.catalogue import source_fingerprint

    (tmp_path / "priors.py").write_text("A = 1\n")
    before = source_fingerprint([str(tmp_path)])
    (tmp_path / "priors.py").write_text("A = 2\n")
    edited = source_fingerprint([str(tmp_path)])
    (tmp_path / "new_prior.py").write_text("")
    added = source_fingerprint([str(tmp_path)])
    assert len({before, edited, added}) == 3


def test_list_names_a_plugins_components(tmp_path):
    listing, _ = _list_json(tmp_path, "--plugin", "examples/custom_components.py")
    assert "wide-normal" in listing["components"]["model.prior"]
    assert "cauchy" in listing["components"]["model.likelihood"]


def test_list_and_help_do_not_import_torch(tmp_path):
    _list_json(tmp_path)  # the catalogue is built once per version of the sources
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    for command in (["list"], ["list", "--json"], ["--help"], ["train", "--help"]):
        code = (
            f"import sys\nfrom pyro_vae.cli import main\ntry:\n    main({command!r})\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        assert result.returncode == 0, (command, result.stderr[-500:])


def test_evaluate_refuses_bad_sample_numbers_in_one_line(digits_run, capsys):
    assert main(["evaluate", digits_run, "--num-samples", "0", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "num_samples must be a positive integer" in err and "\n" not in err


def test_evaluate_warns_when_the_weights_cannot_be_trusted(digits_run, capsys):
    assert main(["evaluate", digits_run, "--num-samples", "3", "--split", "val", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "pyro-vae evaluate: warning: the median effective sample size is" in err and "--method ais" in err
    with open(os.path.join(digits_run, "eval", "is-val.json")) as f:
        assert any("effective sample size" in w for w in json.load(f)["warnings"])


def test_data_outside_the_likelihoods_support_is_refused(tmp_path, monkeypatch, capsys):
    import numpy as np
    import pyro.distributions as dist

    from pyro_vae.components.likelihoods import LIKELIHOODS, GaussianLikelihood

    class PositiveLikelihood(GaussianLikelihood):
        """A log-normal likelihood (positive data only), registered for this test."""

        def forward(self, decoder_output):
            return dist.LogNormal(decoder_output, self.scale().to(decoder_output)).to_event(1)

    monkeypatch.setitem(LIKELIHOODS._builders, "log-normal-test", PositiveLikelihood)
    path = tmp_path / "signed.npy"
    np.save(path, np.random.default_rng(0).normal(size=(60, 4)))
    out = tmp_path / "run"
    args = ["--dataset", str(path), "--likelihood", "log-normal-test", "--batch-size", "10", "--no-progress"]
    assert main(["train", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "outside the support of the 'log-normal-test' likelihood" in err and not out.exists()


def test_help_starts_without_loading_torch():
    code = "import sys; from pyro_vae.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_values_outside_zero_one_are_refused_for_the_continuous_bernoulli(tmp_path, capsys):
    import numpy as np

    path = tmp_path / "wide.npy"
    np.save(path, np.random.default_rng(0).normal(0.5, 1.0, size=(60, 4)))
    out = tmp_path / "run"
    args = ["--dataset", str(path), "--likelihood", "continuous-bernoulli", "--batch-size", "10", "--no-progress"]
    assert main(["train", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "outside the support of the 'continuous-bernoulli' likelihood" in err and not out.exists()


def test_a_plugin_that_fails_to_load_is_one_line(tmp_path, capsys):
    plugin = tmp_path / "broken.py"
    plugin.write_text("def broken(:\n")
    assert main(["train", *TINY, "--plugin", str(plugin), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "failed to load: SyntaxError" in err and "\n" not in err and not (tmp_path / "run").exists()
