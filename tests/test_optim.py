"""AdamW against a reference written here from torch.optim.AdamW's documented algorithm (and
against torch itself when it is installed), global-norm clipping with torch's semantics, and
nanoGPT's warmup + cosine learning-rate schedule."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigpt.optim import AdamW, clip_grad_norm, get_lr

LRS = [1e-3, 3e-3, 5e-4, 0.0, 2e-2, 1e-3, 7e-4]  # varying, including a zero step


def make_params(seed=0, dtype=np.float64):
    """Tensors of 1, 2 and 3 dimensions (only ndim >= 2 is weight-decayed)."""
    rng = np.random.default_rng(seed)
    return {
        "w": rng.standard_normal((4, 6)).astype(dtype),
        "b": rng.standard_normal(6).astype(dtype),
        "t3": rng.standard_normal((2, 3, 5)).astype(dtype),
        "ln": (1.0 + 0.1 * rng.standard_normal(4)).astype(dtype),
    }


def make_grads(params, rng, dtype=np.float64):
    return {
        n: (rng.standard_normal(p.shape) * rng.uniform(0.01, 3.0)).astype(dtype) for n, p in params.items()
    }


def reference_adamw(params, grad_seq, lrs, beta1, beta2, eps, weight_decay):
    """torch.optim.AdamW's documented algorithm, written out step by step on copies:
    theta <- theta - lr * lambda * theta       (only tensors with ndim >= 2 here)
    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
    m_hat = m / (1 - b1^t);  v_hat = v / (1 - b2^t)
    theta <- theta - lr * m_hat / (sqrt(v_hat) + eps)"""
    p = {n: a.astype(np.float64).copy() for n, a in params.items()}
    m = {n: np.zeros_like(a) for n, a in p.items()}
    v = {n: np.zeros_like(a) for n, a in p.items()}
    for t, (grads, lr) in enumerate(zip(grad_seq, lrs), start=1):
        for n in p:  # noqa: PLC0206 -- p[n] is rebound inside the loop
            g = grads[n].astype(np.float64)
            if p[n].ndim >= 2:
                p[n] = p[n] - lr * weight_decay * p[n]
            m[n] = beta1 * m[n] + (1 - beta1) * g
            v[n] = beta2 * v[n] + (1 - beta2) * g**2
            m_hat = m[n] / (1 - beta1**t)
            v_hat = v[n] / (1 - beta2**t)
            p[n] = p[n] - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p, m, v


HYPERS = [
    {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01},  # the defaults
    {"beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1},  # nanoGPT's
    {"beta1": 0.8, "beta2": 0.99, "eps": 1e-6, "weight_decay": 0.0},
]


@pytest.mark.parametrize("hyper", HYPERS, ids=["defaults", "nanogpt", "no_decay"])
def test_adamw_matches_reference(hyper):
    """Seven steps with varying lr in float64 agree with the reference to 1e-12 (params and both
    moments), and the step count is kept."""
    params = make_params()
    rng = np.random.default_rng(1)
    grad_seq = [make_grads(params, rng) for _ in LRS]
    ref_p, ref_m, ref_v = reference_adamw(params, grad_seq, LRS, **hyper)
    opt = AdamW(params, **hyper)
    for grads, lr in zip(grad_seq, LRS):
        opt.step(params, grads, lr)
    assert opt.t == len(LRS)
    for n in params:
        np.testing.assert_allclose(params[n], ref_p[n], rtol=1e-12, atol=1e-15, err_msg=n)
        np.testing.assert_allclose(opt.m[n], ref_m[n], rtol=1e-12, atol=1e-15, err_msg=n)
        np.testing.assert_allclose(opt.v[n], ref_v[n], rtol=1e-12, atol=1e-15, err_msg=n)


def test_adamw_default_hyperparameters():
    """The defaults are torch.optim.AdamW's: betas (0.9, 0.999), eps 1e-8, weight_decay 0.01."""
    opt = AdamW(make_params())
    assert (opt.beta1, opt.beta2, opt.eps, opt.weight_decay) == (0.9, 0.999, 1e-8, 0.01)


