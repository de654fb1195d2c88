"""Layer tests: the first rungs of the verification ladder.

For every layer in minigpt.layers:
  * the contract: output shape, float32 in -> float32 out and float64 -> float64 (forward and
    backward), and no input (nor the upstream gradient) is modified;
  * the forward against an independent reference or known values;
  * the backward against float64 central finite differences (minigpt.gradcheck) for every input
    and parameter, relative error <= SMOOTH_TOLERANCE, over hypothesis-drawn small shapes with
    values built from a drawn seed (engineering.md section 3: draw a seed, build the tensors with
    numpy's RNG);
  * the layer's own properties (softmax rows, causality, shift invariances, dropout statistics).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigpt.backend import ops_for
from minigpt.gradcheck import SMOOTH_TOLERANCE, check_gradients
from minigpt.layers import (
    IGNORE_INDEX,
    attention_forward,
    cross_entropy_backward,
    cross_entropy_forward,
    dropout_backward,
    dropout_forward,
    embedding_backward,
    embedding_forward,
    gelu_forward,
    layernorm_backward,
    layernorm_forward,
    linear_forward,
    relu_backward,
    relu_forward,
)
from minigpt.layers.attention import attention_forward_kv

NUMPY = ops_for("numpy")  # the layers above; tests/test_kernels.py reruns the cases with numba's
DTYPES = [np.float32, np.float64]
SEEDS = st.integers(0, 2**32 - 1)
SIZES = st.integers(1, 3)  # B, NH
TIMES = st.integers(1, 5)  # T
CHANNELS = st.integers(1, 4)  # hs, small channel counts
DROP_PS = st.sampled_from([0.1, 0.5, 0.8])


# ----------------------------------------------------------------------------------------------
# helpers


def normal(rng, shape, dtype=np.float64, scale=1.0):
    return rng.normal(0.0, scale, size=shape).astype(dtype)


def spread_rows(rng, shape, dtype=np.float64, min_std=0.3):
    """Normal values whose rows (last axis, >= 2 long) have std >= min_std. Near-constant rows make
    layernorm's finite differences ill-conditioned (rstd up to 1/sqrt(eps)); resampling them with
    the same generator keeps the example a pure function of the seed (no hypothesis filtering)."""
    x = rng.normal(size=shape)
    for _ in range(1000):
        bad = x.std(axis=-1) < min_std
        if not bad.any():
            break
        x[bad] = rng.normal(size=(int(bad.sum()), shape[-1]))
    assert (x.std(axis=-1) >= min_std).all()
    return x.astype(dtype)


def away_from_zero(rng, shape, dtype=np.float64, margin=0.1):
    """Values of order 1 with |x| > margin, so ReLU is smooth within the finite-difference step."""
    mag = rng.uniform(margin + 0.01, 2.0, size=shape)
    sign = np.where(rng.random(shape) < 0.5, -1.0, 1.0)
    return (sign * mag).astype(dtype)


@dataclass
class LayerCase:
    """One layer wired for the generic tests.

    forward() -> (out, cache) reads the arrays in `inputs` (which the gradient check perturbs in
    place); backward(dout, cache) -> dict name -> gradient with the same keys as `inputs`.
    `frozen` holds non-differentiable inputs (token ids) that must not be modified either.
    """

    forward: Callable
    backward: Callable
    inputs: dict
    out_shape: tuple
    frozen: dict = field(default_factory=dict)


def linear_case(rng, dtype, bias, B=2, T=3, C_in=4, C_out=5, F=NUMPY):
    x, w = normal(rng, (B, T, C_in), dtype), normal(rng, (C_in, C_out), dtype)
    b = normal(rng, (C_out,), dtype) if bias else None
    inputs = {"x": x, "w": w} | ({"b": b} if bias else {})

    def backward(dout, cache):
        dx, dw, db = F.linear_backward(dout, cache)
        assert (db is None) == (not bias), "db must be None exactly when there is no bias"
        return {"x": dx, "w": dw} | ({"b": db} if bias else {})

    return LayerCase(lambda: F.linear_forward(x, w, b), backward, inputs, (B, T, C_out))


def layernorm_case(rng, dtype, bias, B=2, T=3, C=6, F=NUMPY):
    x = spread_rows(rng, (B, T, C), dtype)
    w = (1.0 + normal(rng, (C,), np.float64, 0.3)).astype(dtype)
    b = normal(rng, (C,), dtype, 0.3) if bias else None
    inputs = {"x": x, "w": w} | ({"b": b} if bias else {})

    def backward(dout, cache):
        dx, dw, db = F.layernorm_backward(dout, cache)
        assert (db is None) == (not bias), "db must be None exactly when there is no bias"
        return {"x": dx, "w": dw} | ({"b": db} if bias else {})

    return LayerCase(lambda: F.layernorm_forward(x, w, b), backward, inputs, (B, T, C))


def gelu_slope(x):
    """gelu'(x), from the tanh form (as minigpt.layers.activation)."""
    u = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)
    t = np.tanh(u)
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * math.sqrt(2.0 / math.pi) * (1.0 + 3 * 0.044715 * x * x)


