"""The compiled decoding step (minigpt/kernels/decode.py) against its specification: gpt_forward
with a KV cache on the NumPy backend, one new token at a time.

  * logits equal over hypothesis-drawn small models (bias or not, GELU or ReLU, structurally
    pruned layers), float64 to 1e-12 and float32 to 1e-5 relative to the largest logit, and the
    caches it fills are the reference's;
  * sampling on the numba backend goes through it, and gives the NumPy backend's tokens;
  * a new parameter dict gets a new decoder (no stale weights);
  * a kernel that calls another module's kernels is cached under a key that includes their source.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_kernels import assert_close

import minigpt.generate as gen
import minigpt.kernels as kernels_pkg
from minigpt import GPTConfig, backend, gpt_forward, init_params
from minigpt.generate import KVCache, forward_logits, generate
from minigpt.kernels import activation, attention, decode, layernorm


def model(seed, dtype, n_layer, n_head, hs, bias, act, pruned):
    rng = np.random.default_rng(seed)
    config = GPTConfig(vocab_size=int(rng.integers(2, 12)), block_size=9, n_layer=n_layer, n_head=n_head,
                       n_embd=n_head * hs, bias=bias, activation=act)  # fmt: skip
    if pruned:  # per-layer head counts and MLP widths, as structured pruning leaves them
        config = config.replace(head_counts=[int(rng.integers(1, n_head + 1)) for _ in range(n_layer)],
                                mlp_widths=[int(rng.integers(1, 4 * config.n_embd + 1)) for _ in range(n_layer)])  # fmt: skip
    params = init_params(config, seed, dtype)
    for p in params.values():  # larger than GPT-2's init, so attention and the MLP do real work
        p += rng.normal(0.0, 0.5, p.shape).astype(dtype)
    return config, params


@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.float32, np.float64]), n_layer=st.integers(1, 3),
       n_head=st.integers(1, 3), hs=st.integers(1, 4), bias=st.booleans(), act=st.sampled_from(["gelu", "relu"]),
       pruned=st.booleans(), prompt=st.integers(1, 4))  # fmt: skip
def test_decoder_equals_gpt_forward_with_cache(seed, dtype, n_layer, n_head, hs, bias, act, pruned, prompt):
    config, params = model(seed, dtype, n_layer, n_head, hs, bias, act, pruned)
    tokens = np.random.default_rng(seed + 1).integers(0, config.vocab_size, config.block_size)
    ref, fast = KVCache(config, 1, dtype), KVCache(config, 1, dtype)
    with backend.use_backend("numpy"):  # the prompt through gpt_forward, into both caches
        gpt_forward(config, params, tokens[None, :prompt], kv=ref)
        gpt_forward(config, params, tokens[None, :prompt], kv=fast)
        decoder = decode.Decoder(config, params, fast)
        for t in range(prompt, config.block_size):
            expected, _, _ = gpt_forward(config, params, tokens[None, t : t + 1], kv=ref)
            got = decoder(int(tokens[t]))
            assert_close(got, expected[0, -1], dtype, f"logits at position {t}")
            assert fast.length == ref.length == t + 1
    for i in range(config.n_layer):
        assert_close(fast.k[i], ref.k[i], dtype, f"layer {i} keys")
        assert_close(fast.v[i], ref.v[i], dtype, f"layer {i} values")


def test_numba_sampling_uses_the_decoder_and_matches_numpy(monkeypatch):
    config, params = model(3, np.float64, 2, 2, 3, True, "gelu", False)
    config = config.replace(block_size=16)
    params = init_params(config, 3, np.float64)
    calls = []
    original = decode.Decoder.__call__

    def spy(self, token):
        calls.append(token)
        return original(self, token)

    monkeypatch.setattr(decode.Decoder, "__call__", spy)
    with backend.use_backend("numpy"):
        expected = list(generate(config, params, [1, 2], 10, temperature=0.8, seed=5))
    assert calls == []
    with backend.use_backend("numba"):
        got = list(generate(config, params, [1, 2], 10, temperature=0.8, seed=5))
    assert got == expected
    # the prompt [1, 2] goes through gpt_forward; then each sampled token is fed to the decoder
    assert calls == expected[:9]


def test_a_new_parameter_dict_gets_a_new_decoder():
    config, params = model(4, np.float64, 1, 2, 2, False, "gelu", False)
    other = {name: p * 1.5 for name, p in params.items()}
    kv = KVCache(config, 1, np.float64)
    with backend.use_backend("numba"):
        forward_logits(config, params, np.array([[1]]), kv)  # the prompt
        forward_logits(config, params, np.array([[2]]), kv)
        first = kv.decoder
        got = forward_logits(config, other, np.array([[3]]), kv)[0, -1]
    assert kv.decoder is not first and kv.decoder.params is other
    ref = KVCache(config, 1, np.float64)
    with backend.use_backend("numpy"):
        forward_logits(config, params, np.array([[1]]), ref)
        forward_logits(config, params, np.array([[2]]), ref)
        expected = forward_logits(config, other, np.array([[3]]), ref)[0, -1]
    assert_close(got, expected, np.float64, "logits after the switch")


def test_decoder_bad_token_and_full_cache_fall_back_to_the_checks():
    config, params = model(5, np.float32, 1, 1, 2, True, "gelu", False)
    kv = KVCache(config, 1, np.float32)
    with backend.use_backend("numba"):
        forward_logits(config, params, np.array([[0]]), kv)
        with pytest.raises(gen.InputError, match="out of range"):
            forward_logits(config, params, np.array([[config.vocab_size]]), kv)
        kv.length = config.block_size
        with pytest.raises(gen.InputError, match="exceed block_size"):
            forward_logits(config, params, np.array([[0]]), kv)


def test_cache_key_follows_the_source_of_called_modules():
    assert decode._attend.depends == (attention,)
    assert decode._residual_layernorm.depends == (layernorm,)
    assert decode._activation.depends == (activation,)
    key = kernels_pkg.source_hash([layernorm])
    assert key == kernels_pkg.source_hash([layernorm]) and len(key) == 12
    assert key != kernels_pkg.source_hash([attention])
    fn = decode._residual_layernorm.for_dtype(np.float32)
    assert key in fn.py_func.__qualname__, fn.py_func.__qualname__


def test_patched_backend_takes_gpt_forward(monkeypatch):
    """int8 inference replaces the linear layer through backend.patched: the decoder, which does
    its own products, must step aside, or sampling would silently use the float weights."""
    config, params = model(6, np.float64, 1, 2, 2, True, "gelu", False)
    numba_ops = backend.ops_for("numba")
    calls = []

    def linear_forward(x, w, b=None):
        calls.append(x.shape)
        return numba_ops.linear_forward(x, w, b)

    patch = SimpleNamespace(**{**vars(numba_ops), "linear_forward": linear_forward})
    monkeypatch.setattr(decode.Decoder, "__call__", lambda self, token: pytest.fail("the decoder ran while patched"))
    with backend.use_backend("numba"):
        assert not backend.is_patched()
        with backend.patched("numba", patch):
            assert backend.is_patched()
            tokens = list(generate(config, params, [1], 4, seed=0))
        assert not backend.is_patched()
    assert len(tokens) == 4
    assert (1, 1, config.n_embd) in calls  # the single-token steps went through the patched linear
