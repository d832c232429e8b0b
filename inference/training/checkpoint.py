"""Atomic, code-free checkpoints that load with ``torch.load(path, weights_only=True)``.

A checkpoint is a nested dict of tensors, numbers, strings, lists and dicts: no pickled classes or functions, so
loading one never runs code. It is written to a temporary file in the same folder and moved over the old one with
``os.replace``, so a crash mid-write leaves the previous checkpoint intact, never a half-written file.
"""

import os
import random
import tempfile

import numpy as np
import torch


def save_checkpoint(state: dict, path) -> None:
    """Write ``state`` to ``path`` atomically."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".checkpoint-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_checkpoint(path) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`, without unpickling code."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at '{path}': train first, or point to the run's folder")
    return torch.load(path, map_location="cpu", weights_only=True)


def get_rng_state() -> dict:
    """The states of torch's (CPU and every initialised GPU), Python's and NumPy's global generators, as plain
    tensors and numbers."""
    np_state = np.random.get_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return {
        "torch": torch.get_rng_state(),
        "cuda": cuda,
        "python": list(random.getstate()[1]) + [random.getstate()[0]],
        "python_gauss": random.getstate()[2],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
    }


def set_rng_state(state: dict) -> None:
    """Restore the generators saved by :func:`get_rng_state`."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    *internal, version = state["python"]
    random.setstate((version, tuple(internal), state["python_gauss"]))
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
