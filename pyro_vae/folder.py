"""Run folders that cannot lie: one writer at a time, every file written atomically, and a status record.

* :class:`RunLock`: an exclusive lock on the folder (``.lock``, ``fcntl.flock``), taken by every command that
  writes into it; a second writer is refused with a message naming the holder. The operating system releases the
  lock when its process ends, however it ends, so a killed run never leaves a stale lock; the next writer removes
  the temporary files a killed writer left (:func:`inference.atomic.remove_interrupted_writes`).
* :func:`write_json` (with :func:`inference.atomic.atomic_write`): a temporary file, flushed to disk, renamed
  over the target.
* ``status.json`` (:func:`write_status`, :func:`read_status`): whether training is running, finished or failed,
  how many epochs are done, and the digest of the checkpoint that holds them.
* :func:`retire_evaluations`: when training resumes, the evaluations and pictures of the earlier checkpoint move
  to ``stale/`` so that nothing in the folder describes a model that is no longer there.
"""

import datetime
import fcntl
import json
import math
import os
import shutil
import socket
import sys
import time

from inference.atomic import atomic_write, is_interrupted_write, remove_interrupted_writes
from inference.training.budget import Spent

STATUS_FILE = "status.json"
LOCK_FILE = ".lock"
EVAL_FOLDER = "eval"
STALE_FOLDER = "stale"
PICTURES = ("samples.png", "reconstructions.png")


class RunFolderBusy(FileExistsError):
    """Another process is writing into the run folder."""


def json_safe(obj):
    """Non-finite floats (a k-hat of inf, a standard error of one example) become null: strict JSON has no inf."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {key: json_safe(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(value) for value in obj]
    return obj


def write_json(obj, path) -> None:
    """Write ``obj`` as strict JSON atomically."""
    text = json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def read_holder(fd, wait: float = 2.0) -> str:
    """The lock holder's line in the lock file ``fd``. The holder writes it just after taking the lock, so a file
    still empty is read again for up to ``wait`` seconds before the holder is called "another process"."""
    deadline = time.monotonic() + wait
    while True:
        holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        if holder or time.monotonic() > deadline:
            return holder or "another process"
        time.sleep(0.01)


class RunLock:
    """An exclusive, non-blocking lock on a run folder for the life of a ``with`` block (or of the process)."""

    def __init__(self, run_dir, command: str):
        self.run_dir = os.fspath(run_dir)
        self.command = command
        self._fd = None

    def __enter__(self):
        os.makedirs(self.run_dir, exist_ok=True)
        path = os.path.join(self.run_dir, LOCK_FILE)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = read_holder(fd)
            os.close(fd)
            raise RunFolderBusy(
                f"run folder '{self.run_dir}' is in use by {holder}; wait for it to finish, or use another folder"
            ) from None
        os.ftruncate(fd, 0)
        holder = f"pid {os.getpid()} on {socket.gethostname()} ({self.command}, since {now()})"
        os.write(fd, holder.encode())
        self._fd = fd
        for folder in (self.run_dir, os.path.join(self.run_dir, EVAL_FOLDER)):  # what killed writers left
            remove_interrupted_writes(folder)
        return self

    def __exit__(self, *exc):
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def foreign_files(run_dir) -> list:
    """The names in ``run_dir`` that no pyro-vae command wrote: all but its lock file and interrupted writes."""
    if not os.path.isdir(run_dir):
        return []
    return sorted(name for name in os.listdir(run_dir) if name != LOCK_FILE and not is_interrupted_write(name))


def command_line() -> str:
    return " ".join(["pyro-vae", *sys.argv[1:]]) if sys.argv and sys.argv[0].endswith("pyro-vae") else "pyro-vae"


def read_json(path):
    """The JSON value in ``path``; a damaged file is a ValueError that names it, not the parser's position alone."""
    with open(path) as f:
        try:
            return json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(
                f"'{path}' is damaged: it is not valid JSON ({e}); restore it from a copy (pyro-vae writes it "
                "atomically, so only a change from outside leaves it so)"
            ) from None


def read_status(run_dir) -> dict:
    """The run's ``status.json``; a folder without one (written before status records) counts as unknown."""
    path = os.path.join(run_dir, STATUS_FILE)
    if not os.path.exists(path):
        return {"state": "unknown"}
    return read_json(path)


def write_status(run_dir, **fields) -> dict:
    status = {**read_status(run_dir), **fields, "updated": now()}
    status.pop("error", None) if fields.get("state") not in ("failed", "interrupted") else None
    write_json(status, os.path.join(run_dir, STATUS_FILE))
    return status


def progress_text(status: dict) -> str:
    """How far a run's training got, from its ``status.json``: epochs of an epochs budget, else the amount spent
    of its budget of steps, evaluations or seconds."""
    done = status.get("epochs_done", "?")
    budget = status.get("budget") or {"kind": "epochs"}
    if budget["kind"] == "epochs":
        return f"{done} of {status.get('epochs', '?')} epochs done"
    spent = Spent.from_metrics(status.get("spent")).amount(budget["kind"])
    return f"{done} epochs done, {spent:g} of a budget of {budget['amount']:g} {budget['kind']} spent"


def require_finished(run_dir, allow_unfinished: bool = False) -> dict:
    """The status of a finished run; for any other run an error that says what to do (unless allowed)."""
    status = read_status(run_dir)
    if status.get("state") != "finished" and not allow_unfinished:
        raise ValueError(
            f"'{run_dir}' is not a finished run (status {status.get('state')!r}, {progress_text(status)}): "
            f"finish it with `pyro-vae train --resume --out {run_dir}`, "
            "or pass --allow-unfinished to use its last checkpoint anyway"
        )
    return status


def evaluation_paths(run_dir, method: str, split: str) -> dict:
    """Where the evaluation by ``method`` on ``split`` is kept: ``eval/<method>-<split>.json`` and ``.nc``."""
    stem = os.path.join(run_dir, EVAL_FOLDER, f"{method}-{split}")
    return {"json": stem + ".json", "netcdf": stem + ".nc"}


def retire_evaluations(run_dir, epoch: int) -> list:
    """Move the evaluations and pictures of the checkpoint at ``epoch`` into ``stale/epoch-<epoch>/``."""
    moved = []
    target = os.path.join(run_dir, STALE_FOLDER, f"epoch-{epoch}")
    for name in (EVAL_FOLDER, *PICTURES):
        path = os.path.join(run_dir, name)
        if os.path.exists(path):
            os.makedirs(target, exist_ok=True)
            destination = os.path.join(target, name)
            if os.path.exists(destination):
                shutil.rmtree(destination) if os.path.isdir(destination) else os.remove(destination)
            os.replace(path, destination)
            moved.append(destination)
    return moved
