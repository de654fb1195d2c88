"""Causal self-attention: the masked softmax and its backward in numba, the products in BLAS.

Matches minigpt.layers.attention.attention_forward / attention_backward / attention_forward_kv
(GPT-2's attention between c_attn and c_proj): same arguments, results and cache
(q, k, v, att, mask).

What is fused. Scaling the scores, the causal mask and the softmax are one numba kernel, row by
row (b, h, t), over keys s <= t only: scale and take the row maximum, exp of the shifted scores
and their sum, normalize, zero the future. No T x T mask array is built, and there are no max,
sum and divide temporaries (the NumPy layer makes six passes over (B, NH, T, T)). numba's exp is
a scalar libm call here (vectorizing it needs Intel's SVML), 6x slower than NumPy's SIMD exp, so
the float32 build computes exp with multiply-adds and integer ops that LLVM vectorizes (Cody and
Waite's range reduction, Cephes' expf polynomial; 1.8e-7 relative, tested); the float64 build,
for gradient checks, uses libm's exp. The backward, ds = att * (datt - sum_s datt * att), is one
numba pass.

What is not. The matrix products (q k^T, att v, and in the backward datt = dy v^T,
dv = att^T dy, dq = ds k, dk = ds^T q) stay in BLAS: a numba loop nest fusing scores, softmax and
weighted sum in one kernel (tried first) visited only half the scores but ran 1.5-2.7x slower than
this at both bench sizes, because OpenBLAS's register-blocked products are far faster than
compiled dot-product loops. For long sequences the products skip the blocks above the causal
diagonal (causal_blocks), so BLAS no longer computes most of the masked half.

The backward reuses the saved probabilities att (B, NH, T, T) rather than recomputing them:
recomputing costs one exp per score again, and at these sizes the memory is affordable (small
preset: 12.6 MB per layer). Dropout on the probabilities draws its mask with
minigpt.layers.dropout, as the NumPy layer does, so a seeded run draws the same masks on both
backends. Decoding with a KV cache (one new query per head) is one fully fused loop: there the
products are vectors, and one kernel call per layer replaces a dozen small NumPy calls.
Legend: B batch, T time, C channels, NH heads, hs head size (C // NH).
"""

import math

import numba
import numpy as np

from ..layers.attention import split_heads
from ..layers.dropout import dropout_forward
from . import contiguous, n_chunks, twins


@twins(parallel=False)  # decoding: B * NH small tasks of a few microseconds, a thread hand-off costs more
def _decode(dtype):
    zero, one, neg_inf = dtype(0.0), dtype(1.0), dtype(-np.inf)

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
                    mx = neg_inf
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


# float32 exp for x <= 0 as arithmetic only (Cody and Waite's range reduction with Cephes' expf
# polynomial): x = k ln2 + r with |r| <= ln2 / 2, exp(x) = 2^k * P(r). Below EXP_F32_MIN the
# result underflows float32's normal range and is taken as 0.
EXP_F32_MIN = -87.33654  # ln(2^-126)
LN2_HI, LN2_LO = 0.693359375, -2.12194440e-4  # ln 2 = LN2_HI + LN2_LO, LN2_HI exact in a few bits
EXPF_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)


