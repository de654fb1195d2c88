"""The checks the grading tests make, with failure messages that carry the numbers.

A failed check names the quantity, the relative error and its tolerance, and the worst element:
its index and both values (for a gradient check: your analytic gradient and the numerical one),
so the score table can show a student where to look. Relative errors are normwise, as
minigpt.gradcheck.rel_error: max|a - b| / max(max|a|, max|b|).
"""

from __future__ import annotations

import numpy as np

from ..gradcheck import SMOOTH_TOLERANCE, compare, numerical_gradient

VALUE_TOLERANCE = 1e-9  # float64 results computed in another order agree to ~1e-15


def _shape_check(name, got, expected):
    if got is None:
        raise AssertionError(f"{name}: got None, expected an array of shape {np.shape(expected)}")
    if np.shape(got) != np.shape(expected):
        raise AssertionError(f"{name}: shape {np.shape(got)}, expected {np.shape(expected)}")


def assert_close(name: str, got, expected, tolerance: float = VALUE_TOLERANCE):
    """got (yours) against expected, elementwise, within a normwise relative error."""
    _shape_check(name, got, expected)
    r = compare(name, got, expected, tolerance)
    if not np.all(np.isfinite(np.asarray(got, dtype=np.float64))):
        raise AssertionError(f"{name}: contains nan or inf (first at index "
                             f"{tuple(int(i) for i in np.argwhere(~np.isfinite(np.asarray(got)))[0])})")
    if not r.ok:
        raise AssertionError(f"{name}: rel error {r.rel_error:.2e} > tolerance {tolerance:.0e}; worst at index "
                             f"{r.index}: yours {r.analytic:.10g}, expected {r.numeric:.10g}")


def assert_gradient(name: str, analytic, f, x, tolerance: float = SMOOTH_TOLERANCE):
    """Your gradient `analytic` of the scalar f() with respect to x, against central differences
    (f reads x, which is perturbed in place and restored)."""
    numeric = numerical_gradient(f, x)
    _shape_check(name, analytic, numeric)
    r = compare(name, analytic, numeric, tolerance)
    if not np.all(np.isfinite(np.asarray(analytic, dtype=np.float64))):
        raise AssertionError(f"{name}: your gradient contains nan or inf")
    if not r.ok:
        raise AssertionError(f"{name}: gradient check failed, rel error {r.rel_error:.2e} > tolerance "
                             f"{tolerance:.0e}; worst at index {r.index}: analytic (yours) {r.analytic:.10g}, "
                             f"numerical {r.numeric:.10g}")


def assert_gradient_array(name: str, analytic, f, x, dout, tolerance: float = SMOOTH_TOLERANCE):
    """As assert_gradient for an array-valued f(), contracted with the upstream gradient dout."""
    assert_gradient(name, analytic, lambda: np.sum(f() * dout), x, tolerance)
