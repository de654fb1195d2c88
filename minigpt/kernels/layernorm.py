"""LayerNorm forward and backward as numba loops: one pass per row instead of NumPy's five.

Matches minigpt.layers.layernorm (torch.nn.LayerNorm(eps=1e-5)): same arguments, same returns,
same cache (xhat, w, rstd, has_bias), so either backend's backward takes either's cache.
Legend: N = B*T rows, C channels.
"""

import math

import numba
import numpy as np

from . import MAX_CHUNKS, contiguous, twins  # dw, db: summed in MAX_CHUNKS fixed chunks of rows


@twins(parallel=True)
def _forward(dtype):
    one = dtype(1.0)

    def kernel(x, w, b, eps, out, xhat, rstd):  # x (N, C); b: (C,) zeros when there is no bias
        N, C = x.shape
        inv_c = one / dtype(C)  # dividing by the int C would promote float32 to float64
        for i in numba.prange(N):
            mean = dtype(0.0)
            for j in range(C):
                mean += x[i, j]
            mean *= inv_c
            var = dtype(0.0)
            for j in range(C):
                d = x[i, j] - mean
                var += d * d
            var *= inv_c  # biased, as torch
            r = one / math.sqrt(var + eps)
            rstd[i] = r
            for j in range(C):
                xh = (x[i, j] - mean) * r
                xhat[i, j] = xh
                out[i, j] = xh * w[j] + b[j]

    return kernel


@twins(parallel=True)
def _backward(dtype):
    def kernel(dout, xhat, w, rstd, dx, dw_parts, db_parts):  # dout, xhat (N, C)
        N, C = dout.shape
        inv_c = dtype(1.0) / dtype(C)
        # dx row by row: dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
        for i in numba.prange(N):
            m1 = dtype(0.0)
            m2 = dtype(0.0)
            for j in range(C):
                dxh = dout[i, j] * w[j]
                dx[i, j] = dxh  # kept, not recomputed: an FMA-contracted recompute would differ
                m1 += dxh  # from m1 by a rounding error (C = 1 must give exactly 0, as NumPy)
                m2 += dxh * xhat[i, j]
            m1 *= inv_c
            m2 *= inv_c
            r = rstd[i]
            for j in range(C):
                dx[i, j] = r * (dx[i, j] - m1 - xhat[i, j] * m2)
        # dw = sum over rows of dout * xhat, db = sum of dout: each chunk owns its partial sums
        n_chunks = dw_parts.shape[0]
        for k in numba.prange(n_chunks):
            dw, db = dw_parts[k], db_parts[k]
            for i in range(k * N // n_chunks, (k + 1) * N // n_chunks):
                d, xh = dout[i], xhat[i]  # rows: the inner loop runs over views from 0 (vectorizes)
                for j in range(C):
                    dw[j] += d[j] * xh[j]
                    db[j] += d[j]

    return kernel


def layernorm_forward(x, w, b, eps=1e-5):
    """Twin of minigpt.layers.layernorm.layernorm_forward. x: (..., C) -> (out, cache)."""
    C = x.shape[-1]
    dtype = x.dtype
    x2 = contiguous(x.reshape(-1, C))  # (N, C)
    out, xhat = np.empty_like(x2), np.empty_like(x2)
    rstd = np.empty(x2.shape[0], dtype)
    bias = np.zeros(C, dtype) if b is None else contiguous(b, dtype)
    _forward(x2, contiguous(w, dtype), bias, dtype.type(eps), out, xhat, rstd, work=x2.size)
    shape = x.shape
    return out.reshape(shape), (xhat.reshape(shape), w, rstd.reshape(*shape[:-1], 1), b is not None)


def layernorm_backward(dout, cache):
    """Twin of minigpt.layers.layernorm.layernorm_backward. Returns (dx, dw, db or None)."""
    xhat, w, rstd, has_bias = cache
    C = xhat.shape[-1]
    dtype = xhat.dtype
    dout2 = contiguous(dout.reshape(-1, C), dtype)  # (N, C)
    dx = np.empty_like(dout2)
    dw_parts = np.zeros((MAX_CHUNKS, C), dtype)
    db_parts = np.zeros((MAX_CHUNKS, C), dtype)
    _backward(dout2, contiguous(xhat.reshape(-1, C)), contiguous(w, dtype), contiguous(rstd.reshape(-1)), dx,
              dw_parts, db_parts, work=dout2.size)  # fmt: skip
    dw = dw_parts.sum(axis=0)
    return dx.reshape(xhat.shape), dw, (db_parts.sum(axis=0) if has_bias else None)
