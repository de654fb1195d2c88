"""Whole-model tests: gradient check of gpt_backward over every parameter, the parameter layout and
GPT-2 initialization, dtypes, and the model's properties (causality, batch independence, initial
loss, determinism, overfitting one batch, ignored targets), plus bad input.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigpt import GPTConfig, InputError, gpt_backward, gpt_forward, init_params, param_shapes
from minigpt.gradcheck import SMOOTH_TOLERANCE, check_gradients
from minigpt.layers import IGNORE_INDEX, cross_entropy_forward

SEEDS = st.integers(0, 2**32 - 1)
TINY = GPTConfig(vocab_size=7, block_size=5, n_layer=2, n_head=2, n_embd=8)


def random_params(config: GPTConfig, seed: int, dtype=np.float64) -> dict[str, np.ndarray]:
    """Parameters of order 1 in place of GPT-2's init, for gradient checks.

    At the GPT-2 scale (std 0.02) gradients are ~1e-3 and finite-difference round-off alone gives
    relative errors ~5e-8, too close to 1e-7. Order-1 values also exercise non-trivial LayerNorm
    weights and biases. Weights use std 0.4, not larger: at 0.5 the attention scores get large
    enough that the central difference's truncation error (h^2 f''') reaches ~2e-7 on some
    seeds, shrinking as h^2 (a curvature effect, not a wrong gradient); at 0.4 the worst of 8
    seeds was 1e-8.
    """
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in param_shapes(config).items():
        is_ln = ".ln_" in name or name.startswith("ln_f")
        if is_ln and name.endswith(".weight"):
            p = 1.0 + rng.normal(0.0, 0.3, size=shape)
        elif name.endswith(".bias"):
            p = rng.normal(0.0, 0.3, size=shape)
        else:
            p = rng.normal(0.0, 0.4, size=shape)
        params[name] = p.astype(dtype)
    return params


def random_batch(config: GPTConfig, seed: int, B: int, T: int, ignore: bool = True):
    """Token ids and targets (B, T); with ignore, about a quarter of the targets are -1."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, config.vocab_size, size=(B, T))
    targets = rng.integers(0, config.vocab_size, size=(B, T))
    if ignore:
        targets[rng.random((B, T)) < 0.25] = IGNORE_INDEX
    return idx, targets


def model_gradcheck(config, seed, B, T, dropout_seed=None, tolerance=SMOOTH_TOLERANCE):
    """Check every element of every parameter's gradient against central differences of the loss.
    With dropout, each forward gets a fresh generator with the same seed (the same masks)."""
    params = random_params(config, seed)
    idx, targets = random_batch(config, seed + 1, B, T)

    def make_rng():
        return None if dropout_seed is None else np.random.default_rng(dropout_seed)

    _, _, cache = gpt_forward(config, params, idx, targets, rng=make_rng())
    grads = gpt_backward(cache)
    results = check_gradients(
        lambda: gpt_forward(config, params, idx, targets, rng=make_rng())[1],
        params,
        grads,
        tolerance=tolerance,
    )
    assert [r.name for r in results] == list(param_shapes(config))


# ----------------------------------------------------------------------------------------------
# gradient check


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("activation", ["gelu", "relu"])
def test_model_gradients(activation, bias):
    """gpt_backward matches central differences to 1e-7 for every element of every parameter
    (float64, order-1 parameters, some targets ignored, T < block_size so unused wpe rows are
    checked too). ReLU keeps the smooth tolerance: with these fixed seeds no pre-activation lies
    within a step of its kink."""
    config = TINY.replace(activation=activation, bias=bias)
    model_gradcheck(config, seed=0, B=2, T=4)


@pytest.mark.parametrize(
    "activation, bias", [("gelu", True), ("relu", False)], ids=["gelu-bias", "relu-nobias"]
)
def test_model_gradients_dropout(activation, bias):
    """With dropout 0.1 and fixed masks (a fresh generator with the same seed on every forward),
    gpt_backward matches central differences to 1e-7 for every parameter, at T = block_size."""
    config = TINY.replace(activation=activation, bias=bias, dropout=0.1)
    model_gradcheck(config, seed=3, B=2, T=5, dropout_seed=1234)


