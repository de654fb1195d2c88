"""Assignment backprop, part gelu: gelu_backward (tanh approximation), against finite differences."""

import numpy as np

from minigpt.course.checks import assert_gradient_array
from minigpt.layers.activation import gelu_backward, gelu_forward


def test_gelu_backward_gradient():
    rng = np.random.default_rng(0)
    x = rng.uniform(-2.5, 2.5, size=(2, 3, 8))  # away from the flat tails, where gradients vanish
    dout = rng.normal(size=x.shape)
    dx = gelu_backward(dout, gelu_forward(x)[1])
    assert_gradient_array("dx", dx, lambda: gelu_forward(x)[0], x, dout)


def test_gelu_backward_at_zero():
    x = np.zeros(3)
    dx = gelu_backward(np.ones(3), gelu_forward(x)[1])
    np.testing.assert_allclose(dx, 0.5, rtol=0, atol=1e-15, err_msg="dx at x = 0: gelu'(0) is exactly 0.5")
