"""numba twins of the hot NumPy layers: same signatures, same results, compiled loops.

The NumPy layers in minigpt/layers are the specification; each kernel module here names the
function it matches and tests/test_kernels.py checks the two equal (float64 to 1e-12, float32 to
1e-5, relative to the largest magnitude of the reference). minigpt.backend chooses which set runs.
Matrix products stay in NumPy (OpenBLAS): numba's own `@` needs SciPy and is slower anyway. The
one exception is int8.py, the int8 x int8 -> int32 product of integer-only inference, which BLAS
does not offer (its reference is exact int64 NumPy; tests/test_quantize_int8.py checks them equal).

Every kernel is compiled twice from one Python source (see `twins`):
- float32: with the NaN-safe fastmath subset {reassoc, contract, nsz, arcp}. Strict IEEE order
  stops LLVM from vectorizing a float reduction (a sum stays one scalar chain; layernorm was 5x
  slower here). The subset keeps nnan/ninf off, so isnan and inf still behave: a diverging run is
  still caught (tests/test_kernels.py checks NaN and inf come out where NumPy puts them).
- float64: strict IEEE, no fastmath, so results match NumPy to rounding.
Constants are cast to the kernel's dtype when it is built, so float32 kernels compute in float32.
Division follows NumPy (error_model="numpy": x / 0 is inf or nan, as in the NumPy layers). numba's
default Python error model checks every division for zero to raise ZeroDivisionError, and that
branch kept LLVM from vectorizing any loop that divides (the AdamW update ran 5x slower).

Threads. numba's default threading layer here is GNU OpenMP, whose idle threads spin after a
parallel region and took the cores from the next OpenBLAS matmul (~40% slower). We select the
workqueue layer (its threads sleep) unless NUMBA_THREADING_LAYER is set. Parallel kernels
parallelize over independent outputs (rows, or batch x head) and reduce across rows in a fixed
number of chunks, so results do not depend on the thread count (no `out[j] +=` races in prange).

Caching. Compiled kernels are cached on disk (`cache=True`) next to this file, or in
NUMBA_CACHE_DIR. When no writable location exists we compile in memory and warn once.
MINIGPT_NUMBA_CACHE=0 turns caching off. numba does not notice when a kernel's callee in another
module changes, so a kernel that calls another module's kernels (decode.py composes layernorm,
attention and GELU) names those modules in `twins(depends=...)`: a hash of their source goes into
its cache key, and editing them compiles it again.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import warnings

import numpy as np

os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")  # read when numba starts its threads

import numba
from numba.extending import register_jitable

if os.environ.get("NUMBA_THREADING_LAYER") == "workqueue":
    numba.config.THREADING_LAYER = "workqueue"  # in case numba was imported before us

FASTMATH_F32 = frozenset({"reassoc", "contract", "nsz", "arcp"})  # never nnan / ninf
DTYPES = (np.float32, np.float64)

_cache_enabled = os.environ.get("MINIGPT_NUMBA_CACHE", "1") != "0"
_cache_warned = False


def source_hash(modules) -> str:
    """A short hash of the modules' source files: part of the cache key of a kernel calling them."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(inspect.getsource(module).encode())
    return digest.hexdigest()[:12]


def _jit(fn, dtype, parallel, depends=()):
    """njit one dtype's build of a kernel, cached on disk when a writable cache location exists."""
    global _cache_enabled, _cache_warned
    fastmath = set(FASTMATH_F32) if dtype == np.float32 else False
    # numba keys its disk cache by the function's qualified name and signature, not by its options:
    # without a name per build, the serial build would load the parallel one's code from the cache
    fn.__qualname__ = f"{fn.__qualname__}.{np.dtype(dtype).name}.{'parallel' if parallel else 'serial'}"
    if depends:  # callees from other modules: their source is part of the key (see the docstring)
        fn.__qualname__ += f".{source_hash(depends)}"
    if _cache_enabled:
        try:
            return numba.njit(cache=True, fastmath=fastmath, parallel=parallel, error_model="numpy")(fn)
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
    return numba.njit(cache=False, fastmath=fastmath, parallel=parallel, error_model="numpy")(fn)


# Elements of work below which a kernel runs its serial build (see Twins). Measured on 2 cores:
# these kernels are memory-bound, a second thread gains little, and inside a training step it
# fights OpenBLAS's worker threads, which keep spinning for a while after each matrix product (the
# attention backward at the small preset took 380 ms per step with parallel kernels, 125 ms
# serial). So only very large calls (a model much wider than the presets) go parallel.
PARALLEL_MIN_WORK = 1 << 23


class Twins:
    """A kernel built for float32 and float64 from one source: `build(dtype)` returns the Python
    function with its constants cast to dtype. Calling picks the build by the first array's dtype.

    A kernel written with numba.prange is also built serially (prange is then range): handing
    work to the thread pool costs about 0.1 ms per call, more than the whole of most calls at the
    baby preset's sizes, and a second thread fights OpenBLAS's (see PARALLEL_MIN_WORK), so
    callers get the parallel build only for `work` of at least PARALLEL_MIN_WORK elements. Both builds run the same loops and chunks; LLVM vectorizes them
    differently, so they agree to rounding (not bitwise), and which one runs depends only on the
    shapes, so a run stays reproducible. Builds compile lazily, on first use."""

    def __init__(self, build, parallel=False, depends=()):
        self.build, self.parallel, self.depends = build, parallel, tuple(depends)
        self._compiled = {}

    def for_dtype(self, dtype, parallel=False):
        dtype = np.dtype(dtype).type
        key = (dtype, parallel and self.parallel)
        fn = self._compiled.get(key)
        if fn is None:
            if dtype not in DTYPES:
                raise TypeError(f"kernels run in float32 or float64, got {np.dtype(dtype)}")
            fn = self._compiled[key] = _jit(self.build(dtype), dtype, key[1], self.depends)
        return fn

    def __call__(self, *args, work=0):
        """Run on args; `work` (elements touched) decides between the serial and parallel builds."""
        return self.for_dtype(args[0].dtype, work >= PARALLEL_MIN_WORK)(*args)


def jitable(fn):
    """A helper that kernels call, compiled into them: numba's register_jitable, not njit.

    A kernel built by a `twins` builder is a closure, and numba's disk cache keys it by a hash
    of its closure's contents. An njit dispatcher in the closure pickles with a random per-process
    id, so such a kernel never found itself in the cache: it compiled again in every process and
    added one more cache entry each time (the float32 GELU forward had 130). A register_jitable
    function stays a plain Python function, which pickles the same in every process."""
    return register_jitable(fn)


def twins(parallel=False, depends=()):
    """Decorator for a kernel builder: `@twins(parallel=True) def my_kernel(dtype): ...`.
    depends: the other modules whose kernels this one calls (see the module docstring)."""

    def wrap(build):
        return Twins(build, parallel, depends)

    return wrap


MAX_CHUNKS = 16


def n_chunks(n: int, min_chunk: int = 65536) -> int:
    """How many chunks an elementwise kernel splits n elements into: up to MAX_CHUNKS of at least
    min_chunk elements. A function of n alone, so sums over chunks do not depend on the threads."""
    return max(1, min(MAX_CHUNKS, n // min_chunk))


def contiguous(x, dtype=None):
    """x as a C-contiguous array (no copy when it already is): kernels are compiled for C layout
    only, since every other layout would compile again (0.4-1 s each)."""
    return np.ascontiguousarray(x, dtype=dtype)
