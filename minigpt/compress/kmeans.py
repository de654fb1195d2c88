"""Weight sharing by k-means (Deep Compression, Han, Mao, Dally, ICLR 2016): a tensor's weights
are replaced by the nearest of k = 2^b shared values (its codebook), stored as b-bit indices plus
the codebook; the shared values can then be fine-tuned, and the indices Huffman-coded.

- k-means in one dimension (Lloyd's algorithm): objective sum_k sum_{w in cluster k} (w - c_k)^2.
  Linear initialization: c evenly spaced over [min w, max w] (the paper's best: rare large weights
  keep a centroid). Assignment to the nearest centroid, the lower one on an exact tie (centroids
  stay sorted, so the boundaries are the midpoints). Update: each centroid becomes the mean of its
  members; an empty cluster keeps its centroid. Neither step can increase the objective.
- Fine-tuning: with W = C[idx], dL/dC_k = sum of dL/dW over the weights of cluster k,
  np.bincount(idx, weights=dW, minlength=k); the indices do not change, so the tensor keeps at
  most k distinct values.
- Storage (codec "kmeans"): the indices packed at b bits (minigpt.compress.quantize.pack_codes)
  and the codebook in the weights' dtype; decoding is codebook[idx], exactly.
- Huffman coding of the indices (optional, reported only): a prefix code built from the index
  frequencies; the report gives its size (bits / 8 plus the code-length table) next to the packed
  size.

Compression of the sharing step (n weights of b0 bits, k clusters): r = n b0 / (n log2 k + k b0).
"""

from __future__ import annotations

import heapq

import numpy as np

from ..errors import InputError
from . import storage
from .quantize import check_finite, pack_codes, unpack_codes


def linear_init(w, k: int) -> np.ndarray:
    """k centroids evenly spaced over [min w, max w] (float64)."""
    return np.linspace(float(np.min(w)), float(np.max(w)), k)


def assign(w, centroids) -> np.ndarray:
    """Index of the nearest centroid for every value (centroids sorted ascending); a value exactly
    halfway goes to the lower centroid."""
    mid = (centroids[1:] + centroids[:-1]) / 2
    return np.searchsorted(mid, w, side="left").astype(np.int64)


def sse(w, centroids, idx) -> float:
    return float(((w - centroids[idx]) ** 2).sum())


def kmeans_1d(w, bits: int, max_iter: int = 50):
    """Cluster the values of w into 2^bits shared values. Returns (idx (w.shape) int64,
    centroids (k,) float64 sorted, objective history (one value per assignment))."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 8:
        raise InputError(f"k-means bits must be an integer in 1..8, got {bits!r}")
    w = np.asarray(w)
    check_finite(w)
    x = w.astype(np.float64).ravel()
    k = 2**bits
    c = linear_init(x, k)
    idx = assign(x, c)
    history = [sse(x, c, idx)]
    for _ in range(max_iter):
        counts = np.bincount(idx, minlength=k)
        sums = np.bincount(idx, weights=x, minlength=k)
        c = np.where(counts > 0, sums / np.maximum(counts, 1), c)  # an empty cluster keeps its centroid
        new_idx = assign(x, c)
        history.append(sse(x, c, new_idx))
        if np.array_equal(new_idx, idx):
            break
        idx = new_idx
    return idx.reshape(w.shape), c, history


def centroid_grad(idx, dw, k: int) -> np.ndarray:
    """dL/dC for W = C[idx]: each centroid collects its members' gradients."""
    return np.bincount(np.ravel(idx), weights=np.ravel(dw).astype(np.float64), minlength=k)


# ----------------------------------------------------------------------------------------------
# storage


def _encode_kmeans(array, bits: int = 4, idx=None, codebook=None):
    """Codec "kmeans": parts idx (packed at `bits` bits) and codebook. With idx/codebook given
    (e.g. after fine-tuning), they are stored as they are; else k-means runs on array."""
    a = np.asarray(array)
    if idx is None:
        idx, c, _ = kmeans_1d(a, bits)
        codebook = c.astype(a.dtype)
    parts = {"idx": pack_codes(np.asarray(idx), bits), "codebook": np.asarray(codebook, a.dtype)}
    return parts, {"shape": list(a.shape), "bits": bits}


def _decode_kmeans(parts, info):
    n = int(np.prod(info["shape"]))
    idx = unpack_codes(parts["idx"], int(info["bits"]), n)
    return parts["codebook"][idx].reshape(info["shape"])


storage.register_codec("kmeans", _encode_kmeans, _decode_kmeans)


def share_weight(w, bits: int):
    """(idx, codebook in w's dtype, the shared weight codebook[idx])."""
    idx, c, _ = kmeans_1d(w, bits)
    codebook = c.astype(np.asarray(w).dtype)
    return idx, codebook, codebook[idx]


# ----------------------------------------------------------------------------------------------
# Huffman coding of the indices


