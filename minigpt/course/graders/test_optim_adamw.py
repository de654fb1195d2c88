"""Assignment optim, part adamw: one AdamW step, adamw_update, and the AdamW optimizer around it."""

import numpy as np

from minigpt import backend
from minigpt.course.checks import assert_close
from minigpt.optim import AdamW, adamw_update

backend.set_backend("numpy")  # AdamW.step calls the active backend's update: yours is the NumPy one


def three_steps():
    """A matrix (decayed) and a vector (not decayed), three steps, lr 0.1, betas (0.9, 0.95),
    weight decay 0.1. Inputs from sin and cos: no dependence on numpy's random streams."""
    p = np.sin(np.arange(6.0)).reshape(2, 3)
    m, v = np.zeros_like(p), np.zeros_like(p)
    b = np.cos(np.arange(3.0))
    mb, vb = np.zeros(3), np.zeros(3)
    for t in (1, 2, 3):
        g = np.cos(1.3 * np.arange(6.0) + t).reshape(2, 3)
        gb = np.sin(0.9 * np.arange(3.0) + t)
        adamw_update(p, g, m, v, 0.1, 0.9, 0.95, 1e-8, 0.1, t, True)
        adamw_update(b, gb, mb, vb, 0.1, 0.9, 0.95, 1e-8, 0.1, t, False)
    return p, m, v, b


def test_adamw_three_steps_values():
    # computed by the reference implementation
    p, m, v, b = three_steps()
    assert_close("p after 3 steps (decayed)", p, np.array([
        [-0.05693138391728572, 1.1056651467505518, 1.0589871609005659],
        [-0.13665420446309096, -0.9821115144464999, -0.9326981998928351]]))
    assert_close("m after 3 steps", m, np.array([
        [-0.09268797817396801, -0.18292145422346112, -0.00517457129619589],
        [0.1801530707027275, 0.10155604206840005, -0.12582082611663487]]))
    assert_close("v after 3 steps", v, np.array([
        [0.07040340817115352, 0.07438208148704267, 0.06696101212125392],
        [0.07570040056039515, 0.06814410259653843, 0.07235452764206421]]))
    assert_close("bias vector after 3 steps (not decayed)", b,
                 np.array([0.7148713645776527, 0.34029990706722335, -0.41722464407573445]))


def test_adamw_first_step_moves_each_weight_by_lr():
    # after one step m_hat = g and v_hat = g^2, so the step is lr * g / (|g| + eps): lr * sign(g)
    p = np.zeros(5)
    g = np.array([3.0, -0.5, 2e-3, -40.0, 1.0])
    adamw_update(p, g, np.zeros(5), np.zeros(5), 0.01, 0.9, 0.999, 1e-12, 0.0, 1, False)
    assert_close("p after one step from 0 (should be -lr * sign(g))", p, -0.01 * np.sign(g))


def test_adamw_decay_is_decoupled():
    # a zero gradient leaves m and v at 0: a decayed weight only shrinks by (1 - lr * wd)
    p = np.array([[1.0, -2.0], [0.5, 4.0]])
    m, v = np.zeros_like(p), np.zeros_like(p)
    adamw_update(p, np.zeros_like(p), m, v, 0.1, 0.9, 0.999, 1e-8, 0.2, 1, True)
    assert_close("p after a decay-only step", p, np.array([[1.0, -2.0], [0.5, 4.0]]) * (1 - 0.1 * 0.2))
    assert_close("m after a zero gradient", m, np.zeros_like(p))


def test_adamw_optimizer_updates_in_place():
    params = {"w": np.sin(np.arange(6.0)).reshape(3, 2), "b": np.cos(np.arange(2.0))}
    w, b = params["w"], params["b"]
    before = {k: p.copy() for k, p in params.items()}
    opt = AdamW(params, weight_decay=0.5)
    grads = {"w": np.zeros((3, 2)), "b": np.zeros(2)}
    opt.step(params, grads, lr=0.1)
    assert params["w"] is w and params["b"] is b, "AdamW must update the parameter arrays in place"
    assert_close("w after a zero-gradient step (decayed: 2-D)", w, before["w"] * (1 - 0.1 * 0.5))
    assert_close("b after a zero-gradient step (not decayed: 1-D)", b, before["b"])
    assert_close("opt.m['w'] (in place)", opt.m["w"], np.zeros((3, 2)))
