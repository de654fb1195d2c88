"""The numba backend against its specification, the NumPy layers.

  * every kernel equals its NumPy reference over hypothesis-drawn small and odd shapes, in float64
    to 1e-12 and in float32 to 1e-5, relative to the largest magnitude of the reference tensor
    (elementwise relative error is meaningless where a value is ~0 by cancellation);
  * every layer gradient check of tests/test_layers.py passes with the numba functions too, and
    the whole model's logits, loss and gradients equal the NumPy backend's;
  * NaN and inf come out where NumPy puts them (the fastmath subset keeps nnan/ninf off);
  * results do not depend on the thread count (bitwise);
  * one compiled signature per dtype, whatever the shapes and input layouts;
  * the backend switch: MINIGPT_BACKEND, set_backend, use_backend, and their errors;
  * the numba cache falls back to in-memory compiling, with one warning, when it cannot write.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import numba
import numpy as np
import pytest
import test_layers as TL
from hypothesis import given
from hypothesis import strategies as st

import minigpt.kernels as kernels_pkg
from minigpt import GPTConfig, backend, gpt_backward, gpt_forward, init_params
from minigpt.backend import ops_for
from minigpt.errors import InputError
from minigpt.kernels import activation, adamw, attention, cross_entropy, embedding, layernorm
from minigpt.layers import IGNORE_INDEX

NP, NB = ops_for("numpy"), ops_for("numba")
DTYPES = [np.float32, np.float64]
TOL = {np.float32: 1e-5, np.float64: 1e-12}
SEEDS = st.integers(0, 2**32 - 1)
DT = st.sampled_from(DTYPES)


def assert_close(actual, expected, dtype, what="", scale=0.0):
    """max |actual - expected| <= tol(dtype) * max(max |expected|, scale); same dtype and shape;
    NaN where NaN. `scale` names the natural size of the computation when the result is a
    difference of larger quantities (cancellation), e.g. dlogits = (p - onehot) * dloss / n."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected), err_msg=f"{what}: NaN positions differ")
    ok = ~np.isnan(expected)
    if not ok.any():
        return
    scale = max(np.max(np.abs(expected[ok]), initial=0.0), scale)
    err = np.max(np.abs(actual[ok].astype(np.float64) - expected[ok]), initial=0.0)
    assert err <= TOL[dtype] * max(scale, np.finfo(dtype).tiny), (
        f"{what}: max abs difference {err:.3e} > {TOL[dtype]:.0e} x max |reference| {scale:.3e}"
    )


