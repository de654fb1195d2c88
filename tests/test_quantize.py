"""Uniform quantization (minigpt.compress.quantize): the properties of round-to-nearest, fake
quantization and its straight-through gradient, packing, the "uniform" codec in checkpoints, and
every bad input as a clear error.

Arrays are drawn from a hypothesis seed and built with numpy (hypothesis' own large arrays are
mostly one repeated value), at small shapes so the file runs in seconds.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigpt import GPTConfig, InputError, init_params
from minigpt.checkpoint import load_checkpoint, save_checkpoint
from minigpt.compress import quantize as Q
from minigpt.compress import storage
from minigpt.tokenizer import CharTokenizer

SEEDS = st.integers(0, 2**32 - 1)
BITS = st.integers(2, 8)
SCHEMES = st.sampled_from(Q.SCHEMES)
GRANS = st.sampled_from(Q.GRANULARITIES)


def draw(seed, shape=(6, 32), dtype=np.float64):
    rng = np.random.default_rng(seed)
    scale = 10.0 ** rng.uniform(-3, 2)
    x = rng.normal(0, scale, size=shape) + rng.uniform(-1, 1) * scale * rng.integers(0, 2)  # sometimes off-center
    return x.astype(dtype)


def spec_of(bits, scheme, gran, clip="minmax"):
    return Q.QuantSpec(bits=bits, scheme=scheme, granularity=gran, group_size=8, clip=clip)


def per_element_scale(scale, spec, shape):
    """The scale of every element of an (R, K) array."""
    g = Q._grouped(np.zeros(shape), spec)
    return np.broadcast_to(scale.astype(np.float64)[..., None], g.shape).reshape(shape)


@given(SEEDS, BITS, SCHEMES, GRANS)
def test_codes_in_range_and_error_at_most_half_a_step(seed, bits, scheme, gran):
    x = draw(seed)
    spec = spec_of(bits, scheme, gran)
    q, scale, zero = Q.quantize(x, spec)
    assert q.dtype == np.int32 and q.min() >= spec.qmin and q.max() <= spec.qmax
    x_hat = Q.dequantize(q, scale, zero, spec, np.float64)
    s = per_element_scale(scale, spec, x.shape)
    z = per_element_scale(zero, spec, x.shape)
    lo, hi = s * (spec.qmin - z), s * (spec.qmax - z)  # the representable range
    inside = (x >= lo) & (x <= hi)
    # inside the range the error is at most half a step (+ rounding); outside, x_hat is the boundary
    assert np.all(np.abs(x - x_hat)[inside] <= (s / 2 * (1 + 1e-9) + 1e-12 * np.abs(x))[inside])
    np.testing.assert_allclose(x_hat[~inside], np.clip(x, lo, hi)[~inside], rtol=1e-12)
    if scheme == "sym":  # a symmetric minmax range covers every value (scales round up)
        assert np.all(np.abs(x - x_hat) <= s / 2 * (1 + 1e-9) + 1e-12 * np.abs(x))
    else:  # the affine zero point is rounded: at most half a step of the range is lost at one end
        assert np.all(np.abs(x - x_hat) <= s * (1 + 1e-9))


@given(SEEDS, BITS, SCHEMES, GRANS, st.sampled_from(Q.CLIPS))
def test_zero_is_exact_and_requantizing_changes_nothing(seed, bits, scheme, gran, clip):
    x = draw(seed)
    x[0, :3] = 0.0
    spec = spec_of(bits, scheme, gran, clip)
    q, scale, zero = Q.quantize(x, spec)
    x_hat = Q.dequantize(q, scale, zero, spec, np.float64)
    assert np.all(x_hat[0, :3] == 0.0)  # zero is exactly representable: pruned weights stay pruned
    # the dequantized values are on the grid: quantizing them with the same params gives the same codes
    q2 = Q.quantize_grouped(Q._grouped(x_hat, spec), scale, zero, spec).reshape(x.shape)
    assert np.array_equal(q2, q)


@given(SEEDS, BITS, GRANS)
def test_symmetric_scheme_is_odd(seed, bits, gran):
    x = draw(seed)
    spec = spec_of(bits, "sym", gran)
    q, scale, zero = Q.quantize(x, spec)
    assert np.all(zero == 0)
    q_neg = Q.quantize_grouped(Q._grouped(-x, spec), scale, zero, spec).reshape(x.shape)
    assert np.array_equal(q_neg, -q)


@given(SEEDS, BITS, SCHEMES)
def test_per_channel_scales_are_at_most_the_per_tensor_scale(seed, bits, scheme):
    x = draw(seed)
    s_t = Q.compute_qparams(x, spec_of(bits, scheme, "tensor"))[0]
    s_c = Q.compute_qparams(x, spec_of(bits, scheme, "channel"))[0]
    assert np.all(s_c <= s_t[0, 0] * (1 + 1e-12))


@given(SEEDS, BITS, SCHEMES, GRANS)
def test_fake_quant_is_monotone_and_idempotent(seed, bits, scheme, gran):
    x = draw(seed)
    spec = spec_of(bits, scheme, gran)
    qparams = Q.compute_qparams(x, spec)
    y, _ = Q.fake_quant_forward(x, spec, qparams)
    # monotone: sort the values of each group with fixed params; the fake-quantized values follow
    ordered = np.sort(x, axis=1)
    y_ord, _ = Q.fake_quant_forward(ordered, spec, qparams) if gran != "group" else (None, None)
    if y_ord is not None:
        assert np.all(np.diff(y_ord, axis=1) >= 0)
    lo, hi = x.min(), x.max()
    line = np.linspace(lo - abs(lo), hi + abs(hi), x.size).reshape(x.shape)  # also beyond the range
    y_line, _ = Q.fake_quant_forward(line, spec, Q.compute_qparams(x, spec_of(bits, scheme, "tensor")))
    assert np.all(np.diff(y_line.ravel()) >= 0)
    y2, _ = Q.fake_quant_forward(y, spec, qparams)
    assert np.array_equal(y2, y)


@given(SEEDS, BITS, SCHEMES)
def test_ste_gradient_is_the_in_range_mask(seed, bits, scheme):
    rng = np.random.default_rng(seed)
    x = draw(seed)
    spec = spec_of(bits, scheme, "tensor")
    # a range narrower than the values: some are clipped
    scale, zero = Q._params_from_range(np.array([[x.min() / 2]]), np.array([[x.max() / 2]]), spec, x.dtype)
    y, mask = Q.fake_quant_forward(x, spec, (scale, zero))
    t = np.round(x / scale[0, 0]) + zero[0, 0]
    expected = (t >= spec.qmin) & (t <= spec.qmax)
    assert np.array_equal(mask, expected)
    dy = rng.normal(size=x.shape)
    assert np.array_equal(Q.fake_quant_backward(dy, mask), np.where(expected, dy, 0.0))  # no 1/s factor
    # outside the range the forward is flat (its true derivative is 0), inside it passes straight through
    assert np.all(y[~mask] == np.clip(y[~mask], y.min(), y.max()))


def test_ste_matches_finite_differences_away_from_steps():
    """Inside the range fake quant is a staircase, flat between steps; its STE is 1 there, and
    outside the range both the STE and the finite difference are 0."""
    spec = Q.QuantSpec(bits=4, granularity="tensor")
    x = np.array([[-3.0, -0.3, 0.26, 0.9, 5.0]])
    qparams = Q._params_from_range(np.array([[-1.0]]), np.array([[1.0]]), spec, np.float64)
    _, mask = Q.fake_quant_forward(x, spec, qparams)
    assert mask.tolist() == [[False, True, True, True, False]]
    eps = 1e-6
    fd = (Q.fake_quant_forward(x + eps, spec, qparams)[0] - Q.fake_quant_forward(x - eps, spec, qparams)[0]) / (2 * eps)
    assert np.all(fd[~mask] == 0)


@given(SEEDS)
def test_stochastic_rounding_is_unbiased_and_on_the_grid(seed):
    x = draw(seed, (1, 16))
    spec = Q.QuantSpec(bits=3, granularity="tensor", rounding="stochastic")
    scale, zero = Q.compute_qparams(x, spec)
    rng = np.random.default_rng(seed)
    draws = np.stack([Q.dequantize(*Q.quantize(x, spec, rng=rng), spec, np.float64) for _ in range(400)])
    nearest = Q.dequantize(*Q.quantize(x, Q.with_spec(spec, rounding="nearest")), spec, np.float64)
    s = float(scale[0, 0])
    assert np.all(np.abs(draws - x) < s * (1 + 1e-9))  # one of the two neighbours
    assert np.all(np.abs(draws.mean(axis=0) - x) < 0.15 * s)  # E[x_hat] = x (400 draws: sd <= s/40)
    below, above = np.floor(x / s) * s, np.ceil(x / s) * s  # draws land on the two neighbours only
    assert np.all(np.isclose(draws, below, rtol=1e-9, atol=0) | np.isclose(draws, above, rtol=1e-9, atol=0))
    frac = x / s - np.floor(x / s)
    mixed = (frac > 0.2) & (frac < 0.8)  # for these, 400 draws give both neighbours
    assert np.all((draws.min(axis=0) < draws.max(axis=0))[mixed])
    assert np.all(np.abs(nearest - x) <= s / 2 * (1 + 1e-9))


@given(SEEDS, BITS, st.integers(1, 67))
def test_packing_round_trips(seed, bits, n):
    u = np.random.default_rng(seed).integers(0, 2**bits, size=n)
    packed = Q.pack_codes(u, bits)
    assert packed.dtype == np.uint8 and packed.size == Q.packed_nbytes(n, bits)
    assert np.array_equal(Q.unpack_codes(packed, bits, n), u)


def test_packing_layout_of_4_and_2_bits():
    assert Q.pack_codes([1, 2, 3], 4).tolist() == [0x21, 0x03]  # the first code in the low nibble
    assert Q.pack_codes([1, 2, 3, 0, 3], 2).tolist() == [0b00111001, 0b11]  # the first in the lowest 2 bits
    # the explicit 2- and 4-bit layouts are the little-endian bit stream the other widths use
    u = np.arange(16) % 4
    stream = np.packbits(np.unpackbits(u.astype(np.uint8)[:, None], axis=1, bitorder="little")[:, :2].ravel(),
                         bitorder="little")
    assert np.array_equal(Q.pack_codes(u, 2), stream)


@given(SEEDS, BITS, SCHEMES, GRANS)
def test_uniform_codec_decodes_exactly_and_is_small(seed, bits, scheme, gran):
    w = draw(seed, (32, 16), np.float32)  # (in, out)
    spec = spec_of(bits, scheme, gran)
    qt = Q.quantize_weight(w, spec)
    enc = qt.encode()
    assert np.array_equal(storage.decode(enc), qt.dequantize())
    assert enc.parts["codes"].nbytes == Q.packed_nbytes(w.size, bits)
    assert np.all(np.abs(qt.dequantize() - w) <= np.abs(w).max())  # sanity: the values are close


def tiny_model():
    config = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=32, bias=True)
    return config, init_params(config, seed=0), CharTokenizer(list("abcdefghijk"))


def test_quantized_checkpoint_loads_the_values_the_model_ran_with(tmp_path):
    config, params, tok = tiny_model()
    q_params, encoded = Q.quantize_model(config, params, "rtn", Q.parse_spec("w4g32"))
    assert set(encoded) == set(Q.linear_weight_names(params))
    save_checkpoint(tmp_path / "q.safetensors", config, q_params, tok, encoded=encoded)
    save_checkpoint(tmp_path / "f.safetensors", config, params, tok)
    ck = load_checkpoint(tmp_path / "q.safetensors")
    for name in params:
        assert np.array_equal(ck.params[name], q_params[name])
    assert set(ck.encoded) == set(encoded)
    assert (tmp_path / "q.safetensors").stat().st_size < (tmp_path / "f.safetensors").stat().st_size


def test_mixed_precision_overrides():
    config, params, _ = tiny_model()
    name = "h.0.mlp.c_fc.weight"
    out, enc = Q.quantize_model(config, params, "rtn", Q.parse_spec("w4"),
                                overrides={name: Q.parse_spec("w8"), "h.0.attn.c_proj.weight": None})
    assert enc[name].info["bits"] == 8 and "h.0.attn.c_proj.weight" not in enc
    assert out["h.0.attn.c_proj.weight"] is params["h.0.attn.c_proj.weight"]
    with pytest.raises(InputError, match="no such tensor"):
        Q.quantize_model(config, params, "rtn", Q.parse_spec("w4"), overrides={"h.7.x": None})


def test_report_lists_each_tensor_with_its_loss_change():
    config, params, _ = tiny_model()
    q, _ = Q.quantize_model(config, params, "rtn", Q.parse_spec("w2"))
    rng = np.random.default_rng(0)
    batches = [(rng.integers(0, 11, (2, 8)), rng.integers(0, 11, (2, 8)))]
    rep = Q.report(config, params, q, batches)
    assert [r["name"] for r in rep["tensors"]] == Q.linear_weight_names(params)
    for r in rep["tensors"]:
        assert r["mse"] > 0 and r["sqnr_db"] < 40 and 0 < r["cosine"] < 1
        only = dict(params, **{r["name"]: q[r["name"]]})
        assert r["delta_loss"] == pytest.approx(Q.eval_loss(config, only, batches) - rep["float_loss"])
    assert "SQNR" in Q.format_report(rep)


def test_error_stats():
    w = np.array([3.0, 4.0])
    assert Q.error_stats(w, w)["sqnr_db"] == float("inf")
    s = Q.error_stats(w, np.array([3.0, 3.0]))
    assert s["mse"] == 0.5 and s["sqnr_db"] == pytest.approx(10 * np.log10(25.0))
    assert s["cosine"] == pytest.approx(21 / (5 * np.sqrt(18)))


def test_qat_objective_trains_through_fake_quantization():
    config, params, _ = tiny_model()
    objective = Q.qat_objective("w4g32")
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 11, (2, 8)), rng.integers(0, 11, (2, 8))
    loss, grads, _ = objective.loss_and_grads(config, params, x, y, None, 1.0)
    fq, _ = Q.quantize_model(config, params, "rtn", Q.parse_spec("w4g32"))
    from minigpt import gpt_backward, gpt_forward

    _, expected_loss, cache = gpt_forward(config, fq, x, y)
    assert loss == pytest.approx(expected_loss, rel=1e-6)  # the forward runs on the quantized weights
    expected = gpt_backward(cache)  # minmax ranges: every weight is in range, so the STE passes all
    for name in params:
        np.testing.assert_allclose(grads[name], expected[name], rtol=1e-5, atol=1e-7)
    assert objective.meta() == {"qat": "w4g32"}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: Q.QuantSpec(bits=1), "bits must be an integer in 2..8"),
        (lambda: Q.QuantSpec(bits=9), "bits must be an integer in 2..8"),
        (lambda: Q.parse_spec("w12g32"), "bits must be an integer in 2..8"),
        (lambda: Q.parse_spec("int4"), "not of the form"),
        (lambda: Q.QuantSpec(scheme="asym"), "scheme must be one of"),
        (lambda: Q.quantize(np.ones((4, 30)), Q.parse_spec("w4g32")), "group size 32 does not divide the input dimension 30"),
        (lambda: Q.quantize(np.array([[1.0, np.nan]]), Q.parse_spec("w8")), "NaN or inf"),
        (lambda: Q.quantize(np.array([[1.0, np.inf]]), Q.parse_spec("w8")), "NaN or inf"),
        (lambda: Q.quantize(np.ones(4), Q.parse_spec("w8")), "2-D"),
        (lambda: Q.quantize_model(*tiny_model()[:2], "awq", Q.parse_spec("w4")), "unknown method"),
        (lambda: Q.quantize_model(*tiny_model()[:2], "gptq", Q.parse_spec("w4"), []), "no calibration data"),
    ],
)
def test_bad_input_is_a_clear_error(call, message):
    with pytest.raises(InputError, match=message):
        call()
