"""Causal multi-head self-attention, from the fused q,k,v projection to the re-assembled heads.

Matches GPT-2's attention (Hugging Face GPT2Attention, nanoGPT CausalSelfAttention) between its
two linear layers: split qkv into heads, scores q k^T / sqrt(hs), mask the future, softmax over
keys, optional dropout on the probabilities, weighted sum of values, heads side by side. The
linear layers c_attn (before) and c_proj (after) live in the model.

Attention is the only layer that mixes information across time, and only from the past: the
output at position t depends on positions 0..t. No layer mixes the batch.

Legend: B batch, T time, C channels, NH heads, hs head size (C // NH).
"""

import math

import numpy as np

from .dropout import dropout_backward, dropout_forward


def split_heads(x, n_head):
    """(B, T, C) -> (B, NH, T, hs)."""
    B, T, C = x.shape
    return x.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)


def merge_heads(x):
    """(B, NH, T, hs) -> (B, T, C): the heads' outputs side by side."""
    B, NH, T, hs = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, NH * hs)


def masked_softmax(scores, causal_mask):
    """Softmax over the last axis of scores (..., Tq, Tk) where causal_mask (Tq, Tk) is True.

    Masked entries get probability exactly 0. Subtracting the row maximum first avoids overflow
    and does not change the result (softmax is shift invariant).
    """
    scores = np.where(causal_mask, scores, -np.inf)
    scores = scores - scores.max(axis=-1, keepdims=True)
    e = np.exp(scores)  # exp(-inf) = 0 on the masked entries
    return e / e.sum(axis=-1, keepdims=True)


def attention_forward(qkv, n_head, dropout=0.0, rng=None):
    """
    Parameters
    ----------
    qkv : array of shape (B, T, 3C): q, k and v side by side along the last axis,
        as produced by c_attn (columns [0, C) are q, [C, 2C) are k, [2C, 3C) are v)
    n_head : int, NH; C must be divisible by it
    dropout : float, dropout probability on the attention probabilities
    rng : numpy Generator for the dropout mask, or None (no dropout)

    Returns
    -------
    out : array of shape (B, T, C)
    cache : (q, k, v, att, att_mask) with q, k, v of shape (B, NH, T, hs) and the attention
        probabilities att of shape (B, NH, T, T). The backward reuses att rather than recomputing
        it: at GPT-2 sizes on a CPU the memory is affordable and the exp is not free.
    """
    B, T, C3 = qkv.shape
    # BEGIN SOLUTION attention_forward
    # HINT: split_heads, scores q k^T / sqrt(hs), masked_softmax with np.tri, dropout_forward, @ v
    C = C3 // 3
    hs = C // n_head
    q = split_heads(qkv[..., 0:C], n_head)  # (B, NH, T, hs)
    k = split_heads(qkv[..., C : 2 * C], n_head)  # (B, NH, T, hs)
    v = split_heads(qkv[..., 2 * C : 3 * C], n_head)  # (B, NH, T, hs)
    scale = 1.0 / math.sqrt(hs)
    scores = (q @ k.transpose(0, 1, 3, 2)) * scale  # (B, NH, T, hs) x (B, NH, hs, T) -> (B, NH, T, T)
    causal = np.tri(T, dtype=bool)  # (T, T): query t sees keys 0..t
    att = masked_softmax(scores, causal)  # (B, NH, T, T), rows sum to 1
    att_d, att_mask = dropout_forward(att, dropout, rng)
    y = att_d @ v  # (B, NH, T, T) x (B, NH, T, hs) -> (B, NH, T, hs)
    out = merge_heads(y)  # (B, T, C)
    return out, (q, k, v, att, att_mask)
    # END SOLUTION


def attention_backward(dout, cache):
    """
    Parameters
    ----------
    dout : array of shape (B, T, C)

    Returns
    -------
    dqkv : array of shape (B, T, 3C), laid out as qkv

    Notes
    -----
    In reverse order of the forward:
      y = att_d @ v         ->  datt_d = dy @ v^T,  dv = att_d^T @ dy
      att_d = dropout(att)  ->  datt = datt_d * mask / (1 - p)
      att = softmax(s)      ->  ds = att * (datt - sum_k(datt * att))   (row-wise softmax Jacobian)
      s = q @ k^T * scale   ->  dq = ds @ k * scale,  dk = ds^T @ q * scale
    Masked (future) entries have att == 0, so ds is 0 there without any mask.
    """
    q, k, v, att, att_mask = cache
    # BEGIN SOLUTION attention_backward
    # HINT: the Notes above in order; return dq, dk, dv merged and concatenated along the last axis
    B, NH, T, hs = q.shape
    scale = 1.0 / math.sqrt(hs)
    dy = split_heads(dout, NH)  # (B, NH, T, hs)
    att_d = att if att_mask is None else att * att_mask
    datt_d = dy @ v.transpose(0, 1, 3, 2)  # (B, NH, T, T)
    dv = att_d.transpose(0, 1, 3, 2) @ dy  # (B, NH, T, hs)
    datt = dropout_backward(datt_d, att_mask)
    dscores = att * (datt - (datt * att).sum(axis=-1, keepdims=True))  # (B, NH, T, T)
    dq = (dscores @ k) * scale  # (B, NH, T, hs)
    dk = (dscores.transpose(0, 1, 3, 2) @ q) * scale  # (B, NH, T, hs)
    return np.concatenate([merge_heads(dq), merge_heads(dk), merge_heads(dv)], axis=-1)  # (B, T, 3C)
    # END SOLUTION


def attention_forward_kv(qkv, n_head, k_cache, v_cache, start):
    """Attention for new positions start..start+Tn-1 given the keys and values of earlier ones.

    Inference only (no dropout, no backward cache), for incremental decoding with a KV cache.
    The new keys and values are written into the caches in place.

    Parameters
    ----------
    qkv : array of shape (B, Tn, 3C), the new positions' fused q, k, v
    k_cache, v_cache : arrays of shape (B, NH, maxT, hs); positions [0, start) already filled
    start : int, the position of qkv[:, 0]; start + Tn <= maxT

    Returns
    -------
    out : array of shape (B, Tn, C), equal (up to rounding) to the last Tn positions of
        attention_forward on the whole sequence
    """
    B, Tn, C3 = qkv.shape
    # BEGIN SOLUTION attention_forward_kv
    # HINT: store new k, v at [start, start + Tn); new query i sees the keys 0..start + i
    C = C3 // 3
    hs = C // n_head
    end = start + Tn
    q = split_heads(qkv[..., 0:C], n_head)  # (B, NH, Tn, hs)
    k_cache[:, :, start:end] = split_heads(qkv[..., C : 2 * C], n_head)
    v_cache[:, :, start:end] = split_heads(qkv[..., 2 * C : 3 * C], n_head)
    k = k_cache[:, :, :end]  # (B, NH, end, hs): every key so far
    v = v_cache[:, :, :end]
    scores = (q @ k.transpose(0, 1, 3, 2)) * (1.0 / math.sqrt(hs))  # (B, NH, Tn, end)
    causal = np.tri(Tn, end, k=start, dtype=bool)  # new query i (position start+i) sees keys 0..start+i
    att = masked_softmax(scores, causal)
    return merge_heads(att @ v)  # (B, Tn, C)
    # END SOLUTION
