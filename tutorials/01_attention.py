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
# # Tutorial 1: causal self-attention, forward and backward, by hand
#
# Attention is the one layer of GPT-2 that mixes information across time. Every other layer
# (layernorm, linear, GELU) works on each position by itself. In this tutorial we write causal
# multi-head self-attention in plain NumPy, on sizes small enough to print. Then we derive its
# backward pass on paper, code it, and check it against finite differences and against
# `minigpt.layers`.
#
# Run it as a script (`python tutorials/01_attention.py`) or open it as a notebook; jupytext and
# VS Code both read the `# %%` cells. It runs in under a second. It needs numpy and an importable
# minigpt: run `pip install -e .` in the repository root, or put the root on `PYTHONPATH`.
#
# **What attention computes.** Each position t sends out a query q_t. Each position j offers a key
# k_j and a value v_j. Position t scores every key with a dot product, turns the scores into
# probabilities with a softmax, and takes the probability-weighted average of the values. The
# word "causal" means position t may look only at positions 0..t and never at the future. For
# one head, in one line:
#
#     y = softmax(mask(q @ k^T / sqrt(hs))) @ v
#
# GPT-2 runs several heads side by side on separate slices of the channels and then places their
# outputs next to each other.
#
# **Shape legend**, used in every comment below:
#
# - `B`: batch, the number of independent sequences
# - `T`: time, the sequence length
# - `C`: channels, the width of each position's vector (`n_embd`)
# - `NH`: number of heads
# - `hs`: head size, `C // NH`, the channels each head works on
#
# What we leave out: the two linear layers around attention (`c_attn` makes q, k, v from the
# residual stream and `c_proj` mixes the heads afterwards; both live in `minigpt/model.py`),
# dropout on the attention probabilities (minigpt supports it; we keep it off here), and the
# KV cache used for generation.

# %%
import math

import numpy as np

from minigpt.gradcheck import SMOOTH_TOLERANCE, compare, numerical_gradient_array
from minigpt.layers import attention_backward, attention_forward

np.set_printoptions(precision=4, suppress=True, linewidth=110)

# %% [markdown]
# ## 1. Toy inputs
#
# minigpt's attention starts from `qkv`, the output of `c_attn`: for each position, q, k and v
# side by side, 3C numbers in all. Columns `[0, C)` are q, `[C, 2C)` are k and `[2C, 3C)` are v.
# We draw it at random from a seeded generator, so every run prints the same numbers. We use
# float64 because the finite-difference check in section 5 needs the extra precision.

# %%
B, T, C, NH = 2, 4, 6, 2
hs = C // NH  # head size: 3 channels per head

rng = np.random.default_rng(0)
qkv = rng.standard_normal((B, T, 3 * C))  # float64
print("qkv", qkv.shape, qkv.dtype)  # (B, T, 3C)

# %% [markdown]
# ## 2. The forward pass, one line at a time
#
# **Split the heads.** Cut q out of qkv. Its C channels are really NH groups of hs, one per head,
# so a reshape exposes them as an axis of their own. A transpose then moves the head axis ahead
# of time, so that each (batch, head) pair holds an ordinary (T, hs) matrix and `@` multiplies
# all of them at once.

# %%
q = qkv[..., 0:C]
print("q                  ", q.shape)  # (B, T, C)
q = q.reshape(B, T, NH, hs)
print("after reshape      ", q.shape)  # (B, T, NH, hs)
q = q.transpose(0, 2, 1, 3)
print("after transpose    ", q.shape)  # (B, NH, T, hs)


def split_heads(x):
    """(B, T, C) -> (B, NH, T, hs): the two lines above."""
    return x.reshape(B, T, NH, hs).transpose(0, 2, 1, 3)


k = split_heads(qkv[..., C : 2 * C])  # (B, NH, T, hs)
v = split_heads(qkv[..., 2 * C : 3 * C])  # (B, NH, T, hs)
print("k, v               ", k.shape, v.shape)

# %% [markdown]
# **Scores.** Each query is dotted with every key. We divide by sqrt(hs) so that the scores stay
# of order 1 however wide the head is. For unit-variance q and k, a dot product of hs terms has
# variance hs, and large scores would push the softmax towards one-hot, where its gradient
# vanishes.

# %%
scale = 1.0 / math.sqrt(hs)  # a Python float, so it would not upcast float32 inputs
scores = (q @ k.transpose(0, 1, 3, 2)) * scale  # (B, NH, T, hs) @ (B, NH, hs, T) -> (B, NH, T, T)
print("scores", scores.shape)  # (B, NH, T, T): row t = query t, column j = key j

# %% [markdown]
# **The causal mask.** Query t may see keys 0..t, which is the lower triangle of a T x T matrix,
# diagonal included. We set every other score to -inf, so its exponential is exactly 0.

