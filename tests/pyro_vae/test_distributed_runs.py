"""``pyro-vae train --nproc 2`` and ``pyro-vae evaluate --nproc 2`` on digits (two CPU processes, gloo) against
one process."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from pyro_vae.cli.main import main
from pyro_vae.config import ConfigError, resolve_device
from pyro_vae.folder import RunLock

SMALL = ["--dataset", "digits", "--hidden-sizes", "64", "--latent-dim", "4", "--no-progress"]
EVALUATE = ["--num-samples", "100", "--data-batch-size", "40", "--no-progress", "--posterior-examples"]


def _train(out, epochs, *extra):
    assert main(["train", *SMALL, "--epochs", str(epochs), "--out", str(out), *extra]) == 0


def _metrics(run):
    with open(os.path.join(run, "metrics.json")) as f:
        return json.load(f)


def _module_state(run):
    return torch.load(os.path.join(run, "checkpoint.pt"), weights_only=True)["module"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    _train(root / "one", 5)
    _train(root / "two", 5, "--nproc", "2")
    return root


def test_two_processes_train_like_one(runs):
    """The same data stream and global batch: the objectives differ only by the latent noise each process draws
    (the two runs' validation ELBOs agree to 0.5 nats after 5 epochs, against about 3 nats gained over them)."""
    one, two = _metrics(runs / "one"), _metrics(runs / "two")
    assert len(one) == len(two) == 5
    with open(runs / "two" / "status.json") as f:
        status = json.load(f)
    assert status["state"] == "finished" and status["processes"] == 2
    assert two[-1]["val_elbo"] - two[0]["val_elbo"] > 1.0  # it learned
    assert two[-1]["val_elbo"] == pytest.approx(one[-1]["val_elbo"], abs=0.5)
    assert two[-1]["train_objective"] == pytest.approx(one[-1]["train_objective"], abs=0.5)
    assert sorted(os.listdir(runs / "two")) == sorted(os.listdir(runs / "one"))  # rank 0 alone wrote


def test_two_process_resume_continues_exactly(runs, tmp_path):
    _train(tmp_path / "resumed", 3, "--nproc", "2")
    assert main(["train", "--resume", "--out", str(tmp_path / "resumed"), "--epochs", "5", "--nproc", "2"]) == 0
    straight, resumed = _module_state(runs / "two"), _module_state(tmp_path / "resumed")
    for name, value in straight.items():
        assert torch.equal(value, resumed[name]), name
    strip = [{k: v for k, v in m.items() if not k.endswith("seconds")} for m in _metrics(runs / "two")]
    assert strip == [{k: v for k, v in m.items() if not k.endswith("seconds")} for m in _metrics(tmp_path / "resumed")]


def test_two_process_evaluation_equals_one_process(runs, tmp_path):
    """Each chunk of 40 examples draws from a generator seeded by its first index, whichever rank scores it. Both
    on the CPU: on a one-GPU machine ``--device auto`` gives one process the GPU and two processes the CPU (NCCL
    cannot share a GPU), whose draws differ (the lent H200 showed 0.008 nats)."""
    copy = tmp_path / "copy"
    shutil.copytree(runs / "one", copy)
    assert main(["evaluate", str(runs / "one"), *EVALUATE, "--device", "cpu"]) == 0
    assert main(["evaluate", str(copy), *EVALUATE, "--nproc", "2", "--device", "cpu"]) == 0
    reports = []
    for run in (runs / "one", copy):
        with open(os.path.join(run, "eval", "is-test.json")) as f:
            reports.append(json.load(f))
    for key in ("log_px", "log_px_stderr", "elbo", "ess_mean", "khat_mean", "num_examples"):
        assert reports[1][key] == reports[0][key], key
    assert reports[0]["num_examples"] == 179  # 5 chunks: ranks 0 and 1 score 3 and 2 of them


def test_nproc_must_be_positive(capsys):
    assert main(["train", *SMALL, "--out", "unused", "--nproc", "0"]) == 2
    assert "--nproc must be a positive integer" in capsys.readouterr().err


@pytest.mark.parametrize("gpus, processes, expected", [(0, 1, "cpu"), (1, 1, "cuda"), (1, 2, "cpu"), (2, 2, "cuda")])
def test_auto_device_takes_the_gpus_only_when_each_process_gets_one(monkeypatch, gpus, processes, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(processes))
    assert resolve_device("auto").type == expected


def test_more_processes_than_gpus_is_refused_with_what_to_do(monkeypatch):
    # NCCL cannot put two ranks on one GPU ("Duplicate GPU detected"): say so before any process group forms
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="2 processes on this machine need a GPU each .* it has 1: use --device cpu"):
        resolve_device("cuda")


# --- signals: the launcher passes SIGINT and SIGTERM on to its ranks and waits for them (issue 23, items 14, 15)

LONG = [sys.executable, "-m", "pyro_vae.cli", "train", *SMALL, "--epochs", "100000", "--out"]


def _start_training(out, *extra, ignore_sigint=False):
    """A run that trains for hours, started as a background job is (SIGINT ignored when asked: then only a
    signal passed on by the launcher can stop its ranks). Returns once its first epoch is saved."""
    process = subprocess.Popen(
        [*LONG, str(out), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None,
    )
    deadline = time.monotonic() + 120
    while not os.path.exists(out / "checkpoint.pt"):
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "no epoch within two minutes"
        time.sleep(0.2)
    return process


def _children(pid) -> list:
    """The pids of the live processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry))
    return found


def _alive(pid) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_to_the_launcher_alone_stops_every_rank_before_it_exits(tmp_path, signum, status):
    """Before: SIGINT left the ranks training every epoch; SIGTERM left them as orphans holding the lock."""
    out = tmp_path / "run"
    process = _start_training(out, "--nproc", "2", ignore_sigint=True)
    ranks = [pid for pid in _children(process.pid) if "spawn_main" in open(f"/proc/{pid}/cmdline").read()]
    assert len(ranks) == 2
    process.send_signal(signum)
    assert process.wait(timeout=90) == status
    assert not [pid for pid in ranks if _alive(pid)]  # none outlives the launcher
    assert process.stderr.read().strip() == "pyro-vae train: interrupted"
    with open(out / "status.json") as f:
        assert json.load(f)["state"] == "interrupted"
    with RunLock(out, "test"):  # nobody holds the folder
        pass


def test_a_busy_folder_refused_under_nproc_says_so_in_one_line(tmp_path, capsys):
    """Before: the refusal came with a gloo 'Connection closed by peer' from rank 1, torch's 'Terminating process'
    and 'process 0 terminated with exit code 2'."""
    out = tmp_path / "run"
    process = _start_training(out)
    try:
        command = [sys.executable, "-m", "pyro_vae.cli", "train", "--resume", "--out", str(out), "--nproc", "2"]
        refused = subprocess.run([*command, "--epochs", "200000"], capture_output=True, text=True, timeout=120)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 143
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "is in use by pid" in lines[0], refused.stderr


def test_sigterm_to_one_process_cleans_up_as_ctrl_c_does(tmp_path):
    """Before: SIGTERM ended the process at once, leaving status.json at "training"."""
    process = _start_training(tmp_path / "run")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 143
    assert process.stderr.read().strip() == "pyro-vae train: interrupted"
    with open(tmp_path / "run" / "status.json") as f:
        status = json.load(f)
    assert status["state"] == "interrupted" and status["error"] == "Interrupted: SIGTERM"
