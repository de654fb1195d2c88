# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Tutorial 2: from a NumPy formula to a numba kernel (LayerNorm backward)
#
# minigpt keeps two versions of every hot layer. The NumPy one in `minigpt/layers` is the
# specification: one line per formula, easy to check against the math. The numba one in
# `minigpt/kernels` computes the same thing as explicit loops compiled to machine code. It is
# faster because it reads each row once and writes no temporary arrays. In this tutorial we write
# the LayerNorm backward both ways, check that they agree, and time them.
#
# Run it as a script (`python tutorials/02_kernels.py`) or open it as a notebook. The first
# call of a numba function compiles it (about a second); we time only the calls after that.
#
# **Shape legend**: `N` rows (batch x time, B*T), `C` channels.
#
# **The math.** LayerNorm normalizes each row x (C values) to xhat = (x - mean) * rstd, with
# rstd = 1 / sqrt(var + eps), and then scales it: out = xhat * w (+ b). Given dout, the gradient
# of the loss with respect to out, the backward is
#
#     dw = sum over rows of dout * xhat
#     db = sum over rows of dout
#     dxhat = dout * w
#     dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))      (means over C)
#
# The three terms of dx are the direct path, the path through the mean, and the path through
# the variance.

# %%
import time

import numba
import numpy as np

from minigpt.kernels.layernorm import layernorm_backward as minigpt_kernel_backward
from minigpt.layers import layernorm_backward as minigpt_numpy_backward
from minigpt.layers import layernorm_forward

rng = np.random.default_rng(0)
N, C = 2048, 384  # one small-preset activation: batch 8 x 256 positions, 384 channels
x = rng.standard_normal((N, C)).astype(np.float32)
w = (1 + 0.1 * rng.standard_normal(C)).astype(np.float32)
dout = rng.standard_normal((N, C)).astype(np.float32)
_, (xhat, _, rstd, _) = layernorm_forward(x, w, None)  # the cache: xhat (N, C), rstd (N, 1)
print("xhat", xhat.shape, "rstd", rstd.shape)

# %% [markdown]
# ## 1. NumPy: the formula, one array expression per line
#
# Each line below makes a full pass over an (N, C) array and most of them allocate a new one.
# That is easy to read, but it moves far more memory than the arithmetic needs.


# %%
def layernorm_backward_numpy(dout, xhat, w, rstd):
    dw = (dout * xhat).sum(axis=0)  # (C,)
    db = dout.sum(axis=0)  # (C,)
    dxhat = dout * w  # (N, C)
    dx = rstd * (dxhat - dxhat.mean(axis=-1, keepdims=True) - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))
    return dx, dw, db


dx_np, dw_np, db_np = layernorm_backward_numpy(dout, xhat, w, rstd)

# %% [markdown]
# ## 2. numba: the same formula as loops
#
# For each row we make one pass to get the two means, then one pass to write dx. We write the
# loops ourselves and numba compiles them (`@numba.njit`). Three choices matter:
#
# - **Accumulate dw and db without races.** Rows are independent, so `prange` spreads them over
#   the cores. dw and db, however, sum over rows. If two threads did `dw[j] += ...` on the same
#   array, they would silently lose updates. So every chunk of rows sums into its own row of
#   `dw_parts`, and we add the chunks at the end. The number of chunks is fixed, so the result
#   does not depend on how many threads run.
# - **Let it vectorize.** With strict IEEE arithmetic, LLVM may not reorder a sum, so
#   `m1 += ...` stays a chain of scalar additions. The flags `reassoc` and friends allow SIMD
#   partial sums. We avoid full `fastmath=True`: it would also assume that no NaN ever occurs,
#   and then a diverging training run would go unnoticed.
# - **Keep float32 in float32.** Dividing by the integer `C` would promote to float64, so we
#   multiply by `inv_c` instead.

# %%
N_CHUNKS = 16