@twins(parallel=True)
def _softmax_causal(dtype):
    zero, one, half, neg_inf = dtype(0.0), dtype(1.0), dtype(0.5), dtype(-np.inf)
    fast_exp = dtype == np.float32
    lo, log2e = dtype(EXP_F32_MIN), dtype(1.0 / math.log(2.0))
    ln2_hi, ln2_lo = dtype(LN2_HI), dtype(LN2_LO)
    c0, c1, c2, c3, c4, c5 = (dtype(c) for c in EXPF_POLY)

    def kernel(scores, scale, n_chunks):  # scores (B, NH, T, T) in place -> causal softmax of scale * scores
        B, NH, T, _ = scores.shape
        R = B * NH * T
        for c in numba.prange(n_chunks):  # chunks of rows (b, h, t); a scratch row per chunk
            bits = np.empty(T, np.int32)
            pow2 = bits.view(np.float32)  # bits (k + 127) << 23 read as float32: 2^k
            for r in range(c * R // n_chunks, (c + 1) * R // n_chunks):
                row = scores[r // (NH * T), (r // T) % NH, r % T]
                n = r % T + 1  # query t sees keys 0..t
                mx = neg_inf  # not -np.inf: a float64 maximum made the whole row float64 (2x slower)
                for s in range(n):
                    x = row[s] * scale
                    row[s] = x
                    mx = max(mx, x)
                total = zero
                if fast_exp:
                    for s in range(n):  # one pass of multiply-adds and integer ops: LLVM vectorizes it
                        x = row[s] - mx  # <= 0 (NaN stays NaN through p)
                        xc = lo if x < lo else x  # noqa: FURB136 (not max(): a NaN must stay NaN)
                        k = np.floor(xc * log2e + half)  # float32: math.floor gives an int64, and
                        # int64 * float32 is float64 in numba, which took the loop off SIMD (2.2x slower)
                        rr = xc - k * ln2_hi - k * ln2_lo
                        p = ((((c0 * rr + c1) * rr + c2) * rr + c3) * rr + c4) * rr + c5
                        p = p * rr * rr + rr + one
                        bits[s] = (np.int32(k) + 127) << 23
                        row[s] = zero if x < lo else p
                    for s in range(n):
                        e = row[s] * pow2[s]
                        row[s] = e
                        total += e
                else:
                    for s in range(n):
                        e = math.exp(row[s] - mx)
                        row[s] = e
                        total += e
                inv = one / total
                for s in range(n):
                    row[s] *= inv
                for s in range(n, T):
                    row[s] = zero  # the future

    return kernel


def _softmax_causal_inplace(scores, scale):
    """Causal softmax of scale * scores over the last axis, in place (B, NH, T, T): one numba pass
    per row over keys s <= t only. numba's exp is a scalar libm call here (vectorizing it needs
    Intel's SVML), so the float32 build computes exp with multiply-adds (see _softmax_causal), 2.5x
    faster than NumPy's SIMD exp on this machine and over half the scores; float64 uses libm's exp."""
    rows = scores.shape[0] * scores.shape[1] * scores.shape[2]
    _softmax_causal(scores, scale, n_chunks(rows, 256), work=scores.size)


@twins(parallel=True)
def _softmax_causal_backward(dtype):
    zero = dtype(0.0)

    def kernel(datt, att, mask, has_mask, scale):  # datt (B, NH, T, T) -> dscores in place
        B, NH, T, _ = att.shape
        for r in numba.prange(B * NH * T):
            b, h, t = r // (NH * T), (r // T) % NH, r % T
            d, a = datt[b, h, t], att[b, h, t]
            if has_mask:  # att_d = att * mask  ->  datt = datt_d * mask
                m = mask[b, h, t]
                for s in range(t + 1):
                    d[s] *= m[s]
            dot = zero
            for s in range(t + 1):
                dot += d[s] * a[s]
            for s in range(t + 1):  # ds = att * (datt - sum_s datt * att), times the scores' scale
                d[s] = a[s] * (d[s] - dot) * scale
            for s in range(t + 1, T):
                d[s] = zero

    return kernel


# Query rows per block of the causal products (below). One block when T < 2 * CAUSAL_BLOCK.
CAUSAL_BLOCK = 128


def causal_blocks(T: int) -> list[tuple[int, int]]:
    """Row blocks [i0, i1) covering 0..T-1. Query rows i0..i1-1 see keys 0..i1-1 only, so the
    products of attention compute the lower block triangle of the (T, T) scores and skip the
    blocks above it, which the causal mask zeroes anyway: at T = 256, 3 of the 4 (128, 128)
    blocks. Each block is one more batched BLAS call, B * NH gemm calls with a fixed cost each, so
    blocks stay large: at the small preset (T = 256) attention forward + backward took 36.3 ms
    per layer in blocks of 128, 41.1 unblocked, 45.4 in blocks of 64 and 51.6 in blocks of 32
    (medians of alternating runs). Sequences shorter than two blocks are one block."""
    if T < 2 * CAUSAL_BLOCK:
        return [(0, T)]
    return [(i0, min(T, i0 + CAUSAL_BLOCK)) for i0 in range(0, T, CAUSAL_BLOCK)]


def attention_forward(qkv, n_head, dropout=0.0, rng=None):
    """Twin of minigpt.layers.attention.attention_forward. qkv: (B, T, 3C) -> (out (B, T, C), cache)."""
    B, T, C3 = qkv.shape
    C = C3 // 3
    q = split_heads(qkv[..., 0:C], n_head)  # (B, NH, T, hs) views of qkv
    k = split_heads(qkv[..., C : 2 * C], n_head)
    v = split_heads(qkv[..., 2 * C : 3 * C], n_head)
    kT = k.transpose(0, 1, 3, 2)  # (B, NH, hs, T)
    att = np.empty((B, n_head, T, T), qkv.dtype)
    blocks = causal_blocks(T)
    for i0, i1 in blocks:  # raw scores of query rows i0..i1-1 against keys 0..i1-1
        np.matmul(q[:, :, i0:i1], kT[..., :i1], out=att[:, :, i0:i1, :i1])
    _softmax_causal_inplace(att, qkv.dtype.type(1.0 / math.sqrt(C // n_head)))  # zeroes every s > t
    att_d, att_mask = dropout_forward(att, dropout, rng)
    out = np.empty((B, T, C), qkv.dtype)
    y = split_heads(out, n_head)  # (B, NH, T, hs) view: the products write straight into out (B, T, C)
    for i0, i1 in blocks:
        np.matmul(att_d[:, :, i0:i1, :i1], v[:, :, :i1], out=y[:, :, i0:i1])
    return out, (q, k, v, att, att_mask)


def attention_backward(dout, cache):
    """Twin of minigpt.layers.attention.attention_backward. dout: (B, T, C) -> dqkv (B, T, 3C)."""
    q, k, v, att, att_mask = cache
    B, NH, T, hs = q.shape
    dy = split_heads(dout, NH)  # (B, NH, T, hs)
    att_d = att if att_mask is None else att * att_mask
    vT = v.transpose(0, 1, 3, 2)  # (B, NH, hs, T)
    datt = np.empty_like(att)  # (B, NH, T, T); only s <= t is computed and read
    blocks = causal_blocks(T)
    for i0, i1 in blocks:
        np.matmul(dy[:, :, i0:i1], vT[..., :i1], out=datt[:, :, i0:i1, :i1])
    has_mask = att_mask is not None
    scale = q.dtype.type(1.0 / math.sqrt(hs))
    _softmax_causal_backward(datt, att, att_mask if has_mask else att, has_mask, scale, work=att.size)
    # datt now holds dscores ds, zero for s > t. dq, dk, dv are written straight into their columns
    # of dqkv (B, T, 3C) through (B, NH, T, hs) views, instead of merged and concatenated
    C = NH * hs
    dqkv = np.empty((B, T, 3 * C), q.dtype)
    dq, dk, dv = (split_heads(dqkv[..., j * C : (j + 1) * C], NH) for j in range(3))
    for i0, i1 in blocks:
        np.matmul(datt[:, :, i0:i1, :i1], k[:, :, :i1], out=dq[:, :, i0:i1])  # dq = ds k
        # key rows i0..i1-1 get gradient from query rows t >= i0 only: dk = ds^T q, dv = att^T dy
        np.matmul(datt[:, :, i0:, i0:i1].transpose(0, 1, 3, 2), q[:, :, i0:], out=dk[:, :, i0:i1])
        np.matmul(att_d[:, :, i0:, i0:i1].transpose(0, 1, 3, 2), dy[:, :, i0:], out=dv[:, :, i0:i1])
    return dqkv