@settings(max_examples=3)
@given(seed=st.integers(0, 2**31), B=st.integers(1, 2), T=st.integers(1, 5))
def test_model_gradients_drawn(seed, B, T):
    """The whole-model gradient check (gelu, bias) on hypothesis-drawn seeds and shapes, T from 1
    (a single position) to block_size."""
    model_gradcheck(TINY, seed, B, T)


def test_dloss_scales_gradients():
    """gpt_backward(cache, dloss) is dloss times gpt_backward(cache) (gradient accumulation)."""
    params = random_params(TINY, 5)
    idx, targets = random_batch(TINY, 6, 2, 5)
    _, _, cache = gpt_forward(TINY, params, idx, targets)
    g1, g4 = gpt_backward(cache), gpt_backward(cache, dloss=0.25)
    for name in g1:
        np.testing.assert_allclose(g4[name], 0.25 * g1[name], rtol=1e-13, atol=1e-16, err_msg=name)


# ----------------------------------------------------------------------------------------------
# the forward against an independent reference


def reference_logits(config: GPTConfig, params, idx, rng=None):
    """GPT-2's forward written out directly in numpy (own layernorm, attention and activation),
    as Hugging Face's GPT2LMHeadModel / nanoGPT: pre-LayerNorm blocks with residuals, tied output
    layer. Dropout (with a generator) sits where nanoGPT puts it, drawn in forward order: after the
    embedding, on the attention probabilities, after attn.c_proj and after mlp.c_proj. Only the
    mask-drawing function is minigpt's."""
    from minigpt.layers import dropout_forward

    P = params.get
    p_drop, eps, NH = config.dropout, config.layer_norm_epsilon, config.n_head

    def drop(x):
        return dropout_forward(x, p_drop, rng)[0]

    def ln(x, w, b):
        x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps) * w
        return x if b is None else x + b

    def lin(x, w, b):
        return x @ w if b is None else x @ w + b

    def act(x):
        if config.activation == "relu":
            return np.maximum(x, 0.0)
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))

    B, T = idx.shape
    C = config.n_embd
    x = drop(P("wte.weight")[idx] + P("wpe.weight")[:T])
    for i in range(config.n_layer):
        h = f"h.{i}."
        qkv = lin(
            ln(x, P(h + "ln_1.weight"), P(h + "ln_1.bias")),
            P(h + "attn.c_attn.weight"),
            P(h + "attn.c_attn.bias"),
        )
        q, k, v = (
            qkv[..., j * C : (j + 1) * C].reshape(B, T, NH, C // NH).transpose(0, 2, 1, 3) for j in range(3)
        )
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(C // NH)
        scores = np.where(np.tril(np.ones((T, T), dtype=bool)), scores, -np.inf)
        att = np.exp(scores - scores.max(-1, keepdims=True))
        att = drop(att / att.sum(-1, keepdims=True))
        y = (att @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
        x = x + drop(lin(y, P(h + "attn.c_proj.weight"), P(h + "attn.c_proj.bias")))
        m = act(
            lin(
                ln(x, P(h + "ln_2.weight"), P(h + "ln_2.bias")),
                P(h + "mlp.c_fc.weight"),
                P(h + "mlp.c_fc.bias"),
            )
        )
        x = x + drop(lin(m, P(h + "mlp.c_proj.weight"), P(h + "mlp.c_proj.bias")))
    return ln(x, P("ln_f.weight"), P("ln_f.bias")) @ P("wte.weight").T


@pytest.mark.parametrize(
    "activation, bias, dropout",
    [("gelu", True, 0.0), ("relu", False, 0.0), ("gelu", True, 0.2), ("relu", False, 0.2)],
)
def test_forward_matches_reference(activation, bias, dropout):
    """gpt_forward's logits equal an independent reference forward (float64, 1e-12) for both
    activations and bias settings, in evaluation and with dropout masks from the same seed: the
    architecture (pre-LN, residuals, tied head, dropout sites) is GPT-2's, which the gradient check
    alone cannot show (a consistent error in forward and backward passes it)."""
    config = TINY.replace(activation=activation, bias=bias, dropout=dropout)
    params = random_params(config, 21)
    idx, _ = random_batch(config, 22, 3, 5)
    for make_rng in (lambda: None, lambda: np.random.default_rng(5)):
        logits = gpt_forward(config, params, idx, rng=make_rng())[0]
        np.testing.assert_allclose(
            logits, reference_logits(config, params, idx, make_rng()), rtol=0, atol=1e-12
        )


# ----------------------------------------------------------------------------------------------
# parameters: layout, gradients' keys, dtypes, initialization


def expected_layout_l2(V=7, maxT=5, C=8):
    """Hugging Face GPT-2 state-dict names and shapes for L = 2, written out in full."""
    return [
        ("wte.weight", (V, C)),
        ("wpe.weight", (maxT, C)),
        ("h.0.ln_1.weight", (C,)),
        ("h.0.ln_1.bias", (C,)),
        ("h.0.attn.c_attn.weight", (C, 3 * C)),
        ("h.0.attn.c_attn.bias", (3 * C,)),
        ("h.0.attn.c_proj.weight", (C, C)),
        ("h.0.attn.c_proj.bias", (C,)),
        ("h.0.ln_2.weight", (C,)),
        ("h.0.ln_2.bias", (C,)),
        ("h.0.mlp.c_fc.weight", (C, 4 * C)),
        ("h.0.mlp.c_fc.bias", (4 * C,)),
        ("h.0.mlp.c_proj.weight", (4 * C, C)),
        ("h.0.mlp.c_proj.bias", (C,)),
        ("h.1.ln_1.weight", (C,)),
        ("h.1.ln_1.bias", (C,)),
        ("h.1.attn.c_attn.weight", (C, 3 * C)),
        ("h.1.attn.c_attn.bias", (3 * C,)),
        ("h.1.attn.c_proj.weight", (C, C)),
        ("h.1.attn.c_proj.bias", (C,)),
        ("h.1.ln_2.weight", (C,)),
        ("h.1.ln_2.bias", (C,)),
        ("h.1.mlp.c_fc.weight", (C, 4 * C)),
        ("h.1.mlp.c_fc.bias", (4 * C,)),
        ("h.1.mlp.c_proj.weight", (4 * C, C)),
        ("h.1.mlp.c_proj.bias", (C,)),
        ("ln_f.weight", (C,)),
        ("ln_f.bias", (C,)),
    ]


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_parameter_layout_matches_gpt2(bias):
    """param_shapes and init_params give Hugging Face GPT-2's names, order and shapes (linear
    weights (in, out) as Conv1D); bias=False drops exactly the .bias tensors (28 -> 15 for L=2)."""
    expected = expected_layout_l2()
    if not bias:
        expected = [(n, s) for n, s in expected if not n.endswith(".bias")]
    assert len(expected) == (28 if bias else 15)
    config = TINY.replace(bias=bias)
    assert list(param_shapes(config).items()) == expected
    params = init_params(config)
    assert [(n, p.shape) for n, p in params.items()] == expected


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_backward_keys_and_shapes(bias):
    """gpt_backward returns exactly the parameters' names, in order, each with its shape, and no
    None entries (the bias gradients are absent, not None, without bias)."""
    config = TINY.replace(bias=bias)
    params = random_params(config, 1)
    idx, targets = random_batch(config, 2, 2, 3)
    _, _, cache = gpt_forward(config, params, idx, targets)
    grads = gpt_backward(cache)
    assert list(grads) == list(params)
    for name, g in grads.items():
        assert isinstance(g, np.ndarray) and g.shape == params[name].shape, name


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_dtype_follows_params(dtype):
    """With float32 (float64) parameters the logits and every gradient are float32 (float64), and
    the loss is a finite float."""
    config = TINY
    params = init_params(config, seed=0, dtype=dtype)
    idx, targets = random_batch(config, 3, 2, 5)
    logits, loss, cache = gpt_forward(config, params, idx, targets)
    assert isinstance(loss, float) and math.isfinite(loss)
    assert logits.dtype == dtype, f"params {np.dtype(dtype).name}, logits {logits.dtype}"
    wrong = {n: g.dtype.name for n, g in gpt_backward(cache).items() if g.dtype != dtype}
    assert not wrong, f"params {np.dtype(dtype).name}, gradients of another dtype: {wrong}"


def test_float32_close_to_float64():
    """The float32 model computes the same logits and loss as the float64 one with the same init,
    to float32 accuracy."""
    idx, targets = random_batch(TINY, 4, 2, 5)
    l32, loss32, _ = gpt_forward(TINY, init_params(TINY, 0, np.float32), idx, targets)
    l64, loss64, _ = gpt_forward(TINY, init_params(TINY, 0, np.float64), idx, targets)
    np.testing.assert_allclose(l32, l64, atol=1e-5)
    assert loss32 == pytest.approx(loss64, abs=1e-5)


def test_init_same_seed_identical_different_seed_differs():
    """init_params is a pure function of the seed: the same seed gives identical arrays, another
    seed gives different random weights."""
    a, b, c = init_params(TINY, 7), init_params(TINY, 7), init_params(TINY, 8)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert not np.array_equal(a["wte.weight"], c["wte.weight"])
    assert not np.array_equal(a["h.1.mlp.c_proj.weight"], c["h.1.mlp.c_proj.weight"])


def test_init_float32_is_float64_cast():
    """The float32 init equals the float64 init (same seed) cast to float32, element for element."""
    p32, p64 = init_params(TINY, 3, np.float32), init_params(TINY, 3, np.float64)
    for name in p64:
        assert p32[name].dtype == np.float32 and p64[name].dtype == np.float64
        np.testing.assert_array_equal(p32[name], p64[name].astype(np.float32), err_msg=name)


def test_init_rejects_other_dtypes():
    """init_params only makes float32 or float64 parameters."""
    with pytest.raises(InputError, match="float32 or float64"):
        init_params(TINY, 0, np.float16)


def test_init_gpt2_statistics():
    """GPT-2 init on a moderately sized model: residual projections (attn.c_proj, mlp.c_proj) have
    std 0.02 / sqrt(2 L), every other weight (wte, wpe, c_attn, c_fc) std 0.02, means ~0; biases
    are exactly 0 and LayerNorm weights exactly 1."""
    L = 4
    config = GPTConfig(vocab_size=512, block_size=64, n_layer=L, n_head=4, n_embd=128)
    params = init_params(config, seed=0, dtype=np.float64)
    for name, p in params.items():
        if name.endswith(".bias"):
            assert (p == 0).all(), name
        elif ".ln_" in name or name.startswith("ln_f"):
            assert (p == 1).all(), name
        else:
            std = 0.02 / math.sqrt(2 * L) if name.endswith("c_proj.weight") else 0.02
            # sample std of n >= 8192 normals is within 3 % of the truth with overwhelming probability
            assert p.std() == pytest.approx(std, rel=0.03), name
            assert abs(p.mean()) < 5 * std / math.sqrt(p.size), name


# ----------------------------------------------------------------------------------------------
# properties


@given(seed=SEEDS, B=st.integers(1, 3), T=st.integers(2, 5), dropout=st.booleans(), data=st.data())
def test_causality(seed, B, T, dropout, data):
    """Changing the token at position t' never changes the logits at positions < t' (float64, to
    1e-12), in evaluation and with (fixed) dropout masks; the logits at t' do change."""
    t_change = data.draw(st.integers(1, T - 1), label="t_change")
    config = TINY.replace(dropout=0.1 if dropout else 0.0)
    params = random_params(config, seed)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, config.vocab_size, size=(B, T))
    idx2 = idx.copy()
    idx2[:, t_change] = (idx[:, t_change] + rng.integers(1, config.vocab_size, size=B)) % config.vocab_size

    def make_rng():
        return np.random.default_rng(seed + 1) if dropout else None

    logits1 = gpt_forward(config, params, idx, rng=make_rng())[0]
    logits2 = gpt_forward(config, params, idx2, rng=make_rng())[0]
    np.testing.assert_allclose(logits1[:, :t_change], logits2[:, :t_change], rtol=0, atol=1e-12)
    assert not np.allclose(logits1[:, t_change], logits2[:, t_change])


@given(seed=SEEDS, B=st.integers(2, 4), T=st.integers(1, 5))
def test_batch_independence(seed, B, T):
    """A sequence's logits are the same alone or in a batch, and permuting the batch permutes the
    logits (float64, 1e-12): no layer mixes the batch."""
    params = random_params(TINY, seed)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, TINY.vocab_size, size=(B, T))
    logits = gpt_forward(TINY, params, idx)[0]
    for b in range(B):
        alone = gpt_forward(TINY, params, idx[b : b + 1])[0]
        np.testing.assert_allclose(alone[0], logits[b], rtol=1e-12, atol=1e-12)
    perm = rng.permutation(B)
    np.testing.assert_allclose(gpt_forward(TINY, params, idx[perm])[0], logits[perm], rtol=1e-12, atol=1e-12)


@settings(max_examples=10)
@given(seed=SEEDS)
def test_initial_loss_near_log_vocab(seed):
    """With GPT-2's init the logits are nearly uniform, so the initial loss is ln V within 0.1
    (V = 65, tiny Shakespeare's alphabet)."""
    config = GPTConfig(vocab_size=65, block_size=32, n_layer=2, n_head=4, n_embd=64)
    params = init_params(config, seed=seed, dtype=np.float64)
    idx, targets = random_batch(config, seed, 4, 32, ignore=False)
    _, loss, _ = gpt_forward(config, params, idx, targets)
    assert abs(loss - math.log(65)) < 0.1


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_seeded_determinism(dtype):
    """The same inputs, parameters and dropout seed give bitwise identical logits, loss and
    gradients; another dropout seed gives different logits (dropout is really on)."""
    config = TINY.replace(dropout=0.1)
    params = random_params(config, 9, dtype)
    idx, targets = random_batch(config, 10, 3, 5)
    runs = []
    for _ in range(2):
        logits, loss, cache = gpt_forward(config, params, idx, targets, rng=np.random.default_rng(42))
        runs.append((logits, loss, gpt_backward(cache)))
    (l1, loss1, g1), (l2, loss2, g2) = runs
    np.testing.assert_array_equal(l1, l2)
    assert loss1 == loss2
    for name in g1:
        np.testing.assert_array_equal(g1[name], g2[name], err_msg=name)
    l3 = gpt_forward(config, params, idx, targets, rng=np.random.default_rng(43))[0]
    assert not np.array_equal(l1, l3)


def test_evaluation_mode_ignores_dropout():
    """With rng=None a model configured with dropout computes exactly the dropout-free model."""
    params = random_params(TINY, 11)
    idx, _ = random_batch(TINY, 12, 2, 5)
    with_dropout = gpt_forward(TINY.replace(dropout=0.5), params, idx, rng=None)[0]
    np.testing.assert_array_equal(with_dropout, gpt_forward(TINY, params, idx)[0])


def test_overfit_one_batch():
    """A tiny model trained with plain Adam (implemented here) on one fixed batch memorizes it:
    the loss falls from ~ln V to below 0.05. The first tokens of the rows are distinct, so every
    context (a prefix) is unique and zero loss is reachable."""
    config = GPTConfig(vocab_size=8, block_size=8, n_layer=2, n_head=2, n_embd=16)
    params = init_params(config, seed=0, dtype=np.float64)
    rng = np.random.default_rng(0)
    B, T = 4, 8
    data = rng.integers(0, config.vocab_size, size=(B, T + 1))
    data[:, 0] = rng.permutation(config.vocab_size)[:B]
    idx, targets = data[:, :-1], data[:, 1:]
    lr, beta1, beta2, eps = 1e-2, 0.9, 0.999, 1e-8
    m = {n: np.zeros_like(p) for n, p in params.items()}
    v = {n: np.zeros_like(p) for n, p in params.items()}
    losses = []
    for step in range(1, 301):
        _, loss, cache = gpt_forward(config, params, idx, targets)
        losses.append(loss)
        for name, g in gpt_backward(cache).items():
            m[name] = beta1 * m[name] + (1 - beta1) * g
            v[name] = beta2 * v[name] + (1 - beta2) * g * g
            m_hat, v_hat = m[name] / (1 - beta1**step), v[name] / (1 - beta2**step)
            params[name] -= lr * m_hat / (np.sqrt(v_hat) + eps)
    assert losses[0] == pytest.approx(math.log(config.vocab_size), abs=0.1)
    final = gpt_forward(config, params, idx, targets)[1]
    assert final < 0.05, f"loss after 300 Adam steps: {final:.4f} (first {losses[0]:.3f})"


@given(seed=SEEDS, B=st.integers(1, 3), T=st.integers(1, 5))
def test_ignore_index(seed, B, T):
    """Targets of -1 contribute nothing: the loss equals the mean cross-entropy over the valid
    positions only (computed from the logits), and does not depend on the logits at the ignored
    positions; all targets ignored gives loss 0 and all-zero gradients."""
    params = random_params(TINY, seed)
    idx, targets = random_batch(TINY, seed, B, T)
    logits, loss, _ = gpt_forward(TINY, params, idx, targets)
    valid = targets != IGNORE_INDEX
    if valid.any():
        logp = logits - logits.max(-1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
        expected = -logp[valid, targets[valid]].mean()
        assert loss == pytest.approx(expected, rel=1e-12)
        subset_loss, _ = cross_entropy_forward(logits[valid][None], targets[valid][None])
        assert loss == pytest.approx(subset_loss, rel=1e-12)
    else:
        assert loss == 0.0
    all_ignored = np.full_like(targets, IGNORE_INDEX)
    _, loss0, cache0 = gpt_forward(TINY, params, idx, all_ignored)
    assert loss0 == 0.0
    for name, g in gpt_backward(cache0).items():
        assert (g == 0).all(), name


# ----------------------------------------------------------------------------------------------
# bad input


GOOD_IDX = np.array([[0, 1, 2], [3, 4, 5]])
BAD_INPUTS = [
    ("negative id", np.array([[0, -1, 2]]), None, "id -1 is out of range [0, 7)"),
    ("id == V", np.array([[0, 7, 2]]), None, "id 7 is out of range [0, 7)"),
    ("id > V", np.array([[100, 1, 2]]), None, "id 100 is out of range"),
    ("float ids", np.array([[0.0, 1.0, 2.0]]), None, "must be integers"),
    ("bool ids", np.array([[True, False]]), None, "must be integers"),
    ("1-d ids", np.array([0, 1, 2]), None, "must have shape (B, T)"),
    ("3-d ids", np.zeros((1, 2, 3), dtype=int), None, "must have shape (B, T)"),
    ("T > block_size", np.zeros((1, 6), dtype=int), None, "T=6 must be in [1, block_size=5]"),
    ("T == 0", np.zeros((1, 0), dtype=int), None, "T=0"),
    ("targets shape", GOOD_IDX, np.zeros((2, 2), dtype=int), "targets shape (2, 2)"),
    ("targets == V", GOOD_IDX, np.array([[0, 1, 2], [3, 4, 7]]), "targets must be integers in [0, 7)"),
    ("targets < -1", GOOD_IDX, np.array([[0, 1, 2], [3, 4, -2]]), "targets must be integers in [0, 7)"),
    ("float targets", GOOD_IDX, np.zeros((2, 3)), "targets must be integers"),
]


@pytest.mark.parametrize("idx, targets, message", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input(idx, targets, message):
    """Invalid token ids or targets raise InputError (a ValueError) whose message says what is
    wrong, before any computation."""
    params = init_params(TINY, 0, np.float64)
    with pytest.raises(InputError) as info:
        gpt_forward(TINY, params, idx, targets)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_backward_without_targets():
    """gpt_backward after a forward without targets raises InputError asking for targets."""
    params = init_params(TINY, 0, np.float64)
    _, loss, cache = gpt_forward(TINY, params, GOOD_IDX)
    assert loss is None
    with pytest.raises(InputError, match="needs a loss.*targets"):
        gpt_backward(cache)


def test_kv_cache_forward_refuses_targets():
    """The KV cache is for inference: asking for a loss with it is a clear error, not a crash in
    gpt_backward later."""
    from minigpt.generate import KVCache

    cfg = GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=1, n_embd=4)
    params = init_params(cfg)
    idx = np.zeros((1, 2), dtype=np.int64)
    with pytest.raises(InputError, match="inference only"):
        gpt_forward(cfg, params, idx, idx, kv=KVCache(cfg, 1, np.float32))
