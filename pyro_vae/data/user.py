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
from typing import Optional

import numpy as np
import torch

from inference.training.checkpoint import UnreadableFileError, load_plain_data
from pyro_vae.data.mapped import MappedRows, all_rows, map_npy, map_npz_member, row_chunks
from pyro_vae.data.splits import DataError, Splits, split_by_permutation

SUFFIXES = (".npy", ".npz", ".pt", ".csv")
LABEL_NAMES = ("y", "labels", "label")
#: Array names of an ``.npz`` that holds the user's own split.
SPLIT_NAMES = ("train", "val", "valid", "test")
#: Formats that can be memory-mapped, and the size above which they are by default (``data.memory_map = None``).
MAPPABLE = (".npy", ".npz")
MEMORY_MAP_ABOVE_BYTES = 2**30


def is_user_data(name: str) -> bool:
    """Whether a data set name is a path to the user's own file."""
    return str(name).lower().endswith(SUFFIXES)


def load_user_data(path, seed: int = 0, memory_map: Optional[bool] = None) -> Splits:
    """The rows of the file at ``path``, split by ``seed``; see the module docstring for the formats.

    :param memory_map: read a ``.npy`` (or the uncompressed arrays of an ``.npz``) from disk as it is used
        (:mod:`pyro_vae.data.mapped`) rather than whole; ``None``: when the file is larger than
        :data:`MEMORY_MAP_ABOVE_BYTES`. The numbers are the same either way.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"no data file '{path}': give the path of a .npy, .npz, .pt or .csv file")
    asked = memory_map
    if memory_map is None:
        memory_map = os.path.getsize(path) > MEMORY_MAP_ABOVE_BYTES and _suffix(path) in MAPPABLE
    if memory_map and _suffix(path) not in MAPPABLE:
        raise DataError(
            f"'{path}' is a {_suffix(path)} file, which cannot be memory-mapped: save the data with numpy.save (.npy) "
            "or numpy.savez (.npz, uncompressed), or drop data.memory_map"
        )
    try:
        x = _read(path, memory_map, must_map=bool(asked))
    except DataError:
        raise
    except UnreadableFileError as e:
        raise DataError(f"'{path}' could not be read as .pt data: {e}; save a tensor with torch.save") from None
    except Exception as e:  # every reader has its own errors for a malformed file
        raise DataError(f"'{path}' could not be read as {_suffix(path)} data ({_library_reason(e)})") from None
    if isinstance(x, dict):
        return _given_splits(x, path, seed)
    if isinstance(x, np.memmap):
        return _mapped_splits(x, path, seed)
    x = _as_matrix(x, f"'{path}'")
    image_shape = _image_shape(x)
    x = x.reshape(len(x), -1).to(torch.float32)
    num_held_out = max(1, len(x) // 10)
    train, val, test = split_by_permutation(x, (len(x) - 2 * num_held_out, num_held_out, num_held_out), seed)
    name = os.path.basename(path)
    return Splits(name, train, val, test, image_shape, _binary_ok(x), seed=seed, eight_bit=are_eight_bit_levels(x))


def _mapped_splits(array: np.memmap, path, seed) -> Splits:
    """A memory-mapped single array split by ``seed`` as :func:`load_user_data` splits one in memory: the same
    rows, as index views into the file."""
    _check_matrix_shape(array, f"'{path}'", min_rows=3)
    rows = MappedRows(array)
    num_held_out = max(1, len(rows) // 10)
    sizes = (len(rows) - 2 * num_held_out, num_held_out, num_held_out)
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))
    train, val, test = (rows.take(idx) for idx in order.split(list(sizes)))
    return Splits(
        os.path.basename(path),
        train,
        val,
        test,
        _image_shape(array),
        _binary_ok(rows),
        seed=seed,
        eight_bit=are_eight_bit_levels(rows),
    )


def _given_splits(arrays: dict, path, seed) -> Splits:
    """The file's own ``train`` / ``val`` / ``test`` arrays as the three splits, checked to fit together."""
    matrices = {split: _as_split(array, f"'{path}' array '{split}'") for split, array in arrays.items()}
    shapes = {split: tuple(array.shape[1:]) for split, array in arrays.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{split} {shape}" for split, shape in shapes.items())
        raise DataError(f"'{path}' holds splits of different widths ({listed}): give every split the same columns")
    _check_disjoint(matrices, path)
    return Splits(
        os.path.basename(path),
        **matrices,
        image_shape=_image_shape(arrays["train"]),
        binary_ok=all(_binary_ok(x) for x in matrices.values()),
        seed=seed,
        split_source="file",
        eight_bit=_eight_bit_levels_in(list(matrices.values())),
    )


def _as_split(array, where: str):
    """One of a file's own splits as float32 rows: read from disk when memory-mapped, else a tensor."""
    if isinstance(array, np.memmap):
        _check_matrix_shape(array, where, min_rows=1)
        return MappedRows(array)
    x = _as_matrix(array, where, min_rows=1)
    return x.reshape(len(x), -1).to(torch.float32)


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


def _row_digests(x):
    """A hash of each row's bytes (equal rows, equal digests), read a chunk at a time."""
    for chunk in row_chunks(x):
        for row in chunk.contiguous().numpy():
            yield hashlib.blake2b(row.tobytes(), digest_size=16).digest()


def _image_shape(x):
    shape = tuple(x.shape)
    return shape[1:] if len(shape) == 4 else (1, *shape[1:]) if len(shape) == 3 else None


def _binary_ok(x) -> bool:
    return all_rows(x, lambda chunk: (chunk >= 0) & (chunk <= 1))


def are_eight_bit_levels(x) -> bool:
    """Whether ``x`` (a tensor, or rows on disk) holds integer grey levels 0..255, some above 1 (so not 0/1
    data): 8-bit images not divided by 255."""
    return _eight_bit_levels_in([x])


def _eight_bit_levels_in(splits) -> bool:
    """:func:`are_eight_bit_levels` of the rows of all ``splits`` together, streamed."""
    levels = [all_rows(x, lambda chunk: (chunk == chunk.round()) & (chunk >= 0) & (chunk <= 255)) for x in splits]
    return all(levels) and any(not all_rows(x, lambda chunk: chunk <= 1) for x in splits)


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


def _read(path, memory_map=False, must_map=False):
    suffix = _suffix(path)
    if suffix == ".npy":
        return map_npy(path) if memory_map else np.load(path, allow_pickle=False)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as arrays:
            read = _npz_reader(arrays, path, memory_map, must_map)
            if any(name in arrays.files for name in SPLIT_NAMES):
                return _split_arrays(arrays, path, read)
            names = [name for name in arrays.files if name not in LABEL_NAMES]
            for name in ("x", "data"):
                if name in arrays.files:
                    return read(name)
            if len(names) != 1:
                raise DataError(f"'{path}' holds arrays {arrays.files}: name the data array 'x' (labels 'y')")
            return read(names[0])
    if suffix == ".pt":
        value = load_plain_data(path)
        if isinstance(value, dict):
            if "x" not in value:
                raise DataError(f"'{path}' holds a dict with keys {sorted(value)}: put the data under 'x'")
            value = value["x"]
        return value
    return _read_csv(path)


def _npz_reader(arrays, path, memory_map, must_map):
    """How to read one array of an open ``.npz``: memory-mapped where asked and stored uncompressed (a compressed
    one is read whole, or refused when mapping was asked for by name)."""

    def read(name):
        if memory_map:
            mapped = map_npz_member(path, name)
            if mapped is not None:
                return mapped
            if must_map:
                raise DataError(
                    f"'{path}' stores array '{name}' compressed, which can only be read whole, not a batch at a time: "
                    "save it with numpy.savez (uncompressed), or drop data.memory_map"
                )
        return arrays[name]

    return read


def _split_arrays(arrays, path, read) -> dict:
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
    return {split: read(name) for split, name in names.items()}


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
        _check_numbers(x, where)
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    if not torch.is_tensor(x):
        raise DataError(f"{where} holds a {type(x).__name__}, not an array of data points")
    return _check_matrix_shape(x, where, min_rows)


def _check_numbers(x: np.ndarray, where: str) -> None:
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DataError(f"{where} holds {x.dtype} values, not numbers")


def _check_matrix_shape(x, where: str, min_rows: int):
    """``x`` (a tensor or an array) if it holds at least ``min_rows`` rows of 1 to 3 dimensions."""
    if isinstance(x, np.ndarray):
        _check_numbers(x, where)
    if x.ndim < 2 or x.ndim > 4:
        raise DataError(
            f"{where} holds an array of shape {tuple(x.shape)}: give one data point a row, [N, D] (or images "
            "[N, H, W] or [N, C, H, W])"
        )
    if len(x) < min_rows or int(np.prod(x.shape[1:])) == 0:
        needed = (
            "at least 3 non-empty rows are needed for the three splits"
            if min_rows == 3
            else "at least one non-empty row is needed"
        )
        raise DataError(f"{where} holds {tuple(x.shape)}: {needed}")
    return x
