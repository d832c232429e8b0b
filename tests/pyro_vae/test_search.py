"""`pyro-vae search`: a 3-trial Optuna study on digits completes, resumes, and reports its best trial."""

import json
import os
import subprocess
import sys

import pytest

from pyro_vae.config import ConfigError, RunConfig, apply_overrides
from pyro_vae.search import parse_space, run_search
from tests.conftest import require_module


def optuna_or_fail():
    require_module("optuna", "pip install -e '.[search]'")


def base():
    return apply_overrides(
        RunConfig(),
        [("data.num_train", 300), ("data.num_val", 60), ("train.epochs", 2), ("model.latent_dim", 3)],
    )


SPACE = dict(
    parse_space(text)
    for text in ("train.optimizer.options.lr=loguniform(1e-4,1e-2)", "train.batch_size=choice(50,100)")
)


def test_three_trial_study_completes_resumes_and_reports_the_best_trial(tmp_path):
    optuna_or_fail()
    out = str(tmp_path / "search")
    first = run_search(base(), SPACE, out, num_trials=2, progress=False)
    assert sum(first["counts"].values()) == 2
    resumed = run_search(base(), SPACE, out, num_trials=3, progress=False)  # the same study, one trial more
    assert [t["number"] for t in resumed["trials"]] == [0, 1, 2]
    assert resumed["trials"][:2] == first["trials"][:2]  # the first two are kept, not rerun
    complete = [t for t in resumed["trials"] if t["state"] == "COMPLETE"]
    best = max(complete, key=lambda t: t["value"])
    assert resumed["best"]["number"] == best["number"] and resumed["best"]["value"] == best["value"]
    with open(os.path.join(out, best["run_dir"], "metrics.json")) as f:
        assert json.load(f)[-1]["val_log_px"] == best["value"]  # the objective is the run's own validation bound
    with open(os.path.join(out, best["run_dir"], "config.json")) as f:
        config = json.load(f)
    assert config["train"]["optimizer"]["options"]["lr"] == best["params"]["train.optimizer.options.lr"]
    assert os.path.getsize(os.path.join(out, "plots", "history.png")) > 0
    again = run_search(base(), SPACE, out, num_trials=3, progress=False)  # complete: nothing more runs
    assert len(again["trials"]) == 3


def test_search_command_line(tmp_path):
    optuna_or_fail()
    out = str(tmp_path / "cli")
    command = [sys.executable, "-m", "pyro_vae.cli", "search", "--dataset", "digits", "--num-train", "200"]
    command += ["--epochs", "1", "--trials", "1", "--space", "model.latent_dim=int(2,4)", "--no-progress"]
    done = subprocess.run(command + ["--out", out], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "best trial 0" in done.stdout


@pytest.mark.parametrize(
    "text, message",
    [
        ("lr=1e-3", "is not PATH=DISTRIBUTION"),
        ("train.optimizer.options.lr=loguniform(0,1)", "LOW > 0"),
        ("model.latent_dim=int(5,2)", "LOW < HIGH"),
    ],
)
def test_bad_search_spaces_are_refused(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_space(text)


def test_a_space_path_that_does_not_exist_is_refused_before_any_trial(tmp_path):
    optuna_or_fail()
    with pytest.raises(ConfigError, match="search space 'model.latent_dims'"):
        run_search(base(), dict([parse_space("model.latent_dims=int(2,4)")]), str(tmp_path / "s"), num_trials=1)
    assert not (tmp_path / "s" / "study.db").exists()