def normal(rng, shape, dtype, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


# ----------------------------------------------------------------------------------------------
# equality with the NumPy reference, forward and backward


@given(seed=SEEDS, dtype=DT, B=st.integers(1, 3), T=st.integers(1, 5), C=st.integers(1, 70), bias=st.booleans())
def test_layernorm_matches_numpy(seed, dtype, B, T, C, bias):
    rng = np.random.default_rng(seed)
    x = normal(rng, (B, T, C), dtype, 3.0) + dtype(rng.normal())
    w, b = normal(rng, (C,), dtype), (normal(rng, (C,), dtype) if bias else None)
    out0, cache0 = NP.layernorm_forward(x, w, b)
    out1, cache1 = NB.layernorm_forward(x, w, b)
    assert_close(out1, out0, dtype, "out")
    assert_close(cache1[0], cache0[0], dtype, "xhat")
    assert_close(cache1[2], cache0[2], dtype, "rstd")
    dout = normal(rng, x.shape, dtype)
    # dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) cancels to nearly 0 for short
    # rows (C = 2 normalizes to +-1 whatever x is): its rounding is relative to rstd * |dout * w|
    dx_scale = float(np.max(cache0[2]) * np.max(np.abs(dout * w)))
    for name, g1, g0 in zip(("dx", "dw", "db"), NB.layernorm_backward(dout, cache1), NP.layernorm_backward(dout, cache0)):
        if g0 is None:
            assert g1 is None, f"{name} must be None without bias"
        else:
            assert_close(g1, g0, dtype, name, scale=dx_scale if name == "dx" else 0.0)


@given(seed=SEEDS, dtype=DT, shape=st.lists(st.integers(1, 40), min_size=1, max_size=3), scale=st.sampled_from([0.5, 3.0, 20.0]))
def test_gelu_matches_numpy(seed, dtype, shape, scale):
    rng = np.random.default_rng(seed)
    x = normal(rng, tuple(shape), dtype, scale)
    out0, cache0 = NP.gelu_forward(x)
    out1, cache1 = NB.gelu_forward(x)
    assert_close(out1, out0, dtype, "out")
    dout = normal(rng, x.shape, dtype)
    assert_close(NB.gelu_backward(dout, cache1), NP.gelu_backward(dout, cache0), dtype, "dx")


def test_tanh_float32_error_bound():
    """The float32 GELU's tanh (continued fraction + one doubling step) is within 2e-7 of the true
    tanh for every input, including far outside the clamp; np.tanh itself is within 6e-8."""
    u = np.linspace(-30.0, 30.0, 3_000_001).astype(np.float32)
    tanh32 = activation._tanh_f32(np.float32)
    got = np.array([tanh32(np.float32(v)) for v in u[::1000]], dtype=np.float64)  # scalar path
    assert np.max(np.abs(got - np.tanh(u[::1000].astype(np.float64)))) <= 2e-7
    # the vectorized path, through the kernel: t is tanh(sqrt(2/pi) (x + 0.044715 x^3))
    x = np.linspace(-12.0, 12.0, 2_000_001).astype(np.float32)
    _, (_, t) = NB.gelu_forward(x)
    u64 = (np.float32(activation.GELU_SCALE) * (x + np.float32(activation.GELU_CUBIC) * (x * x * x))).astype(np.float64)
    assert np.max(np.abs(t.astype(np.float64) - np.tanh(u64))) <= 2e-7


def test_softmax_float32_exp_error_bound():
    """The float32 causal softmax computes exp by range reduction and a polynomial. The last row
    of a causal softmax sees every key: with shifted scores spanning float32's whole normal range
    [-87.3, 0], every probability that is a normal float32 is within 8e-7 (relative) of the
    float64 softmax (exp, sum and division; measured 1.8e-7, NumPy's float32 softmax 2.2e-7),
    exp below the range gives exactly 0, and the first row (one key) is exactly 1."""
    x = np.concatenate([np.linspace(-87.3, 0.0, 3001), [-87.4, -100.0, -1e30, -np.inf]]).astype(np.float32)
    T = x.size
    scores = np.full((1, 1, T, T), 0.0, np.float32)
    scores[0, 0, -1] = x  # only the last row matters here; the rest are uniform
    attention._softmax_causal_inplace(scores, np.float32(1.0))
    e = np.exp(x.astype(np.float64))
    want = e / e.sum()
    got = scores[0, 0, -1].astype(np.float64)
    normal = want >= np.finfo(np.float32).tiny  # probabilities that are normal float32 numbers
    assert np.max(np.abs(got[normal] - want[normal]) / want[normal]) <= 2e-7 * 4  # exp, sum and divide
    assert np.all(got[x < attention.EXP_F32_MIN] == 0.0)
    assert np.allclose(scores[0, 0, 0, :1], 1.0) and np.all(scores[0, 0, 0, 1:] == 0.0)  # the causal mask


@contextmanager
def causal_block(size):
    """Run a block with attention.CAUSAL_BLOCK set to size (None: unchanged), so that small
    shapes take the blocked products' path (several blocks, a ragged last one)."""
    saved = attention.CAUSAL_BLOCK
    attention.CAUSAL_BLOCK = size or saved
    try:
        yield
    finally:
        attention.CAUSAL_BLOCK = saved


@given(seed=SEEDS, dtype=DT, B=st.integers(1, 3), T=st.integers(1, 9), NH=st.integers(1, 3), hs=st.integers(1, 9),
       p=st.sampled_from([0.0, 0.3]), block=st.sampled_from([None, 1, 2, 3]))  # fmt: skip
def test_attention_matches_numpy(seed, dtype, B, T, NH, hs, p, block):
    """Same output and dqkv; with dropout both draw the same mask from the same generator. With
    block set, the products run in causal blocks (see attention.causal_blocks)."""
    rng = np.random.default_rng(seed)
    qkv = normal(rng, (B, T, 3 * NH * hs), dtype, 2.0)
    out0, cache0 = NP.attention_forward(qkv, NH, p, np.random.default_rng(seed + 1) if p else None)
    with causal_block(block):
        out1, cache1 = NB.attention_forward(qkv, NH, p, np.random.default_rng(seed + 1) if p else None)
    assert_close(out1, out0, dtype, "out")
    assert_close(cache1[3], cache0[3], dtype, "att")  # the probabilities (the caches match too)
    assert np.all(np.triu(cache1[3], 1) == 0.0)  # the blocks never computed are zeroed, as masked
    dout = normal(rng, out0.shape, dtype)
    with causal_block(block):
        dqkv1 = NB.attention_backward(dout, cache1)
    assert_close(dqkv1, NP.attention_backward(dout, cache0), dtype, "dqkv")


@pytest.mark.parametrize("T, block, want", [
    (1, 128, [(0, 1)]), (255, 128, [(0, 255)]), (256, 128, [(0, 128), (128, 256)]),
    (300, 128, [(0, 128), (128, 256), (256, 300)]), (7, 3, [(0, 3), (3, 6), (6, 7)]),
])  # fmt: skip
def test_causal_blocks_cover_every_row_once(T, block, want):
    """Row blocks tile 0..T-1 in order; sequences shorter than two blocks are one block."""
    with causal_block(block):
        assert attention.causal_blocks(T) == want


def test_attention_blocked_at_the_small_preset_matches_numpy():
    """The small preset's T = 256 runs the products in two causal blocks: float32 results as NumPy's."""
    rng = np.random.default_rng(0)
    assert len(attention.causal_blocks(256)) == 2
    qkv = normal(rng, (2, 256, 3 * 2 * 16), np.float32, 2.0)
    out0, cache0 = NP.attention_forward(qkv, 2)
    out1, cache1 = NB.attention_forward(qkv, 2)
    assert_close(out1, out0, np.float32, "out")
    dout = normal(rng, out0.shape, np.float32)
    assert_close(NB.attention_backward(dout, cache1), NP.attention_backward(dout, cache0), np.float32, "dqkv")


@given(seed=SEEDS, dtype=DT, B=st.integers(1, 2), NH=st.integers(1, 3), hs=st.integers(1, 6),
       chunks=st.lists(st.integers(1, 4), min_size=1, max_size=4))  # fmt: skip
def test_attention_forward_kv_matches_numpy(seed, dtype, B, NH, hs, chunks):
    """Decoding chunk by chunk: same outputs and the same caches."""
    rng = np.random.default_rng(seed)
    maxT, C = sum(chunks) + 1, NH * hs
    caches = {name: (np.zeros((B, NH, maxT, hs), dtype), np.zeros((B, NH, maxT, hs), dtype)) for name in ("np", "nb")}
    start = 0
    for Tn in chunks:
        qkv = normal(rng, (B, Tn, 3 * C), dtype)
        out0 = NP.attention_forward_kv(qkv, NH, *caches["np"], start)
        out1 = NB.attention_forward_kv(qkv, NH, *caches["nb"], start)
        assert_close(out1, out0, dtype, f"out at start {start}")
        start += Tn
    np.testing.assert_array_equal(caches["nb"][0], caches["np"][0])
    np.testing.assert_array_equal(caches["nb"][1], caches["np"][1])


@given(seed=SEEDS, dtype=DT, B=st.integers(1, 3), T=st.integers(1, 5), V=st.integers(1, 70),
       ignore=st.sampled_from([0.0, 0.5, 1.0]), dloss=st.sampled_from([1.0, 0.25]))  # fmt: skip
def test_cross_entropy_matches_numpy(seed, dtype, B, T, V, ignore, dloss):
    rng = np.random.default_rng(seed)
    logits = normal(rng, (B, T, V), dtype, 4.0)
    targets = np.where(rng.random((B, T)) < ignore, IGNORE_INDEX, rng.integers(0, V, (B, T)))
    loss0, cache0 = NP.cross_entropy_forward(logits, targets)
    loss1, cache1 = NB.cross_entropy_forward(logits, targets)
    assert isinstance(loss1, float)
    assert abs(loss1 - loss0) <= TOL[dtype] * max(abs(loss0), 1.0)
    assert_close(cache1[0], cache0[0], dtype, "probs")
    # dlogits = (p - onehot) * dloss / n: where p[target] ~ 1 it is a difference of O(1) numbers,
    # whose float32 rounding (~6e-8) is relative to dloss / n, not to the (possibly tiny) result
    assert_close(NB.cross_entropy_backward(cache1, dloss), NP.cross_entropy_backward(cache0, dloss), dtype, "dlogits",
                 scale=dloss / max(cache0[2], 1))  # fmt: skip


@given(seed=SEEDS, dtype=DT, B=st.integers(1, 3), T=st.integers(1, 6), V=st.integers(1, 5), C=st.integers(1, 9),
       start=st.integers(0, 3))  # fmt: skip
def test_embedding_backward_matches_numpy(seed, dtype, B, T, V, C, start):
    """Repeated token ids (V is small) accumulate; unused position rows stay zero."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, V, (B, T))
    wte, wpe = normal(rng, (V, C), dtype), normal(rng, (start + T + 2, C), dtype)
    _, cache = NP.embedding_forward(idx, wte, wpe, start)
    dout = normal(rng, (B, T, C), dtype)
    for name, g1, g0 in zip(("dwte", "dwpe"), NB.embedding_backward(dout, cache), NP.embedding_backward(dout, cache)):
        assert_close(g1, g0, dtype, name)


@given(seed=SEEDS, dtype=DT, shape=st.lists(st.integers(1, 30), min_size=1, max_size=2), steps=st.integers(1, 3),
       lr=st.sampled_from([1e-3, 0.1]), wd=st.sampled_from([0.0, 0.1]), decay=st.booleans())  # fmt: skip
def test_adamw_update_matches_numpy(seed, dtype, shape, steps, lr, wd, decay):
    """A few AdamW steps: same parameters and moments (updated in place)."""
    rng = np.random.default_rng(seed)
    state = {name: [normal(rng, tuple(shape), dtype), np.zeros(shape, dtype), np.zeros(shape, dtype)]
             for name in ("np", "nb")}  # fmt: skip
    state["nb"][0][...] = state["np"][0]
    for t in range(1, steps + 1):
        g = normal(rng, tuple(shape), dtype)
        NP.adamw_update(*state["np"][:1], g, *state["np"][1:], lr, 0.9, 0.99, 1e-8, wd, t, decay)
        NB.adamw_update(*state["nb"][:1], g, *state["nb"][1:], lr, 0.9, 0.99, 1e-8, wd, t, decay)
    for name, a1, a0 in zip(("p", "m", "v"), state["nb"], state["np"]):
        assert_close(a1, a0, dtype, name)


@given(seed=SEEDS, dtype=DT, n=st.integers(0, 200_000))
def test_sum_of_squares_matches_numpy(seed, dtype, n):
    x = normal(np.random.default_rng(seed), (n,), dtype)
    expected = NP.sum_of_squares(x)
    assert abs(NB.sum_of_squares(x) - expected) <= 1e-12 * max(expected, 1.0)


@pytest.mark.parametrize("activation_name", ["gelu", "relu"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_model_matches_numpy_backend(dtype, activation_name):
    """The whole GPT, with dropout, bias and ignored targets: logits, loss and every gradient."""
    config = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=12, dropout=0.2,
                       activation=activation_name)  # fmt: skip
    params = init_params(config, seed=3, dtype=dtype)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 11, (3, 8))
    targets = np.where(rng.random((3, 8)) < 0.2, IGNORE_INDEX, rng.integers(0, 11, (3, 8)))
    results = {}
    for name in ("numpy", "numba"):
        with backend.use_backend(name):
            logits, loss, cache = gpt_forward(config, params, idx, targets, rng=np.random.default_rng(7))
        results[name] = (logits, loss, gpt_backward(cache))  # runs on the forward's backend
    (l0, loss0, g0), (l1, loss1, g1) = results["numpy"], results["numba"]
    assert_close(l1, l0, dtype, "logits")
    assert abs(loss1 - loss0) <= TOL[dtype] * loss0
    assert list(g1) == list(g0)
    for name in g0:
        assert_close(g1[name], g0[name], dtype, name)


# ----------------------------------------------------------------------------------------------
# the layer gradient checks of test_layers.py, on the numba functions


@pytest.mark.parametrize("name", list(TL.CASES))
@given(seed=SEEDS)
def test_numba_layer_gradients(name, seed):
    """Every layer case of test_layers.py, built on the numba functions, passes the float64
    finite-difference check (relative error <= 1e-7)."""
    rng = np.random.default_rng(seed)
    TL.gradcheck_case(TL.CASES[name](rng, np.float64, NB), rng)


@pytest.mark.parametrize("name", list(TL.CASES))
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_numba_layer_contract(name, dtype):
    """Shapes, dtypes in = dtypes out, and no input modified, for the numba functions."""
    rng = np.random.default_rng(0)
    case = TL.CASES[name](rng, dtype, NB)
    before = {k: v.copy() for k, v in (case.inputs | case.frozen).items()}
    out, cache = case.forward()
    assert out.shape == case.out_shape and out.dtype == dtype
    dout = normal(rng, out.shape, dtype)
    dout_before = dout.copy()
    grads = case.backward(dout, cache)
    for k, g in grads.items():
        assert g.shape == case.inputs[k].shape and g.dtype == dtype, k
    for k, v in (case.inputs | case.frozen).items():
        np.testing.assert_array_equal(v, before[k], err_msg=f"{name} modified input {k}")
    np.testing.assert_array_equal(dout, dout_before)


# ----------------------------------------------------------------------------------------------
# NaN and inf, thread counts, signatures


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_nan_and_inf_propagate_as_in_numpy(dtype):
    """A diverging run must still be caught: NaN/inf inputs give NaN/inf where NumPy gives them."""
    rng = np.random.default_rng(0)
    x = normal(rng, (2, 3, 8), dtype)
    x[0, 1, 2], x[1, 0, 5], x[1, 2, 0] = np.nan, np.inf, -np.inf
    w = np.ones(8, dtype)
    with np.errstate(all="ignore"):
        for f in ("layernorm",):
            out0, c0 = getattr(NP, f + "_forward")(x, w, None)
            out1, c1 = getattr(NB, f + "_forward")(x, w, None)
            assert_close(out1, out0, dtype, f)
        out0, c0 = NP.gelu_forward(x)
        out1, c1 = NB.gelu_forward(x)
        np.testing.assert_array_equal(np.isnan(out1), np.isnan(out0))
        np.testing.assert_array_equal(np.isposinf(out1), np.isposinf(out0))
        qkv = normal(rng, (2, 4, 12), dtype)
        qkv[1, 2, 3] = np.nan
        out0, c0 = NP.attention_forward(qkv, 2)
        out1, c1 = NB.attention_forward(qkv, 2)
        np.testing.assert_array_equal(np.isnan(out1), np.isnan(out0))
        assert np.isnan(out1).any()
        logits = normal(rng, (1, 3, 5), dtype)
        logits[0, 1, 2] = np.nan
        loss0, _ = NP.cross_entropy_forward(logits, np.array([[0, 1, 2]]))
        loss1, _ = NB.cross_entropy_forward(logits, np.array([[0, 1, 2]]))
        assert np.isnan(loss0) and np.isnan(loss1)
        g = np.array([1.0, np.nan, np.inf], dtype)
        assert np.isnan(NB.sum_of_squares(g)) and np.isnan(NP.sum_of_squares(g))
        p, m, v = np.ones(3, dtype), np.zeros(3, dtype), np.zeros(3, dtype)
        NB.adamw_update(p, g, m, v, 1e-3, 0.9, 0.99, 1e-8, 0.0, 1, False)
        p0, m0, v0 = np.ones(3, dtype), np.zeros(3, dtype), np.zeros(3, dtype)
        NP.adamw_update(p0, g, m0, v0, 1e-3, 0.9, 0.99, 1e-8, 0.0, 1, False)
        np.testing.assert_array_equal(np.isnan(p), np.isnan(p0))


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs at least 2 numba threads to compare")
def test_results_do_not_depend_on_thread_count(monkeypatch):
    """Kernels parallelize over independent outputs and reduce in fixed chunks: 1 thread and all
    threads give bitwise-identical float32 results (of the parallel builds, forced here)."""
    monkeypatch.setattr(kernels_pkg, "PARALLEL_MIN_WORK", 1 << 18)
    rng = np.random.default_rng(0)
    x = normal(rng, (8, 256, 128), np.float32)  # every array >= PARALLEL_MIN_WORK: the parallel builds
    qkv = normal(rng, (4, 128, 3 * 128), np.float32)
    logits = normal(rng, (64, 64, 65), np.float32)
    targets = rng.integers(0, 65, (64, 64))
    w = normal(rng, (128,), np.float32)
    g = normal(rng, (300_000,), np.float32)
    assert min(x.size, 4 * 4 * 128 * 128, logits.size, g.size) >= kernels_pkg.PARALLEL_MIN_WORK

    def run():
        ln, ln_c = NB.layernorm_forward(x, w, w)
        ge, ge_c = NB.gelu_forward(x)
        at, at_c = NB.attention_forward(qkv, 4)  # att: (4, 4, 128, 128)
        loss, ce_c = NB.cross_entropy_forward(logits, targets)
        p, m, v = g.copy(), np.zeros_like(g), np.zeros_like(g)
        NB.adamw_update(p, g, m, v, 1e-3, 0.9, 0.99, 1e-8, 0.1, 1, True)
        return [ln, *NB.layernorm_backward(x, ln_c), ge, NB.gelu_backward(x, ge_c), at, NB.attention_backward(at, at_c),
                np.array(loss), NB.cross_entropy_backward(ce_c), p, m, v, np.array(NB.sum_of_squares(g))]  # fmt: skip

    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = run()
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = run()
    finally:
        numba.set_num_threads(before)
    for a, b in zip(one, many):
        np.testing.assert_array_equal(a, b)


def test_serial_and_parallel_builds_agree(monkeypatch):
    """Small calls run the serial build, large ones the parallel build of the same loops: forcing
    every call onto one or the other gives the same results to float32 rounding. (Not bitwise: LLVM
    vectorizes the two builds' loops differently. Which build runs depends only on the shapes, so
    a run is still reproducible.)"""
    rng = np.random.default_rng(1)
    x = normal(rng, (4, 33, 40), np.float32)
    qkv = normal(rng, (2, 17, 3 * 12), np.float32)
    g = normal(rng, (5000,), np.float32)

    def run():
        ln, ln_c = NB.layernorm_forward(x, x[0, 0], None)
        ge, ge_c = NB.gelu_forward(x)
        at, at_c = NB.attention_forward(qkv, 3)
        p, m, v = g.copy(), np.zeros_like(g), np.zeros_like(g)
        NB.adamw_update(p, g, m, v, 1e-3, 0.9, 0.99, 1e-8, 0.1, 1, True)
        return [ln, *NB.layernorm_backward(x, ln_c)[:2], ge, NB.gelu_backward(x, ge_c), at,
                NB.attention_backward(at, at_c), p, np.array(NB.sum_of_squares(g))]  # fmt: skip

    serial = run()
    monkeypatch.setattr(kernels_pkg, "PARALLEL_MIN_WORK", 0)
    parallel = run()
    for a, b in zip(serial, parallel):
        assert_close(a, b, np.float32)


def test_one_compiled_signature_per_dtype():
    """Odd shapes, views and non-contiguous inputs reuse one compiled kernel per dtype (each new
    layout or dtype would compile again, 0.4-1 s)."""
    rng = np.random.default_rng(0)
    for dtype in DTYPES:
        for B, T, C in ((1, 1, 3), (2, 5, 7), (3, 4, 16)):
            x = normal(rng, (B, T, 2 * C), dtype)[..., ::2]  # a strided view
            out, cache = NB.layernorm_forward(x, np.ones(C, dtype), None)
            NB.layernorm_backward(x, cache)
            out, cache = NB.gelu_forward(x.transpose(1, 0, 2))
            NB.gelu_backward(out, cache)
            qkv = normal(rng, (B, T, 3 * C), dtype)
            out, cache = NB.attention_forward(qkv[:, ::-1], 1)
            NB.attention_backward(out, cache)
    for kernel in (layernorm._forward, layernorm._backward, activation._forward, activation._backward,
                   attention._softmax_causal, attention._softmax_causal_backward):  # fmt: skip
        assert kernel._compiled, kernel.build.__name__
        for (dtype, parallel), compiled in kernel._compiled.items():  # serial and parallel builds
            assert len(compiled.signatures) == 1, (kernel.build.__name__, dtype, parallel)
        # numba's disk cache is keyed by qualified name and signature, not by options: each build
        # needs its own name, or a serial build loads the parallel build's code (measured: a 128-
        # element call took 85 us instead of 1 us)
        names = {compiled.py_func.__qualname__ for compiled in kernel._compiled.values()}
        assert len(names) == len(kernel._compiled), names


# ----------------------------------------------------------------------------------------------
# the backend switch


def test_backend_switch():
    default = backend.get_backend()
    assert default in backend.BACKENDS
    with backend.use_backend("numpy"):
        assert backend.get_backend() == "numpy" and backend.ops().name == "numpy"
        with backend.use_backend("numba"):
            assert backend.ops().name == "numba"
        assert backend.get_backend() == "numpy"
    assert backend.get_backend() == default
    with pytest.raises(RuntimeError), backend.use_backend("numpy"):
        raise RuntimeError("inside")
    assert backend.get_backend() == default  # restored after an exception too
    with pytest.raises(InputError, match="unknown backend 'cuda': choose one of numba, numpy"):
        backend.set_backend("cuda")
    assert set(backend.OPS) <= set(vars(NB)) and set(backend.OPS) <= set(vars(NP))


def test_numba_ops_are_the_kernels_and_numpy_ops_the_layers():
    """Guards against a kernel silently falling back to NumPy (and vice versa)."""
    assert NB.layernorm_forward is layernorm.layernorm_forward
    assert NB.gelu_backward is activation.gelu_backward
    assert NB.attention_forward is attention.attention_forward
    assert NB.attention_forward_kv is attention.attention_forward_kv
    assert NB.cross_entropy_backward is cross_entropy.cross_entropy_backward
    assert NB.embedding_backward is embedding.embedding_backward
    assert NB.adamw_update is adamw.adamw_update and NB.sum_of_squares is adamw.sum_of_squares
    assert NP.layernorm_forward.__module__ == "minigpt.layers.layernorm"
    assert NP.adamw_update.__module__ == "minigpt.optim"
    assert NB.linear_forward is NP.linear_forward  # matrix products stay in NumPy's BLAS


def run_python(code, **env):
    root = str(Path(__file__).resolve().parent.parent)  # this checkout, installed or not
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": root, **env})  # fmt: skip


def test_environment_variable_selects_backend_and_numpy_never_loads_numba():
    code = ("import sys, numpy as np; from minigpt import backend, GPTConfig, init_params, gpt_forward; "
            "c = GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=1, n_embd=4); "
            "gpt_forward(c, init_params(c), np.zeros((1, 4), int), np.zeros((1, 4), int)); "
            "print(backend.get_backend(), 'numba' in sys.modules)")  # fmt: skip
    r = run_python(code, MINIGPT_BACKEND="numpy")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["numpy", "False"]
    r = run_python(code, MINIGPT_BACKEND="numba")
    assert r.stdout.split() == ["numba", "True"], r.stderr


def test_bad_backend_environment_variable_is_a_one_line_error():
    r = subprocess.run([sys.executable, "-m", "minigpt", "train", "--preset", "tiny", "--max-iters", "1"],
                       capture_output=True, text=True, env={**os.environ, "MINIGPT_BACKEND": "gpu"})  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert "MINIGPT_BACKEND='gpu' is not a backend: set it to one of numba, numpy" in r.stderr


def test_in_place_kernels_refuse_non_contiguous_arrays():
    """AdamW and the KV cache update their arrays in place: a strided view would be updated in a
    copy and silently lost, so they refuse it with a clear error."""
    p = np.ones((4, 6), np.float32)[:, ::2]  # (4, 3), not contiguous
    m, v = np.zeros((4, 3), np.float32), np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match="p, m and v must be C-contiguous"):
        NB.adamw_update(p, np.ones_like(p), m, v, 1e-3, 0.9, 0.99, 1e-8, 0.0, 1, True)
    k_cache = np.zeros((1, 2, 8, 4), np.float32)
    with pytest.raises(ValueError, match="KV caches are written in place, so they must be C-contiguous"):
        NB.attention_forward_kv(np.ones((1, 1, 24), np.float32), 2, k_cache[:, :, ::2], k_cache[:, :, ::2], 0)


def test_cache_falls_back_to_memory_with_one_warning(monkeypatch):
    """When numba finds no writable cache location (a read-only install), kernels compile in
    memory and one RuntimeWarning says how to enable the cache."""
    real_njit = numba.njit

    def njit_without_cache_locator(*args, cache=False, **kwargs):
        if cache:
            raise RuntimeError("cannot cache function 'k': no locator available for file 'k.py'")
        return real_njit(*args, **kwargs)

    monkeypatch.setattr(numba, "njit", njit_without_cache_locator)
    monkeypatch.setattr(kernels_pkg, "_cache_enabled", True)
    monkeypatch.setattr(kernels_pkg, "_cache_warned", False)

    def build(dtype):
        def kernel(x):
            return x * dtype(2.0)

        return kernel

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        k1, k2 = kernels_pkg.Twins(build), kernels_pkg.Twins(build)
        assert k1(np.ones(2, np.float32)).tolist() == [2.0, 2.0]
        assert k2(np.ones(2)).tolist() == [2.0, 2.0]
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "NUMBA_CACHE_DIR" in messages[0]


def test_a_second_process_loads_every_kernel_from_the_disk_cache(tmp_path):
    """A training step and a sampling run compile every kernel once; a second process finds them
    all in the disk cache. (Kernels whose closure held an njit helper, the float32 GELU and the
    decoding step, missed the cache in every process: see kernels.jitable.)"""
    code = (
        "import numpy as np\n"
        "from minigpt import GPTConfig, init_params, gpt_forward, gpt_backward\n"
        "from minigpt.generate import generate\n"
        "from minigpt.kernels import Twins\n"
        "import minigpt.kernels as K, importlib, pkgutil\n"
        "for dtype in (np.float32, np.float64):\n"
        "    c = GPTConfig(vocab_size=7, block_size=6, n_layer=1, n_head=2, n_embd=4)\n"
        "    p = init_params(c, 0, dtype)\n"
        "    _, loss, cache = gpt_forward(c, p, np.zeros((1, 6), int), np.zeros((1, 6), int))\n"
        "    gpt_backward(cache)\n"
        "    list(generate(c, p, [1], 4, seed=0))\n"
        "mods = [importlib.import_module('minigpt.kernels.' + m.name) for m in pkgutil.iter_modules(K.__path__)]\n"
        "twins = [t for m in mods for t in vars(m).values() if isinstance(t, Twins)]\n"
        "fns = [f for t in twins for f in t._compiled.values()]\n"
        "print(len(fns), sum(sum(f.stats.cache_misses.values()) for f in fns),"
        " sum(sum(f.stats.cache_hits.values()) for f in fns))\n"
    )
    first = run_python(code, NUMBA_CACHE_DIR=str(tmp_path))
    assert first.returncode == 0, first.stderr
    n, misses, _ = map(int, first.stdout.split())
    assert n >= 10 and misses == n, first.stdout  # the first process compiles each kernel once
    second = run_python(code, NUMBA_CACHE_DIR=str(tmp_path))
    assert second.returncode == 0, second.stderr
    assert second.stdout.split() == [str(n), "0", str(n)], f"kernels, cache misses, hits: {second.stdout}"


# float32 builds whose float64 variables are deliberate: the clipping norm sums squares in float64
FLOAT64_BY_DESIGN = {"minigpt.kernels.adamw._sum_of_squares"}


def test_float32_kernels_compute_in_float32():
    """No float32 build holds a float64 variable (except FLOAT64_BY_DESIGN). One float64 constant
    (a plain -np.inf as the starting maximum) once made the causal softmax and the cross-entropy
    compute every row in float64, at half the vector width. Each kernel is compiled afresh (the
    disk cache keeps no type information) for the signatures a model step and a sampling run used."""
    from minigpt.generate import generate
    from minigpt.kernels import decode
    from minigpt.optim import AdamW, clip_grad_norm

    config = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8, bias=True)
    params = init_params(config, seed=0, dtype=np.float32)
    x = np.random.default_rng(0).integers(0, 11, (2, 8))
    with backend.use_backend("numba"):
        _, _, cache = gpt_forward(config, params, x, x)
        grads = gpt_backward(cache)
        clip_grad_norm(grads, 1.0)
        AdamW(params, 0.9, 0.99, 1e-8, 0.1).step(params, grads, 1e-3)
        list(generate(config, params, [0], 3, seed=0))
    checked, found = 0, {}
    for module in (activation, adamw, attention, cross_entropy, decode, embedding, layernorm):
        for name, twin in vars(module).items():
            if not isinstance(twin, kernels_pkg.Twins) or (np.float32, False) not in twin._compiled:
                continue
            fresh = numba.njit(cache=False, fastmath=set(kernels_pkg.FASTMATH_F32), error_model="numpy")(
                twin.build(np.float32))  # fmt: skip
            for sig in twin._compiled[(np.float32, False)].signatures:
                fresh.compile(sig)
                typemap = fresh.overloads[sig].type_annotation.typemap
                f64 = sorted(v for v, t in typemap.items() if t == numba.float64 and not v.startswith("$const"))
                if f64 and f"{module.__name__}.{name}" not in FLOAT64_BY_DESIGN:
                    found[f"{module.__name__}.{name}"] = f64
                checked += 1
    assert checked >= 12  # every kernel of a training step and of sampling
    assert not found, f"float32 kernels with float64 variables: {found}"
