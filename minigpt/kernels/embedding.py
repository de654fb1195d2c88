"""Embedding backward as a scatter-add loop.

Matches minigpt.layers.embedding.embedding_backward: dwte[v] is the sum of dout over every
position holding token v, dwpe[start + t] the sum over the batch. np.add.at does the same
scatter-add correctly but slowly (a generic per-element loop); here it is one pass over dout.
It stays serial: every position may write any row of dwte, so splitting positions across
threads would race, and the pass is short next to the matrix products.
Legend: B batch, T time, C channels, V vocabulary, maxT block_size.
"""

import numpy as np

from . import contiguous, twins


@twins(parallel=False)
def _backward(dtype):
    def kernel(dout, idx, start, dwte, dwpe):  # dout (B, T, C), idx (B, T); dwte, dwpe zeroed
        B, T, C = dout.shape
        for b in range(B):
            for t in range(T):
                g = dout[b, t]
                row, pos = dwte[idx[b, t]], dwpe[start + t]
                for c in range(C):
                    row[c] += g[c]
                    pos[c] += g[c]

    return kernel


def embedding_backward(dout, cache):
    """Twin of minigpt.layers.embedding.embedding_backward. Returns (dwte (V, C), dwpe (maxT, C))."""
    idx, V, maxT, start = cache
    C = dout.shape[-1]
    dwte = np.zeros((V, C), dout.dtype)
    dwpe = np.zeros((maxT, C), dout.dtype)
    _backward(contiguous(dout), contiguous(idx, np.int64), start, dwte, dwpe)
    return dwte, dwpe
