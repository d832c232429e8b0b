"""Data larger than memory: the rows of an array on disk, read a batch at a time.

A ``.npy`` file, or an array stored uncompressed in an ``.npz``, is opened as a :class:`numpy.memmap` (which
gives its dtype, shape and place in the file without reading it) and wrapped in :class:`MappedRows`, which
stands in for the float32 tensor ``[N, D]`` of a split: ``len``, ``shape`` and indexing (``rows[i:j]``,
``rows[index]``) give float32 tensors of just those rows, converted from the file's dtype exactly as the
in-memory path converts the whole array (through float64 where float32 cannot hold the file's values exactly),
so both paths give the same numbers. The seeded 80/10/10 split is an index into the file
(:meth:`MappedRows.take`), not a copy.

The rows are read with positional reads (:func:`read_rows`) rather than through the mapping: a page fault on a
mapping maps the neighbouring cached pages too (whole folios on recent Linux; about 300 KiB per row read at a
random place was measured), so a shuffled epoch through the mapping would make the whole file resident.

An evaluation split is binarized (or dequantized) once by a fixed seed. :class:`DrawnRows` draws those values a
slice at a time from the one generator, in row order, keeping the generator's state at each slice boundary it
reached, so ``drawn[i:j]`` equals rows ``i:j`` of the draw over the whole split (CPU draws use one number per
element, in order) wherever and in whatever order it is read.

Whole-split checks (NaN, ranges, 8-bit levels) read any split, in memory or mapped, through :func:`row_chunks`.
"""

import os
import zipfile
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch

#: Rows per piece when a whole split is streamed (checks, draws).
CHUNK_ROWS = 1024
#: dtypes that float32 holds exactly; any other is converted through float64, as the in-memory path does.
_EXACT_IN_FLOAT32 = {np.dtype(t) for t in ("bool", "uint8", "int8", "uint16", "int16", "float16", "float32")}


def map_npy(path) -> np.memmap:
    """The array of a ``.npy`` file, memory-mapped read-only."""
    return np.load(path, mmap_mode="r", allow_pickle=False)


