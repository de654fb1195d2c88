"""Assignment backprop, part linear: linear_backward, checked against finite differences."""

import numpy as np

from minigpt.course.checks import assert_gradient_array
from minigpt.layers.linear import linear_backward, linear_forward


def test_linear_backward_gradients():
    rng = np.random.default_rng(0)
    x, w, b = rng.normal(size=(2, 3, 4)), rng.normal(size=(4, 5)), rng.normal(size=5)
    dout = rng.normal(size=(2, 3, 5))
    _, cache = linear_forward(x, w, b)
    dx, dw, db = linear_backward(dout, cache)
    f = lambda: linear_forward(x, w, b)[0]
    assert_gradient_array("dx", dx, f, x, dout)
    assert_gradient_array("dw", dw, f, w, dout)
    assert_gradient_array("db", db, f, b, dout)


def test_linear_backward_without_bias():
    rng = np.random.default_rng(1)
    x, w = rng.normal(size=(3, 4)), rng.normal(size=(4, 2))
    dout = rng.normal(size=(3, 2))
    dx, dw, db = linear_backward(dout, linear_forward(x, w, None)[1])
    assert db is None, f"db: without a bias the gradient must be None, got {type(db).__name__}"
    f = lambda: linear_forward(x, w, None)[0]
    assert_gradient_array("dx", dx, f, x, dout)
    assert_gradient_array("dw", dw, f, w, dout)