def test_adamw_first_step_exact():
    """Step 1 by hand: m_hat = g and v_hat = g^2, so an undecayed parameter moves by exactly
    -lr * g / (|g| + eps)."""
    p = {"b": np.array([1.0, -2.0, 0.5])}
    g = {"b": np.array([0.3, -4.0, 0.0])}
    opt = AdamW(p, weight_decay=0.5)
    opt.step(p, g, lr=0.1)
    expected = np.array([1.0, -2.0, 0.5]) - 0.1 * g["b"] / (np.abs(g["b"]) + 1e-8)
    np.testing.assert_allclose(p["b"], expected, rtol=1e-15, atol=0)


def test_weight_decay_only_on_matrices():
    """With zero gradients the Adam part is 0/(0+eps) = 0, so after one step a 1-D tensor is
    bitwise unchanged while 2-D and 3-D tensors are exactly scaled by (1 - lr*wd)."""
    params = make_params()
    before = {n: p.copy() for n, p in params.items()}
    lr, wd = 0.05, 0.1
    opt = AdamW(params, weight_decay=wd)
    opt.step(params, {n: np.zeros_like(p) for n, p in params.items()}, lr)
    for n in ("b", "ln"):
        np.testing.assert_array_equal(params[n], before[n])
    for n in ("w", "t3"):
        np.testing.assert_array_equal(params[n], before[n] * (1.0 - lr * wd))
        assert not np.array_equal(params[n], before[n])


def test_no_weight_decay_when_zero():
    """weight_decay=0 leaves a matrix with zero gradient unchanged."""
    params = make_params()
    before = params["w"].copy()
    AdamW(params, weight_decay=0.0).step(params, {n: np.zeros_like(p) for n, p in params.items()}, 0.1)
    np.testing.assert_array_equal(params["w"], before)


def test_updates_in_place():
    """step updates the caller's arrays in place (the same objects, nothing rebound)."""
    params = make_params()
    ids = {n: id(p) for n, p in params.items()}
    before = {n: p.copy() for n, p in params.items()}
    opt = AdamW(params)
    opt.step(params, make_grads(params, np.random.default_rng(0)), 1e-2)
    for n, p in params.items():
        assert id(p) == ids[n]
        assert not np.array_equal(p, before[n])


def test_float32_stays_float32():
    """float32 params, grads and moments stay float32, and track the float64 reference to float32
    precision."""
    params = make_params(dtype=np.float32)
    rng = np.random.default_rng(3)
    grad_seq = [make_grads(params, rng, np.float32) for _ in LRS]
    ref_p, _, _ = reference_adamw(params, grad_seq, LRS, **HYPERS[1])
    opt = AdamW(params, **HYPERS[1])
    for grads, lr in zip(grad_seq, LRS):
        opt.step(params, grads, lr)
    for n, p in params.items():
        assert p.dtype == np.float32 and opt.m[n].dtype == np.float32 and opt.v[n].dtype == np.float32
        np.testing.assert_allclose(p, ref_p[n], rtol=1e-6, atol=0, err_msg=n)  # measured: <= 3e-7


def test_adamw_matches_torch():
    """Five steps with varying lr in float64 agree with torch.optim.AdamW (decay group for
    ndim >= 2, no-decay group otherwise, as nanoGPT) to 1e-12."""
    torch = pytest.importorskip("torch")
    hyper = HYPERS[1]
    params = make_params()
    rng = np.random.default_rng(7)
    grad_seq = [make_grads(params, rng) for _ in range(5)]
    lrs = LRS[:5]
    tparams = {n: torch.tensor(p.copy(), dtype=torch.float64, requires_grad=True) for n, p in params.items()}
    topt = torch.optim.AdamW(
        [
            {
                "params": [t for n, t in tparams.items() if t.dim() >= 2],
                "weight_decay": hyper["weight_decay"],
            },
            {"params": [t for n, t in tparams.items() if t.dim() < 2], "weight_decay": 0.0},
        ],
        lr=lrs[0],
        betas=(hyper["beta1"], hyper["beta2"]),
        eps=hyper["eps"],
        foreach=False,
    )
    opt = AdamW(params, **hyper)
    for grads, lr in zip(grad_seq, lrs):
        for n, t in tparams.items():
            t.grad = torch.tensor(grads[n], dtype=torch.float64)
        for group in topt.param_groups:
            group["lr"] = lr
        topt.step()
        opt.step(params, grads, lr)
    for n, t in tparams.items():
        np.testing.assert_allclose(params[n], t.detach().numpy(), rtol=1e-12, atol=1e-15, err_msg=n)


