"""A model's arguments as rows of data points, so a batch can be split (into chunks, or into the shards of a process
group) by slicing every batched argument alike.

A tensor with a first dimension is batched along it; a :class:`~torch.nn.utils.rnn.PackedSequence` by its sequences;
a NumPy array like a tensor. Numbers, strings, ``None``, 0-dimensional tensors, modules and functions are passed
to every chunk unchanged. Any other type is refused before anything runs, naming the argument, unless its rows are
registered, as torchvision's and Pyro's registries do it, with a function that gives its number of rows and one
that slices them::

    from inference.data_rows import register_rows

    register_rows(MyBatch, num_rows=lambda batch: len(batch.ids), rows=lambda batch, start, stop: batch[start:stop])
"""

import numbers
import types
from typing import Callable, NamedTuple

import numpy as np
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence


class RowsOf(NamedTuple):
    """How a batched argument type is split: its number of rows, and rows ``start:stop`` of it."""

    num_rows: Callable
    rows: Callable


def _packed_rows(packed: PackedSequence, start: int, stop: int) -> PackedSequence:
    padded, lengths = pad_packed_sequence(packed, batch_first=True)  # in the caller's order of sequences
    return pack_padded_sequence(padded[start:stop], lengths[start:stop], batch_first=True, enforce_sorted=False)


ROW_TYPES = {
    torch.Tensor: RowsOf(lambda t: t.shape[0], lambda t, start, stop: t[start:stop]),
    np.ndarray: RowsOf(lambda a: a.shape[0], lambda a, start, stop: a[start:stop]),
    PackedSequence: RowsOf(lambda p: int(p.batch_sizes[0]), _packed_rows),
}
"""Batched argument types and how each is split; :func:`register_rows` adds one."""

UNBATCHED = (numbers.Number, str, bytes, type(None), torch.nn.Module, types.FunctionType, types.MethodType)


def register_rows(cls: type, num_rows: Callable, rows: Callable) -> None:
    """Declare how arguments of type ``cls`` split into data points: ``num_rows(value)`` and
    ``rows(value, start, stop)``."""
    ROW_TYPES[cls] = RowsOf(num_rows, rows)


def _rows_of(value):
    """The :class:`RowsOf` of a batched argument, or ``None`` for one passed whole."""
    if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 0:
        return None
    matches = [rows_of for cls, rows_of in ROW_TYPES.items() if isinstance(value, cls)]
    return matches[-1] if matches else None  # the last registered: a subclass registered after its base


def check_splittable(args, needed_by: str, fix: str = "") -> None:
    """Refuse, naming the argument, any argument that is neither batched by a known type nor passed whole."""
    for i, value in enumerate(args):
        if _rows_of(value) is None and not isinstance(value, UNBATCHED) and not torch.is_tensor(value):
            raise TypeError(
                f"{needed_by} splits the model's arguments into data points, but argument {i} is a "
                f"{type(value).__name__}, which it does not know how to split. Register it with "
                f"inference.data_rows.register_rows(<type>, num_rows=..., rows=...).{' ' + fix if fix else ''}"
            )


def num_rows(args, needed_by: str, fix: str = "") -> int:
    """The number of data points, which every batched argument must share."""
    check_splittable(args, needed_by, fix)
    sizes = {rows_of.num_rows(a) for a in args if (rows_of := _rows_of(a)) is not None}
    if len(sizes) != 1:
        raise ValueError(
            f"{needed_by} needs the batched arguments to share their first (data) dimension; got sizes "
            f"{sorted(sizes)}.{' ' + fix if fix else ''}"
        )
    return sizes.pop()


def rows(args, start: int, stop: int) -> tuple:
    """Rows ``start:stop`` of every batched argument; other arguments unchanged."""
    return tuple(a if (rows_of := _rows_of(a)) is None else rows_of.rows(a, start, stop) for a in args)


def rows_in(args, default: int = 1) -> int:
    """The number of data points of the first batched argument (``default`` when none is batched)."""
    for a in args:
        if (rows_of := _rows_of(a)) is not None:
            return rows_of.num_rows(a)
    return default