def map_npz_member(path, name: str) -> Optional[np.ndarray]:
    """The array ``name`` of an ``.npz`` memory-mapped read-only, or ``None`` when it is stored compressed
    (``numpy.savez_compressed``): such a member can only be read whole."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"{name}.npy")
        if info.compress_type != zipfile.ZIP_STORED:
            return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local_header = f.read(30)  # the zip format's local file header: name and extra field lengths at 26 and 28
        name_length = int.from_bytes(local_header[26:28], "little")
        extra_length = int.from_bytes(local_header[28:30], "little")
        f.seek(info.header_offset + 30 + name_length + extra_length)
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(f)
        offset = f.tell()
    if dtype.hasobject:
        raise ValueError("pickled Python objects")
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran_order else "C")


class MappedRows:
    """Rows ``index`` of an array in a file, flattened to ``D`` columns, read as float32 tensors on ``device``
    (after ``transforms``, elementwise functions of a float32 tensor such as scaling to 8-bit levels).

    ``array`` is the file's :class:`numpy.memmap`; rows are read from the file with positional reads
    (``os.preadv``, one per run of consecutive rows) into fresh memory, so the process holds only the rows it
    asked for (reading through the mapping would map whole folios of the file around every row).
    """

    def __init__(self, array: np.memmap, index: Optional[torch.Tensor] = None, device="cpu", transforms=()):
        self.array = array
        self.index = index
        self.device = torch.device(device)
        self.transforms = tuple(transforms)

    dtype = torch.float32

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), _row_size(self.array)))

    def __len__(self) -> int:
        return len(self.array) if self.index is None else len(self.index)

    def dim(self) -> int:
        return 2

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, int):
            key = key % len(self)
            return self[key : key + 1][0]
        positions = torch.arange(len(self))[_cpu_index(key)]
        if self.index is not None:
            positions = self.index[positions]
        rows = read_rows(self.array, positions.numpy())
        x = torch.from_numpy(_as_float32(rows).reshape(len(rows), -1))
        for transform in self.transforms:
            x = transform(x)
        return x.to(self.device)

    def take(self, index: torch.Tensor) -> "MappedRows":
        """The rows ``index`` (a view: nothing is read)."""
        index = torch.as_tensor(index, dtype=torch.long)
        return MappedRows(self.array, index if self.index is None else self.index[index], self.device, self.transforms)

    def head(self, n: int) -> "MappedRows":
        """The first ``n`` rows (a view)."""
        return self.take(torch.arange(n))

    def to(self, device) -> "MappedRows":
        """The same rows, read onto ``device``."""
        return MappedRows(self.array, self.index, device, self.transforms)

    def transformed(self, transform: Callable) -> "MappedRows":
        """The same rows with ``transform`` applied to each piece read."""
        return MappedRows(self.array, self.index, self.device, (*self.transforms, transform))

    def __repr__(self):
        return f"MappedRows(shape={tuple(self.shape)}, file dtype={self.array.dtype}, device={self.device})"


def read_rows(array: np.memmap, positions: np.ndarray) -> np.ndarray:
    """Rows ``positions`` of the memory-mapped ``array`` (in that order), read from its file into a new array."""
    out = np.empty((len(positions), *array.shape[1:]), dtype=array.dtype)
    if not array.flags.c_contiguous or not len(positions):  # rows are not runs of bytes in the file
        out[...] = array[positions]
        return out
    row_bytes = out[0].nbytes
    order = np.argsort(positions, kind="stable")
    ordered = positions[order]
    runs = np.split(np.arange(len(ordered)), np.flatnonzero(np.diff(ordered) != 1) + 1)
    with open(array.filename, "rb", buffering=0) as f:
        for run in runs:
            piece = out[order[run[0]]] if len(run) == 1 else np.empty((len(run), *array.shape[1:]), array.dtype)
            _read_exactly(f.fileno(), memoryview(piece).cast("B"), array.offset + int(ordered[run[0]]) * row_bytes)
            if len(run) > 1:
                out[order[run]] = piece
    return out


def _read_exactly(fd: int, buffer: memoryview, offset: int) -> None:
    while len(buffer):
        count = os.preadv(fd, [buffer], offset)
        if count == 0:
            raise OSError(f"the data file ended before offset {offset}: it changed while it was being read")
        buffer, offset = buffer[count:], offset + count


def _row_size(array) -> int:
    return int(np.prod(array.shape[1:], dtype=np.int64))


class DrawnRows:
    """``draw(rows, generator)`` over the whole of ``rows`` with a generator seeded by ``seed`` (e.g. a fixed
    binarization), computed a slice at a time as it is read; see the module docstring."""

    def __init__(self, rows: MappedRows, draw: Callable, seed: int, device=None):
        self.rows = rows
        self.draw = draw
        self.seed = seed
        self.device = torch.device(device) if device is not None else rows.device
        self._cpu_rows = rows.to("cpu")  # draws are made on the CPU, as the in-memory path makes them
        self._states = {0: torch.Generator().manual_seed(seed).get_state()}

    dtype = torch.float32

    @property
    def shape(self) -> torch.Size:
        return self.rows.shape

    def __len__(self) -> int:
        return len(self.rows)

    def dim(self) -> int:
        return 2

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, int):
            key = key % len(self)
            return self[key : key + 1][0]
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                return self._drawn(start, max(start, stop)).to(self.device)
        positions = torch.arange(len(self))[_cpu_index(key)]
        pieces = {int(i): self._drawn(int(i), int(i) + 1) for i in positions.unique()}
        return torch.cat([pieces[int(i)] for i in positions]).to(self.device)

    def _drawn(self, start: int, stop: int) -> torch.Tensor:
        begin = max(row for row in self._states if row <= start)
        generator = torch.Generator()
        generator.set_state(self._states[begin])
        for piece_start in range(begin, start, CHUNK_ROWS):  # draws to skip, made exactly as they would be
            self.draw(self._cpu_rows[piece_start : min(piece_start + CHUNK_ROWS, start)], generator)
        x = self.draw(self._cpu_rows[start:stop], generator)
        self._states[stop] = generator.get_state()
        return x

    def head(self, n: int) -> "DrawnRows":
        """The first ``n`` rows (their draws are the first ``n`` of the whole)."""
        return DrawnRows(self.rows.head(n), self.draw, self.seed, self.device)

    def to(self, device) -> "DrawnRows":
        moved = DrawnRows(self.rows, self.draw, self.seed, device)
        moved._cpu_rows, moved._states = self._cpu_rows, self._states  # the same draws: share what is known
        return moved

    def __repr__(self):
        return f"DrawnRows({self.rows!r}, seed={self.seed})"


LAZY_ROWS = (MappedRows, DrawnRows)


def is_lazy(x) -> bool:
    """Whether ``x`` is a split read from disk as it is used (rather than a tensor in memory)."""
    return isinstance(x, LAZY_ROWS)


def row_chunks(x, rows: int = CHUNK_ROWS) -> Iterator[torch.Tensor]:
    """Consecutive pieces of ``rows`` rows of a tensor (views) or of rows on disk (read one at a time)."""
    for start in range(0, len(x), rows):
        yield x[start : start + rows]


class RowChunks:
    """:func:`row_chunks` as a re-iterable of 1-tuples ``(x[i:i + rows],)``: minibatches for validation or
    evaluation that read rows on disk as they are used, every time they are iterated."""

    def __init__(self, x, rows: int):
        self.x, self.rows = x, rows

    def __iter__(self):
        return ((chunk,) for chunk in row_chunks(self.x, self.rows))

    def __len__(self) -> int:
        return -(-len(self.x) // self.rows)


def first_rows(x, n: int):
    """The first ``n`` rows of ``x``: a view of a tensor, or of rows on disk."""
    return x.head(n) if is_lazy(x) else x[:n]


def all_rows(x, predicate: Callable) -> bool:
    """Whether ``predicate`` (a tensor of rows -> a boolean tensor) holds everywhere in ``x``, streamed."""
    return all(bool(predicate(chunk).all()) for chunk in row_chunks(x))


def _as_float32(rows: np.ndarray) -> np.ndarray:
    """A copy in float32 (never a view of the mapping, whose pages may be released)."""
    if rows.dtype in _EXACT_IN_FLOAT32:
        return np.array(rows, dtype=np.float32, order="C", copy=True)
    return np.asarray(rows, dtype=np.float64).astype(np.float32, order="C")


def _cpu_index(key):
    if isinstance(key, torch.Tensor):
        return key.cpu()
    if isinstance(key, (list, tuple, np.ndarray, Sequence)) and not isinstance(key, (str, bytes)):
        return torch.as_tensor(np.asarray(key), dtype=torch.long)
    return key


def _register_with_inference() -> None:
    from inference.data_rows import register_rows

    for cls in LAZY_ROWS:  # chunked evaluation reads a split a chunk at a time
        register_rows(cls, num_rows=len, rows=lambda x, start, stop: x[start:stop])


_register_with_inference()
