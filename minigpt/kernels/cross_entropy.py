"""Softmax cross-entropy forward and backward fused over the vocabulary, one row per task.

Matches minigpt.layers.cross_entropy (torch's cross_entropy with ignore_index=-1, mean over the
non-ignored targets; 0 loss and zero gradients when every target is ignored): same returns and
the same cache (probs, targets, n). One pass finds the row maximum, one sums the exponentials and
writes the probabilities, instead of NumPy's log-softmax temporaries and gather.
Legend: N = B*T rows, V vocabulary.
"""

import math

import numba
import numpy as np

from ..layers.cross_entropy import IGNORE_INDEX
from . import contiguous, twins


@twins(parallel=True)
def _forward(dtype):
    zero, one, neg_inf = dtype(0.0), dtype(1.0), dtype(-np.inf)

    def kernel(logits, targets, probs, nll):  # logits (N, V), targets (N,) -> probs (N, V), nll (N,)
        N, V = logits.shape
        for i in numba.prange(N):
            row, p = logits[i], probs[i]
            mx = neg_inf
            for j in range(V):
                mx = max(mx, row[j])
            total = zero
            for j in range(V):
                e = math.exp(row[j] - mx)
                p[j] = e
                total += e
            inv = one / total
            for j in range(V):
                p[j] *= inv
            y = targets[i]
            # -log softmax[y] = log(sum exp(row - mx)) - (row[y] - mx); 0 where ignored
            nll[i] = math.log(total) - (row[y] - mx) if y != IGNORE_INDEX else zero

    return kernel


@twins(parallel=True)
def _backward(dtype):
    zero, one = dtype(0.0), dtype(1.0)

    def kernel(probs, targets, scale, dlogits):  # dlogits = (probs - onehot) * scale, 0 where ignored
        N, V = probs.shape
        for i in numba.prange(N):
            y = targets[i]
            d = dlogits[i]
            if y == IGNORE_INDEX:
                for j in range(V):
                    d[j] = zero
            else:
                p = probs[i]
                for j in range(V):
                    d[j] = p[j] * scale
                d[y] = (p[y] - one) * scale

    return kernel


def cross_entropy_forward(logits, targets):
    """Twin of minigpt.layers.cross_entropy.cross_entropy_forward. logits (B, T, V), targets (B, T)
    -> (loss, cache)."""
    V = logits.shape[-1]
    logits2 = contiguous(logits.reshape(-1, V))  # (N, V)
    t = contiguous(targets.reshape(-1), np.int64)
    probs = np.empty_like(logits2)
    nll = np.empty(t.shape[0], logits2.dtype)
    _forward(logits2, t, probs, nll, work=logits2.size)
    n = int((t != IGNORE_INDEX).sum())
    loss = float(nll.sum(dtype=np.float64) / max(n, 1))
    return loss, (probs.reshape(logits.shape), targets, n)


def cross_entropy_backward(cache, dloss=1.0):
    """Twin of minigpt.layers.cross_entropy.cross_entropy_backward. Returns dlogits (B, T, V)."""
    probs, targets, n = cache
    V = probs.shape[-1]
    probs2 = contiguous(probs.reshape(-1, V))
    dlogits = np.empty_like(probs2)
    scale = probs2.dtype.type(dloss / max(n, 1))
    _backward(probs2, contiguous(targets.reshape(-1), np.int64), scale, dlogits, work=probs2.size)
    return dlogits.reshape(probs.shape)