def away_from_flat_gelu(rng, shape, dtype=np.float64, min_slope=0.01):
    """Normal values (std 1.5) where |gelu'(x)| >= min_slope. GELU is flat at its minimum
    (x = -0.75) and far left (x < -3): there a gradient is as small as the finite differences'
    round-off (eps |f| / h ~ 1e-11), so no relative comparison can pass. Resampled with the same
    generator, so the example stays a pure function of the seed."""
    x = rng.normal(0.0, 1.5, size=shape)
    for _ in range(1000):
        bad = np.abs(gelu_slope(x)) < min_slope
        if not bad.any():
            break
        x[bad] = rng.normal(0.0, 1.5, size=int(bad.sum()))
    assert (np.abs(gelu_slope(x)) >= min_slope).all()
    return x.astype(dtype)


def gelu_case(rng, dtype, B=2, T=3, C=5, F=NUMPY):
    x = away_from_flat_gelu(rng, (B, T, C), dtype)
    return LayerCase(lambda: F.gelu_forward(x), lambda d, c: {"x": F.gelu_backward(d, c)}, {"x": x}, x.shape)


def relu_case(rng, dtype, B=2, T=3, C=5, F=NUMPY):
    x = away_from_zero(rng, (B, T, C), dtype)
    return LayerCase(lambda: F.relu_forward(x), lambda d, c: {"x": F.relu_backward(d, c)}, {"x": x}, x.shape)


def dropout_case(rng, dtype, p=0.5, mask_seed=1234, B=2, T=3, C=5, F=NUMPY):
    """Dropout with a fixed mask: a fresh generator with the same seed on every forward call."""
    x = normal(rng, (B, T, C), dtype)
    return LayerCase(
        lambda: F.dropout_forward(x, p, np.random.default_rng(mask_seed)),
        lambda d, c: {"x": F.dropout_backward(d, c)},
        {"x": x},
        x.shape,
    )


def embedding_case(rng, dtype, B=2, T=3, V=4, maxT=6, C=3, start=1, F=NUMPY):
    """Token + position embedding for positions start..start+T-1 (start > 0: KV-cache decoding)."""
    idx = rng.integers(0, V, size=(B, T))
    wte, wpe = normal(rng, (V, C), dtype), normal(rng, (maxT, C), dtype)

    def backward(dout, cache):
        dwte, dwpe = F.embedding_backward(dout, cache)
        return {"wte": dwte, "wpe": dwpe}

    return LayerCase(
        lambda: F.embedding_forward(idx, wte, wpe, start),
        backward,
        {"wte": wte, "wpe": wpe},
        (B, T, C),
        {"idx": idx},
    )


def attention_case(rng, dtype, p=0.0, mask_seed=99, B=2, T=4, NH=2, hs=3, F=NUMPY):
    """Attention on random q, k, v of order 1; with p > 0 the dropout mask is fixed by mask_seed."""
    C = NH * hs
    qkv = normal(rng, (B, T, 3 * C), dtype)

    def forward():
        return F.attention_forward(qkv, NH, p, np.random.default_rng(mask_seed) if p > 0 else None)

    return LayerCase(forward, lambda d, c: {"qkv": F.attention_backward(d, c)}, {"qkv": qkv}, (B, T, C))


CASES = {  # name -> builder(rng, dtype, F): F is a backend's layer functions (minigpt.backend)
    "linear_bias": lambda rng, dt, F=NUMPY: linear_case(rng, dt, bias=True, F=F),
    "linear_nobias": lambda rng, dt, F=NUMPY: linear_case(rng, dt, bias=False, F=F),
    "layernorm_bias": lambda rng, dt, F=NUMPY: layernorm_case(rng, dt, bias=True, F=F),
    "layernorm_nobias": lambda rng, dt, F=NUMPY: layernorm_case(rng, dt, bias=False, F=F),
    "gelu": lambda rng, dt, F=NUMPY: gelu_case(rng, dt, F=F),
    "relu": lambda rng, dt, F=NUMPY: relu_case(rng, dt, F=F),
    "dropout": lambda rng, dt, F=NUMPY: dropout_case(rng, dt, F=F),
    "embedding": lambda rng, dt, F=NUMPY: embedding_case(rng, dt, F=F),
    "attention": lambda rng, dt, F=NUMPY: attention_case(rng, dt, F=F),
    "attention_dropout": lambda rng, dt, F=NUMPY: attention_case(rng, dt, p=0.3, F=F),
}


