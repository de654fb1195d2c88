"""Assignment backprop, part cross_entropy: the fused softmax cross-entropy backward."""

import numpy as np

from minigpt.course.checks import assert_close, assert_gradient
from minigpt.layers.cross_entropy import cross_entropy_backward, cross_entropy_forward


def test_cross_entropy_backward_gradient():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 7)) * 2.0
    targets = rng.integers(0, 7, size=(2, 3))
    dlogits = cross_entropy_backward(cross_entropy_forward(logits, targets)[1])
    assert_gradient("dlogits", dlogits, lambda: cross_entropy_forward(logits, targets)[0], logits)


def test_cross_entropy_backward_ignored_targets_and_dloss():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 4, 5))
    targets = np.array([[1, -1, 4, 0], [-1, -1, 2, 3]])  # -1: ignored, not counted in the mean
    dlogits = cross_entropy_backward(cross_entropy_forward(logits, targets)[1], dloss=0.7)
    assert_gradient("dlogits (ignored targets, dloss 0.7)", dlogits,
                    lambda: 0.7 * cross_entropy_forward(logits, targets)[0], logits)
    assert_close("dlogits at ignored positions", dlogits[targets == -1], np.zeros((3, 5)))


def test_cross_entropy_backward_all_ignored():
    logits = np.random.default_rng(2).normal(size=(1, 2, 3))
    targets = np.full((1, 2), -1)
    dlogits = cross_entropy_backward(cross_entropy_forward(logits, targets)[1])
    assert_close("dlogits with every target ignored", dlogits, np.zeros_like(logits))
