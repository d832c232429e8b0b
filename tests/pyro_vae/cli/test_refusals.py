"""Refusals that change nothing and advise a command that then works; run folders that run no code (issue 23).

Each refused command is checked to leave every file of its folder as it was, and the fix its message suggests is
run to show that it works.
"""

import hashlib
import json
import os
import shutil

import pytest

from pyro_vae.cli.main import main

TINY = ["--epochs", "2", "--num-train", "200", "--num-val", "50", "--num-test", "40"]
TINY += ["--hidden-sizes", "16", "--latent-dim", "3", "--no-progress"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("runs") / "trained")
    assert main(["train", *TINY, "--out", out]) == 0
    return out


@pytest.fixture
def run(trained, tmp_path):
    """A copy of a finished two-epoch run, for one test to change."""
    return str(shutil.copytree(trained, tmp_path / "run"))


def folder_files(folder) -> dict:
    """``{relative path: sha256}`` of every file under ``folder``."""
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return files


def refused(argv, capsys) -> str:
    """The one-line error of a command that must be refused with exit status 2."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_a_run_folder_runs_no_plugin_the_command_line_does_not_name(run, tmp_path, capsys):
    marker = tmp_path / "ran"
    plugin = tmp_path / "planted.py"
    plugin.write_text(f"open({str(marker)!r}, 'w').close()\n")
    config_path = os.path.join(run, "config.json")
    with open(config_path) as f:
        config = json.load(f)
    config["plugins"] = [str(plugin)]
    with open(config_path, "w") as f:
        json.dump(config, f)
    before = folder_files(run)
    for command in (["evaluate", run, "--num-samples", "5", "--no-progress"], ["sample", run, "--num-samples", "4"]):
        err = refused(command, capsys)
        assert f"needs the plugin '{plugin}'" in err and f"add --plugin {plugin}" in err
        assert not marker.exists() and folder_files(run) == before
    err = refused(["train", "--resume", "--out", run, "--no-progress"], capsys)
    assert f"add --plugin {plugin}" in err and not marker.exists() and folder_files(run) == before
    assert main(["sample", run, "--num-samples", "4", "--plugin", str(plugin)]) == 0  # the advice works
    assert marker.exists() and os.path.exists(os.path.join(run, "samples.png"))


def test_a_run_that_needs_a_missing_plugin_file_says_which(run, tmp_path, capsys):
    config_path = os.path.join(run, "config.json")
    with open(config_path) as f:
        config = json.load(f)
    gone = str(tmp_path / "gone.py")
    config["plugins"] = [gone]
    with open(config_path, "w") as f:
        json.dump(config, f)
    err = refused(["evaluate", run, "--num-samples", "5"], capsys)
    assert f"needs the plugin file '{gone}'" in err and "which is not there" in err and f"--plugin {gone}" in err
