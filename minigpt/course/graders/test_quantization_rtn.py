"""Assignment quantization, part rtn: round-to-nearest quantization. The scale and zero point
from a range, the integer codes (round half to even, or stochastic rounding, then clip), and
dequantization x_hat = s * (q - z)."""

import numpy as np

from minigpt.compress.quantize import QuantSpec, compute_qparams, dequantize, quantize
from minigpt.course.checks import assert_close

# (R, K) = (2 output channels, 6 inputs), values chosen so the codes can be worked out by hand
W = np.array([[-1.0, -0.25, 0.0, 0.5, 2.0, 0.3],
              [0.1, 0.2, 0.35, -0.05, 0.0, 0.15]])


def test_symmetric_per_channel():
    # 4 bits symmetric: codes in [-7, 7], s = max(|lo|, hi) / 7 per row, z = 0
    q, scale, zero = quantize(W, QuantSpec(bits=4, scheme="sym", granularity="channel"))
    assert_close("scales (sym, 4 bits, per channel)", np.asarray(scale, np.float64), np.array([[2 / 7], [0.05]]))
    assert np.all(zero == 0), f"zero points (sym): yours {zero.ravel().tolist()}, expected all 0"
    # row 0: w / s = [-3.5, -0.875, 0, 1.75, 7, 1.05]; -3.5 rounds half to even, to -4
    expected = np.array([[-4, -1, 0, 2, 7, 1], [2, 4, 7, -1, 0, 3]])
    assert np.array_equal(q, expected), f"codes (sym, 4 bits, per channel): yours {q.tolist()}, expected {expected.tolist()}"
    assert q.dtype == np.int32, f"codes must be int32, got {q.dtype}"


def test_affine_per_tensor_rounds_half_to_even():
    # 2 bits affine over the whole tensor: [lo, hi] = [-1, 2], s = 3 / 3 = 1, z = 0 - round(-1 / 1) = 1
    spec = QuantSpec(bits=2, scheme="affine", granularity="tensor")
    scale, zero = compute_qparams(W, spec)
    assert_close("scale (affine, 2 bits, per tensor)", np.asarray(scale, np.float64), np.array([[1.0]]))
    assert zero.ravel().tolist() == [1], f"zero point (affine, 2 bits): yours {zero.ravel().tolist()}, expected [1]"
    q, _, _ = quantize(W, spec)
    # round(0.5) = 0 and round(-0.25) = -0: half to even, as NumPy and PyTorch; then + z, clipped to [0, 3]
    expected = np.array([[0, 1, 1, 1, 3, 1], [1, 1, 1, 1, 1, 1]])
    assert np.array_equal(q, expected), f"codes (affine, 2 bits, per tensor): yours {q.tolist()}, expected {expected.tolist()}"
    assert_close("dequantized (affine, 2 bits)", dequantize(q, scale, zero, spec, np.float64),
                 np.array([[-1.0, 0, 0, 0, 2, 0], [0, 0, 0, 0, 0, 0]]))


def per_element(scale, shape, granularity, group_size):
    """Each weight's scale, shaped like the weights."""
    s = np.asarray(scale, np.float64)
    if granularity == "tensor":
        return np.full(shape, s.item())
    if granularity == "channel":
        return np.broadcast_to(s.reshape(-1, 1), shape)
    return np.repeat(s, group_size, axis=1)


def test_error_bound_codes_in_range_and_exact_zero():
    w = np.sin(np.arange(8 * 12).reshape(8, 12) * 1.7) * np.linspace(0.1, 3.0, 12)
    w[2, 5] = w[6, 0] = 0.0
    for bits in (2, 3, 4, 8):
        for scheme in ("sym", "affine"):
            for granularity, group_size in (("channel", 32), ("group", 4), ("tensor", 32)):
                spec = QuantSpec(bits=bits, scheme=scheme, granularity=granularity, group_size=group_size)
                what = f"{scheme}, {bits} bits, {granularity}"
                q, scale, zero = quantize(w, spec)
                assert q.min() >= spec.qmin and q.max() <= spec.qmax, \
                    f"codes ({what}) outside [{spec.qmin}, {spec.qmax}]: min {q.min()}, max {q.max()}"
                w_hat = dequantize(q, scale, zero, spec, np.float64)
                assert w_hat[2, 5] == 0.0 and w_hat[6, 0] == 0.0, f"zero must stay exactly zero ({what})"
                step = per_element(scale, w.shape, granularity, group_size)
                err = np.abs(w - w_hat) - step / 2
                worst = np.unravel_index(np.argmax(err), w.shape)
                assert err.max() <= 1e-12 * step.max(), (f"|w - dequant(quant(w))| > scale / 2 ({what}) at index {worst}: "
                                            f"w {w[worst]:.6g}, yours {w_hat[worst]:.6g}, scale {step[worst]:.6g}")


def test_stochastic_rounding_is_unbiased_and_seeded():
    spec = QuantSpec(bits=8, scheme="sym", granularity="tensor", rounding="stochastic")
    w = np.full((1, 20000), 0.3)
    w[0, 0] = 127 * 0.5  # sets the scale: s = 0.5, so 0.3 / s = 0.6 lies between the codes 0 and 1
    q1, scale, _ = quantize(w, spec, rng=np.random.default_rng(0))
    q2, _, _ = quantize(w, spec, rng=np.random.default_rng(0))
    assert_close("scale (stochastic rounding)", np.asarray(scale, np.float64), np.array([[0.5]]))
    assert np.array_equal(q1, q2), "stochastic rounding must be a function of the rng: the same seed, the same codes"
    rest = q1[0, 1:]
    assert set(np.unique(rest).tolist()) <= {0, 1}, f"0.6 must round to 0 or 1, got codes {np.unique(rest).tolist()}"
    assert abs(rest.mean() - 0.6) < 0.02, f"stochastic rounding must be unbiased: mean code {rest.mean():.4f}, expected 0.6"
