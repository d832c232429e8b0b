"""Atomic, checksummed, code-free checkpoints that load with ``torch.load(path, weights_only=True)``.

A checkpoint is a nested dict of tensors, numbers, strings, lists and dicts: no pickled classes or functions, so
loading one never runs code. It is written to a temporary file in the same folder, flushed to disk and moved over
the old one with ``os.replace``, so a crash mid-write leaves the previous checkpoint intact, never a half-written
file. It carries a SHA-256 digest of its contents (:func:`state_digest`), so a file that was changed or damaged
after it was written is reported as such instead of being trained on.
"""

import hashlib
import os
import pickle
import random
import re

import numpy as np
import torch

from inference.atomic import atomic_write

FORMAT = "pyro-vae-checkpoint-2"


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint; the message says what is wrong with it and what to do."""


def state_digest(state) -> str:
    """SHA-256 over a state's structure and values (tensor dtypes, shapes and bytes; other values by ``repr``)."""
    digest = hashlib.sha256()

    def visit(value):
        if torch.is_tensor(value):
            tensor = value.detach().cpu().contiguous()
            digest.update(f"tensor{tensor.dtype}{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
        elif isinstance(value, dict):
            digest.update(f"dict{len(value)}".encode())
            for key in value:
                digest.update(repr(key).encode())
                visit(value[key])
        elif isinstance(value, (list, tuple)):
            digest.update(f"{type(value).__name__}{len(value)}".encode())
            for item in value:
                visit(item)
        else:
            digest.update(repr(value).encode())

    visit(state)
    return digest.hexdigest()


def save_checkpoint(state: dict, path) -> str:
    """Write ``state`` with its digest to ``path`` atomically; returns the digest."""
    checked = {"format": FORMAT, **state}
    checked["sha256"] = state_digest(checked)
    atomic_write(path, lambda f: torch.save(checked, f))
    return checked["sha256"]


class UnreadableFileError(ValueError):
    """A file ``torch.load(..., weights_only=True)`` refuses; ``holds_objects`` tells foreign content (pickled
    Python objects, never loaded: loading them could run code) from damage (bytes torch cannot read)."""

    def __init__(self, reason: str, holds_objects: bool):
        super().__init__(reason)
        self.holds_objects = holds_objects


def load_plain_data(path):
    """``torch.load(path, weights_only=True)`` on the CPU, its failures as an :class:`UnreadableFileError` whose
    one-line reason never relays torch's advice to load the file unsafely."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if found:  # a well-formed file that pickles a class or function
            raise UnreadableFileError(
                f"it holds Python objects ({found.group(1)}) besides tensors, numbers, strings, lists and dicts, "
                "and pyro-vae never loads such files (loading them could run code)",
                holds_objects=True,
            ) from None
        raise UnreadableFileError(
            "its bytes are not a torch file (damaged, truncated or another format)", False
        ) from None
    except Exception as e:  # torch reports a damaged file as RuntimeError, EOFError, KeyError, IndexError, ...
        reason = (str(e).splitlines() or [""])[0] or type(e).__name__
        raise UnreadableFileError(f"torch cannot read it: {reason}", holds_objects=False) from None


def load_checkpoint(path) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`, without unpickling code, and verify its digest.

    :raises CheckpointError: for a truncated or damaged file, a file holding Python objects other than plain
        data, a file that is not a pyro-vae checkpoint, or contents that no longer match their digest.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at '{path}': train first, or point to the run's folder")
    try:
        state = load_plain_data(path)
    except UnreadableFileError as e:
        if e.holds_objects:
            raise CheckpointError(
                f"'{path}' is not a pyro-vae checkpoint: {e}. Point to a run's own checkpoint.pt, or retrain."
            ) from None
        raise CheckpointError(
            f"'{path}' is truncated or damaged and cannot be read ({e}). Restore the file from a copy, or delete "
            "the run folder and train it again."
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"'{path}' is not a pyro-vae checkpoint (format {found!r}, expected {FORMAT!r}): point to the "
            "checkpoint.pt of a run written by this version of pyro-vae"
        )
    recorded = state.pop("sha256", None)
    if recorded != state_digest(state):
        raise CheckpointError(
            f"'{path}' does not match the checksum it was written with: the file was changed or damaged after "
            "training wrote it. Restore the file from a copy, or delete the run folder and train it again."
        )
    state["sha256"] = recorded
    return state


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
