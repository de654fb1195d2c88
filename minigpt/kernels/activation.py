"""GELU (tanh approximation) forward and backward as numba loops.

Matches minigpt.layers.activation.gelu_forward / gelu_backward (torch's gelu(approximate="tanh")):
same returns and the same cache (x, t) with t = tanh(u). ReLU stays in NumPy: it is one
comparison, already a single vectorized pass.

tanh. numba has no vectorized tanh here (that needs Intel's SVML), and a scalar libm tanh per
element was 9x slower than NumPy's SIMD loop. So:
- float64 uses math.tanh (libm), exactly as NumPy, to match it to rounding;
- float32 uses tanh(u) = 2 s / (1 + s^2) with s = tanh(u / 2) from Lambert's continued fraction
  truncated after 7 terms (a [7/6] Pade approximant), u clamped to [-9, 9] where tanh is +-1 in
  float32. Pure multiply-adds, so LLVM vectorizes it. Its largest error over every float32 in
  [-20, 20] is 1.5e-7 (np.tanh's own float32 error is 6e-8), checked in tests/test_kernels.py.
Legend: N elements (B*T*4C inside the MLP).
"""

import math

import numba
import numpy as np

from . import contiguous, jitable, n_chunks, twins

GELU_SCALE = math.sqrt(2.0 / math.pi)
GELU_CUBIC = 0.044715
TANH_CLAMP = 9.0  # |u| beyond this: tanh(u) rounds to +-1 in float32


def _tanh_f32(dtype):
    """tanh for the float32 build, as arithmetic only (see the module docstring)."""
    c0, c1, c2 = dtype(135135.0), dtype(17325.0), dtype(378.0)
    d1, d2, d3 = dtype(62370.0), dtype(3150.0), dtype(28.0)
    half, one, two, lim = dtype(0.5), dtype(1.0), dtype(2.0), dtype(TANH_CLAMP)

    def tanh(u):
        u = min(max(u, -lim), lim)
        y = half * u
        y2 = y * y
        s = y * (c0 + y2 * (c1 + y2 * (c2 + y2))) / (c0 + y2 * (d1 + y2 * (d2 + y2 * d3)))
        return two * s / (one + s * s)

    return jitable(tanh)  # not njit: see kernels.jitable


@twins(parallel=True)
def _forward(dtype):
    scale, cubic, half, one = dtype(GELU_SCALE), dtype(GELU_CUBIC), dtype(0.5), dtype(1.0)
    tanh = _tanh_f32(dtype) if dtype == np.float32 else math.tanh

    def kernel(x, out, t, n_chunks):  # x, out, t: (N,)
        N = x.shape[0]
        for k in numba.prange(n_chunks):
            lo, hi = k * N // n_chunks, (k + 1) * N // n_chunks
            xk, ok, tk = x[lo:hi], out[lo:hi], t[lo:hi]  # views indexed from 0, so LLVM vectorizes
            for i in range(hi - lo):
                xi = xk[i]
                ti = tanh(scale * (xi + cubic * (xi * xi * xi)))
                tk[i] = ti
                ok[i] = half * xi * (one + ti)

    return kernel


@twins(parallel=True)
def _backward(dtype):
    scale, cubic3, half, one = dtype(GELU_SCALE), dtype(3.0 * GELU_CUBIC), dtype(0.5), dtype(1.0)

    def kernel(dout, x, t, dx, n_chunks):  # all (N,)
        N = x.shape[0]
        for k in numba.prange(n_chunks):
            lo, hi = k * N // n_chunks, (k + 1) * N // n_chunks
            dk, xk, tk, dxk = dout[lo:hi], x[lo:hi], t[lo:hi], dx[lo:hi]
            for i in range(hi - lo):
                xi, ti = xk[i], tk[i]
                du_dx = scale * (one + cubic3 * xi * xi)
                dxk[i] = dk[i] * (half * (one + ti) + half * xi * (one - ti * ti) * du_dx)

    return kernel


def gelu_forward(x):
    """Twin of minigpt.layers.activation.gelu_forward. x: any shape -> (out, (x, t))."""
    xf = contiguous(x).reshape(-1)
    out, t = np.empty_like(xf), np.empty_like(xf)
    _forward(xf, out, t, n_chunks(xf.size), work=xf.size)
    return out.reshape(x.shape), (x, t.reshape(x.shape))


def gelu_backward(dout, cache):
    """Twin of minigpt.layers.activation.gelu_backward: dx = dout * gelu'(x)."""
    x, t = cache
    xf = contiguous(x).reshape(-1)
    dx = np.empty_like(xf)
    _backward(contiguous(dout, x.dtype).reshape(-1), xf, contiguous(t).reshape(-1), dx, n_chunks(xf.size), work=xf.size)
    return dx.reshape(x.shape)
