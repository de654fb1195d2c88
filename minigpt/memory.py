"""Keep freed memory in the process for reuse, instead of handing it back to the OS after every
array and page-faulting it in again on the next one.

A training step allocates and frees the same few dozen arrays (activations, caches, gradients)
every iteration. glibc's malloc serves each allocation above its mmap threshold (128 KiB at
start, adjusted as the program runs) with a fresh mmap, and gives memory at the top of its heap
back to the OS once more than the trim threshold is free. Either way the next step's arrays land
on pages the kernel must fault in and zero again, one fault per 4 KiB page. On a virtual machine
(this project's benchmark machine is one) a page fault is expensive: measured here, the baby
preset's attention backward took 5.3 ms with glibc's defaults and 2.0 ms with the thresholds
below, the same arithmetic on the same data; the difference was the concatenation of its three
gradients into freshly mapped memory.

`keep_freed_memory()` sets, through glibc's mallopt:
- M_MMAP_THRESHOLD = 32 MiB (glibc's maximum on 64-bit): arrays up to 32 MiB come from the heap,
  where freed memory is reused;
- M_TRIM_THRESHOLD = 1 GiB: the heap's free top is kept, not returned to the OS.

The cost is memory the process keeps after it frees it (up to the step's peak, plus up to 1 GiB
of free heap top), which a training or sampling process would use again anyway. The `minigpt`
command calls it first thing; a program that imports minigpt as a library can call it itself.
Setting the environment variables MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ before
Python starts does the same. On other C libraries (macOS, Windows, musl) it does nothing and
returns False.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1  # glibc's malloc.h parameter numbers
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # the largest value glibc accepts on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
TRIM_THRESHOLD = 1024 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds (see the module docstring). True if both were set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # glibc's mallopt returns 1 on success and 0 for a parameter or value it does not accept
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