# ------------------------------------------------------------------------------------------------
# clip_grad_norm


def grads_with_norm(norm, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    g = {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(5), "c": rng.standard_normal((2, 2, 2))}
    total = math.sqrt(sum(float(np.sum(x * x)) for x in g.values()))
    return {n: (x * (norm / total)).astype(dtype) for n, x in g.items()}


def global_norm_of(grads):
    return math.sqrt(math.fsum(float(v) ** 2 for g in grads.values() for v in g.ravel()))


@pytest.mark.parametrize("norm, max_norm", [(10.0, 1.0), (1.5, 1.0), (1e4, 0.5), (3.0, 2.9)])
def test_clip_scales_to_max_norm(norm, max_norm):
    """When the norm exceeds max_norm: returns the pre-clip norm, every gradient is scaled by
    exactly max_norm / (norm + 1e-6), and the new global norm is max_norm to 1e-6 relative."""
    grads = grads_with_norm(norm)
    before = {n: g.copy() for n, g in grads.items()}
    returned = clip_grad_norm(grads, max_norm)
    assert returned == pytest.approx(global_norm_of(before), rel=1e-14)
    coef = max_norm / (returned + 1e-6)
    for n, g in grads.items():
        np.testing.assert_array_equal(g, before[n] * coef)
    assert global_norm_of(grads) == pytest.approx(max_norm, rel=1e-6)


@pytest.mark.parametrize("max_norm", [1.0, 0.0, -1.0])
def test_clip_leaves_small_or_disabled_untouched(max_norm):
    """A norm below max_norm, or max_norm <= 0 (clipping off, even for a huge norm), leaves the
    gradients bitwise unchanged and still returns the norm."""
    norm = 0.5 if max_norm > 0 else 1e6
    grads = grads_with_norm(norm)
    before = {n: g.copy() for n, g in grads.items()}
    returned = clip_grad_norm(grads, max_norm)
    assert returned == pytest.approx(norm, rel=1e-14)
    for n, g in grads.items():
        np.testing.assert_array_equal(g, before[n])


def test_clip_boundary_follows_torch():
    """torch scales whenever max_norm / (norm + 1e-6) < 1, so a norm exactly at max_norm is
    still scaled by max_norm / (max_norm + 1e-6); a norm of max_norm - 2e-6 is not."""
    grads = {"g": np.array([3.0, 4.0])}  # norm 5
    assert clip_grad_norm(grads, 5.0) == 5.0
    np.testing.assert_array_equal(grads["g"], np.array([3.0, 4.0]) * (5.0 / (5.0 + 1e-6)))
    grads = {"g": np.array([0.0, 5.0 - 2e-6])}
    clip_grad_norm(grads, 5.0)
    np.testing.assert_array_equal(grads["g"], [0.0, 5.0 - 2e-6])


def test_clip_float32_accumulates_in_float64():
    """float32 gradients whose squares overflow float32 still give the right (finite) norm, and
    clipping keeps them float32."""
    grads = {"a": np.full(3, 3e20, dtype=np.float32), "b": np.full(1, 4e20 * math.sqrt(3), dtype=np.float32)}
    norm = clip_grad_norm(grads, 1.0)
    assert norm == pytest.approx(math.sqrt(3 * 9e40 + 3 * 16e40), rel=1e-6)
    assert all(g.dtype == np.float32 for g in grads.values())
    assert global_norm_of(grads) == pytest.approx(1.0, rel=1e-6)


def test_clip_zero_gradients():
    """All-zero gradients have norm 0 and stay zero."""
    grads = {"a": np.zeros((2, 3))}
    assert clip_grad_norm(grads, 1.0) == 0.0
    np.testing.assert_array_equal(grads["a"], 0.0)


def test_clip_matches_torch():
    """Same returned norm and clipped gradients as torch.nn.utils.clip_grad_norm_ (float64)."""
    torch = pytest.importorskip("torch")
    for norm, max_norm in [(10.0, 1.0), (0.3, 1.0), (5.0, 5.0)]:
        grads = grads_with_norm(norm, seed=4)
        tensors = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads.values()]
        for t, g in zip(tensors, grads.values()):
            t.grad = torch.tensor(g.copy())
        tnorm = torch.nn.utils.clip_grad_norm_(tensors, max_norm)
        returned = clip_grad_norm(grads, max_norm)
        assert returned == pytest.approx(float(tnorm), rel=1e-14)
        for t, g in zip(tensors, grads.values()):
            np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-14, atol=0)


