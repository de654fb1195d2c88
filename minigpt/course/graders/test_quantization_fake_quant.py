"""Assignment quantization, part fake_quant: fake quantization for quantization-aware training.
The forward rounds to the grid and back (x_hat = dequantize(quantize(x))) and records which values
were inside the clipping range; the backward is the straight-through estimator: the gradient
passes unchanged inside the range and is 0 outside.

This part is graded on its own: the scales and zero points are given (not computed by part rtn),
and dequantization, part rtn's `dequant` region, is replaced here by a stand-in."""

import numpy as np
import pytest

import minigpt.compress.quantize as Q
from minigpt.compress.quantize import QuantSpec, fake_quant_backward, fake_quant_forward
from minigpt.course.checks import assert_close


@pytest.fixture(autouse=True)
def dequantize_without_part_rtn(monkeypatch):
    def dequantize_grouped(q, scale, zero, dtype=np.float32):
        dtype = np.dtype(dtype)
        return (q - zero[..., None]).astype(dtype) * scale.astype(dtype)[..., None]

    monkeypatch.setattr(Q, "dequantize_grouped", dequantize_grouped)


# 3 bits symmetric: codes in [-3, 3]; s = 0.5, so x / s = [-6, -2.4, -0.8, 0, 0.52, 1.8, 5]
X_SYM = np.array([[-3.0, -1.2, -0.4, 0.0, 0.26, 0.9, 2.5]])
SYM = (QuantSpec(bits=3, scheme="sym", granularity="channel"), (np.array([[0.5]]), np.array([[0]], np.int32)))
# 2 bits affine: codes in [0, 3]; s = 1, z = 1: round(x) + 1 = [-1, 0, 0, 1, 3, 3, 4] (half to even at 1.5)
X_AFF = np.array([[-2.0, -1.0, -0.6, 0.4, 1.5, 2.49, 2.6]])
AFF = (QuantSpec(bits=2, scheme="affine", granularity="channel"), (np.array([[1.0]]), np.array([[1]], np.int32)))


@pytest.mark.parametrize(("x", "case", "x_hat", "inside"), [
    (X_SYM, SYM, [-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5], [0, 1, 1, 1, 1, 1, 0]),
    (X_AFF, AFF, [-1.0, -1.0, -1.0, 0.0, 2.0, 2.0, 2.0], [0, 1, 1, 1, 1, 1, 0]),
], ids=["sym3", "affine2"])
def test_forward_values_and_mask(x, case, x_hat, inside):
    spec, qparams = case
    out, mask = fake_quant_forward(x, spec, qparams)
    assert_close(f"x_hat ({spec.name})", out, np.array([x_hat]))
    assert mask is not None and np.shape(mask) == x.shape, f"the mask must have x's shape {x.shape}"
    assert np.array_equal(np.asarray(mask, bool), np.array([inside], bool)), (
        f"inside-the-range mask ({spec.name}): yours {np.asarray(mask, int).tolist()}, expected {[inside]}")


def test_forward_keeps_dtype():
    spec, (scale, zero) = SYM
    out, _ = fake_quant_forward(X_SYM.astype(np.float32), spec, (scale.astype(np.float32), zero))
    assert out.dtype == np.float32, f"x_hat must keep x's dtype float32, got {out.dtype}"


def test_straight_through_backward():
    spec, qparams = SYM
    _, mask = fake_quant_forward(X_SYM, spec, qparams)
    dout = np.arange(1.0, 8.0).reshape(1, 7)
    dx = fake_quant_backward(dout, mask)
    assert_close("dx (straight-through: dout inside the range, 0 outside)", dx,
                 np.array([[0.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0]]))
    dx32 = fake_quant_backward(dout.astype(np.float32), mask)
    assert dx32.dtype == np.float32, f"dx must keep dout's dtype float32, got {dx32.dtype}"
