"""Keep freed memory for reuse instead of handing it back to the operating system (glibc's ``malloc``).

PyTorch allocates CPU tensors with the C library's ``malloc``. Under glibc's defaults a freed block of several MB at
the top of the heap is returned to the system (trimmed) or was mapped on its own (``mmap``), so the next pass
that needs the same space page-faults it back in, one 4 KB page at a time, and the kernel zeroes every page.
Evaluation allocates and frees a few 6 MB buffers per particle pass (the decoder's logits and the likelihood's
terms). In a fresh process, a K = 5000 estimate on 100 examples took 0.81 to 1.02 million page faults and 4.1 to
4.4 s under glibc's defaults, against at most 3,600 faults and 2.7 to 2.8 s with the settings below and the larger
passes they allow (``python benchmarks/allocator.py``).
PyTorch's Performance Tuning Guide (its CPU section) suggests swapping in jemalloc or TCMalloc, which reuse freed
memory; these two ``mallopt`` settings get that effect from glibc itself:

* ``M_MMAP_THRESHOLD`` = 32 MB: blocks below it come from the heap, where freed space is reused;
* ``M_TRIM_THRESHOLD`` = 256 MB: up to that much free space stays mapped at the top of the heap.

The cost is that a process keeps up to 256 MB of freed memory mapped. ``pyro-vae`` applies them at the start of
each command; a Python program can call :func:`keep_freed_memory` first. Settings given in the environment
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``GLIBC_TUNABLES``) are left alone, and so is any C library
other than glibc. Importance sampling's passes on CPU are sized by whether they were applied
(:func:`keeps_freed_memory`, :data:`~inference.evaluation.log_marginal_likelihood.DRAWS_PER_PASS`).
"""

import ctypes
import os
import platform

#: ``mallopt`` parameter numbers from glibc's ``malloc.h``.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest accepted value on 64-bit systems
TRIM_THRESHOLD = 256 * 2**20
ENVIRONMENT_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
_applied = False  # this process's malloc settings are process-wide state, and so is this record of them


def keeps_freed_memory() -> bool:
    """Whether :func:`keep_freed_memory` has set this process's ``malloc``."""
    return _applied


def keep_freed_memory() -> bool:
    """Apply the settings above to this process's ``malloc``; returns whether they were applied."""
    global _applied
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if any(name in os.environ for name in ENVIRONMENT_SETTINGS):
        return False  # the user chose the allocator's settings
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    _applied = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    return _applied