# %%
causal = np.tri(T, dtype=bool)  # (T, T), True on and below the diagonal
print(causal.astype(int))
masked = np.where(causal, scores, -np.inf)  # (B, NH, T, T)

# %% [markdown]
# **Softmax over the keys**, which is the last axis. First we subtract each row's maximum. The
# softmax does not change when we add a constant to a row, because that constant multiplies the
# numerator and the denominator by the same exp(c). After the subtraction the largest exponent
# is exp(0) = 1, so nothing overflows. Every row keeps at least one finite entry (the diagonal),
# so the maximum is finite and we never compute -inf - (-inf).

# %%
e = np.exp(masked - masked.max(axis=-1, keepdims=True))  # exp(-inf) = 0 on the masked entries
att = e / e.sum(axis=-1, keepdims=True)  # (B, NH, T, T), the attention probabilities

print("attention matrix of batch 0, head 0 (row = query, column = key):")
print(att[0, 0])
print("row sums:", att[0, 0].sum(axis=-1))
upper = ~causal  # strictly above the diagonal: the future
print("largest entry above the diagonal, all heads:", np.abs(att[..., upper]).max())
assert np.allclose(att.sum(axis=-1), 1.0)
assert np.all(att[..., upper] == 0.0)  # exactly 0, not just small

# %% [markdown]
# Row 0 is `[1, 0, 0, 0]`: the first token can only attend to itself. Each later row spreads
# its weight over a longer prefix.
#
# **Weighted sum of the values, then merge the heads.** `att @ v` averages the value vectors
# with the row's probabilities. Merging undoes the split: we move time back ahead of the heads
# and lay the NH outputs of size hs side by side, giving C channels again.

# %%
y = att @ v  # (B, NH, T, T) @ (B, NH, T, hs) -> (B, NH, T, hs)
print("y                  ", y.shape)
y = y.transpose(0, 2, 1, 3)
print("after transpose    ", y.shape)  # (B, T, NH, hs)
out = y.reshape(B, T, C)
print("out                ", out.shape)  # (B, T, C)

# %% [markdown]
# Here are the same lines collected into one function. Like every minigpt layer it returns
# `(out, cache)`, and the cache keeps what the backward pass will need.


# %%
def merge_heads(x):
    """(B, NH, T, hs) -> (B, T, C)."""
    return x.transpose(0, 2, 1, 3).reshape(B, T, C)


def my_attention_forward(qkv):
    q = split_heads(qkv[..., 0:C])  # (B, NH, T, hs)
    k = split_heads(qkv[..., C : 2 * C])  # (B, NH, T, hs)
    v = split_heads(qkv[..., 2 * C : 3 * C])  # (B, NH, T, hs)
    scores = (q @ k.transpose(0, 1, 3, 2)) * scale  # (B, NH, T, T)
    masked = np.where(causal, scores, -np.inf)
    e = np.exp(masked - masked.max(axis=-1, keepdims=True))
    att = e / e.sum(axis=-1, keepdims=True)  # (B, NH, T, T)
    out = merge_heads(att @ v)  # (B, T, C)
    return out, (q, k, v, att)


my_out, my_cache = my_attention_forward(qkv)

# %% [markdown]
# ## 3. Does it match minigpt?
#
# `minigpt.layers.attention_forward(qkv, n_head)` computes the same thing. Its cache also holds a
# dropout mask, which is `None` here because dropout is off. The two results should agree up to
# the last bits of rounding.

# %%
ref_out, ref_cache = attention_forward(qkv, NH)
diff = np.abs(my_out - ref_out).max()
print(f"forward: max abs diff, ours vs minigpt = {diff:.2e}")
assert diff < 1e-12, f"our forward differs from minigpt's by {diff}"

# %% [markdown]
# ## 4. Causality, checked with numbers
#
# If attention really cannot see the future, then changing the last token's q, k and v must
# leave the outputs at positions 0..T-2 untouched, and untouched exactly, not just approximately.
# A masked score becomes -inf whatever its value was, and its probability is exactly 0.

# %%
qkv_changed = qkv.copy()
qkv_changed[:, -1, :] = rng.standard_normal((B, 3 * C))  # new q, k, v for position T-1 only
out_changed, _ = my_attention_forward(qkv_changed)

for t in range(T):
    print(f"position {t}: max abs change in output = {np.abs(out_changed[:, t] - my_out[:, t]).max():.3e}")
assert np.array_equal(out_changed[:, :-1], my_out[:, :-1]), "the past changed: the mask leaks"
assert not np.allclose(out_changed[:, -1], my_out[:, -1])

