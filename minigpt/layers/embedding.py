"""Token plus position embedding: out[b, t] = wte[idx[b, t]] + wpe[t].

Matches GPT-2's `wte(input_ids) + wpe(position_ids)` with positions 0..T-1. The token embedding
wte is also the output layer (weight tying), so its gradient gets a second contribution from the
logits; the model adds the two.

Legend: B batch, T time, C channels, V vocabulary, maxT block_size.
"""

import numpy as np


def embedding_forward(idx, wte, wpe, start=0):
    """
    Parameters
    ----------
    idx : int array of shape (B, T), token ids in [0, V)
    wte : array of shape (V, C), token embeddings
    wpe : array of shape (maxT, C), position embeddings; start + T <= maxT
    start : int, the position of idx[:, 0] (nonzero only when decoding with a KV cache)

    Returns
    -------
    out : array of shape (B, T, C)
    cache : (idx, V, maxT, start)
    """
    T = idx.shape[1]
    out = wte[idx] + wpe[start : start + T]  # (B, T, C) + (T, C) broadcasts over the batch
    return out, (idx, wte.shape[0], wpe.shape[0], start)


def embedding_backward(dout, cache):
    """
    Returns
    -------
    dwte : (V, C): row v is the sum of dout over every position holding token v.
        np.add.at accumulates repeated ids correctly (plain fancy-index += would keep only the
        last one of each id), but it is slow; a compiled loop does the same scatter-add faster.
    dwpe : (maxT, C): row start + t is dout[:, t] summed over the batch; unused rows get zero.
    """
    idx, V, maxT, start = cache
    B, T, C = dout.shape
    dwte = np.zeros((V, C), dtype=dout.dtype)
    np.add.at(dwte, idx.reshape(-1), dout.reshape(-1, C))
    dwpe = np.zeros((maxT, C), dtype=dout.dtype)
    dwpe[start : start + T] = dout.sum(axis=0)
    return dwte, dwpe
