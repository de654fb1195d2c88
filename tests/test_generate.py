"""Sampling and the KV cache: cached logits equal full recomputation, sampling rules, bad input."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigpt import GPTConfig, InputError, gpt_forward, init_params
from minigpt.generate import KVCache, generate, next_token_probs

CFG = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8, dropout=0.1)


def random_params(config, seed, dtype=np.float64):
    """Order-1 random weights, so that attention is far from uniform and errors would show."""
    rng = np.random.default_rng(seed)
    return {k: rng.normal(0, 0.5, v.shape).astype(dtype) for k, v in init_params(config, dtype=dtype).items()}


@given(seed=st.integers(0, 2**32 - 1), cuts=st.lists(st.integers(1, 7), min_size=1, max_size=4))
def test_kv_cache_logits_equal_full_recomputation(seed, cuts):
    """Feeding a sequence in chunks through the KV cache gives, for every position, the logits of
    one forward pass over the whole sequence (float64, 1e-12). Dropout in the config must not
    apply while decoding."""
    params = random_params(CFG, seed)
    rng = np.random.default_rng(seed)
    B, T = 2, CFG.block_size
    idx = rng.integers(0, CFG.vocab_size, (B, T))
    full, _, _ = gpt_forward(CFG, params, idx)
    kv = KVCache(CFG, B, np.float64)
    pieces, start = [], 0
    for c in cuts + [T]:
        end = min(start + c, T)
        if end == start:
            break
        logits, _, _ = gpt_forward(CFG, params, idx[:, start:end], kv=kv)
        pieces.append(logits)
        start = end
    assert kv.length == start
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), full[:, :start], rtol=0, atol=1e-12)


def test_kv_cache_refuses_positions_past_block_size():
    """The cache cannot hold more than block_size positions: a clear error, not an index error."""
    params = random_params(CFG, 0)
    kv = KVCache(CFG, 1, np.float64)
    gpt_forward(CFG, params, np.zeros((1, CFG.block_size), dtype=np.int64), kv=kv)
    with pytest.raises(InputError, match="exceed block_size"):
        gpt_forward(CFG, params, np.zeros((1, 1), dtype=np.int64), kv=kv)


@settings(max_examples=10)
@given(seed=st.integers(0, 2**32 - 1), prompt_len=st.integers(1, 12))
def test_generate_same_tokens_with_and_without_cache(seed, prompt_len):
    """Cached and uncached generation sample the same tokens from the same seed, also after the
    context is full and starts to slide (prompts longer than block_size included)."""
    params = random_params(CFG, seed)
    prompt = np.random.default_rng(seed).integers(0, CFG.vocab_size, prompt_len)
    n = 2 * CFG.block_size
    with_cache = list(generate(CFG, params, prompt, n, temperature=1.0, seed=seed, use_cache=True))
    without = list(generate(CFG, params, prompt, n, temperature=1.0, seed=seed, use_cache=False))
    assert with_cache == without
    assert len(with_cache) == n and all(0 <= t < CFG.vocab_size for t in with_cache)


def test_long_prompt_keeps_last_block_size_tokens():
    """A prompt longer than block_size is cropped to its last block_size tokens: the output equals
    that of the cropped prompt."""
    params = random_params(CFG, 1)
    prompt = np.arange(20) % CFG.vocab_size
    a = list(generate(CFG, params, prompt, 5, seed=3))
    b = list(generate(CFG, params, prompt[-CFG.block_size :], 5, seed=3))
    assert a == b


def test_generate_is_deterministic_by_seed():
    params = random_params(CFG, 2)
    a = list(generate(CFG, params, [1, 2], 20, seed=7))
    b = list(generate(CFG, params, [1, 2], 20, seed=7))
    c = list(generate(CFG, params, [1, 2], 20, seed=8))
    assert a == b and a != c


def test_temperature_sharpens_and_flattens():
    """Lower temperature puts more mass on the most likely token; probabilities sum to 1."""
    logits = np.array([2.0, 1.0, 0.0, -1.0])
    p_cold, p1, p_hot = (next_token_probs(logits, t) for t in (0.5, 1.0, 2.0))
    for p in (p_cold, p1, p_hot):
        assert abs(p.sum() - 1) < 1e-12
    assert p_cold[0] > p1[0] > p_hot[0]
    np.testing.assert_allclose(p1, np.exp(logits) / np.exp(logits).sum(), rtol=1e-12)


@given(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 12))
def test_top_k_keeps_exactly_the_k_most_likely(seed, k):
    logits = np.random.default_rng(seed).normal(size=10)  # distinct values almost surely
    p = next_token_probs(logits, 1.0, top_k=k)
    kept = np.flatnonzero(p > 0)
    assert len(kept) == min(k, 10)
    assert set(kept) == set(np.argsort(-logits)[: min(k, 10)])
    assert abs(p.sum() - 1) < 1e-12


@given(seed=st.integers(0, 2**32 - 1), top_p=st.floats(0.01, 1.0))
def test_top_p_keeps_the_smallest_set_reaching_p(seed, top_p):
    """Nucleus: the kept tokens are the most likely ones, their original mass reaches top_p, and
    dropping the least likely kept token would fall below top_p."""
    logits = np.random.default_rng(seed).normal(size=10) * 2
    full = next_token_probs(logits)
    p = next_token_probs(logits, top_p=top_p)
    kept = np.flatnonzero(p > 0)
    order = np.argsort(-full)
    assert set(kept) == set(order[: len(kept)])
    mass = full[kept].sum()
    assert mass >= top_p - 1e-12 or len(kept) == 10
    assert mass - full[kept].min() < top_p
    np.testing.assert_allclose(p[kept], full[kept] / mass, rtol=1e-12)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(temperature=0.0), "temperature"),
        (dict(temperature=-1.0), "temperature"),
        (dict(top_k=0), "top_k"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
    ],
)
def test_bad_sampling_settings(kwargs, message):
    params = random_params(CFG, 0)
    with pytest.raises(InputError, match=message):
        next(generate(CFG, params, [1], 3, **kwargs))


def test_empty_prompt_and_bad_ids():
    params = random_params(CFG, 0)
    with pytest.raises(InputError, match="empty"):
        next(generate(CFG, params, [], 3))
    with pytest.raises(InputError, match="out of range"):
        next(generate(CFG, params, [CFG.vocab_size], 3))
