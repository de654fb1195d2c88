"""Assignment optim, part lr_schedule: get_lr, linear warmup then cosine decay to min_lr."""

import itertools
import math

import numpy as np

from minigpt.course.checks import assert_close
from minigpt.optim import get_lr


def test_get_lr_values():
    its = [0, 1, 2, 3, 5, 6, 10, 11, 50]
    got = np.array([get_lr(i, 1e-3, 3, 10, 1e-4) for i in its])
    expected = np.array([0.00025, 0.0005, 0.00075, 0.001, 0.0008305704108364302, 0.0006501344202803415,
                         0.0001, 0.0001, 0.0001])
    for i, g, e in zip(its, got, expected):
        assert math.isclose(g, e, rel_tol=1e-12), (
            f"get_lr(it={i}, learning_rate=1e-3, warmup_iters=3, lr_decay_iters=10, min_lr=1e-4): "
            f"yours {g!r}, expected {e!r}")


def test_get_lr_shape_of_the_schedule():
    lr = [get_lr(i, 6e-4, 10, 110, 6e-5) for i in range(130)]
    assert_close("warmup (steps 0..9), linear up to learning_rate", np.array(lr[:10]),
                 6e-4 * np.arange(1, 11) / 11)
    assert_close("at the end of warmup: learning_rate", np.array(lr[10]), np.array(6e-4))
    assert_close("halfway through the decay: the mean of learning_rate and min_lr", np.array(lr[60]),
                 np.array((6e-4 + 6e-5) / 2))
    assert_close("from lr_decay_iters on: min_lr", np.array(lr[110:]), np.full(20, 6e-5))
    assert all(a >= b for a, b in itertools.pairwise(lr[10:])), "after warmup the rate must never increase"