# %% [markdown]
# Only the last position moves. Changing token 0 instead would move every output, because every
# position attends to token 0.
#
# ## 5. The backward pass, on paper
#
# The backward pass receives `dout`, the gradient of some scalar loss L with respect to `out`.
# It has to return `dqkv`, the gradient with respect to `qkv`. We take the forward lines in
# reverse order. For each one we restate the forward line and then write its gradient. Inside
# one (batch, head) pair every quantity is a plain matrix: q, k, v, y are (T, hs) and s, att are
# (T, T).
#
# **Merge heads.** Forward: `out = merge_heads(y)`. A reshape or transpose only moves numbers
# around, so its gradient moves them back:
#
#     dy = split_heads(dout)                                         (B, NH, T, hs)
#
# **Weighted sum.** Forward: `y = att @ v`, that is `y[i,d] = sum_j att[i,j] v[j,d]`.
# Differentiating with respect to one `att[i,j]` picks out `v[j,d]`, and with respect to one
# `v[j,d]` picks out `att[i,j]`. Summing over the indices the entry was used with gives:
#
#     datt = dy @ v^T                                                (B, NH, T, T)
#     dv   = att^T @ dy                                              (B, NH, T, hs)
#
# **Softmax.** Forward: `att[i,:] = softmax(s[i,:])`, one row at a time. The row Jacobian is
# `d att[i,j] / d s[i,k] = att[i,j] (delta_jk - att[i,k])`. Contracting it with `datt`:
#
#     ds[i,k] = sum_j datt[i,j] att[i,j] (delta_jk - att[i,k])
#             = att[i,k] (datt[i,k] - sum_j datt[i,j] att[i,j])
#
#     ds = att * (datt - sum(datt * att, axis=-1, keepdims=True))    (B, NH, T, T)
#
# This needs only the softmax's output `att` and never the scores. Masked entries have
# `att == 0`, so `ds` is 0 there without any mask. That is correct, because a masked score had
# no effect on the loss.
#
# **Scores.** Forward: `s = q @ k^T * scale`. This is another matrix product, with the constant
# scale carried along:
#
#     dq = ds @ k * scale                                            (B, NH, T, hs)
#     dk = ds^T @ q * scale                                          (B, NH, T, hs)
#
# **Split heads.** Forward: q, k and v were cut out of `qkv` and reshaped. Their gradients are
# merged back and placed side by side in the same `[q | k | v]` layout:
#
#     dqkv = concat(merge_heads(dq), merge_heads(dk), merge_heads(dv))   (B, T, 3C)
#
# Now the same derivation in code:


# %%
def my_attention_backward(dout, cache):
    q, k, v, att = cache
    dy = split_heads(dout)  # (B, NH, T, hs)
    datt = dy @ v.transpose(0, 1, 3, 2)  # (B, NH, T, hs) @ (B, NH, hs, T) -> (B, NH, T, T)
    dv = att.transpose(0, 1, 3, 2) @ dy  # (B, NH, T, T) @ (B, NH, T, hs) -> (B, NH, T, hs)
    ds = att * (datt - (datt * att).sum(axis=-1, keepdims=True))  # (B, NH, T, T), softmax Jacobian
    dq = (ds @ k) * scale  # (B, NH, T, hs)
    dk = (ds.transpose(0, 1, 3, 2) @ q) * scale  # (B, NH, T, hs)
    return np.concatenate([merge_heads(dq), merge_heads(dk), merge_heads(dv)], axis=-1)  # (B, T, 3C)


dout = rng.standard_normal((B, T, C))  # a random upstream gradient
dqkv = my_attention_backward(dout, my_cache)
print("dqkv", dqkv.shape)  # (B, T, 3C), laid out like qkv

# %% [markdown]
# ## 6. Checking the backward against finite differences
#
# To test a backward pass we don't need a real loss. Any fixed `dout` defines the scalar
# `L = sum(out * dout)`, whose gradient with respect to `out` is exactly `dout` (llm.c calls this
# the "fakeloss" trick). `numerical_gradient_array` nudges each of the B*T*3C = 144 entries of
# `qkv` by +-h in place and computes `(L(x+h) - L(x-h)) / 2h`. `compare` then reports the
# worst element.
#
# The relative error is normwise: the largest |analytic - numeric| divided by the largest
# gradient entry. With h = 1e-5 in float64, a correct smooth gradient lands around 1e-10 and
# the threshold is 1e-7. Attention has no kinks (the mask is fixed and does not depend on the
# data), so the strict threshold applies.

# %%
num_dqkv = numerical_gradient_array(lambda: my_attention_forward(qkv)[0], qkv, dout)
result = compare("dqkv", dqkv, num_dqkv)
print(f"worst element at index {result.index} (b, t, channel of qkv)")
print(f"  analytic  {result.analytic:.12f}")
print(f"  numeric   {result.numeric:.12f}")
print(f"  abs diff  {result.max_abs_diff:.2e}")
print(f"  rel error {result.rel_error:.2e} (tolerance {result.tolerance:.0e})")

