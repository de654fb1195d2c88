"""numba twins of the hot NumPy layers: same signatures, same results, compiled loops.

The NumPy layers in minigpt/layers are the specification; each kernel module here names the
function it matches and tests/test_kernels.py checks the two equal (float64 to 1e-12, float32 to
1e-5, relative to the largest magnitude of the reference). minigpt.backend chooses which set runs.
Matrix products stay in NumPy (OpenBLAS): numba's own `@` needs SciPy and is slower anyway.

Every kernel is compiled twice from one Python source (see `twins`):
- float32: with the NaN-safe fastmath subset {reassoc, contract, nsz, arcp}. Strict IEEE order
  stops LLVM from vectorizing a float reduction (a sum stays one scalar chain), which made
  layernorm 5x and attention 2.5x slower here. The subset keeps nnan/ninf off, so isnan and inf
  still behave: a diverging run is still caught (tests/test_kernels.py checks NaN and inf pass
  through every kernel).
- float64: strict IEEE, no fastmath, so results match NumPy to rounding.
Constants are cast to the kernel's dtype when it is built, so float32 kernels compute in float32.

Threads. numba's default threading layer here is GNU OpenMP, whose idle threads spin after a
parallel region and took the cores from the next OpenBLAS matmul (~40% slower). We select the
workqueue layer (its threads sleep) unless NUMBA_THREADING_LAYER is set. Parallel kernels
parallelize over independent outputs (rows, or batch x head) and reduce across rows in a fixed
number of chunks, so results do not depend on the thread count (no `out[j] +=` races in prange).

Caching. Compiled kernels are cached on disk (`cache=True`) next to this file, or in
NUMBA_CACHE_DIR. When no writable location exists we compile in memory and warn once.
MINIGPT_NUMBA_CACHE=0 turns caching off. numba does not notice when a kernel's callee in another
module changes, so kernels here call only functions of their own module.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")  # read when numba starts its threads

import numba

if os.environ.get("NUMBA_THREADING_LAYER") == "workqueue":
    numba.config.THREADING_LAYER = "workqueue"  # in case numba was imported before us

FASTMATH_F32 = frozenset({"reassoc", "contract", "nsz", "arcp"})  # never nnan / ninf
DTYPES = (np.float32, np.float64)

_cache_enabled = os.environ.get("MINIGPT_NUMBA_CACHE", "1") != "0"
_cache_warned = False


def _jit(fn, dtype, parallel):
    """njit one dtype's build of a kernel, cached on disk when a writable cache location exists."""
    global _cache_enabled, _cache_warned
    fastmath = set(FASTMATH_F32) if dtype == np.float32 else False
    if _cache_enabled:
        try:
            return numba.njit(cache=True, fastmath=fastmath, parallel=parallel, nogil=True)(fn)
        except RuntimeError as e:  # "cannot cache function ...: no locator available"
            _cache_enabled = False
            if not _cache_warned:
                _cache_warned = True
                warnings.warn(
                    f"minigpt: no writable numba cache location ({e}); kernels are compiled in memory on "
                    "every start. Set NUMBA_CACHE_DIR to a writable directory to cache them.",
                    RuntimeWarning,
                    stacklevel=3,
                )
    return numba.njit(cache=False, fastmath=fastmath, parallel=parallel, nogil=True)(fn)


class Twins:
    """A kernel built for float32 and float64 from one source: `build(dtype)` returns the Python
    function with its constants cast to dtype. Calling picks the build by the first array's dtype.
    Builds compile lazily, on first use of each dtype."""

    def __init__(self, build, parallel=False):
        self.build, self.parallel = build, parallel
        self._compiled = {}

    def for_dtype(self, dtype):
        dtype = np.dtype(dtype).type
        fn = self._compiled.get(dtype)
        if fn is None:
            if dtype not in DTYPES:
                raise TypeError(f"kernels run in float32 or float64, got {np.dtype(dtype)}")
            fn = self._compiled[dtype] = _jit(self.build(dtype), dtype, self.parallel)
        return fn

    def __call__(self, *args):
        return self.for_dtype(args[0].dtype)(*args)


def twins(parallel=False):
    """Decorator for a kernel builder: `@twins(parallel=True) def my_kernel(dtype): ...`."""

    def wrap(build):
        return Twins(build, parallel)

    return wrap


def contiguous(x, dtype=None):
    """x as a C-contiguous array (no copy when it already is): kernels are compiled for C layout
    only, since every other layout would compile again (0.4-1 s each)."""
    return np.ascontiguousarray(x, dtype=dtype)