def huffman_code_lengths(counts) -> dict:
    """{symbol: code length} of a Huffman code for the symbols with nonzero counts (a lone symbol
    gets length 1). Ties are broken by a running counter, so the result is deterministic."""
    items = [(int(c), i, (s,)) for i, (s, c) in enumerate(sorted((s, c) for s, c in dict(counts).items() if c > 0))]
    if not items:
        return {}
    if len(items) == 1:
        return {items[0][2][0]: 1}
    lengths = {syms[0]: 0 for _, _, syms in items}
    heapq.heapify(items)
    tiebreak = len(items)
    while len(items) > 1:
        c1, _, s1 = heapq.heappop(items)
        c2, _, s2 = heapq.heappop(items)
        for s in s1 + s2:
            lengths[s] += 1  # every symbol under the merged node gets one bit deeper
        heapq.heappush(items, (c1 + c2, tiebreak, s1 + s2))
        tiebreak += 1
    return lengths


def canonical_codes(lengths: dict) -> dict:
    """Canonical Huffman codes {symbol: (code, length)} from code lengths (as DEFLATE)."""
    code, prev_len, out = 0, 0, {}
    for s, n in sorted(lengths.items(), key=lambda kv: (kv[1], kv[0])):
        code <<= n - prev_len
        out[s] = (code, n)
        code += 1
        prev_len = n
    return out


def huffman_encode(symbols) -> tuple[bytes, dict, int]:
    """(bytes, {symbol: length}, number of bits) for a sequence of integer symbols."""
    symbols = np.ravel(symbols)
    values, counts = np.unique(symbols, return_counts=True)
    lengths = huffman_code_lengths(dict(zip(values.tolist(), counts.tolist())))
    codes = canonical_codes(lengths)
    bits = "".join(format(codes[s][0], f"0{codes[s][1]}b") for s in symbols.tolist())
    nbits = len(bits)
    data = int(bits, 2).to_bytes((nbits + 7) // 8, "big") if nbits else b""
    if nbits % 8:  # left-align: the first symbol's first bit is the top bit of byte 0
        data = (int(bits, 2) << (8 - nbits % 8)).to_bytes((nbits + 7) // 8, "big")
    return data, lengths, nbits


def huffman_decode(data: bytes, lengths: dict, nbits: int, count: int) -> np.ndarray:
    """The inverse of huffman_encode."""
    decode = {(n, c): s for s, (c, n) in canonical_codes(lengths).items()}
    bits = format(int.from_bytes(data, "big"), f"0{len(data) * 8}b")[:nbits] if data else ""
    out, code, n = [], 0, 0
    for b in bits:
        code, n = (code << 1) | (b == "1"), n + 1
        if (n, code) in decode:
            out.append(decode[(n, code)])
            code, n = 0, 0
    if len(out) != count:
        raise ValueError("Huffman data does not decode to the expected number of symbols")
    return np.array(out, dtype=np.int64)


def huffman_nbytes(idx) -> int:
    """Bytes of the Huffman-coded indices plus a one-byte code length per symbol of the alphabet."""
    values, counts = np.unique(np.ravel(idx), return_counts=True)
    lengths = huffman_code_lengths(dict(zip(values.tolist(), counts.tolist())))
    nbits = sum(lengths[v] * c for v, c in zip(values.tolist(), counts.tolist()))
    return (nbits + 7) // 8 + len(lengths)


# ----------------------------------------------------------------------------------------------
# fine-tuning the shared values on the model's loss


def finetune_centroids(config, params, shared: dict, train_ids, iters: int = 100, lr: float = 1e-4,
                       batch_size: int = 12, seed: int = 0):
    """Train the codebooks of the shared weights (AdamW without weight decay), everything else
    frozen. shared: {name: (idx, codebook)}; params: the model with those weights = codebook[idx].
    Returns (new params, {name: (idx, new codebook)}, losses)."""
    from ..data import get_batch
    from ..model import gpt_backward, gpt_forward
    from ..optim import AdamW

    books = {n: np.array(c, dtype=params[n].dtype) for n, (_, c) in shared.items()}
    opt = AdamW(books, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    params = dict(params)
    losses = []
    for _ in range(iters):
        for n, (idx, _) in shared.items():
            params[n] = books[n][idx]
        x, y = get_batch(train_ids, batch_size, config.block_size, rng)
        _, loss, cache = gpt_forward(config, params, x, y)
        grads = gpt_backward(cache)
        cgrads = {n: centroid_grad(idx, grads[n], len(books[n])).astype(books[n].dtype)
                  for n, (idx, _) in shared.items()}
        opt.step(books, cgrads, lr)
        losses.append(float(loss))
    for n, (idx, _) in shared.items():
        params[n] = books[n][idx]
    return params, {n: (idx, books[n]) for n, (idx, _) in shared.items()}, losses
