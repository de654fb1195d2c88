"""int8 x int8 -> int32 matrix product, the inner loop of integer-only inference.

Matches `int8_matmul_reference` below (exact integer arithmetic in int64, NumPy's matmul), which
is the specification: the kernel's int32 results equal it exactly (tests/test_quantize_int8.py).
Loop order i-k-j with the row of the output as a view: the inner loop is a contiguous
multiply-add of an int8 row of b into int32 accumulators, which LLVM vectorizes (widening
multiplies); a runtime-offset 2-D index there would cost 10x (docs: engineering notes §1.6).
Rows of the output are independent, so the parallel build splits them across threads (no shared
accumulator, no race).

Overflow: each product is at most 128 * 128 = 2^14 in magnitude, so a sum of K of them fits int32
(|sum| <= 2^31 - 1) for K <= (2^31 - 1) // 2^14 = 131071. Larger K is refused (an InputError), not
wrapped around silently.

Legend: M rows (tokens), K reduction (input channels), N columns (output channels).
"""

from __future__ import annotations

import numba
import numpy as np

from ..errors import InputError
from . import PARALLEL_MIN_WORK, _jit

MAX_K = (2**31 - 1) // (128 * 128)  # 131071: the largest K whose int32 sums cannot overflow


def int8_matmul_reference(a, b) -> np.ndarray:
    """The specification: a (M, K) int8 @ b (K, N) int8 in exact int64 arithmetic, as int32 (the
    caller's K bound guarantees the values fit)."""
    return (a.astype(np.int64) @ b.astype(np.int64)).astype(np.int32)


def _build():
    def kernel(a, b, c):  # a (M, K) int8, b (K, N) int8, c (M, N) int32 zeroed
        M, K = a.shape
        N = b.shape[1]
        for i in numba.prange(M):
            ci = c[i]
            ai = a[i]
            for k in range(K):
                aik = np.int32(ai[k])
                bk = b[k]
                for j in range(N):
                    ci[j] += aik * np.int32(bk[j])

    return kernel


_compiled = {}


def _kernel(parallel: bool):
    if parallel not in _compiled:
        _compiled[parallel] = _jit(_build(), np.int8, parallel)
    return _compiled[parallel]


def int8_matmul(a, b) -> np.ndarray:
    """a (M, K) int8 @ b (K, N) int8 -> (M, N) int32, exactly. Refuses K > MAX_K (int32 overflow)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != np.int8 or b.dtype != np.int8:
        raise InputError(f"int8_matmul multiplies int8 matrices, got {a.dtype} and {b.dtype}")
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise InputError(f"int8_matmul: shapes {a.shape} and {b.shape} do not fit (M, K) @ (K, N)")
    K = a.shape[1]
    if K > MAX_K:
        raise InputError(f"int8_matmul: K={K} could overflow the int32 accumulators (at most {MAX_K} "
                         "products of two int8 values fit); split the reduction")
    c = np.zeros((a.shape[0], b.shape[1]), np.int32)
    parallel = a.shape[0] * K * b.shape[1] >= PARALLEL_MIN_WORK // 8  # int8 work is ~8x lighter per op
    _kernel(parallel)(np.ascontiguousarray(a), np.ascontiguousarray(b), c)
    return c