def gradcheck_case(case: LayerCase, rng, tolerance=SMOOTH_TOLERANCE):
    """Check case.backward against central differences of sum(forward() * dout) for a random
    dout (the "fakeloss" contraction), for every array in case.inputs."""
    out, cache = case.forward()
    dout = rng.normal(size=out.shape)
    analytic = case.backward(dout, cache)
    assert set(analytic) == set(case.inputs)
    results = check_gradients(
        lambda: np.sum(case.forward()[0] * dout), case.inputs, analytic, tolerance=tolerance
    )
    assert len(results) == len(case.inputs) and all(r.ok for r in results)


# ----------------------------------------------------------------------------------------------
# contract: shapes, dtypes, no mutation


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", list(CASES))
def test_layer_contract(name, dtype):
    """Forward output has the documented shape and the input dtype; backward returns one gradient
    per input with the input's shape and dtype; neither pass modifies any input or dout."""
    rng = np.random.default_rng(0)
    case = CASES[name](rng, dtype)
    before = {k: v.copy() for k, v in (case.inputs | case.frozen).items()}
    out, cache = case.forward()
    assert out.shape == case.out_shape
    assert out.dtype == dtype, f"{name} forward: {np.dtype(dtype).name} in, {out.dtype} out"
    dout = normal(rng, out.shape, dtype)
    dout_before = dout.copy()
    grads = case.backward(dout, cache)
    assert set(grads) == set(case.inputs)
    for k, g in grads.items():
        assert g.shape == case.inputs[k].shape, k
        assert g.dtype == dtype, f"{name} backward d{k}: {np.dtype(dtype).name} in, {g.dtype} out"
    for k, v in (case.inputs | case.frozen).items():
        np.testing.assert_array_equal(v, before[k], err_msg=f"{name} modified input {k}")
    np.testing.assert_array_equal(dout, dout_before, err_msg=f"{name} backward modified dout")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_cross_entropy_contract(dtype):
    """Cross-entropy: loss is a finite Python float, dlogits has the logits' shape and dtype, and
    neither logits nor targets are modified."""
    rng = np.random.default_rng(0)
    logits = normal(rng, (2, 3, 5), dtype)
    targets = np.array([[0, 4, -1], [2, -1, 1]])
    lb, tb = logits.copy(), targets.copy()
    loss, cache = cross_entropy_forward(logits, targets)
    assert isinstance(loss, float) and math.isfinite(loss)
    dlogits = cross_entropy_backward(cache)
    assert dlogits.shape == logits.shape and dlogits.dtype == dtype
    np.testing.assert_array_equal(logits, lb)
    np.testing.assert_array_equal(targets, tb)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_attention_forward_kv_contract(dtype):
    """attention_forward_kv: output (B, Tn, C) in the dtype of qkv; qkv is not modified."""
    rng = np.random.default_rng(0)
    B, T, NH, hs = 2, 3, 2, 2
    qkv = normal(rng, (B, T, 3 * NH * hs), dtype)
    before = qkv.copy()
    k_cache, v_cache = np.zeros((B, NH, 6, hs), dtype), np.zeros((B, NH, 6, hs), dtype)
    out = attention_forward_kv(qkv, NH, k_cache, v_cache, 0)
    assert out.shape == (B, T, NH * hs)
    assert out.dtype == dtype, f"{np.dtype(dtype).name} in, {out.dtype} out"
    np.testing.assert_array_equal(qkv, before)


# ----------------------------------------------------------------------------------------------
# gradient checks (float64, hypothesis-drawn small shapes)


@given(seed=SEEDS, B=SIZES, T=TIMES, C_in=CHANNELS, C_out=CHANNELS, bias=st.booleans())
def test_linear_gradients(seed, B, T, C_in, C_out, bias):
    """linear_backward's dx, dw (and db with bias) match central differences to 1e-7."""
    rng = np.random.default_rng(seed)
    gradcheck_case(linear_case(rng, np.float64, bias, B, T, C_in, C_out), rng)


@given(seed=SEEDS, B=SIZES, T=TIMES, C=st.integers(3, 6), bias=st.booleans())
def test_layernorm_gradients(seed, B, T, C, bias):
    """layernorm_backward's dx, dw (and db with bias) match central differences to 1e-7, with
    non-trivial scale and shift.

    C >= 3: a row of 2 normalizes to about (-1, +1) whatever x is, so dx is only O(eps) ~ 1e-5 and
    the finite-difference round-off (~1e-11) alone is ~1e-6 of it; C = 2 is checked separately."""
    rng = np.random.default_rng(seed)
    gradcheck_case(layernorm_case(rng, np.float64, bias, B, T, C), rng)


