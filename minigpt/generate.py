"""Sampling text from the model, with and without a KV cache.

Without a cache every new token reruns the model on the whole context: T positions for one
token. With a KV cache (`KVCache`) each layer keeps the keys and values of the positions it has
already seen, so a new token costs one position; the logits are the same up to rounding (the
tests check it).

The context is at most block_size tokens, since there are only that many position embeddings:
a longer prompt keeps its last block_size tokens, and once the context is full each new token
drops the oldest one (as nanoGPT's generate). Every position then shifts, so the cache is
rebuilt from the last block_size tokens at each step: past that point the cache saves nothing,
but the result stays exactly that of recomputation.

Sampling from the next-token distribution, in this order (as Hugging Face's generate):
temperature (divide the logits), top-k (keep the k largest), top-p (keep the smallest set of
most likely tokens whose probability reaches p), then one draw from a seeded numpy Generator.

Legend: B batch, T time, C channels, NH heads, hs head size, V vocabulary, maxT block_size.
"""

from __future__ import annotations

import math

import numpy as np

from . import backend
from .config import GPTConfig
from .errors import InputError
from .model import check_tokens, gpt_forward


class KVCache:
    """Keys and values per layer i, each of shape (B, NH_i, maxT, hs); positions [0, length) filled.
    NH_i is config.layer_heads(i): n_head unless structured pruning removed heads."""

    def __init__(self, config: GPTConfig, batch_size: int, dtype):
        self.n_head = config.n_head  # the config's head count (course/graders use it)
        self.n_heads = [config.layer_heads(i) for i in range(config.n_layer)]  # per layer: NH_i
        shapes = [(batch_size, nh, config.block_size, config.head_size) for nh in self.n_heads]
        self.k = [np.zeros(shape, dtype=dtype) for shape in shapes]
        self.v = [np.zeros(shape, dtype=dtype) for shape in shapes]
        self.length = 0
        self.decoder = None  # the compiled decoding step, built on first use (forward_logits)

    def attend(self, layer: int, qkv):
        """Attention of the new positions in qkv (B, Tn, 3C) over every position so far; stores
        their keys and values. Called by block_forward; gpt_forward advances length."""
        attend = backend.ops().attention_forward_kv  # the NumPy layer or its numba twin
        return attend(qkv, self.n_heads[layer], self.k[layer], self.v[layer], self.length)

    def reset(self):
        self.length = 0


def check_sampling(temperature: float, top_k, top_p, max_new_tokens: int = 0):
    if not (isinstance(temperature, (int, float)) and temperature > 0 and math.isfinite(temperature)):
        raise InputError(f"temperature must be > 0, got {temperature}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise InputError(f"top_k must be an integer >= 1, got {top_k}")
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0.0 < top_p <= 1.0):
        raise InputError(f"top_p must be in (0, 1], got {top_p}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise InputError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens}")


def next_token_probs(logits, temperature: float = 1.0, top_k=None, top_p=None) -> np.ndarray:
    """logits (V,) -> probabilities (V,) in float64 after temperature, top-k and top-p."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    if top_k is not None and top_k < z.size:
        kth_largest = np.partition(z, -top_k)[-top_k]
        z = np.where(z < kth_largest, -np.inf, z)  # ties with the k-th are kept
    p = np.exp(z - z.max())
    p /= p.sum()
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-p, kind="stable")  # most likely first
        cumulative = np.cumsum(p[order])
        # keep a token if the tokens before it have not yet reached top_p (so the first always stays)
        keep = (cumulative - p[order]) < top_p
        mask = np.zeros_like(p, dtype=bool)
        mask[order[keep]] = True
        p = np.where(mask, p, 0.0)
        p /= p.sum()
    return p


def forward_logits(config: GPTConfig, params, idx, kv=None) -> np.ndarray:
    """The logits (B, T, V) of gpt_forward(config, params, idx, kv=kv), for sampling.

    On the numba backend, one new token of a batch-1 cache that already holds the prompt takes
    the compiled decoding step (minigpt/kernels/decode.py): the same logits to rounding, with
    fewer and cheaper calls per token. Not while the backend's functions are patched (int8
    inference replaces the linear layer): those run through gpt_forward."""
    idx = np.asarray(idx)
    fused = backend.get_backend() == "numba" and not backend.is_patched()  # int8 inference patches linear
    if fused and kv is not None and 0 < kv.length < config.block_size and idx.shape == (1, 1):
        if kv.decoder is None or kv.decoder.params is not params:
            from .kernels.decode import Decoder

            kv.decoder = Decoder(config, params, kv)
        check_tokens(idx, config)
        return kv.decoder(int(idx[0, 0]))[None, None, :]
    logits, _, _ = gpt_forward(config, params, idx, kv=kv)
    return logits


def generate(config: GPTConfig, params, prompt_ids, max_new_tokens: int, temperature: float = 1.0,
             top_k=None, top_p=None, seed=None, use_cache: bool = True):
    """Yield max_new_tokens sampled token ids, one at a time, following prompt_ids (1-D).

    The same seed gives the same tokens, with or without the cache (up to ties decided by
    rounding, vanishingly rare in practice)."""
    check_sampling(temperature, top_k, top_p, max_new_tokens)
    tokens = list(np.asarray(prompt_ids, dtype=np.int64).reshape(-1))
    if not tokens:
        raise InputError("the prompt is empty; give at least one token")
    rng = np.random.default_rng(seed)
    maxT = config.block_size
    kv = KVCache(config, 1, next(iter(params.values())).dtype) if use_cache else None

    def logits_next():
        """Logits (V,) for the token after `tokens`."""
        # BEGIN SOLUTION generate_step
        # HINT: a cache holding 0 < length < maxT positions needs only the newest token; else reset, feed tokens[-maxT:]
        if kv is not None and 0 < kv.length < maxT:
            new = np.array([tokens[-1:]])  # (1, 1): only the newest token is not cached yet
        else:
            if kv is not None:
                kv.reset()  # first call, or the context is full and every position shifts
            new = np.array([tokens[-maxT:]])  # (1, T <= maxT): the context, cropped to block_size
        logits = forward_logits(config, params, new, kv)
        return logits[0, -1]
        # END SOLUTION

    for _ in range(max_new_tokens):
        p = next_token_probs(logits_next(), temperature, top_k, top_p)
        token = int(np.searchsorted(np.cumsum(p), rng.random() * p.sum(), side="right"))
        token = min(token, p.size - 1)  # guard against the draw landing on the float end
        tokens.append(token)
        yield token
