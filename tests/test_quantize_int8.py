"""Integer-only inference (minigpt.compress.int8, minigpt.kernels.int8): the int8 GEMM equals an
int64 reference exactly and refuses a K that could overflow int32; the fixed-point multiplier
matches float requantization within 1 LSB; the int8 model is close to the float model and runs
every linear layer in int8."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigpt import GPTConfig, InputError, gpt_forward, init_params
from minigpt.compress import int8 as I
from minigpt.kernels.int8 import MAX_K, int8_matmul, int8_matmul_reference

SEEDS = st.integers(0, 2**32 - 1)


@given(SEEDS, st.integers(1, 9), st.integers(1, 70), st.integers(1, 40))
def test_int8_gemm_equals_the_int64_reference(seed, M, K, N):
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (M, K)).astype(np.int8)
    b = rng.integers(-128, 128, (K, N)).astype(np.int8)
    c = int8_matmul(a, b)
    assert c.dtype == np.int32
    assert np.array_equal(c.astype(np.int64), a.astype(np.int64) @ b.astype(np.int64))
    assert np.array_equal(c, int8_matmul_reference(a, b))


def test_int8_gemm_at_the_extremes_and_in_parallel():
    K = 4096
    a = np.full((2, K), -128, np.int8)
    b = np.full((K, 3), -128, np.int8)
    assert np.all(int8_matmul(a, b) == K * 2**14)
    rng = np.random.default_rng(0)  # large enough for the parallel build
    a = rng.integers(-128, 128, (256, 512)).astype(np.int8)
    b = rng.integers(-128, 128, (512, 128)).astype(np.int8)
    assert np.array_equal(int8_matmul(a, b), int8_matmul_reference(a, b))


def test_int8_gemm_refuses_a_k_that_could_overflow():
    assert MAX_K * 2**14 <= 2**31 - 1 < (MAX_K + 1) * 2**14
    a = np.zeros((1, MAX_K + 1), np.int8)
    with pytest.raises(InputError, match="could overflow the int32 accumulators"):
        int8_matmul(a, np.zeros((MAX_K + 1, 1), np.int8))
    with pytest.raises(InputError, match="int8 matrices"):
        int8_matmul(np.zeros((2, 2)), np.zeros((2, 2), np.int8))
    with pytest.raises(InputError, match="do not fit"):
        int8_matmul(np.zeros((2, 3), np.int8), np.zeros((2, 2), np.int8))


@given(st.floats(1e-6, 300.0))
def test_fixed_point_multiplier_represents_m(m):
    m0, n = I.quantize_multiplier(m)
    assert 2**30 <= m0 < 2**31
    assert abs(m - m0 * 2.0 ** (-31 - n)) <= 2.0 ** (-32 - n)


@given(SEEDS, st.floats(1e-5, 0.999))
def test_requantization_is_within_one_lsb_of_float(seed, m):
    acc = np.random.default_rng(seed).integers(-(2**31) + 1, 2**31 - 1, size=200)
    m0, n = I.quantize_multiplier(m)
    out = I.requantize(acc, m0, n)
    exact = acc.astype(np.float64) * m
    assert np.all(np.abs(out - exact) <= 1.0)
    assert np.all(np.abs(out - np.round(exact)) <= 1)


def test_requantize_rounding_of_ties_follows_gemmlowp():
    m0, n = I.quantize_multiplier(0.5)  # m0 = 2^30, n = 0: the doubling high multiply alone rounds
    assert I.requantize(np.array([3, -3, 5, -5, 4]), m0, n).tolist() == [2, -1, 3, -2, 2]  # ties up
    m0, n = I.quantize_multiplier(0.25)  # n = 1: the rounding right shift rounds ties away from zero
    assert I.requantize(np.array([6, -6, 10, -10]), m0, n).tolist() == [2, -2, 3, -3]


def tiny():
    config = GPTConfig(vocab_size=17, block_size=16, n_layer=2, n_head=2, n_embd=32, bias=True)
    params = init_params(config, seed=0)
    rng = np.random.default_rng(0)
    for name in params:  # nonzero biases and LayerNorms, so every term of the layers is exercised
        if name.endswith(".bias") or ".ln_" in name:
            params[name] = params[name] + rng.normal(0, 0.1, params[name].shape).astype(np.float32)
    return config, params, rng.integers(0, 17, (4, 16))


@pytest.mark.parametrize(("mode", "alpha"), [("dynamic", None), ("static", None), ("static", 0.5), ("dynamic", 0.5)])
def test_int8_model_is_close_to_the_float_model_and_runs_every_linear_in_int8(mode, alpha):
    config, params, idx = tiny()
    logits, _, _ = gpt_forward(config, params, idx)
    calib = I.calibrate(config, params, [idx])
    model = I.Int8Model(params, mode, calib, alpha)
    calls = []
    original = model.linear_forward
    model.linear_forward = lambda x, w, b=None: calls.append(w.shape) or original(x, w, b)
    with I.int8_inference(model):
        q_logits, _, _ = gpt_forward(config, params, idx)
    assert len(calls) == 4 * config.n_layer + 1  # 4 linears per block and the output layer
    err = np.abs(q_logits - logits).max() / np.abs(logits).max()
    assert 0 < err < 0.05


def test_int8_linear_dynamic_equals_its_integer_formula():
    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.1, (32, 8)).astype(np.float32)
    b = rng.normal(0, 0.1, 8).astype(np.float32)
    x = rng.normal(0, 1, (5, 32)).astype(np.float32)
    layer = I.Int8Linear(w, b, "dynamic")
    xq, sx = I.quantize_rows_int8(x)
    wq, sw = I.quantize_weight_int8(w)
    expected = (xq.astype(np.int64) @ wq.astype(np.int64)).astype(np.float32) * (sx[:, None] * sw) + b
    assert np.array_equal(layer(x), expected)


def test_static_int8_linear_matches_the_float_simulation_within_one_output_step():
    rng = np.random.default_rng(2)
    w = rng.normal(0, 0.1, (32, 8)).astype(np.float32)
    x = rng.normal(0, 1, (64, 32)).astype(np.float32)
    calib = {"x_absmax": np.abs(x).max(axis=0), "y_absmax": float(np.abs(x @ w).max())}
    layer = I.Int8Linear(w, None, "static", calib)
    xq = np.clip(np.round(x / layer.s_x), -127, 127)
    wq, sw = I.quantize_weight_int8(w)
    simulated = np.clip(np.round((xq @ wq.astype(np.float64)) * layer.s_x * sw / layer.s_y), -127, 127) * layer.s_y
    assert np.all(np.abs(layer(x) - simulated) <= layer.s_y * 1.0001)


def test_smoothing_is_exact_before_quantization():
    rng = np.random.default_rng(3)
    w = rng.normal(0, 0.1, (16, 4))
    x = rng.normal(0, 1, (8, 16)) * np.exp(rng.normal(0, 2, 16))  # outlier channels
    for alpha in (0.0, 0.5, 1.0):
        s = np.abs(x).max(axis=0) ** alpha / np.abs(w).max(axis=1) ** (1 - alpha)
        np.testing.assert_allclose((x / s) @ (w * s[:, None]), x @ w, rtol=1e-10, atol=1e-12)
        if alpha == 0.5:  # both sides get sqrt(a_j w_j)
            np.testing.assert_allclose(np.abs(x / s).max(axis=0), np.abs(w * s[:, None]).max(axis=1))


def test_a_linear_layer_without_an_int8_version_is_an_error():
    config, params, idx = tiny()
    model = I.Int8Model(params, "dynamic")
    other = dict(params, **{"h.0.mlp.c_fc.weight": params["h.0.mlp.c_fc.weight"].copy()})
    with I.int8_inference(model), pytest.raises(RuntimeError, match="has no int8 version"):
        gpt_forward(config, other, idx)


def test_bad_int8_settings():
    w = np.ones((4, 4), np.float32)
    with pytest.raises(InputError, match="static int8 activations need calibration"):
        I.Int8Linear(w, None, "static")
    with pytest.raises(InputError, match="int8 mode"):
        I.Int8Linear(w, None, "fp8")
    with pytest.raises(InputError, match="SmoothQuant needs"):
        I.Int8Linear(w, None, "dynamic", None, 0.5)
    with pytest.raises(InputError, match="positive"):
        I.quantize_multiplier(0.0)
    with pytest.raises(InputError, match="multipliers must be < 1"):
        I.requantize(np.array([1]), *I.quantize_multiplier(2.0))
    with pytest.raises(InputError, match="does not fit int32"):
        I.requantize(np.array([2**31]), *I.quantize_multiplier(0.5))


def test_int8_model_runs_on_a_w8_checkpoints_own_codes():
    from minigpt.compress import quantize as Q

    config, params, idx = tiny()
    w8, enc = Q.quantize_model(config, params, "rtn", Q.parse_spec("w8"))
    model = I.Int8Model(w8, "dynamic", encoded=enc)
    assert sorted(model.from_codes) == sorted(enc)  # the stored int8 codes are used as they are
    name = "h.0.mlp.c_fc.weight"
    layer = model.layers[Q.weight_key(w8[name])]
    assert np.array_equal(layer.wq, Q.qtensor_from_encoded(enc[name]).codes.T)
    # W8 per channel symmetric is the same quantizer: re-quantizing the dequantized weight agrees
    assert np.array_equal(layer.wq, I.quantize_weight_int8(w8[name])[0])