@numba.njit(parallel=True, fastmath={"reassoc", "contract", "nsz", "arcp"})
def layernorm_backward_loops(dout, xhat, w, rstd, dx, dw_parts, db_parts):
    N, C = dout.shape
    inv_c = np.float32(1.0) / np.float32(C)
    for i in numba.prange(N):  # rows are independent: one row per task
        m1 = np.float32(0.0)  # mean(dxhat)
        m2 = np.float32(0.0)  # mean(dxhat * xhat)
        for j in range(C):
            dxh = dout[i, j] * w[j]
            dx[i, j] = dxh
            m1 += dxh
            m2 += dxh * xhat[i, j]
        m1 *= inv_c
        m2 *= inv_c
        for j in range(C):
            dx[i, j] = rstd[i] * (dx[i, j] - m1 - xhat[i, j] * m2)
    for k in numba.prange(N_CHUNKS):  # dw, db: each chunk of rows owns one row of partial sums
        for i in range(k * N // N_CHUNKS, (k + 1) * N // N_CHUNKS):
            for j in range(C):
                dw_parts[k, j] += dout[i, j] * xhat[i, j]
                db_parts[k, j] += dout[i, j]


def layernorm_backward_numba(dout, xhat, w, rstd):
    dx = np.empty_like(dout)
    dw_parts = np.zeros((N_CHUNKS, C), np.float32)
    db_parts = np.zeros((N_CHUNKS, C), np.float32)
    layernorm_backward_loops(dout, xhat, w, rstd.reshape(-1), dx, dw_parts, db_parts)
    return dx, dw_parts.sum(axis=0), db_parts.sum(axis=0)


dx_nb, dw_nb, db_nb = layernorm_backward_numba(dout, xhat, w, rstd)  # the first call compiles

# %% [markdown]
# ## 3. Do they agree?
#
# The two versions add the numbers in a different order, so in float32 they differ by rounding,
# not by more. We compare each result against the size of the reference: the largest difference
# must be at most 1e-5 of the largest value. This is the tolerance minigpt's tests apply to every
# float32 kernel. In float64 the tests require 1e-12.

# %%
for name, a, b in (("dx", dx_nb, dx_np), ("dw", dw_nb, dw_np), ("db", db_nb, db_np)):
    rel = np.max(np.abs(a - b)) / np.max(np.abs(b))
    print(f"{name}: max |numba - numpy| / max |numpy| = {rel:.1e}")
    assert rel <= 1e-5, name

# The kernel in minigpt.kernels is this function, wrapped to take the layer's cache:
dx_k, dw_k, _ = minigpt_kernel_backward(dout, (xhat, w, rstd, False))
dx_ref, dw_ref, _ = minigpt_numpy_backward(dout, (xhat, w, rstd, False))
assert np.max(np.abs(dx_k - dx_ref)) <= 1e-5 * np.max(np.abs(dx_ref))
assert np.max(np.abs(dw_k - dw_ref)) <= 1e-5 * np.max(np.abs(dw_ref))

# %% [markdown]
# ## 4. How much faster?
#
# We take the median of several calls. A 2-core laptop is noisy, so expect some spread. On the
# project's 2-core machine, with nothing else running, the loops were several times faster than
# the NumPy expressions. Part of the gain is threads, but most of it is memory traffic: NumPy
# makes about eight passes over (N, C) arrays, and the loops make two.


# %%
def median_ms(f, repeats=20):
    f()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


t_np = median_ms(lambda: layernorm_backward_numpy(dout, xhat, w, rstd))
t_nb = median_ms(lambda: layernorm_backward_numba(dout, xhat, w, rstd))
print(f"NumPy {t_np:.2f} ms, numba {t_nb:.2f} ms per call ({t_np / t_nb:.1f}x) with {numba.get_num_threads()} threads")

# %% [markdown]
# ## What minigpt does with this
#
# `minigpt/kernels/` holds a kernel like this one for every hot loop: LayerNorm, GELU, causal
# attention (fused scores, mask and softmax, visiting only the keys s <= t), softmax
# cross-entropy, the embedding scatter-add, and the AdamW update. `minigpt.backend` picks the set
# that runs:
#
#     MINIGPT_BACKEND=numpy minigpt train ...      # the readable reference everywhere
#     from minigpt import backend; backend.set_backend("numpy")
#
# `minigpt bench` times both backends and PyTorch side by side. `tests/test_kernels.py` checks
# every kernel against its NumPy twin on random small and odd shapes.
