"""The user's own data: a ``.npy``, ``.npz``, ``.pt`` or ``.csv`` file whose rows are data points.

* ``.npy``: one array ``[N, D]`` (or images ``[N, H, W]`` / ``[N, C, H, W]``).
* ``.npz``: the data under ``x`` or ``data`` (or the only array); labels under ``y`` or ``labels`` are allowed and
  set aside.
* ``.pt``: a tensor, or a dict with ``x`` (and optionally ``y``), loaded with ``weights_only=True``.
* ``.csv``: numbers separated by commas, one data point a row, with an optional header row; a column headed
  ``label`` or ``y`` is set aside.

The rows are split 80 / 10 / 10 by the data seed, as the bundled data sets are, and checked the same way: at
least three rows, numbers only, no NaN or infinity. Values in ``[0, 1]`` may be read as Bernoulli means (and
binarized); any other values need a likelihood for real-valued data.
"""

import os

import numpy as np
import torch

from inference.training.checkpoint import UnreadableFileError, load_plain_data
from pyro_vae.data.datasets import DataError, Splits, split_by_permutation

SUFFIXES = (".npy", ".npz", ".pt", ".csv")
LABEL_NAMES = ("y", "labels", "label")


def is_user_data(name: str) -> bool:
    """Whether a data set name is a path to the user's own file."""
    return str(name).lower().endswith(SUFFIXES)


def load_user_data(path, seed: int = 0) -> Splits:
    """The rows of the file at ``path``, split by ``seed``; see the module docstring for the formats."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"no data file '{path}': give the path of a .npy, .npz, .pt or .csv file")
    try:
        x = _read(path)
    except DataError:
        raise
    except UnreadableFileError as e:
        raise DataError(f"'{path}' could not be read as .pt data: {e}; save a tensor with torch.save") from None
    except Exception as e:  # every reader has its own errors for a malformed file
        raise DataError(f"'{path}' could not be read as {_suffix(path)} data ({_library_reason(e)})") from None
    x = _as_matrix(x, path)
    image_shape = tuple(x.shape[1:]) if x.dim() == 4 else (1, *x.shape[1:]) if x.dim() == 3 else None
    x = x.reshape(len(x), -1).to(torch.float32)
    num_held_out = max(1, len(x) // 10)
    train, val, test = split_by_permutation(x, (len(x) - 2 * num_held_out, num_held_out, num_held_out), seed)
    binary_ok = bool(((x >= 0) & (x <= 1)).all())
    name = os.path.basename(path)
    return Splits(name, train, val, test, image_shape, binary_ok, seed=seed, eight_bit=are_eight_bit_levels(x))


def are_eight_bit_levels(x: torch.Tensor) -> bool:
    """Whether ``x`` holds integer grey levels 0..255, some above 1 (so not 0/1 data): 8-bit images not divided
    by 255."""
    return bool((x == x.round()).all() and x.min() >= 0 and x.max() <= 255 and x.max() > 1)


def _library_reason(error: Exception) -> str:
    """A reader's reason in one line, without NumPy's advice to load pickled data unsafely."""
    text = (str(error).splitlines() or [""])[0]
    if "pickle" in text:  # object arrays, or bytes NumPy would only unpickle
        return (
            "not numbers in NumPy's format: damaged, another format, or pickled Python objects, which pyro-vae "
            "never loads since that could run code; save an array of numbers with numpy.save"
        )
    return f"{type(error).__name__}: {text}"


def _suffix(path):
    return os.path.splitext(path)[1].lower()


def _read(path):
    suffix = _suffix(path)
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as arrays:
            names = [name for name in arrays.files if name not in LABEL_NAMES]
            for name in ("x", "data"):
                if name in arrays.files:
                    return arrays[name]
            if len(names) != 1:
                raise DataError(f"'{path}' holds arrays {arrays.files}: name the data array 'x' (labels 'y')")
            return arrays[names[0]]
    if suffix == ".pt":
        value = load_plain_data(path)
        if isinstance(value, dict):
            if "x" not in value:
                raise DataError(f"'{path}' holds a dict with keys {sorted(value)}: put the data under 'x'")
            value = value["x"]
        return value
    return _read_csv(path)


def _read_csv(path):
    with open(path) as f:
        first = f.readline()
    cells = [cell.strip().strip('"').lower() for cell in first.split(",")]
    has_header = any(not _is_number(cell) for cell in cells)
    keep = [i for i, name in enumerate(cells) if not (has_header and name in LABEL_NAMES)]
    return np.loadtxt(path, delimiter=",", skiprows=1 if has_header else 0, usecols=keep, ndmin=2)


def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def _as_matrix(x, path) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
            raise DataError(f"'{path}' holds {x.dtype} values, not numbers")
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    if not torch.is_tensor(x):
        raise DataError(f"'{path}' holds a {type(x).__name__}, not an array of data points")
    if x.dim() < 2 or x.dim() > 4:
        raise DataError(
            f"'{path}' holds an array of shape {tuple(x.shape)}: give one data point a row, [N, D] (or images "
            "[N, H, W] or [N, C, H, W])"
        )
    if len(x) < 3 or x[0].numel() == 0:
        raise DataError(f"'{path}' holds {tuple(x.shape)}: at least 3 non-empty rows are needed for the three splits")
    return x
