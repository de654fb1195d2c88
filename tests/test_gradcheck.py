"""Tests of the gradient-check helper itself: a checker that cannot fail proves nothing, so these
show it computes known derivatives, measures error as documented, locates the worst element, and
rejects a deliberately wrong backward with a message that says where.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from minigpt import gradcheck
from minigpt.gradcheck import (
    SMOOTH_TOLERANCE,
    GradCheckResult,
    check_gradients,
    compare,
    numerical_gradient,
    numerical_gradient_array,
    rel_error,
)
from minigpt.layers import layernorm_backward, layernorm_forward


def test_constants():
    """The smooth-function threshold is CS231n's 1e-7 and the default step 1e-5."""
    assert SMOOTH_TOLERANCE == 1e-7
    assert gradcheck.DEFAULT_STEP == 1e-5


def test_numerical_gradient_of_cube_sum():
    """d/dx sum(x^3) = 3 x^2, elementwise, to about 1e-10 relative (central differences have error
    h^2 f'''/6 = h^2 here, plus round-off)."""
    x = np.random.default_rng(0).normal(size=(3, 4))
    grad = numerical_gradient(lambda: np.sum(x**3), x)
    assert grad.shape == x.shape and grad.dtype == np.float64
    assert rel_error(grad, 3 * x**2) < 1e-9


def test_numerical_gradient_restores_input():
    """numerical_gradient perturbs x in place and puts every element back exactly."""
    x = np.random.default_rng(1).normal(size=(2, 3))
    before = x.copy()
    numerical_gradient(lambda: np.sum(np.sin(x)), x)
    np.testing.assert_array_equal(x, before)


def test_numerical_gradient_scalar_function_of_one_element():
    """A function of a single element has zero gradient elsewhere (exactly), and the right one
    there: d/dx exp(x[1, 2]) = exp(x[1, 2])."""
    x = np.random.default_rng(2).normal(size=(2, 3))
    grad = numerical_gradient(lambda: math.exp(x[1, 2]), x)
    expected = np.zeros_like(x)
    expected[1, 2] = math.exp(x[1, 2])
    assert (grad[np.arange(6).reshape(2, 3) != 5] == 0).all()
    assert rel_error(grad, expected) < 1e-9


def test_numerical_gradient_array_contracts_with_dout():
    """numerical_gradient_array differentiates sum(f() * dout): for f = x^2 that is 2 x dout."""
    rng = np.random.default_rng(3)
    x, dout = rng.normal(size=(4, 2)), rng.normal(size=(4, 2))
    grad = numerical_gradient_array(lambda: x**2, x, dout)
    assert rel_error(grad, 2 * x * dout) < 1e-9


def test_rel_error_known_values():
    """rel_error is max|a - n| / max(max|a|, max|n|): 0 for identical arrays, 0 when both are zero,
    and the documented value on known pairs."""
    a = np.array([1.0, -2.0, 3.0])
    assert rel_error(a, a.copy()) == 0.0
    assert rel_error(np.zeros(4), np.zeros(4)) == 0.0
    assert rel_error([1.0, 2.0], [1.0, 2.5]) == pytest.approx(0.5 / 2.5, rel=1e-15)
    assert rel_error([0.0, -4.0], [0.1, -4.0]) == pytest.approx(0.1 / 4.0, rel=1e-15)
    assert rel_error([0.0, 0.0], [0.0, 1e-3]) == pytest.approx(1.0, rel=1e-15)
    assert rel_error([1.0], [-1.0]) == pytest.approx(2.0, rel=1e-15)  # opposite signs


def test_rel_error_is_normwise_not_elementwise():
    """A tiny element that is off by noise-level amounts does not dominate the error: the scale is
    the tensor's largest gradient (unlike CS231n's elementwise |a - n| / (|a| + |n|))."""
    a = np.array([1.0, 1e-12])
    n = np.array([1.0, 2e-12])
    assert rel_error(a, n) == pytest.approx(1e-12, rel=1e-9)


