"""The user's own data: a ``.npy``, ``.npz``, ``.pt`` or ``.csv`` file whose rows are data points.

* ``.npy``: one array ``[N, D]`` (or images ``[N, H, W]`` / ``[N, C, H, W]``).
* ``.npz``: the data under ``x`` or ``data`` (or the only array); labels under ``y`` or ``labels`` are allowed and
  set aside. Or the user's own split: arrays ``train``, ``val`` (or ``valid``) and ``test``, used as given (any
  other arrays, such as labels, are set aside); they must have the same width and share no row.
* ``.pt``: a tensor, or a dict with ``x`` (and optionally ``y``), loaded with ``weights_only=True``.
* ``.csv``: numbers separated by commas, one data point a row, with an optional header row; a column headed
  ``label`` or ``y`` is set aside.

The rows of a single array are split 80 / 10 / 10 by the data seed, as the bundled data sets are
(``Splits.split_source`` says which), and checked the same way: at least three rows, numbers only, no NaN or
infinity. Values in ``[0, 1]`` may be read as Bernoulli means (and binarized); any other values need a likelihood
for real-valued data.
"""

import hashlib
import os

import numpy as np
import torch

from inference.training.checkpoint import UnreadableFileError, load_plain_data
from pyro_vae.data.splits import DataError, Splits, split_by_permutation

SUFFIXES = (".npy", ".npz", ".pt", ".csv")
LABEL_NAMES = ("y", "labels", "label")
#: Array names of an ``.npz`` that holds the user's own split.
SPLIT_NAMES = ("train", "val", "valid", "test")


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
    if isinstance(x, dict):
        return _given_splits(x, path, seed)
    x = _as_matrix(x, f"'{path}'")
    image_shape = _image_shape(x)
    x = x.reshape(len(x), -1).to(torch.float32)
    num_held_out = max(1, len(x) // 10)
    train, val, test = split_by_permutation(x, (len(x) - 2 * num_held_out, num_held_out, num_held_out), seed)
    name = os.path.basename(path)
    return Splits(name, train, val, test, image_shape, _binary_ok(x), seed=seed, eight_bit=are_eight_bit_levels(x))


def _given_splits(arrays: dict, path, seed) -> Splits:
    """The file's own ``train`` / ``val`` / ``test`` arrays as the three splits, checked to fit together."""
    matrices = {split: _as_matrix(array, f"'{path}' array '{split}'", min_rows=1) for split, array in arrays.items()}
    shapes = {split: tuple(x.shape[1:]) for split, x in matrices.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{split} {shape}" for split, shape in shapes.items())
        raise DataError(f"'{path}' holds splits of different widths ({listed}): give every split the same columns")
    splits = {split: x.reshape(len(x), -1).to(torch.float32) for split, x in matrices.items()}
    _check_disjoint(splits, path)
    return Splits(
        os.path.basename(path),
        **splits,
        image_shape=_image_shape(matrices["train"]),
        binary_ok=all(_binary_ok(x) for x in splits.values()),
        seed=seed,
        split_source="file",
        eight_bit=are_eight_bit_levels(torch.cat(list(splits.values()))),
    )


def _check_disjoint(splits: dict, path) -> None:
    """Refuse a row that appears in two splits (a test example seen in training inflates its log-likelihood)."""
    seen = {}
    for split, x in splits.items():
        for row, digest in enumerate(_row_digests(x)):
            first = seen.setdefault(digest, (split, row))
            if first[0] != split:
                raise DataError(
                    f"'{path}': {split} row {row} equals {first[0]} row {first[1]}: the splits overlap; remove the "
                    "shared rows from one of them"
                )


def _row_digests(x: torch.Tensor):
    """A hash of each row's bytes (equal rows, equal digests)."""
    rows = x.contiguous().numpy()
    return (hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in rows)


def _image_shape(x: torch.Tensor):
    return tuple(x.shape[1:]) if x.dim() == 4 else (1, *x.shape[1:]) if x.dim() == 3 else None


def _binary_ok(x: torch.Tensor) -> bool:
    return bool(((x >= 0) & (x <= 1)).all())


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
            if any(name in arrays.files for name in SPLIT_NAMES):
                return _split_arrays(arrays, path)
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


def _split_arrays(arrays, path) -> dict:
    """``{"train", "val", "test"}`` from an ``.npz`` holding the user's own split (``valid`` read as ``val``)."""
    if "val" in arrays.files and "valid" in arrays.files:
        raise DataError(f"'{path}' holds both 'val' and 'valid': keep one validation array")
    names = {"train": "train", "val": "val" if "val" in arrays.files else "valid", "test": "test"}
    missing = [name for name in names.values() if name not in arrays.files]
    if missing:
        raise DataError(
            f"'{path}' holds {', '.join(arrays.files)} but no {' or '.join(repr(m) for m in missing)}: a file with "
            "its own split needs arrays train, val (or valid) and test; or give one array 'x' to split by the seed"
        )
    return {split: arrays[name] for split, name in names.items()}


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


def _as_matrix(x, where: str, min_rows=3) -> torch.Tensor:
    """``x`` as a tensor of rows; ``where`` names it in a refusal (``'data.npz'``, ``'data.npz' array 'test'``)."""
    if isinstance(x, np.ndarray):
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
            raise DataError(f"{where} holds {x.dtype} values, not numbers")
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    if not torch.is_tensor(x):
        raise DataError(f"{where} holds a {type(x).__name__}, not an array of data points")
    if x.dim() < 2 or x.dim() > 4:
        raise DataError(
            f"{where} holds an array of shape {tuple(x.shape)}: give one data point a row, [N, D] (or images "
            "[N, H, W] or [N, C, H, W])"
        )
    if len(x) < min_rows or x[0].numel() == 0:
        needed = (
            "at least 3 non-empty rows are needed for the three splits"
            if min_rows == 3
            else "at least one non-empty row is needed"
        )
        raise DataError(f"{where} holds {tuple(x.shape)}: {needed}")
    return x
