"""Causal self-attention forward and backward as fused numba loops, one (batch, head) per task.

Matches minigpt.layers.attention.attention_forward / attention_backward / attention_forward_kv
(GPT-2's attention between c_attn and c_proj): same arguments and results. The scores, the
causal mask, the softmax and the weighted sum are one loop nest that only visits keys s <= t,
so no T x T mask array is built and the masked half of the scores is never computed.

The backward reuses the saved probabilities att (B, NH, T, T) rather than recomputing them
(as the NumPy layer does): recomputing costs one exp per score again, and at these sizes the
memory is affordable (small preset: 12.6 MB per layer). The cache is (qkv, n_head, att, mask),
not the NumPy layer's (q, k, v, att, mask): the kernels read q, k, v straight out of the fused
qkv array, so caches belong to the backend that made them (the model keeps them together).

Dropout on the probabilities draws its mask with minigpt.layers.dropout, as the NumPy layer
does, so a seeded run draws the same masks on both backends.
Legend: B batch, T time, C channels, NH heads, hs head size (C // NH); q of head h is
qkv[b, t, h*hs:(h+1)*hs], its k is C columns further and its v 2C further.
"""

import math

import numba
import numpy as np

from ..layers.dropout import dropout_forward
from . import contiguous, twins


@twins(parallel=True)
def _probs(dtype):
    zero, one = dtype(0.0), dtype(1.0)

    def kernel(qkv, n_head, att):  # qkv (B, T, 3C) -> att (B, NH, T, T), zero above the diagonal
        B, T, C3 = qkv.shape
        C = C3 // 3
        hs = C // n_head
        scale = one / math.sqrt(dtype(hs))
        for bh in numba.prange(B * n_head):
            b, h = bh // n_head, bh % n_head
            qo, ko = h * hs, C + h * hs
            for t in range(T):
                row = att[b, h, t]
                q = qkv[b, t, qo : qo + hs]  # row views: plain unit-stride loops that LLVM vectorizes
                mx = -np.inf
                for s in range(t + 1):  # causal: keys 0..t only
                    k = qkv[b, s, ko : ko + hs]
                    acc = zero
                    for d in range(hs):
                        acc += q[d] * k[d]
                    acc *= scale
                    row[s] = acc
                    mx = max(mx, acc)
                total = zero
                for s in range(t + 1):
                    e = math.exp(row[s] - mx)  # subtracting the max: no overflow, same softmax
                    row[s] = e
                    total += e
                inv = one / total
                for s in range(t + 1):
                    row[s] *= inv
                for s in range(t + 1, T):
                    row[s] = zero

    return kernel


@twins(parallel=True)
def _weighted_sum(dtype):
    zero = dtype(0.0)

    def kernel(qkv, n_head, att, out):  # out[b, t, head h] = sum_s att[b, h, t, s] v[b, s, head h]
        B, T, C3 = qkv.shape
        C = C3 // 3
        hs = C // n_head
        for bh in numba.prange(B * n_head):
            b, h = bh // n_head, bh % n_head
            yo, vo = h * hs, 2 * C + h * hs
            for t in range(T):
                y = out[b, t, yo : yo + hs]
                y[:] = zero
                for s in range(t + 1):
                    a = att[b, h, t, s]
                    v = qkv[b, s, vo : vo + hs]
                    for d in range(hs):
                        y[d] += a * v[d]

    return kernel


@twins(parallel=True)
def _backward(dtype):
    zero, one = dtype(0.0), dtype(1.0)

    def kernel(dout, qkv, n_head, att, mask, has_mask, dqkv):
        # dout (B, T, C); att the probabilities; mask (B, NH, T, T) the scaled dropout keep-mask
        # when has_mask; dqkv (B, T, 3C) zeroed: each (b, h) task owns its head's columns
        B, T, C3 = qkv.shape
        C = C3 // 3
        hs = C // n_head
        scale = one / math.sqrt(dtype(hs))
        for bh in numba.prange(B * n_head):
            b, h = bh // n_head, bh % n_head
            qo, ko, vo = h * hs, C + h * hs, 2 * C + h * hs
            datt = np.empty(T, dtype)
            for t in range(T):
                dy = dout[b, t, qo : qo + hs]
                q, dq = qkv[b, t, qo : qo + hs], dqkv[b, t, qo : qo + hs]
                # y[t] = sum_s att_d[t, s] v[s]: datt_d[s] = dy . v[s], dv[s] += att_d[t, s] dy
                for s in range(t + 1):
                    v, dv = qkv[b, s, vo : vo + hs], dqkv[b, s, vo : vo + hs]
                    a = att[b, h, t, s] * mask[b, h, t, s] if has_mask else att[b, h, t, s]
                    acc = zero
                    for d in range(hs):
                        acc += dy[d] * v[d]
                        dv[d] += a * dy[d]
                    datt[s] = acc
                dot = zero
                for s in range(t + 1):
                    if has_mask:  # att_d = att * mask  ->  datt = datt_d * mask
                        datt[s] *= mask[b, h, t, s]
                    dot += datt[s] * att[b, h, t, s]
                # softmax: ds = att * (datt - sum_s datt * att); scores = q k^T * scale
                for s in range(t + 1):
                    ds = att[b, h, t, s] * (datt[s] - dot) * scale
                    k, dk = qkv[b, s, ko : ko + hs], dqkv[b, s, ko : ko + hs]
                    for d in range(hs):
                        dq[d] += ds * k[d]
                        dk[d] += ds * q[d]

    return kernel


