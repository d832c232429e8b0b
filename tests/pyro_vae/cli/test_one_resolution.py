"""Each command resolves its run once: the configuration is checked once (`pyro_vae.config.check`, which builds
every component's options and the log p(x) method) and the run's `config.json` is read at most once."""

import builtins
import os

import pytest

import pyro_vae.config
from pyro_vae.cli.main import main

SMALL = ["--dataset", "digits", "--hidden-sizes", "32", "--latent-dim", "2", "--num-train", "200", "--no-progress"]


@pytest.fixture
def count(monkeypatch):
    """``count()`` -> ``{"checks", "config_reads"}`` since the last call."""
    counts = {"checks": 0, "config_reads": 0}
    check, open_file = pyro_vae.config.check, builtins.open

    def counted_check(config):
        counts["checks"] += 1
        return check(config)

    def counted_open(file, mode="r", *args, **kwargs):
        if os.path.basename(str(file)) == "config.json" and "r" in mode:
            counts["config_reads"] += 1
        return open_file(file, mode, *args, **kwargs)

    monkeypatch.setattr(pyro_vae.config, "check", counted_check)
    monkeypatch.setattr(builtins, "open", counted_open)

    def take():
        taken = dict(counts)
        counts.update(checks=0, config_reads=0)
        return taken

    return take


def test_train_resume_evaluate_and_sample_each_check_the_configuration_once(tmp_path, count, capsys):
    out = str(tmp_path / "run")
    assert main(["train", *SMALL, "--epochs", "1", "--out", out]) == 0
    assert count() == {"checks": 1, "config_reads": 0}

    assert main(["train", "--resume", "--out", out, "--epochs", "2", "--no-progress"]) == 0
    assert count() == {"checks": 1, "config_reads": 1}

    assert main(["evaluate", out, "--num-samples", "5", "--posterior-examples", "--no-progress"]) == 0
    assert count() == {"checks": 1, "config_reads": 1}

    assert main(["sample", out, "--num-samples", "4"]) == 0
    assert count() == {"checks": 1, "config_reads": 1}


def test_a_config_file_with_flags_is_checked_once(tmp_path, count):
    path = tmp_path / "run.toml"
    path.write_text('[train]\nepochs = 1\n[model]\nlatent_dim = 2\n[data]\nname = "digits"\nnum_train = 200\n')
    assert (
        main(["train", "--config", str(path), "--hidden-sizes", "32", "--out", str(tmp_path / "r"), "--no-progress"])
        == 0
    )
    assert count() == {"checks": 1, "config_reads": 0}