# %% [markdown]
# We also split the check by part, so that a bug names the slice of qkv it is in. The asserts
# come after all the printing: if something is wrong, we see every line first and then the
# script stops.

# %%
parts = []
for i, part in enumerate("qkv"):
    cols = slice(i * C, (i + 1) * C)  # q, k or v columns of qkv
    parts.append(compare("d" + part, dqkv[..., cols], num_dqkv[..., cols]))
    print(parts[-1])
assert result.rel_error <= SMOOTH_TOLERANCE, str(result)
assert all(r.ok for r in parts), "\n".join(str(r) for r in parts if not r.ok)

# %% [markdown]
# Then we compare against minigpt's own backward, `attention_backward(dout, cache)`, run on its own
# forward cache:

# %%
ref_dqkv = attention_backward(dout, ref_cache)
diff = np.abs(dqkv - ref_dqkv).max()
print(f"backward: max abs diff, ours vs minigpt = {diff:.2e}")
assert diff < 1e-12, f"our backward differs from minigpt's by {diff}"

# %% [markdown]
# Causality also holds in the backward pass, in the other direction. Gradient that enters at
# position 0 can reach only token 0, since only token 0 took part in computing out[0]. Gradient
# that enters at the last position reaches every token.

# %%
for t in (0, T - 1):
    dout_t = np.zeros((B, T, C))
    dout_t[:, t] = dout[:, t]  # upstream gradient at position t only
    dqkv_t = my_attention_backward(dout_t, my_cache)
    reached = np.flatnonzero(np.abs(dqkv_t).max(axis=(0, 2)) > 0)
    print(f"gradient entering at position {t} reaches tokens {reached.tolist()}")

# %% [markdown]
# ## 7. A design note: what the cache keeps
#
# **Saved probabilities versus recomputing them.** The backward needs `att`. We can keep it from
# the forward pass (minigpt and llm.c do this) or recompute it from q and k, which costs one
# more `q @ k^T` and one more exp per layer. Keeping it costs memory: B * NH * T * T numbers per
# layer, and that grows with the square of the context. Here it is 2 * 2 * 4 * 4 = 64 floats.
# For GPT-2 small (NH = 12, 12 layers) at T = 1024 and B = 8 it is about 100 million floats per
# layer, 0.4 GB in float32 and nearly 5 GB over 12 layers. On a CPU with tiny configs the memory
# is cheap and the exp is not, so minigpt keeps `att`. FlashAttention makes the opposite choice
# on GPUs: it never stores the T x T matrix and recomputes it block by block in the backward.
#
# We also do not keep the raw scores. The softmax gradient is written entirely in terms of its
# output `att` (section 5), so the scores are dead once the forward pass is done.
#
# **No mask in the backward.** The forward pass sets masked scores to -inf, so `att` is exactly
# 0 there. Every backward formula that reaches the scores goes through `ds = att * (...)`, so the
# masked entries of `ds` are exactly 0 as well. There is no need to apply the mask a second time.
# Here is the check on our numbers:

# %%
q_, k_, v_, att_ = my_cache
datt = split_heads(dout) @ v_.transpose(0, 1, 3, 2)  # (B, NH, T, T), nonzero everywhere
ds = att_ * (datt - (datt * att_).sum(axis=-1, keepdims=True))
print("datt above the diagonal, largest |.|:", np.abs(datt[..., upper]).max())
print("ds   above the diagonal, largest |.|:", np.abs(ds[..., upper]).max())
assert np.all(ds[..., upper] == 0.0)

# %% [markdown]
# `datt` is nonzero in the future half, because `dy @ v^T` knows nothing about the mask. The
# multiplication by `att` removes it exactly.
#
# ## 8. Your turn
#
# From the repository root, this command runs every tutorial as a script in a fresh interpreter.
# It should end with a line like `3 passed` and no failures:
#
#     pytest tests/test_tutorials.py -q
#
# Running this file directly (`python tutorials/01_attention.py`) should end with the `OK:` line
# printed below.
#
# Some things to try: set `dropout=0.1, rng=np.random.default_rng(1)` in `attention_forward` and
# check `attention_backward` with the same finite-difference recipe (reuse the same generator
# seed for every forward call, so the mask stays fixed). Or break one line of
# `my_attention_backward`, for example by dropping `* scale` from `dk`, and watch section 6
# print `NOT OK dk` before it stops.

# %%
print(
    f"OK: attention forward matches minigpt, causality holds, "
    f"backward rel error {result.rel_error:.1e} <= {SMOOTH_TOLERANCE:.0e}"
)
