"""Assignment kvcache, part decode: generate's step, feeding the model one new token per step
while the cache has room, and the whole (cropped) context otherwise.

This part is graded on its own: the cache's attention (part attend, attention_forward_kv) is
replaced here by a stand-in that keeps every position's q, k, v and reruns full attention, so a
mistake in attend does not cost these points too."""

import numpy as np
import pytest

import minigpt.generate as gen
from minigpt import backend
from minigpt.config import GPTConfig
from minigpt.layers.attention import attention_forward
from minigpt.model import gpt_forward, init_params

backend.set_backend("numpy")
CONFIG = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8)
PARAMS = init_params(CONFIG, seed=1, dtype=np.float64)
for _p in PARAMS.values():  # larger weights than GPT-2's init: greedy tokens that vary (10 10 10 0 0 10 0 ...)
    _p *= 50.0 if _p.ndim == 2 else 1.0


@pytest.fixture(autouse=True)
def attend_by_recomputation(monkeypatch):
    """KVCache.attend without attention_forward_kv: the new positions' outputs from full
    attention over every stored position (slow, but independent of part attend)."""

    def attend(self, layer, qkv):
        stored = getattr(self, "stored_qkv", {})
        self.stored_qkv = stored
        previous = stored.get(layer)
        if self.length == 0 or previous is None:
            stored[layer] = qkv
        else:
            stored[layer] = np.concatenate([previous[:, : self.length], qkv], axis=1)
        out, _ = attention_forward(stored[layer], self.n_head)
        return out[:, self.length :]

    monkeypatch.setattr(gen.KVCache, "attend", attend)


def greedy_by_recomputation(prompt, n):
    """The answer: the most likely next token from the whole context, cropped to block_size."""
    tokens = list(prompt)
    for _ in range(n):
        logits, _, _ = gpt_forward(CONFIG, PARAMS, np.array([tokens[-CONFIG.block_size:]]))
        tokens.append(int(np.argmax(logits[0, -1])))
    return tokens[len(prompt):]


def record_lengths(monkeypatch):
    lengths = []

    def spy(config, params, idx, **kwargs):
        lengths.append(np.asarray(idx).shape[1])
        return gpt_forward(config, params, idx, **kwargs)

    monkeypatch.setattr(gen, "gpt_forward", spy)
    return lengths


def test_greedy_tokens_match_recomputation():
    prompt = [1, 2, 3]
    expected = greedy_by_recomputation(prompt, 10)  # past block_size 8: the context slides
    for use_cache in (True, False):
        got = list(gen.generate(CONFIG, PARAMS, prompt, 10, top_k=1, seed=0, use_cache=use_cache))
        assert got == expected, f"generate(use_cache={use_cache}) with top_k=1: tokens {got}, expected {expected}"


def test_cache_feeds_one_position_per_step(monkeypatch):
    lengths = record_lengths(monkeypatch)
    list(gen.generate(CONFIG, PARAMS, [1, 2, 3], 8, top_k=1, seed=0, use_cache=True))
    # the prompt (3), then one token per step until the cache holds block_size 8 positions,
    # then the context is full: each step re-feeds the last 8 tokens
    expected = [3, 1, 1, 1, 1, 1, 8, 8]
    assert lengths == expected, f"positions fed to gpt_forward per step: {lengths}, expected {expected}"


def test_without_cache_feeds_the_context(monkeypatch):
    lengths = record_lengths(monkeypatch)
    list(gen.generate(CONFIG, PARAMS, [1, 2, 3], 7, top_k=1, seed=0, use_cache=False))
    expected = [3, 4, 5, 6, 7, 8, 8]
    assert lengths == expected, f"positions fed to gpt_forward per step (no cache): {lengths}, expected {expected}"