# ------------------------------------------------------------------------------------------------
# get_lr

BABY = {"learning_rate": 1e-3, "warmup_iters": 100, "lr_decay_iters": 2000, "min_lr": 1e-4}


def test_schedule_landmarks():
    """it=0 gives lr/(warmup+1); it=warmup gives learning_rate; it=lr_decay_iters gives min_lr;
    later iterations hold min_lr."""
    assert get_lr(0, **BABY) == pytest.approx(1e-3 / 101, rel=1e-15)
    assert get_lr(99, **BABY) == pytest.approx(1e-3 * 100 / 101, rel=1e-15)
    assert get_lr(100, **BABY) == pytest.approx(1e-3, rel=1e-15)
    assert get_lr(2000, **BABY) == pytest.approx(1e-4, rel=1e-15)
    for it in (2001, 2500, 10**6):
        assert get_lr(it, **BABY) == 1e-4


def test_schedule_hard_coded_values():
    """The baby recipe at the cosine midpoint (it=1050) is (1e-3 + 1e-4) / 2 = 5.5e-4, and at a
    quarter of the decay (it=575) it is 1e-4 + 9e-4 * (2 + sqrt 2) / 4 = 8.681980515339464e-4."""
    assert get_lr(1050, **BABY) == pytest.approx(5.5e-4, rel=1e-14)
    assert get_lr(575, **BABY) == pytest.approx(8.681980515339464e-4, rel=1e-14)
    assert get_lr(50, **BABY) == pytest.approx(51e-3 / 101, rel=1e-15)


def test_no_warmup():
    """warmup_iters=0 starts at learning_rate; warmup == decay iters does not divide by zero."""
    assert get_lr(0, 1e-3, 0, 100, 1e-5) == pytest.approx(1e-3, rel=1e-15)
    assert get_lr(10, 1e-3, 10, 10, 1e-5) == pytest.approx(1e-3, rel=1e-15)
    assert get_lr(11, 1e-3, 10, 10, 1e-5) == 1e-5


@given(st.integers(0, 3000), st.integers(0, 3000))
def test_schedule_shape(a, b):
    """Warmup strictly increases; from warmup on the schedule is non-increasing and stays within
    [min_lr, learning_rate]."""
    a, b = min(a, b), max(a, b)
    la, lb = get_lr(a, **BABY), get_lr(b, **BABY)
    if b < BABY["warmup_iters"] and a < b:
        assert la < lb
    if a >= BABY["warmup_iters"]:
        assert lb <= la
        assert BABY["min_lr"] <= lb <= la <= BABY["learning_rate"] * (1 + 1e-15)
    if a < BABY["warmup_iters"] <= b:
        assert la < BABY["learning_rate"]


@given(st.floats(1e-5, 1.0), st.integers(0, 50), st.integers(0, 500), st.floats(0.0, 1.0), st.data())
def test_schedule_matches_nanogpt_formula(learning_rate, warmup, extra, min_frac, data):
    """For any settings with warmup < decay iters, each value equals nanoGPT's formula."""
    decay = warmup + 1 + extra
    min_lr = learning_rate * min_frac
    it = data.draw(st.integers(0, decay + 20))
    if it < warmup:
        expected = learning_rate * (it + 1) / (warmup + 1)
    elif it > decay:
        expected = min_lr
    else:
        ratio = (it - warmup) / (decay - warmup)
        expected = min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)
    assert get_lr(it, learning_rate, warmup, decay, min_lr) == pytest.approx(expected, rel=1e-14, abs=1e-300)
