"""Assignment attention, part backward: attention_backward, checked against finite differences
of your attention_forward."""

import numpy as np

from minigpt.course.checks import assert_gradient_array
from minigpt.layers.attention import attention_backward, attention_forward


def test_attention_backward_gradient():
    rng = np.random.default_rng(0)
    B, T, C, NH = 2, 4, 6, 2
    qkv = rng.normal(size=(B, T, 3 * C))
    dout = rng.normal(size=(B, T, C))
    dqkv = attention_backward(dout, attention_forward(qkv, NH)[1])
    assert_gradient_array("dqkv", dqkv, lambda: attention_forward(qkv, NH)[0], qkv, dout)


def test_attention_backward_gradient_with_dropout():
    rng = np.random.default_rng(1)
    B, T, C, NH = 1, 4, 4, 2
    qkv = rng.normal(size=(B, T, 3 * C))
    dout = rng.normal(size=(B, T, C))

    def f():  # the same generator seed each call: the same dropout mask
        return attention_forward(qkv, NH, dropout=0.25, rng=np.random.default_rng(7))[0]

    dqkv = attention_backward(dout, attention_forward(qkv, NH, dropout=0.25, rng=np.random.default_rng(7))[1])
    assert_gradient_array("dqkv (dropout 0.25)", dqkv, f, qkv, dout)
