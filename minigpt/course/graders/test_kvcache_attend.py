"""Assignment kvcache, part attend: attention_forward_kv, attention over cached keys and values."""

import numpy as np

from minigpt.course.checks import assert_close
from minigpt.layers.attention import attention_forward, attention_forward_kv, split_heads


def test_kv_attention_matches_full_attention():
    rng = np.random.default_rng(0)
    B, T, C, NH, maxT = 2, 6, 8, 2, 8
    qkv = rng.normal(size=(B, T, 3 * C))
    full, _ = attention_forward(qkv, NH)  # (B, T, C): the answer without a cache
    k_cache = np.zeros((B, NH, maxT, C // NH))
    v_cache = np.zeros((B, NH, maxT, C // NH))
    for start, end in [(0, 3), (3, 4), (4, 6)]:  # a prompt of 3, then one position, then two
        out = attention_forward_kv(qkv[:, start:end], NH, k_cache, v_cache, start)
        assert_close(f"output for positions {start}..{end - 1} (equal to full attention's)", out,
                     full[:, start:end])


def test_kv_attention_fills_the_cache():
    rng = np.random.default_rng(1)
    B, T, C, NH, maxT = 1, 5, 6, 3, 7
    qkv = rng.normal(size=(B, T, 3 * C))
    k_cache = np.zeros((B, NH, maxT, C // NH))
    v_cache = np.zeros((B, NH, maxT, C // NH))
    attention_forward_kv(qkv[:, :2], NH, k_cache, v_cache, 0)
    attention_forward_kv(qkv[:, 2:5], NH, k_cache, v_cache, 2)
    assert_close("k_cache[:, :, :5] (the keys of positions 0..4)", k_cache[:, :, :5], split_heads(qkv[..., C:2 * C], NH))
    assert_close("v_cache[:, :, :5] (the values)", v_cache[:, :, :5], split_heads(qkv[..., 2 * C:], NH))
    assert_close("k_cache[:, :, 5:] (not written yet)", k_cache[:, :, 5:], np.zeros((B, NH, 2, C // NH)))
