"""Assignment attention, part forward: causal multi-head self-attention, attention_forward."""

import numpy as np

from minigpt.course.checks import assert_close
from minigpt.layers.attention import attention_forward, merge_heads


def fixed_qkv():
    """(B=1, T=3, 3C=12): C=4, two heads of size 2. No random generator, so the expected values
    below do not depend on numpy's version."""
    return (1.5 * np.sin(0.7 * np.arange(36) + 0.3)).reshape(1, 3, 12)


# attention_forward(fixed_qkv(), n_head=2)[0], computed by the reference implementation
EXPECTED = np.array([[
    [-0.5608149972453553, 0.46731204527006676, 1.2756549309428467, 1.4840373699350728],
    [0.0054028658128990594, 0.6082773922530832, 1.2533114682191693, 1.4408749384751054],
    [0.950239991496338, 0.8294839610279489, 0.14599388086431467, -0.0208656247430609],
]])


def test_attention_forward_values():
    out, _ = attention_forward(fixed_qkv(), 2)
    assert_close("out", out, EXPECTED)


def test_attention_forward_cache_holds_probabilities():
    rng = np.random.default_rng(0)
    B, T, C, NH = 2, 5, 8, 2
    _, cache = attention_forward(rng.normal(size=(B, T, 3 * C)), NH)
    att = cache[3]
    assert att.shape == (B, NH, T, T), f"cache[3] (att): shape {att.shape}, expected {(B, NH, T, T)}"
    assert_close("att row sums", att.sum(axis=-1), np.ones((B, NH, T)))
    future = np.triu(np.ones((T, T), dtype=bool), k=1)
    assert_close("att on future keys (must be 0)", att[..., future], np.zeros((B, NH, int(future.sum()))))


def test_attention_forward_is_causal():
    rng = np.random.default_rng(1)
    B, T, C, NH = 2, 6, 8, 2
    qkv = rng.normal(size=(B, T, 3 * C))
    out, _ = attention_forward(qkv, NH)
    changed = qkv.copy()
    changed[:, 4:] = rng.normal(size=(B, 2, 3 * C))  # change positions 4 and 5 only
    out2, _ = attention_forward(changed, NH)
    assert_close("out[:, :4] after changing positions 4 and 5 (the past must not see the future)",
                 out2[:, :4], out[:, :4])


def test_attention_forward_dropout_uses_the_mask():
    rng = np.random.default_rng(2)
    B, T, C, NH = 1, 4, 6, 3
    qkv = rng.normal(size=(B, T, 3 * C))
    out, (q, k, v, att, mask) = attention_forward(qkv, NH, dropout=0.5, rng=np.random.default_rng(3))
    assert mask is not None, "cache[4]: with dropout 0.5 and a generator, the dropout mask must be cached"
    assert_close("out with dropout (att * mask @ v, heads merged)", out, merge_heads((att * mask) @ v))