@given(seed=SEEDS, B=SIZES, T=TIMES, C=CHANNELS)
def test_gelu_gradients(seed, B, T, C):
    """gelu_backward matches central differences to 1e-7."""
    rng = np.random.default_rng(seed)
    gradcheck_case(gelu_case(rng, np.float64, B, T, C), rng)


@given(seed=SEEDS, B=SIZES, T=TIMES, C=CHANNELS)
def test_relu_gradients(seed, B, T, C):
    """relu_backward matches central differences to 1e-7 on inputs with |x| > 0.1 (no kink is
    crossed by the finite-difference step)."""
    rng = np.random.default_rng(seed)
    gradcheck_case(relu_case(rng, np.float64, B, T, C), rng)


@given(seed=SEEDS, mask_seed=SEEDS, p=DROP_PS, B=SIZES, T=TIMES, C=CHANNELS)
def test_dropout_gradients(seed, mask_seed, p, B, T, C):
    """dropout_backward matches central differences to 1e-7 with a fixed mask."""
    rng = np.random.default_rng(seed)
    gradcheck_case(dropout_case(rng, np.float64, p, mask_seed, B, T, C), rng)


@given(
    seed=SEEDS,
    B=SIZES,
    T=TIMES,
    V=st.integers(1, 4),
    start=st.integers(0, 2),
    extra=st.integers(0, 2),
    C=CHANNELS,
)
def test_embedding_gradients(seed, B, T, V, start, extra, C):
    """embedding_backward's dwte (with repeated token ids, V small) and dwpe (positions start..
    start+T-1 of block_size >= start+T, unused rows get zero) match central differences to 1e-7."""
    rng = np.random.default_rng(seed)
    gradcheck_case(embedding_case(rng, np.float64, B, T, V, start + T + extra, C, start), rng)


@given(seed=SEEDS, B=SIZES, T=TIMES, NH=SIZES, hs=CHANNELS)
def test_attention_gradients(seed, B, T, NH, hs):
    """attention_backward (no dropout) matches central differences to 1e-7 for q, k and v."""
    rng = np.random.default_rng(seed)
    gradcheck_case(attention_case(rng, np.float64, 0.0, 0, B, T, NH, hs), rng)


@given(seed=SEEDS, mask_seed=SEEDS, p=DROP_PS, B=SIZES, T=TIMES, NH=SIZES, hs=CHANNELS)
def test_attention_dropout_gradients(seed, mask_seed, p, B, T, NH, hs):
    """attention_backward with dropout on the probabilities (fixed mask) matches central
    differences to 1e-7."""
    rng = np.random.default_rng(seed)
    gradcheck_case(attention_case(rng, np.float64, p, mask_seed, B, T, NH, hs), rng)


def random_targets(rng, B, T, V, ignore_frac):
    targets = rng.integers(0, V, size=(B, T))
    targets[rng.random((B, T)) < ignore_frac] = IGNORE_INDEX
    return targets


@given(
    seed=SEEDS,
    B=SIZES,
    T=TIMES,
    V=st.integers(2, 6),
    ignore_frac=st.sampled_from([0.0, 0.3, 0.7]),
    dloss=st.sampled_from([1.0, 0.37]),
)
def test_cross_entropy_gradients(seed, B, T, V, ignore_frac, dloss):
    """cross_entropy_backward(cache, dloss) equals dloss times the central-difference gradient of
    the loss, to 1e-7, with some targets ignored (-1)."""
    rng = np.random.default_rng(seed)
    logits = normal(rng, (B, T, V), np.float64, 2.0)
    targets = random_targets(rng, B, T, V, ignore_frac)
    _, cache = cross_entropy_forward(logits, targets)
    dlogits = cross_entropy_backward(cache, dloss)
    check_gradients(
        lambda: dloss * cross_entropy_forward(logits, targets)[0], {"logits": logits}, {"logits": dlogits}
    )


def test_layernorm_gradients_two_channels():
    """With C = 2 (a degenerate row whose dx is O(eps)), layernorm_backward still matches central
    differences to 1e-7 when eps is large enough (eps = 1) for dx to be of order 1."""
    rng = np.random.default_rng(4)
    x, w, b = spread_rows(rng, (2, 3, 2)), 1.0 + normal(rng, (2,), scale=0.3), normal(rng, (2,))
    out, cache = layernorm_forward(x, w, b, eps=1.0)
    dout = normal(rng, out.shape)
    dx, dw, db = layernorm_backward(dout, cache)
    assert np.abs(dx).max() > 0.01
    check_gradients(
        lambda: np.sum(layernorm_forward(x, w, b, eps=1.0)[0] * dout),
        {"x": x, "w": w, "b": b},
        {"x": dx, "w": dw, "b": db},
    )


