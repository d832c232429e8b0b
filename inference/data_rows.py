"""A model's arguments as rows of data points: every tensor argument with a first dimension indexes the same data
points, so a batch is split (into chunks, or into the shards of a process group) by slicing them alike."""

import torch


def num_rows(args, needed_by: str, fix: str = "") -> int:
    """The number of data points, which every tensor argument with a first dimension must share."""
    sizes = {a.shape[0] for a in args if torch.is_tensor(a) and a.dim() > 0}
    if len(sizes) != 1:
        raise ValueError(
            f"{needed_by} needs the tensor arguments to share their first (data) dimension; got sizes "
            f"{sorted(sizes)}.{' ' + fix if fix else ''}"
        )
    return sizes.pop()


def rows(args, start: int, stop: int) -> tuple:
    """Rows ``start:stop`` of every tensor argument with a first dimension; other arguments unchanged."""
    return tuple(a[start:stop] if torch.is_tensor(a) and a.dim() > 0 else a for a in args)
