"""Assignment backprop, part layernorm: layernorm_backward, checked against finite differences."""

import numpy as np

from minigpt.course.checks import assert_gradient_array
from minigpt.layers.layernorm import layernorm_backward, layernorm_forward


def test_layernorm_backward_gradients():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 6)) * 2.0 + 0.5
    w, b = rng.normal(size=6), rng.normal(size=6)
    dout = rng.normal(size=(2, 3, 6))
    dx, dw, db = layernorm_backward(dout, layernorm_forward(x, w, b)[1])
    f = lambda: layernorm_forward(x, w, b)[0]
    assert_gradient_array("dx", dx, f, x, dout)
    assert_gradient_array("dw", dw, f, w, dout)
    assert_gradient_array("db", db, f, b, dout)


def test_layernorm_backward_without_bias():
    rng = np.random.default_rng(1)
    x, w = rng.normal(size=(4, 5)), rng.normal(size=5)
    dout = rng.normal(size=(4, 5))
    dx, dw, db = layernorm_backward(dout, layernorm_forward(x, w, None)[1])
    assert db is None, f"db: without a bias the gradient must be None, got {type(db).__name__}"
    f = lambda: layernorm_forward(x, w, None)[0]
    assert_gradient_array("dx", dx, f, x, dout)
    assert_gradient_array("dw", dw, f, w, dout)