# ----------------------------------------------------------------------------------------------
# linear


def test_linear_forward_reference():
    """linear_forward computes x @ w + b (weights stored (in, out)), checked against einsum."""
    rng = np.random.default_rng(1)
    x, w, b = normal(rng, (2, 3, 4)), normal(rng, (4, 5)), normal(rng, (5,))
    np.testing.assert_allclose(linear_forward(x, w, b)[0], np.einsum("btc,cd->btd", x, w) + b, rtol=1e-12)
    np.testing.assert_allclose(linear_forward(x, w)[0], np.einsum("btc,cd->btd", x, w), rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# layernorm


@given(seed=SEEDS, B=SIZES, T=TIMES, C=st.integers(2, 8))
def test_layernorm_forward_reference(seed, B, T, C):
    """layernorm_forward equals (x - mean) / sqrt(biased var + eps) * w + b, and with w = 1, b = 0
    every row has mean 0 and (biased) variance var / (var + eps)."""
    rng = np.random.default_rng(seed)
    x, w, b = spread_rows(rng, (B, T, C)), normal(rng, (C,)), normal(rng, (C,))
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    np.testing.assert_allclose(
        layernorm_forward(x, w, b)[0], (x - mean) / np.sqrt(var + 1e-5) * w + b, atol=1e-12
    )
    np.testing.assert_allclose(
        layernorm_forward(x, w, None)[0], (x - mean) / np.sqrt(var + 1e-5) * w, atol=1e-12
    )
    out = layernorm_forward(x, np.ones(C), np.zeros(C))[0]
    np.testing.assert_allclose(out.mean(-1), 0.0, atol=1e-12)
    np.testing.assert_allclose(out.var(-1, keepdims=True), var / (var + 1e-5), rtol=1e-12)


def test_layernorm_uses_eps():
    """The eps argument is added to the variance: eps = 3 on a row of variance 1 scales by 1/2."""
    x = np.array([[[-1.0, 1.0]]])  # mean 0, biased variance 1
    out = layernorm_forward(x, np.ones(2), None, eps=3.0)[0]
    np.testing.assert_allclose(out, [[[-0.5, 0.5]]], rtol=1e-15)


@given(seed=SEEDS, B=SIZES, T=TIMES, C=st.integers(2, 8), bias=st.booleans())
def test_layernorm_shift_invariance(seed, B, T, C, bias):
    """Adding a constant to each row of the input (a different constant per row) leaves the
    layernorm output unchanged (up to float64 rounding, 1e-12)."""
    rng = np.random.default_rng(seed)
    x, w = spread_rows(rng, (B, T, C)), 1.0 + normal(rng, (C,), scale=0.3)
    b = normal(rng, (C,)) if bias else None
    shift = normal(rng, (B, T, 1), scale=5.0)
    np.testing.assert_allclose(
        layernorm_forward(x + shift, w, b)[0], layernorm_forward(x, w, b)[0], atol=1e-12
    )


# ----------------------------------------------------------------------------------------------
# activations


GELU_KNOWN = [  # gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), evaluated with math.tanh
    (0.0, 0.0),
    (1.0, 0.8411919906082768),
    (-1.0, -0.15880800939172324),
    (0.5, 0.34571400982514394),
    (2.0, 1.954597694087775),
    (-3.0, -0.0036373920817729943),
]


@pytest.mark.parametrize("x, expected", GELU_KNOWN)
def test_gelu_known_values(x, expected):
    """gelu_forward matches the tanh-approximation formula at hard-coded points (1e-15)."""
    out, _ = gelu_forward(np.array([x]))
    np.testing.assert_allclose(out, [expected], rtol=1e-15, atol=1e-15)


def test_gelu_asymptotes():
    """GELU is ~identity for large positive x and ~0 for large negative x."""
    out, _ = gelu_forward(np.array([10.0, -10.0]))
    np.testing.assert_allclose(out, [10.0, 0.0], atol=1e-12)


def test_relu_values_and_kink():
    """relu_forward is max(x, 0); relu_backward passes dout only where x > 0 (0 at the kink)."""
    x = np.array([-2.0, -0.5, 0.0, 0.5, 3.0])
    out, cache = relu_forward(x)
    np.testing.assert_array_equal(out, [0.0, 0.0, 0.0, 0.5, 3.0])
    np.testing.assert_array_equal(relu_backward(np.full(5, 7.0), cache), [0.0, 0.0, 0.0, 7.0, 7.0])


# ----------------------------------------------------------------------------------------------
# dropout


@pytest.mark.parametrize("p, use_rng", [(0.0, True), (0.5, False), (0.0, False)])
def test_dropout_identity(p, use_rng):
    """With p == 0 or no generator dropout is the identity (values, and backward), caches None,
    and draws nothing from the generator."""
    x = normal(np.random.default_rng(0), (3, 4))
    rng = np.random.default_rng(5) if use_rng else None
    state = rng.bit_generator.state if use_rng else None
    out, cache = dropout_forward(x, p, rng)
    np.testing.assert_array_equal(out, x)
    assert cache is None
    dout = normal(np.random.default_rng(1), (3, 4))
    np.testing.assert_array_equal(dropout_backward(dout, cache), dout)
    if use_rng:
        assert rng.bit_generator.state == state


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_same_seed_same_mask(p):
    """Two generators with the same seed give bitwise identical outputs and masks; a different
    seed gives a different mask."""
    x = normal(np.random.default_rng(0), (8, 16))
    o1, m1 = dropout_forward(x, p, np.random.default_rng(42))
    o2, m2 = dropout_forward(x, p, np.random.default_rng(42))
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(m1, m2)
    _, m3 = dropout_forward(x, p, np.random.default_rng(43))
    assert not np.array_equal(m1, m3)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_scaling(p, dtype):
    """Survivors are scaled by exactly 1 / (1 - p), the rest are 0; the mask holds only 0 and
    1 / (1 - p); the backward applies the same mask to dout."""
    rng = np.random.default_rng(3)
    x = away_from_zero(rng, (50, 40), dtype)  # no element is 0 before dropout
    out, mask = dropout_forward(x, p, np.random.default_rng(7))
    kept = out != 0
    assert 0 < kept.sum() < x.size
    np.testing.assert_allclose(out[kept], x[kept] / dtype(1 - p), rtol=4 * np.finfo(dtype).eps)
    scale = dtype(1.0) / dtype(1 - p)
    assert set(np.unique(mask).tolist()) == {0.0, float(scale)}
    np.testing.assert_array_equal(kept, mask != 0)
    dout = normal(rng, x.shape, dtype)
    np.testing.assert_array_equal(dropout_backward(dout, mask), dout * mask)


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.9])
def test_dropout_keep_fraction(p):
    """On 200,000 elements the fraction kept is 1 - p within 0.01 (about 10 standard deviations),
    and the mean activation is preserved (inverted dropout)."""
    x = np.ones(200_000)
    out, _ = dropout_forward(x, p, np.random.default_rng(11))
    assert abs((out != 0).mean() - (1 - p)) < 0.01
    assert abs(out.mean() - 1.0) < 0.01 / (1 - p)


