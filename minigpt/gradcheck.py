"""Gradient checking: compare a hand-written backward pass with central finite differences.

As CS231n's gradient_check.py: `numerical_gradient` differentiates a scalar function,
`numerical_gradient_array` an array-valued one contracted with an upstream gradient dout (so a
single layer's backward is checked with no loss function: llm.c's "fakeloss" trick).

Run checks in float64: with central differences and h = 1e-5 the float64 error is about 1e-10,
while float32 cannot do better than about 1e-4 at any h.

The relative error is normwise:  max|analytic - numeric| / max(max|analytic|, max|numeric|).
CS231n's elementwise form |a - n| / (|a| + |n|) blows up on elements whose true gradient is tiny
by chance, where finite-difference noise of ~1e-11 dominates; scaling by the tensor's largest
gradient keeps the check strict (1e-7) without such false alarms. The report still names the
worst element, its index and both values there.

Thresholds (CS231n notes): <= 1e-7 is right for smooth functions; up to ~1e-4 can happen at
kinks (ReLU at 0); above 1e-2 the gradient is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SMOOTH_TOLERANCE = 1e-7  # float64, h = 1e-5, functions without kinks
DEFAULT_STEP = 1e-5


def numerical_gradient(f, x, h: float = DEFAULT_STEP) -> np.ndarray:
    """d f() / d x by central differences, one element at a time.

    f takes no arguments and returns a scalar computed from x, which this function perturbs in
    place (and restores): pass a closure over x. Returns an array shaped like x.
    """
    grad = np.zeros(x.shape, dtype=np.float64)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        fp = float(f())
        x[i] = old - h
        fm = float(f())
        x[i] = old
        grad[i] = (fp - fm) / (2 * h)
    return grad


def numerical_gradient_array(f, x, dout, h: float = DEFAULT_STEP) -> np.ndarray:
    """Gradient of sum(f() * dout) with respect to x, for an array-valued f (same contract as
    numerical_gradient). This is what a layer's backward(dout) must return for x."""
    return numerical_gradient(lambda: np.sum(f() * dout), x, h)


def rel_error(analytic, numeric) -> float:
    """Normwise relative error max|a - n| / max(max|a|, max|n|); 0 when both are exactly zero."""
    a, n = np.asarray(analytic, dtype=np.float64), np.asarray(numeric, dtype=np.float64)
    scale = max(np.abs(a).max(initial=0.0), np.abs(n).max(initial=0.0))
    diff = np.abs(a - n).max(initial=0.0)
    return 0.0 if diff == 0.0 else float(diff / scale) if scale > 0 else float("inf")


@dataclass
class GradCheckResult:
    """The outcome of comparing one gradient with its numerical estimate."""

    name: str
    rel_error: float
    max_abs_diff: float
    index: tuple  # where |analytic - numeric| is largest
    analytic: float  # both values at that index
    numeric: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.rel_error <= self.tolerance

    def __str__(self) -> str:
        verdict = "OK" if self.ok else "NOT OK"
        return (
            f"{verdict} {self.name}: rel error {self.rel_error:.2e} (tolerance {self.tolerance:.0e}); "
            f"worst at index {self.index}: analytic {self.analytic:.10g}, numeric {self.numeric:.10g}, "
            f"abs diff {self.max_abs_diff:.2e}"
        )


def compare(name: str, analytic, numeric, tolerance: float = SMOOTH_TOLERANCE) -> GradCheckResult:
    """Compare an analytic gradient with a numerical one and locate the worst element."""
    a, n = np.asarray(analytic, dtype=np.float64), np.asarray(numeric, dtype=np.float64)
    if a.shape != n.shape:
        raise ValueError(f"{name}: analytic gradient shape {a.shape} != numeric shape {n.shape}")
    diff = np.abs(a - n)
    index = np.unravel_index(int(np.argmax(diff)), a.shape) if a.size else ()
    index = tuple(int(i) for i in index)
    return GradCheckResult(
        name=name,
        rel_error=rel_error(a, n),
        max_abs_diff=float(diff.max(initial=0.0)),
        index=index,
        analytic=float(a[index]) if a.size else 0.0,
        numeric=float(n[index]) if a.size else 0.0,
        tolerance=tolerance,
    )


def check_gradients(f, inputs: dict, analytic: dict, h: float = DEFAULT_STEP,
                    tolerance: float = SMOOTH_TOLERANCE) -> list[GradCheckResult]:
    """Check every array in `inputs` (name -> array, perturbed in place) against `analytic`
    (name -> gradient) for the scalar function f(). Raises AssertionError listing every failing
    tensor with its worst element; returns the results when all pass."""
    results = [compare(name, analytic[name], numerical_gradient(f, x, h), tolerance) for name, x in inputs.items()]
    failed = [r for r in results if not r.ok]
    if failed:
        raise AssertionError("gradient check failed:\n" + "\n".join(str(r) for r in failed))
    return results
