import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from inference.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from pyro_vae.cli.main import main


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"epoch": 3, "module": {"w": torch.arange(6.0).reshape(2, 3)}, "metrics": [{"a": 1.5}]}, path)
    return path


def test_a_checkpoint_round_trips_with_its_checksum(checkpoint):
    state = load_checkpoint(checkpoint)
    assert state["epoch"] == 3 and torch.equal(state["module"]["w"], torch.arange(6.0).reshape(2, 3))
    assert len(state["sha256"]) == 64
    assert torch.load(checkpoint, weights_only=True)["sha256"] == state["sha256"]


def test_a_truncated_checkpoint_is_reported_as_such(checkpoint):
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="is truncated or damaged"):
        load_checkpoint(checkpoint)


def test_a_changed_checkpoint_fails_its_checksum(checkpoint):
    state = torch.load(checkpoint, weights_only=True)
    state["module"]["w"][0, 0] = 100.0  # the digest stays the old one
    torch.save(state, checkpoint)
    with pytest.raises(CheckpointError, match="does not match the checksum"):
        load_checkpoint(checkpoint)


class Payload:
    def __reduce__(self):
        return (print, ("this would run",))


def test_a_file_holding_code_is_refused_without_suggesting_the_unsafe_fix(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "pyro-vae-checkpoint-2", "payload": Payload()}, path)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert "never loads such files" in message and "weights_only" not in message


def test_a_file_that_is_not_a_pyro_vae_checkpoint_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    with pytest.raises(CheckpointError, match="is not a pyro-vae checkpoint"):
        load_checkpoint(path)


def test_an_interrupted_checkpoint_write_leaves_the_previous_checkpoint(checkpoint, monkeypatch):
    def interrupted(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"epoch": 4}, checkpoint)
    monkeypatch.undo()
    assert load_checkpoint(checkpoint)["epoch"] == 3
    assert os.listdir(checkpoint.parent) == ["checkpoint.pt"]


@pytest.mark.parametrize("damage", ["truncate", "code"])
def test_the_cli_reports_a_bad_checkpoint_in_one_line(tmp_path, capsys, damage):
    out = tmp_path / "run"
    args = ["--epochs", "1", "--num-train", "100", "--hidden-sizes", "8", "--latent-dim", "2", "--no-progress"]
    assert main(["train", *args, "--out", str(out)]) == 0
    path = out / "checkpoint.pt"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:1000])
    else:
        torch.save({"format": "pyro-vae-checkpoint-2", "payload": Payload()}, path)
    capsys.readouterr()
    assert main(["evaluate", str(out), "--num-samples", "5", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pyro-vae evaluate: error: ") and "\n" not in err and "weights_only" not in err


KILLED_RUN = ["--epochs", "12", "--num-train", "300", "--num-val", "50", "--batch-size", "20"]
KILLED_RUN += ["--hidden-sizes", "24", "--latent-dim", "3", "--estimator", "iwae", "--num-particles", "3"]


def _metrics_and_module(out):
    import json

    with open(out / "metrics.json") as f:
        metrics = [{k: v for k, v in m.items() if not k.endswith("seconds")} for m in json.load(f)]
    return metrics, torch.load(out / "checkpoint.pt", weights_only=True)["module"]


def test_kill_9_at_a_random_moment_then_resume_ends_where_an_uninterrupted_run_ends(tmp_path):
    command = [sys.executable, "-m", "pyro_vae.cli", "train", *KILLED_RUN, "--no-progress", "--out"]
    subprocess.run([*command, str(tmp_path / "straight")], check=True, capture_output=True)
    killed = tmp_path / "killed"
    process = subprocess.Popen([*command, str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(random.uniform(2.5, 6.0))  # start-up takes about 3 s; the whole run about 6
    process.send_signal(signal.SIGKILL)
    process.wait()
    subprocess.run([*command, str(killed), "--resume"], check=True, capture_output=True)
    straight_metrics, straight_module = _metrics_and_module(tmp_path / "straight")
    killed_metrics, killed_module = _metrics_and_module(killed)
    assert killed_metrics == straight_metrics
    for key in straight_module:
        assert torch.equal(killed_module[key], straight_module[key]), key


@pytest.mark.parametrize("content", [b"", b"just some text\n"])
def test_an_empty_or_text_file_is_reported_as_damaged(tmp_path, content):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="is truncated or damaged"):
        load_checkpoint(path)


def test_random_bytes_are_called_damage_not_foreign_content(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(
        torch.randint(0, 256, (300,), generator=torch.Generator().manual_seed(1), dtype=torch.uint8).numpy().tobytes()
    )
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert "is truncated or damaged" in message and "Restore the file from a copy" in message
    assert "Python objects" not in message and "weights_only" not in message and "\n" not in message