# ----------------------------------------------------------------------------------------------
# embedding


@pytest.mark.parametrize("start", [0, 2])
def test_embedding_forward_reference(start):
    """out[b, t] = wte[idx[b, t]] + wpe[start + t] (start = 0 in training)."""
    rng = np.random.default_rng(2)
    idx = np.array([[3, 0, 3], [1, 2, 2]])
    wte, wpe = normal(rng, (4, 5)), normal(rng, (6, 5))
    out, _ = embedding_forward(idx, wte, wpe, start)
    for b in range(2):
        for t in range(3):
            np.testing.assert_array_equal(out[b, t], wte[idx[b, t]] + wpe[start + t])


def test_embedding_backward_accumulates_repeated_ids():
    """A token used several times gets the sum of its gradients (not just the last one); unused
    tokens get exactly 0; dwpe holds dout summed over the batch at rows start..start+T-1 and exactly
    0 elsewhere."""
    idx = np.array([[1, 1, 1], [1, 0, 1]])
    dout = np.arange(18, dtype=np.float64).reshape(2, 3, 3)
    _, cache = embedding_forward(idx, np.zeros((4, 3)), np.zeros((6, 3)), 1)
    dwte, dwpe = embedding_backward(dout, cache)
    np.testing.assert_array_equal(dwte[1], dout[0].sum(0) + dout[1, 0] + dout[1, 2])
    np.testing.assert_array_equal(dwte[0], dout[1, 1])
    np.testing.assert_array_equal(dwte[2:], 0.0)
    np.testing.assert_array_equal(dwpe[1:4], dout.sum(0))
    np.testing.assert_array_equal(dwpe[0], 0.0)
    np.testing.assert_array_equal(dwpe[4:], 0.0)


# ----------------------------------------------------------------------------------------------
# attention


