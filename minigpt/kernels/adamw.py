"""The AdamW update and the gradient's sum of squares as numba loops.

Matches minigpt.optim.adamw_update (torch.optim.AdamW's arithmetic, in its order): NumPy makes
about ten passes over each parameter (one per operator, with temporaries); this is one pass that
reads p, g, m, v once and writes p, m, v. It runs on every parameter tensor (AdamW.step calls it
for each), and sum_of_squares does the same for the clipping norm, accumulating in float64 as
minigpt.optim.global_norm does, in a fixed number of chunks so the result does not depend on
the thread count.
Legend: n elements of one parameter tensor (flattened).
"""

import math

import numba
import numpy as np

from . import contiguous, n_chunks, twins


@twins(parallel=True)
def _update(dtype):
    def kernel(p, g, m, v, n_chunks, decay, beta1, c1, beta2, c2, eps, step_size, bc2_sqrt):  # arrays (n,)
        n = p.shape[0]
        for k in numba.prange(n_chunks):
            lo, hi = k * n // n_chunks, (k + 1) * n // n_chunks
            # views indexed from 0: an index numba cannot prove >= 0 gets a wraparound check,
            # which stops LLVM from vectorizing the loop
            pk, gk, mk, vk = p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi]
            for i in range(hi - lo):
                gi = gk[i]
                pi = pk[i] * decay  # decoupled weight decay (decay = 1 - lr * wd, or 1)
                mi = mk[i] * beta1 + c1 * gi  # c1 = 1 - beta1, c2 = 1 - beta2
                vi = vk[i] * beta2 + c2 * (gi * gi)
                mk[i] = mi
                vk[i] = vi
                pk[i] = pi - step_size * (mi / (math.sqrt(vi) / bc2_sqrt + eps))

    return kernel


@twins(parallel=True)
def _sum_of_squares(dtype):
    def kernel(x, parts):  # x (n,) -> parts (n_chunks,) float64 partial sums
        n, n_chunks = x.shape[0], parts.shape[0]
        for k in numba.prange(n_chunks):
            xk = x[k * n // n_chunks : (k + 1) * n // n_chunks]  # a view indexed from 0 (vectorizes)
            acc = 0.0
            for i in range(xk.shape[0]):
                xi = np.float64(xk[i])
                acc += xi * xi
            parts[k] = acc

    return kernel


def adamw_update(p, g, m, v, lr, beta1, beta2, eps, weight_decay, t, decay):
    """Twin of minigpt.optim.adamw_update: one AdamW step of p (any shape) in place."""
    T = p.dtype.type
    if not (p.flags.c_contiguous and m.flags.c_contiguous and v.flags.c_contiguous):
        raise ValueError("adamw_update updates in place, so p, m and v must be C-contiguous")
    pf, mf, vf = p.reshape(-1), m.reshape(-1), v.reshape(-1)  # views of the same memory
    bc1 = 1.0 - beta1**t
    bc2_sqrt = math.sqrt(1.0 - beta2**t)
    decay_factor = 1.0 - lr * weight_decay if decay and weight_decay != 0.0 else 1.0
    _update(pf, contiguous(g, p.dtype).reshape(-1), mf, vf, n_chunks(pf.size), T(decay_factor), T(beta1), T(1.0 - beta1),
            T(beta2), T(1.0 - beta2), T(eps), T(lr / bc1), T(bc2_sqrt), work=pf.size)  # fmt: skip


def sum_of_squares(x) -> float:
    """Twin of the per-tensor term of minigpt.optim.global_norm: sum of x**2 in float64."""
    xf = contiguous(x).reshape(-1)
    parts = np.zeros(n_chunks(xf.size))
    _sum_of_squares(xf, parts, work=xf.size)
    return float(parts.sum())
