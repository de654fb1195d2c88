"""Assignment distill, part gradient: soft_loss_backward, the gradient of each divergence with
respect to the student's logits, against finite differences of your soft_loss_forward."""

import numpy as np

from minigpt.compress.distill import soft_loss_backward, soft_loss_forward
from minigpt.course.checks import assert_gradient


def check(divergence, temperature, targets, dloss=1.0, seed=0):
    rng = np.random.default_rng(seed)
    s, t = rng.normal(size=(2, 3, 5)) * 2, rng.normal(size=(2, 3, 5)) * 2
    ds = soft_loss_backward(soft_loss_forward(s, t, temperature, targets, divergence)[1], dloss)
    assert_gradient(f"dstudent_logits ({divergence}, T={temperature}, dloss={dloss})", ds,
                    lambda: dloss * soft_loss_forward(s, t, temperature, targets, divergence)[0], s)


def test_kl_gradient():
    check("kl", 2.0, np.array([[1, -1, 0], [4, 2, -1]]), dloss=0.5)


def test_reverse_kl_gradient():
    check("reverse_kl", 1.5, None, seed=1)


def test_js_gradient():
    check("js", 3.0, np.array([[0, 1, 2], [-1, 3, 4]]), seed=2)