def naive_attention(qkv, n_head):
    """Causal multi-head attention with explicit loops, as a reference."""
    B, T, C3 = qkv.shape
    C = C3 // 3
    hs = C // n_head
    out = np.zeros((B, T, C))
    for b in range(B):
        for h in range(n_head):
            sl = slice(h * hs, (h + 1) * hs)
            q, k, v = qkv[b, :, sl], qkv[b, :, C:][:, sl], qkv[b, :, 2 * C :][:, sl]
            for t in range(T):
                s = np.array([q[t] @ k[j] / math.sqrt(hs) for j in range(t + 1)])
                a = np.exp(s - s.max())
                a /= a.sum()
                out[b, t, sl] = a @ v[: t + 1]
    return out


@given(seed=SEEDS, B=SIZES, T=TIMES, NH=SIZES, hs=CHANNELS)
def test_attention_forward_reference(seed, B, T, NH, hs):
    """attention_forward equals a loop-based causal softmax attention (q columns [0, C), k [C, 2C),
    v [2C, 3C), heads side by side) to 1e-12."""
    rng = np.random.default_rng(seed)
    qkv = normal(rng, (B, T, 3 * NH * hs))
    np.testing.assert_allclose(attention_forward(qkv, NH)[0], naive_attention(qkv, NH), atol=1e-12)


@given(seed=SEEDS, B=SIZES, T=TIMES, NH=SIZES, hs=CHANNELS, p=st.sampled_from([0.0, 0.5]))
def test_attention_probabilities(seed, B, T, NH, hs, p):
    """The cached probabilities att (B, NH, T, T) are >= 0, each row sums to 1 (1e-12), and every
    future entry (key after query) is exactly 0; with dropout the cache keeps the probabilities
    before dropout."""
    rng = np.random.default_rng(seed)
    qkv = normal(rng, (B, T, 3 * NH * hs), scale=2.0)
    _, (_, _, _, att, _) = attention_forward(qkv, NH, p, np.random.default_rng(seed) if p else None)
    assert att.shape == (B, NH, T, T)
    assert (att >= 0).all()
    np.testing.assert_allclose(att.sum(-1), 1.0, atol=1e-12)
    future = ~np.tri(T, dtype=bool)
    assert (att[..., future] == 0.0).all()


@given(seed=SEEDS, B=SIZES, T=st.integers(2, 5), NH=SIZES, hs=CHANNELS, data=st.data())
def test_attention_causal(seed, B, T, NH, hs, data):
    """Changing q, k, v at position t' never changes the output at positions before t' (float64,
    exactly), and does change the output at t'."""
    t_change = data.draw(st.integers(1, T - 1), label="t_change")
    rng = np.random.default_rng(seed)
    qkv = normal(rng, (B, T, 3 * NH * hs))
    qkv2 = qkv.copy()
    qkv2[:, t_change:] += normal(rng, qkv2[:, t_change:].shape)
    out1, out2 = attention_forward(qkv, NH)[0], attention_forward(qkv2, NH)[0]
    np.testing.assert_array_equal(out1[:, :t_change], out2[:, :t_change])
    assert not np.allclose(out1[:, t_change], out2[:, t_change])


@given(
    seed=SEEDS, B=SIZES, T=st.integers(1, 8), NH=SIZES, hs=CHANNELS, extra=st.integers(0, 3), data=st.data()
)
def test_attention_forward_kv_matches_full(seed, B, T, NH, hs, extra, data):
    """Feeding a sequence in chunks (random split points) through attention_forward_kv gives, for
    each chunk, the same output as the matching positions of attention_forward on the whole
    sequence (float64, 1e-12); the caches then hold every position's k and v and are untouched
    beyond T."""
    cuts = sorted(data.draw(st.sets(st.integers(1, T - 1), max_size=T - 1), label="cuts")) if T > 1 else []
    bounds = [0, *cuts, T]
    rng = np.random.default_rng(seed)
    C = NH * hs
    qkv = normal(rng, (B, T, 3 * C))
    full = attention_forward(qkv, NH)[0]
    maxT = T + extra
    k_cache, v_cache = np.zeros((B, NH, maxT, hs)), np.zeros((B, NH, maxT, hs))
    for start, end in itertools.pairwise(bounds):
        out = attention_forward_kv(qkv[:, start:end], NH, k_cache, v_cache, start)
        assert out.shape == (B, end - start, C)
        np.testing.assert_allclose(out, full[:, start:end], atol=1e-12, rtol=0)
    k_expected = qkv[..., C : 2 * C].reshape(B, T, NH, hs).transpose(0, 2, 1, 3)
    v_expected = qkv[..., 2 * C :].reshape(B, T, NH, hs).transpose(0, 2, 1, 3)
    np.testing.assert_array_equal(k_cache[:, :, :T], k_expected)
    np.testing.assert_array_equal(v_cache[:, :, :T], v_expected)
    assert (k_cache[:, :, T:] == 0).all() and (v_cache[:, :, T:] == 0).all()


