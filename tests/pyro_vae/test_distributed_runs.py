"""``pyro-vae train --nproc 2`` and ``pyro-vae evaluate --nproc 2`` on digits (two CPU processes, gloo) against
one process."""

import json
import os
import shutil

import pytest
import torch

from pyro_vae.cli.main import main
from pyro_vae.config import ConfigError, resolve_device

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