def test_compare_locates_worst_element():
    """compare reports the index of the largest |analytic - numeric| and both values there, the
    max abs difference and the normwise relative error."""
    analytic = np.arange(12, dtype=np.float64).reshape(3, 4)
    numeric = analytic.copy()
    numeric[0, 1] += 0.01
    numeric[2, 3] -= 0.5  # the worst
    r = compare("w", analytic, numeric)
    assert isinstance(r, GradCheckResult)
    assert r.name == "w"
    assert r.index == (2, 3)
    assert r.analytic == 11.0 and r.numeric == 10.5
    assert r.max_abs_diff == pytest.approx(0.5)
    assert r.rel_error == pytest.approx(0.5 / 11.0)
    assert r.tolerance == SMOOTH_TOLERANCE and not r.ok


def test_compare_shape_mismatch():
    """Gradients of different shapes are an error, not a broadcast."""
    with pytest.raises(ValueError, match=r"w: analytic gradient shape \(3,\) != numeric shape \(1, 3\)"):
        compare("w", np.zeros(3), np.zeros((1, 3)))


def test_compare_tolerance():
    """ok is rel_error <= tolerance: an error of 1e-6 passes at 1e-5 and fails at 1e-7."""
    a = np.array([1.0, 2.0])
    n = a + np.array([0.0, 2e-6])
    assert compare("x", a, n, tolerance=1e-5).ok
    assert not compare("x", a, n, tolerance=1e-7).ok


def test_result_str_shows_verdict():
    """str(GradCheckResult) starts with OK or NOT OK, then the name, error, index and values."""
    good = compare("good", np.array([1.0, 2.0]), np.array([1.0, 2.0]))
    bad = compare("bad", np.array([1.0, 2.0]), np.array([1.0, 3.0]))
    assert str(good).startswith("OK good: rel error 0.00e+00")
    assert str(bad).startswith("NOT OK bad: rel error 3.33e-01")
    assert "worst at index (1,)" in str(bad) and "analytic 2, numeric 3" in str(bad)


def layernorm_problem(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2, 3, 5))
    w, b = 1.0 + 0.3 * rng.normal(size=5), 0.3 * rng.normal(size=5)
    out, cache = layernorm_forward(x, w, b)
    dout = rng.normal(size=out.shape)
    dx, dw, db = layernorm_backward(dout, cache)
    inputs = {"x": x, "ln.w": w, "ln.b": b}
    return (lambda: np.sum(layernorm_forward(x, w, b)[0] * dout)), inputs, {"x": dx, "ln.w": dw, "ln.b": db}


def test_check_gradients_passes_correct_backward():
    """check_gradients returns one OK result per input, in order, for a correct backward."""
    f, inputs, analytic = layernorm_problem()
    results = check_gradients(f, inputs, analytic)
    assert [r.name for r in results] == ["x", "ln.w", "ln.b"]
    assert all(r.ok and r.rel_error < SMOOTH_TOLERANCE for r in results)


def test_check_gradients_catches_sign_flip():
    """A layernorm backward with the sign of one element of dw flipped fails: the AssertionError
    names that tensor, the flipped index and its rel error, and lists no correct tensor."""
    f, inputs, analytic = layernorm_problem()
    analytic["ln.w"] = analytic["ln.w"].copy()
    analytic["ln.w"][2] *= -1
    expected = rel_error(analytic["ln.w"], numerical_gradient(f, inputs["ln.w"]))
    assert expected > 1e-2
    with pytest.raises(AssertionError) as info:
        check_gradients(f, inputs, analytic)
    msg = str(info.value)
    assert msg.startswith("gradient check failed:")
    assert "NOT OK ln.w" in msg
    assert "worst at index (2,)" in msg
    assert f"rel error {expected:.2e}" in msg
    assert "NOT OK x" not in msg and "NOT OK ln.b" not in msg


def test_check_gradients_lists_every_failing_tensor():
    """When several gradients are wrong, every one is listed (here dx off by a small term in one
    element: 1e-4 relative, far above 1e-7, and db scaled by 2)."""
    f, inputs, analytic = layernorm_problem(1)
    analytic["x"] = analytic["x"].copy()
    analytic["x"][1, 0, 3] += 1e-4 * np.abs(analytic["x"]).max()
    analytic["ln.b"] = 2 * analytic["ln.b"]
    with pytest.raises(AssertionError) as info:
        check_gradients(f, inputs, analytic)
    msg = str(info.value)
    assert "NOT OK x" in msg and "worst at index (1, 0, 3)" in msg
    assert "NOT OK ln.b" in msg
    assert "ln.w" not in msg
