"""Denormal (subnormal) floats on the CPU, and flushing them to zero.

A nonzero float32 below ``2^-126`` in magnitude is *denormal*. x86 CPUs handle denormal operands and results in a
slower path (microcode assists), and training drives some values there as it goes on (Adam's moments of gradients
that have become tiny, weights decaying toward zero), so late epochs can cost more than early ones (measured in
``BENCHMARKS.md``). ``torch.set_flush_denormal(True)`` sets the CPU's flush-to-zero and denormals-are-zero modes:
such values are read and written as 0, which changes a result by less than ``2^-126`` per operation. On a GPU it
changes nothing (CUDA kernels flush or not by their own build).

:func:`flushing_denormals` sets the mode for a block and restores the mode it found; :func:`denormals_flushed`
measures the mode in force (torch has no getter), through both the element-wise and the matrix-product kernels,
which run on torch's worker threads as well as on the calling one.
"""

import contextlib

import torch

#: A float32 denormal: ``1e-39 < 2^-126 ~ 1.18e-38``.
_DENORMAL = 1e-39


def denormals_flushed() -> bool:
    """Whether the CPU now reads denormal float32 values as zero, in element-wise kernels and matrix products (both
    large enough to be split over torch's threads)."""
    elementwise = torch.full((1 << 18,), _DENORMAL) * 1.0
    product = torch.full((256, 256), _DENORMAL) @ torch.ones(256, 256)
    return bool((elementwise == 0).all()) and bool((product == 0).all())


@contextlib.contextmanager
def flushing_denormals(enabled: bool):
    """Within the block, denormal float32 and float64 values on the CPU are flushed to zero when ``enabled`` (kept
    when not); the mode found on entry is restored on exit."""
    previous = denormals_flushed()
    torch.set_flush_denormal(enabled)
    try:
        yield
    finally:
        torch.set_flush_denormal(previous)
