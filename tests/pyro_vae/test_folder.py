"""Run folders that cannot lie: locks, status, evaluations per method and split, stale marking, atomic files."""

import json
import os
import subprocess
import sys

import pytest
import torch

from pyro_vae.cli.main import main
from pyro_vae.folder import RunLock, read_status

TINY = ["--epochs", "2", "--num-train", "200", "--num-val", "50", "--num-test", "40"]
TINY += ["--hidden-sizes", "16", "--latent-dim", "3", "--no-progress"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("runs") / "finished")
    assert main(["train", *TINY, "--out", out]) == 0
    return out


def test_a_finished_run_says_so_and_names_its_checkpoint(finished):
    status = read_status(finished)
    state = torch.load(os.path.join(finished, "checkpoint.pt"), weights_only=True)
    assert status["state"] == "finished" and status["epochs_done"] == 2 == status["epochs"]
    assert status["checkpoint"] == {"epoch": 2, "sha256": state["sha256"]}


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "busy"
    with RunLock(out, "pyro-vae train (the first)"):
        assert main(["train", *TINY, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"pid {os.getpid()}" in err and "pyro-vae train (the first)" in err and "is in use by" in err
    assert not (out / "config.json").exists()


def test_a_writer_refused_between_the_holders_lock_and_its_line_still_names_the_holder(tmp_path):
    """The holder takes the lock, then writes its line: a second writer in between waits for the line (the race
    that made two concurrent trains name "another process")."""
    import fcntl
    import threading

    from pyro_vae.folder import LOCK_FILE, RunFolderBusy

    tmp_path.joinpath(LOCK_FILE).touch()
    fd = os.open(tmp_path / LOCK_FILE, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    late_line = threading.Timer(0.3, lambda: os.write(fd, b"pid 12345 on host (the first)"))
    late_line.start()
    try:
        with pytest.raises(RunFolderBusy, match=r"is in use by pid 12345 on host \(the first\)"):
            with RunLock(tmp_path, "the second"):
                pass
    finally:
        late_line.join()
        os.close(fd)


def test_two_concurrent_trains_into_one_folder_exactly_one_proceeds(tmp_path):
    out = str(tmp_path / "race")
    command = [sys.executable, "-m", "pyro_vae.cli", "train", *TINY[:-1], "--epochs", "40", "--out", out]
    runs = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert "is in use by pid" in refused or "already holds a trained run" in refused
    assert read_status(out)["state"] == "finished" and read_status(out)["epochs_done"] == 40


def test_evaluations_are_kept_per_method_and_split(finished):
    for args in (["--num-samples", "20"], ["--num-samples", "20", "--split", "val"], ["--method", "is-prior"]):
        assert main(["evaluate", finished, *args, "--posterior-examples", "--no-progress"]) == 0
    names = sorted(os.listdir(os.path.join(finished, "eval")))
    expected = [
        f"{m}-{s}.{e}" for m, s in [("is", "test"), ("is", "val"), ("is-prior", "test")] for e in ("json", "nc")
    ]
    assert names == sorted(expected)
    with open(os.path.join(finished, "eval", "is-test.json")) as f:
        first = json.load(f)
    assert first["num_samples"] == 20 and first["split"] == "test" and first["checkpoint"]["epoch"] == 2


def test_evaluate_refuses_an_unfinished_run_unless_allowed(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", *TINY, "--out", out]) == 0
    status_path = os.path.join(out, "status.json")
    with open(status_path) as f:
        status = json.load(f)
    with open(status_path, "w") as f:  # as a run killed after its first epoch leaves it
        json.dump({**status, "state": "training", "epochs_done": 1}, f)
    assert main(["evaluate", out, "--num-samples", "10", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "is not a finished run" in err and "--allow-unfinished" in err and "--resume" in err
    assert not os.path.exists(os.path.join(out, "eval"))
    assert main(["evaluate", out, "--num-samples", "10", "--allow-unfinished", "--no-progress"]) == 0
    with open(os.path.join(out, "eval", "is-test.json")) as f:
        assert json.load(f)["training_finished"] is False


def test_resuming_moves_earlier_evaluations_and_pictures_to_stale(tmp_path):
    out = str(tmp_path / "run")
    assert main(["train", *TINY, "--out", out]) == 0
    assert main(["evaluate", out, "--num-samples", "10", "--posterior-examples", "--no-progress"]) == 0
    assert main(["sample", out, "--num-samples", "4", "--nrow", "2"]) == 0
    assert main(["train", "--resume", "--epochs", "3", "--out", out, "--no-progress"]) == 0
    assert not os.path.exists(os.path.join(out, "eval")) and not os.path.exists(os.path.join(out, "samples.png"))
    stale = os.path.join(out, "stale", "epoch-2")
    assert sorted(os.listdir(stale)) == ["eval", "reconstructions.png", "samples.png"]
    assert sorted(os.listdir(os.path.join(stale, "eval"))) == ["is-test.json", "is-test.nc"]


def test_a_failed_first_epoch_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "nan"
    args = ["--likelihood", "gaussian", "--lr", "1e30", "--dataset", "linear-gaussian", "--num-test", "40"]
    assert main(["train", *TINY[2:], *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "non-finite" in err and not out.exists()


def test_an_interrupted_netcdf_write_leaves_the_previous_file(finished, monkeypatch):
    import arviz
    import xarray

    assert main(["evaluate", finished, "--num-samples", "15", "--posterior-examples", "--no-progress"]) == 0
    path = os.path.join(finished, "eval", "is-test.nc")
    before = open(path, "rb").read()

    def interrupted(self, target, *args, **kwargs):
        with open(target, "wb") as f:
            f.write(b"CDF half-written")
        raise KeyboardInterrupt

    monkeypatch.setattr(xarray.Dataset, "to_netcdf", interrupted)
    monkeypatch.setattr(arviz.InferenceData, "to_netcdf", lambda self, target, **kw: interrupted(self, target))
    assert main(["evaluate", finished, "--num-samples", "25", "--posterior-examples", "--no-progress"]) == 130
    assert open(path, "rb").read() == before
    assert [name for name in os.listdir(os.path.dirname(path)) if name.endswith(".tmp")] == []


def test_files_are_readable_by_others_as_plain_writes_are(finished):
    umask = os.umask(0)
    os.umask(umask)
    for name in ("config.json", "metrics.json", "status.json", "checkpoint.pt"):
        assert os.stat(os.path.join(finished, name)).st_mode & 0o777 == 0o666 & ~umask, name


def test_a_resume_that_trains_nothing_keeps_the_evaluations(tmp_path):
    out = str(tmp_path / "run")
    assert main(["train", *TINY, "--out", out]) == 0
    assert main(["evaluate", out, "--num-samples", "10", "--posterior-examples", "--no-progress"]) == 0
    assert main(["train", "--resume", "--out", out, "--no-progress"]) == 0  # already at its 2 epochs
    assert os.path.exists(os.path.join(out, "eval", "is-test.json")) and not os.path.exists(os.path.join(out, "stale"))


def test_a_run_resumes_only_on_the_kind_of_device_it_was_trained_on(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", *TINY, "--device", "cpu", "--out", out]) == 0
    status_path = os.path.join(out, "status.json")
    with open(status_path) as f:
        status = json.load(f)
    with open(status_path, "w") as f:
        json.dump({**status, "device": "cuda"}, f)  # as if trained on a GPU
    assert main(["train", "--resume", "--epochs", "3", "--device", "cpu", "--out", out, "--no-progress"]) == 2
    assert "was trained on cuda; resume it with --device cuda" in capsys.readouterr().err


def test_the_next_writer_removes_the_temporary_files_of_a_killed_write(finished, tmp_path):
    import shutil

    run = shutil.copytree(finished, tmp_path / "run")
    (run / "eval").mkdir(exist_ok=True)
    left = [run / ".config.json-k2j4x9.tmp", run / "eval" / ".is-test.json-a8f3.tmp"]
    for path in left:
        path.write_bytes(b"half a file")
    (run / ".notes.tmp").write_text("not ours: no -XXXX part")
    assert main(["sample", str(run), "--num-samples", "4"]) == 0
    assert not any(path.exists() for path in left) and (run / ".notes.tmp").exists()