# ----------------------------------------------------------------------------------------------
# cross-entropy


def reference_nll(logits, targets):
    """Per-position -log softmax(logits)[target] with logsumexp written out (order-1 logits)."""
    lse = np.log(np.exp(logits).sum(-1))
    safe = np.where(targets == IGNORE_INDEX, 0, targets)
    return lse - np.take_along_axis(logits, safe[..., None], -1)[..., 0]


@given(seed=SEEDS, B=SIZES, T=TIMES, V=st.integers(2, 6), ignore_frac=st.sampled_from([0.0, 0.5]))
def test_cross_entropy_forward_reference(seed, B, T, V, ignore_frac):
    """The loss is the mean of -log softmax(logits)[target] over the non-ignored positions only."""
    rng = np.random.default_rng(seed)
    logits = normal(rng, (B, T, V))
    targets = random_targets(rng, B, T, V, ignore_frac)
    valid = targets != IGNORE_INDEX
    loss, _ = cross_entropy_forward(logits, targets)
    expected = reference_nll(logits, targets)[valid].mean() if valid.any() else 0.0
    assert loss == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_cross_entropy_uniform_and_large_logits():
    """Equal logits give loss ln V; huge logits do not overflow (stable log-softmax)."""
    loss, _ = cross_entropy_forward(np.zeros((1, 2, 7)), np.array([[3, 0]]))
    assert loss == pytest.approx(math.log(7), rel=1e-14)
    loss, cache = cross_entropy_forward(np.array([[[1000.0, 0.0]]]), np.array([[1]]))
    assert loss == pytest.approx(1000.0, rel=1e-14)
    np.testing.assert_allclose(cross_entropy_backward(cache), [[[1.0, -1.0]]], atol=1e-15)


@given(seed=SEEDS, B=SIZES, T=TIMES, V=st.integers(2, 6))
def test_cross_entropy_shift_invariance(seed, B, T, V):
    """Adding a constant to each row of logits (a different constant per position) leaves the loss
    and dlogits unchanged (softmax is shift invariant), to float64 rounding."""
    rng = np.random.default_rng(seed)
    logits = normal(rng, (B, T, V))
    targets = random_targets(rng, B, T, V, 0.3)
    shifted = logits + normal(rng, (B, T, 1), scale=10.0)
    l1, c1 = cross_entropy_forward(logits, targets)
    l2, c2 = cross_entropy_forward(shifted, targets)
    assert l2 == pytest.approx(l1, rel=1e-12, abs=1e-13)
    np.testing.assert_allclose(cross_entropy_backward(c2), cross_entropy_backward(c1), atol=1e-13)


@given(seed=SEEDS, B=SIZES, T=TIMES, V=st.integers(2, 6))
def test_cross_entropy_ignored_positions(seed, B, T, V):
    """Ignored positions (-1) get exactly zero gradient, and changing their logits changes neither
    the loss nor the gradient elsewhere."""
    rng = np.random.default_rng(seed)
    logits = normal(rng, (B, T, V))
    targets = random_targets(rng, B, T, V, 0.5)
    ignored = targets == IGNORE_INDEX
    loss, cache = cross_entropy_forward(logits, targets)
    dlogits = cross_entropy_backward(cache)
    assert (dlogits[ignored] == 0.0).all()
    logits2 = logits.copy()
    logits2[ignored] += normal(rng, logits2[ignored].shape, scale=3.0)
    loss2, cache2 = cross_entropy_forward(logits2, targets)
    assert loss2 == loss
    np.testing.assert_array_equal(cross_entropy_backward(cache2), dlogits)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_cross_entropy_all_ignored(dtype):
    """When every target is ignored the loss is 0 (not nan) and dlogits is all zeros, finite, in
    the logits' dtype."""
    logits = normal(np.random.default_rng(0), (2, 3, 5), dtype)
    loss, cache = cross_entropy_forward(logits, np.full((2, 3), IGNORE_INDEX))
    assert loss == 0.0
    dlogits = cross_entropy_backward(cache, 2.5)
    assert dlogits.dtype == dtype and dlogits.shape == logits.shape
    np.testing.assert_array_equal(dlogits, np.zeros_like(logits))


@pytest.mark.parametrize("p", [1.0, -0.1, 1.5])
def test_dropout_rejects_probabilities_outside_0_1(p):
    """p = 1 would divide by zero; negative or > 1 make no sense: a clear error, not nan."""
    with pytest.raises(ValueError, match="dropout probability"):
        dropout_forward(np.ones(3), p, np.random.default_rng(0))