def attention_forward(qkv, n_head, dropout=0.0, rng=None):
    """Twin of minigpt.layers.attention.attention_forward. qkv: (B, T, 3C) -> (out (B, T, C), cache)."""
    qkv = contiguous(qkv)
    B, T, C3 = qkv.shape
    att = np.empty((B, n_head, T, T), qkv.dtype)
    _probs(qkv, n_head, att)
    att_d, att_mask = dropout_forward(att, dropout, rng)  # the NumPy layer's masks, same draws
    out = np.empty((B, T, C3 // 3), qkv.dtype)
    _weighted_sum(qkv, n_head, contiguous(att_d), out)
    return out, (qkv, n_head, att, att_mask)


def attention_backward(dout, cache):
    """Twin of minigpt.layers.attention.attention_backward. dout: (B, T, C) -> dqkv (B, T, 3C)."""
    qkv, n_head, att, att_mask = cache
    has_mask = att_mask is not None
    mask = contiguous(att_mask) if has_mask else att  # any array of att's type when unused
    dqkv = np.zeros_like(qkv)
    _backward(contiguous(dout, qkv.dtype), qkv, n_head, att, mask, has_mask, dqkv)
    return dqkv


@twins(parallel=False)  # decoding: B * NH small tasks of a few microseconds, a thread hand-off costs more
def _decode(dtype):
    zero, one = dtype(0.0), dtype(1.0)

    def kernel(qkv, n_head, k_cache, v_cache, start, out):
        # qkv (B, Tn, 3C) for positions start..start+Tn-1; caches (B, NH, maxT, hs); out (B, Tn, C)
        B, Tn, C3 = qkv.shape
        C = C3 // 3
        hs = C // n_head
        scale = one / math.sqrt(dtype(hs))
        scores = np.empty(start + Tn, dtype)
        for b in range(B):
            for h in range(n_head):
                qo, ko, vo = h * hs, C + h * hs, 2 * C + h * hs
                for i in range(Tn):  # store the new keys and values first: query i sees them too
                    k_cache[b, h, start + i, :] = qkv[b, i, ko : ko + hs]
                    v_cache[b, h, start + i, :] = qkv[b, i, vo : vo + hs]
                for i in range(Tn):
                    q = qkv[b, i, qo : qo + hs]
                    n = start + i + 1  # query at position start + i sees keys 0..start+i
                    mx = -np.inf
                    for s in range(n):
                        k = k_cache[b, h, s]
                        acc = zero
                        for d in range(hs):
                            acc += q[d] * k[d]
                        acc *= scale
                        scores[s] = acc
                        mx = max(mx, acc)
                    total = zero
                    for s in range(n):
                        e = math.exp(scores[s] - mx)
                        scores[s] = e
                        total += e
                    inv = one / total
                    y = out[b, i, qo : qo + hs]
                    y[:] = zero
                    for s in range(n):
                        a = scores[s] * inv
                        v = v_cache[b, h, s]
                        for d in range(hs):
                            y[d] += a * v[d]

    return kernel


def attention_forward_kv(qkv, n_head, k_cache, v_cache, start):
    """Twin of minigpt.layers.attention.attention_forward_kv: attention of new positions
    start..start+Tn-1 over the cached keys and values, which it extends in place.
    qkv: (B, Tn, 3C); k_cache, v_cache: (B, NH, maxT, hs) C-contiguous -> out (B, Tn, C)."""
    if not (k_cache.flags.c_contiguous and v_cache.flags.c_contiguous):
        raise ValueError("the KV caches are written in place, so they must be C-contiguous")
    qkv = contiguous(qkv)
    out = np.empty((qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3), qkv.dtype)
    _decode(qkv, n_head, k_cache, v_cache, start, out)
    return out
