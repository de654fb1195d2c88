"""minigpt.compress.distill: the losses' properties and hand-written gradients, the student's
initialization from the teacher, the objective inside train.py's loop, and `minigpt distill`."""

import json
import math

import numpy as np
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from minigpt import backend
from minigpt.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from minigpt.cli import main
from minigpt.compress.distill import (
    DIVERGENCES,
    PROJ_NAME,
    DistillConfig,
    DistillObjective,
    attention_kl_backward,
    attention_kl_forward,
    distill_loss_backward,
    distill_loss_forward,
    hidden_loss_backward,
    hidden_loss_forward,
    init_student,
    parse_layer_map,
    soft_loss_backward,
    soft_loss_forward,
)
from minigpt.config import GPTConfig
from minigpt.errors import InputError
from minigpt.gradcheck import check_gradients, numerical_gradient
from minigpt.layers import cross_entropy_backward, cross_entropy_forward
from minigpt.layers.attention import masked_softmax
from minigpt.model import gpt_backward, gpt_forward, init_params
from minigpt.tokenizer import CharTokenizer


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


shapes = st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(2, 7))  # (B, T, V)
temperatures = st.floats(0.3, 5.0)
finite = st.floats(-8, 8, allow_nan=False, allow_infinity=False)


@st.composite
def logits_pair(draw, with_targets=True):
    B, T, V = draw(shapes)
    s = draw(arrays(np.float64, (B, T, V), elements=finite))
    t = draw(arrays(np.float64, (B, T, V), elements=finite))
    targets = draw(arrays(np.int64, (B, T), elements=st.integers(-1, V - 1))) if with_targets else None
    return s, t, targets


# ----------------------------------------------------------------------------------------------
# soft losses: properties


@given(logits_pair(), temperatures, st.sampled_from(DIVERGENCES))
def test_divergence_is_non_negative_and_zero_exactly_for_equal_distributions(pair, T, divergence):
    s, t, targets = pair
    loss, _ = soft_loss_forward(s, t, T, targets, divergence)
    assert loss >= 0.0
    same, cache = soft_loss_forward(t.copy(), t, T, targets, divergence)
    assert same == 0.0
    assert not np.any(soft_loss_backward(cache))  # and no gradient at all


@given(logits_pair(), temperatures, st.sampled_from(DIVERGENCES), st.floats(-50, 50), st.booleans())
def test_adding_a_constant_to_a_row_changes_nothing(pair, T, divergence, c, to_student):
    s, t, targets = pair
    loss, cache = soft_loss_forward(s, t, T, targets, divergence)
    s2, t2 = (s.copy(), t) if to_student else (s, t.copy())
    (s2 if to_student else t2)[0, 0] += c  # one row of logits
    loss2, cache2 = soft_loss_forward(s2, t2, T, targets, divergence)
    assert loss2 == pytest.approx(loss, rel=1e-9, abs=1e-12)
    np.testing.assert_allclose(soft_loss_backward(cache2), soft_loss_backward(cache), rtol=1e-8, atol=1e-12)


@given(logits_pair(), temperatures)
def test_alpha_zero_gives_exactly_the_cross_entropy_and_its_gradients(pair, T):
    s, t, targets = pair
    loss, parts, cache = distill_loss_forward(s, t, targets, alpha=0.0, temperature=T)
    ce, ce_cache = cross_entropy_forward(s, targets)
    assert loss == ce == parts["ce_loss"]
    np.testing.assert_array_equal(distill_loss_backward(cache, 0.5), cross_entropy_backward(ce_cache, 0.5))


@given(logits_pair(), temperatures)
def test_soft_gradient_is_T_times_q_minus_p_over_N(pair, T):
    """Hinton's equation 2 times T^2: T (softmax(s/T) - softmax(t/T)), averaged over the N kept
    positions (and 0 at ignored ones)."""
    s, t, targets = pair
    _, _, cache = distill_loss_forward(s, t, targets, alpha=1.0, temperature=T)
    keep = targets != -1
    expected = T * (softmax(s / T) - softmax(t / T)) * keep[..., None] / max(keep.sum(), 1)
    np.testing.assert_allclose(distill_loss_backward(cache), expected, rtol=1e-10, atol=1e-15)


@given(logits_pair(with_targets=False), temperatures)
def test_kl_value_is_T_squared_times_the_mean_kl(pair, T):
    s, t, _ = pair
    p, q = softmax(t / T), softmax(s / T)
    expected = T * T * np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=-1))
    assert soft_loss_forward(s, t, T)[0] == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("divergence", DIVERGENCES)
@given(pair=logits_pair(), T=temperatures, alpha=st.floats(0, 1))
@example(pair=(np.array([[[1.0, 1.0]]]), np.array([[[0.0, 0.0]]]), np.array([[0]])), T=1.0, alpha=1.0)  # zero gradient
def test_distillation_loss_gradient_matches_finite_differences(divergence, pair, T, alpha):
    s, t, targets = pair
    _, _, cache = distill_loss_forward(s, t, targets, alpha, T, divergence)
    ds = distill_loss_backward(cache)

    def f():
        return distill_loss_forward(s, t, targets, alpha, T, divergence)[0]

    if np.max(np.abs(ds)) == 0.0:
        # an exactly zero gradient (e.g. equal student and teacher rows with alpha = 1): central
        # differences can only give round-off there, about eps * |f| / h ~ 1e-11, so a relative
        # error is meaningless; require the numerical gradient to be at that floor instead
        assert np.max(np.abs(numerical_gradient(f, s))) <= 1e-9
        return
    check_gradients(f, {"s": s}, {"s": ds})


def test_js_is_bounded_by_T_squared_ln2():
    s = np.array([[[30.0, -30.0]]])
    t = np.array([[[-30.0, 30.0]]])
    loss, _ = soft_loss_forward(s, t, 1.0, divergence="js")
    assert loss == pytest.approx(math.log(2), rel=1e-9)


# ----------------------------------------------------------------------------------------------
# hidden-state and attention losses


@pytest.mark.parametrize("kind", ["mse", "cosine"])
@given(data=st.data(), project=st.booleans())
def test_hidden_loss_gradients_match_finite_differences(kind, data, project):
    B, T = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3))
    Cs, Ct = data.draw(st.integers(2, 5)), data.draw(st.integers(2, 5))
    Cs = Cs if project else Ct
    el = st.integers(-30, 30).map(lambda k: k / 10 + 0.013)  # no denormal-sized values (invisible to differences)
    hs = data.draw(arrays(np.float64, (B, T, Cs), elements=el))
    ht = data.draw(arrays(np.float64, (B, T, Ct), elements=el))
    proj = data.draw(arrays(np.float64, (Cs, Ct), elements=st.floats(-1, 1))) + np.eye(Cs, Ct) if project else None
    a = hs if proj is None else hs @ proj
    assume(np.abs(a - ht).min() > 0.05)  # at the exact minimum the gradient is 0: nothing to compare
    if kind == "cosine":
        # away from a norm clamped at eps (a kink) and from cos = +-1, where the true gradient is
        # 0 and the normwise relative error would measure finite-difference noise only
        a = hs if proj is None else hs @ proj
        na, nb = np.linalg.norm(a, axis=-1), np.linalg.norm(ht, axis=-1)
        assume(na.min() > 0.3 and nb.min() > 0.3)
        assume(np.abs(np.sum(a * ht, -1) / (na * nb)).max() < 0.99)
    targets = data.draw(arrays(np.int64, (B, T), elements=st.integers(-1, 3)))
    _, cache = hidden_loss_forward(kind, hs, ht, proj, targets)
    dhs, dproj = hidden_loss_backward(cache, 0.7)
    inputs, analytic = {"h_student": hs}, {"h_student": dhs}
    if project:
        inputs["proj"], analytic["proj"] = proj, dproj
    check_gradients(lambda: 0.7 * hidden_loss_forward(kind, hs, ht, proj, targets)[0], inputs, analytic)


def test_hidden_mse_and_cosine_values():
    rng = np.random.default_rng(0)
    hs, ht = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 3, 4))
    assert hidden_loss_forward("mse", hs, ht)[0] == pytest.approx(np.mean((hs - ht) ** 2), rel=1e-12)
    cos = np.sum(hs * ht, -1) / np.linalg.norm(hs, axis=-1) / np.linalg.norm(ht, axis=-1)
    assert hidden_loss_forward("cosine", hs, ht)[0] == pytest.approx(np.mean(1 - cos), rel=1e-12)
    assert hidden_loss_forward("cosine", 3.0 * ht, ht)[0] == pytest.approx(0.0, abs=1e-15)  # scale-free


@given(data=st.data())
def test_attention_kl_gradient_at_the_scores_matches_finite_differences(data):
    B, NH, T = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)), data.draw(st.integers(1, 4))
    el = st.floats(-3, 3, allow_nan=False)
    scores = data.draw(arrays(np.float64, (B, NH, T, T), elements=el))
    att_t = masked_softmax(data.draw(arrays(np.float64, (B, NH, T, T), elements=el)), np.tri(T, dtype=bool))
    targets = data.draw(arrays(np.int64, (B, T), elements=st.integers(-1, 2)))

    def f():
        return attention_kl_forward(masked_softmax(scores, np.tri(T, dtype=bool)), att_t, targets)[0]

    loss, cache = attention_kl_forward(masked_softmax(scores, np.tri(T, dtype=bool)), att_t, targets)
    assert loss >= 0.0
    analytic = attention_kl_backward(cache) * np.tri(T)  # the masked scores are not free variables
    numeric = numerical_gradient(f, scores) * np.tri(T)
    np.testing.assert_allclose(analytic, numeric, atol=1e-9)


# ----------------------------------------------------------------------------------------------
# PyTorch cross-check of the definitions


def test_losses_match_pytorch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(1)
    s, t = rng.normal(size=(2, 3, 5)) * 2, rng.normal(size=(2, 3, 5)) * 2
    targets = np.array([[0, -1, 4], [2, 3, -1]])
    T, keep = 1.7, targets != -1
    ls, lt = F.log_softmax(torch.tensor(s[keep]) / T, -1), F.log_softmax(torch.tensor(t[keep]) / T, -1)
    kl = T * T * F.kl_div(ls, lt, log_target=True, reduction="batchmean")
    assert soft_loss_forward(s, t, T, targets)[0] == pytest.approx(kl.item(), rel=1e-12)
    rkl = T * T * F.kl_div(lt, ls, log_target=True, reduction="batchmean")
    assert soft_loss_forward(s, t, T, targets, "reverse_kl")[0] == pytest.approx(rkl.item(), rel=1e-12)
    hs, ht, w = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 3, 6)), rng.normal(size=(4, 6))
    a = torch.tensor(hs[keep]) @ torch.tensor(w)
    mse = F.mse_loss(a, torch.tensor(ht[keep]))
    assert hidden_loss_forward("mse", hs, ht, w, targets)[0] == pytest.approx(mse.item(), rel=1e-12)
    cos = F.cosine_embedding_loss(a, torch.tensor(ht[keep]), torch.ones(int(keep.sum()), dtype=torch.float64))
    assert hidden_loss_forward("cosine", hs, ht, w, targets)[0] == pytest.approx(cos.item(), rel=1e-12)


# ----------------------------------------------------------------------------------------------
# the whole objective: gradients through the student, student initialization


TEACHER_CFG = GPTConfig(vocab_size=7, block_size=5, n_layer=3, n_head=2, n_embd=8, bias=True)
CHARS = list("abcdefg")


def noisy_params(config, seed):
    params = init_params(config, seed, np.float64)
    rng = np.random.default_rng(seed + 100)
    return {n: p + rng.normal(0, 0.3, p.shape) for n, p in params.items()}


@pytest.fixture(scope="module")
def toy_teacher():
    return Checkpoint(TEACHER_CFG, noisy_params(TEACHER_CFG, 1), CharTokenizer(CHARS))


@pytest.mark.parametrize("hidden, divergence, backend_name",
                         [("mse", "kl", "numba"), ("cosine", "reverse_kl", "numpy"), ("mse", "js", "numpy")])
def test_objective_gradients_through_the_student_match_finite_differences(toy_teacher, hidden, divergence,
                                                                          backend_name):
    """Soft loss + cross-entropy + hidden loss through the learned projection + attention-map KL
    (including block 0, whose input is the embeddings' output), all at once; on both backends
    (numba's small-array calls are slow, so it gets one case)."""
    with backend.use_backend(backend_name):
        check_objective_gradients(toy_teacher, hidden, divergence)


def check_objective_gradients(toy_teacher, hidden, divergence):
    student = GPTConfig(vocab_size=7, block_size=5, n_layer=2, n_head=2, n_embd=6, bias=True)
    dc = DistillConfig(teacher="unused", alpha=0.3, temperature=1.7, divergence=divergence, hidden_loss=hidden,
                       hidden_weight=0.7, attention_weight=0.5, layer_map="0:1,1:2,0:0", student_init="random")
    obj = DistillObjective(toy_teacher, dc)
    obj.prepare(student, toy_teacher.tokenizer, 0, np.float64)
    params = noisy_params(student, 2)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 7, (2, 5)), rng.integers(0, 7, (2, 5))
    y[0, 1] = -1
    _, grads, logs = obj.loss_and_grads(student, params, x, y, None, 1.0)
    assert set(logs) == {"soft_loss", "ce_loss", "hidden_loss", "attention_loss"}
    # a subset keeps the test fast: every path is in it (block 0's attention and ln_1 receive the
    # attention-map gradient, wte and wpe the embeddings' share, the projection its own)
    names = ["wte.weight", "wpe.weight", "h.0.ln_1.weight", "h.0.ln_1.bias", "h.0.attn.c_attn.weight",
             "h.0.mlp.c_proj.bias", "h.1.attn.c_attn.bias", "h.1.mlp.c_fc.bias", "ln_f.weight"]
    check_gradients(lambda: obj.loss_and_grads(student, params, x, y, None, 1.0)[0],
                    {**{n: params[n] for n in names}, PROJ_NAME: obj.extra[PROJ_NAME]}, grads)


def test_gpt_backward_with_dlogits_equals_the_cross_entropy_path():
    params = noisy_params(TEACHER_CFG, 3)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 7, (2, 5)), rng.integers(-1, 7, (2, 5))
    _, _, cache = gpt_forward(TEACHER_CFG, params, x, y)
    expected = gpt_backward(cache, dloss=0.5)
    got = gpt_backward(cache, dlogits=cross_entropy_backward(cache[-1], 0.5))
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])


def test_student_built_from_all_teacher_blocks_is_the_teacher(toy_teacher):
    """Same width and heads, every block: an exact copy, so zero distillation loss and zero
    soft-loss gradient."""
    params = init_student(TEACHER_CFG, toy_teacher.params, TEACHER_CFG, "0,1,2", dtype=np.float64)
    for name, p in toy_teacher.params.items():
        np.testing.assert_array_equal(params[name], p)
    dc = DistillConfig(teacher="unused", alpha=1.0, temperature=2.0)
    obj = DistillObjective(toy_teacher, dc)
    obj.prepare(TEACHER_CFG, toy_teacher.tokenizer, 0, np.float64)
    x = np.random.default_rng(0).integers(0, 7, (2, 5))
    t_logits, _, _ = gpt_forward(TEACHER_CFG, toy_teacher.params, x)
    s_logits, _, _ = gpt_forward(TEACHER_CFG, params, x)
    loss, _, cache = distill_loss_forward(s_logits, t_logits, None, 1.0, 2.0)
    assert loss == 0.0 and not np.any(distill_loss_backward(cache))


def test_every_other_and_narrow_initialization(toy_teacher):
    half = TEACHER_CFG.replace(n_layer=2)
    params = init_student(TEACHER_CFG, toy_teacher.params, half, "every-other", dtype=np.float64)
    for name in ("ln_1.weight", "attn.c_attn.weight", "mlp.c_proj.weight"):
        np.testing.assert_array_equal(params[f"h.1.{name}"], toy_teacher.params[f"h.2.{name}"])  # blocks 0 and 2
    narrow = TEACHER_CFG.replace(n_layer=2, n_embd=4, n_head=1)  # head size 4, as the teacher's
    p = init_student(TEACHER_CFG, toy_teacher.params, narrow, "2,0", dtype=np.float64)
    assert p["wte.weight"].shape == (7, 4) and p["h.0.mlp.c_fc.weight"].shape == (4, 16)
    # kept entries are the teacher's: each student column of wte is one of the teacher's columns
    for col in p["wte.weight"].T:
        assert any(np.array_equal(col, c) for c in toy_teacher.params["wte.weight"].T)
    assert gpt_forward(narrow, p, np.zeros((1, 5), dtype=np.int64))[0].shape == (1, 5, 7)
    random = init_student(TEACHER_CFG, toy_teacher.params, half, "random", seed=5, dtype=np.float64)
    np.testing.assert_array_equal(random["wte.weight"], init_params(half, 5, np.float64)["wte.weight"])


# ----------------------------------------------------------------------------------------------
# bad inputs


@pytest.mark.parametrize("bad, message", [
    (dict(temperature=0.0), "temperature must be a number > 0"),
    (dict(temperature=-1.0), "temperature must be a number > 0"),
    (dict(alpha=1.5), "alpha must be in [0, 1]"),
    (dict(alpha=-0.1), "alpha must be in [0, 1]"),
    (dict(divergence="l2"), "divergence must be one of"),
    (dict(hidden_loss="l1"), "hidden_loss must be one of"),
    (dict(teacher=None), "needs a teacher"),
])
def test_bad_distill_settings(bad, message):
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        DistillConfig(**{"teacher": "t.safetensors", **bad})


def test_bad_layer_maps_and_inits():
    with pytest.raises(InputError, match="student layer 2, which does not exist"):
        parse_layer_map("0:1,2:3", 2, 4)
    with pytest.raises(InputError, match="teacher layer 4, which does not exist"):
        parse_layer_map("0:4", 2, 4)
    with pytest.raises(InputError, match="must look like"):
        parse_layer_map("0-1", 2, 4)
    with pytest.raises(InputError, match="teacher layer 5, which does not exist"):
        init_student(TEACHER_CFG, noisy_params(TEACHER_CFG, 1), TEACHER_CFG.replace(n_layer=2), "0,5")
    with pytest.raises(InputError, match="at least 5 layers"):
        init_student(TEACHER_CFG, noisy_params(TEACHER_CFG, 1), TEACHER_CFG, "every-other")
    with pytest.raises(InputError, match="vocabularies must be the same"):
        soft_loss_forward(np.zeros((1, 1, 3)), np.zeros((1, 1, 4)), 1.0)


# ----------------------------------------------------------------------------------------------
# the command: distill a tiny teacher, files, resume, bad inputs


@pytest.fixture(scope="module")
def cli_teacher(tmp_path_factory):
    d = tmp_path_factory.mktemp("distill")
    text = d / "text.txt"
    text.write_text("".join(np.random.default_rng(0).choice(list("abcdefg \n"), 3000)), encoding="utf-8")
    assert main(["train", "--preset", "tiny", "--max-iters", "30", "--eval-interval", "30", "--eval-iters", "1",
                 "--block-size", "16", "--n-layer", "2", "--data", str(text), "--out-dir", str(d / "teacher"),
                 "--dtype", "float64"]) == 0
    return d, text, d / "teacher" / "ckpt.safetensors"


def distill_argv(d, text, teacher, out, *extra):
    return ["distill", "--teacher", str(teacher), "--data", str(text), "--out-dir", str(d / out), "--preset", "tiny",
            "--n-layer", "1", "--n-embd", "16", "--n-head", "1", "--student-init", "1", "--max-iters", "4",
            "--eval-interval", "2", "--eval-iters", "1", "--log-interval", "1", "--dtype", "float64", *extra]


def test_distill_command_writes_an_ordinary_checkpoint(cli_teacher, capsys):
    d, text, teacher = cli_teacher
    code = main(distill_argv(d, text, teacher, "s1", "--hidden-loss", "mse", "--json"))
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out)
    assert summary["iter"] == 4 and math.isfinite(summary["best_val_loss"])
    ck = load_checkpoint(summary["ckpt"])  # ordinary: no projection inside
    assert ck.config.n_layer == 1 and ck.config.n_embd == 16 and PROJ_NAME not in ck.params
    assert main(["eval", "--ckpt", summary["ckpt"], "--json"]) == 0
    logs = [json.loads(x) for x in (d / "s1" / "metrics.jsonl").read_text().splitlines()]
    assert all(k in logs[1] for k in ("soft_loss", "ce_loss", "hidden_loss"))
    assert ck.meta["distill"]["hidden_loss"] == "mse"


def test_distill_resume_is_exact_including_the_projection(cli_teacher, capsys):
    d, text, teacher = cli_teacher
    assert main(distill_argv(d, text, teacher, "full", "--hidden-loss", "mse")) == 0
    assert main(distill_argv(d, text, teacher, "part", "--hidden-loss", "mse", "--max-iters", "2")) == 0
    assert main(["distill", "--resume", "--out-dir", str(d / "part"), "--max-iters", "4"]) == 0
    capsys.readouterr()

    def losses(name):
        return [(r["iter"], r.get("loss"), r.get("val_loss"))
                for r in map(json.loads, (d / name / "metrics.jsonl").read_text().splitlines())]

    assert losses("part") == losses("full")
    a, b = load_checkpoint(d / "full" / "resume.safetensors"), load_checkpoint(d / "part" / "resume.safetensors")
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])


@pytest.mark.parametrize("extra, message", [
    (["--temperature", "0"], "temperature must be a number > 0"),
    (["--alpha", "2"], "alpha must be in [0, 1]"),
    (["--vocab-size", "12"], "teacher and student vocabularies differ"),
    (["--hidden-loss", "mse", "--layer-map", "0:5"], "teacher layer 5, which does not exist"),
    (["--hidden-loss", "cosine", "--layer-map", "3:0"], "student layer 3, which does not exist"),
    (["--student-init", "0,1,2"], "lists 3 teacher blocks for a student of 1 layers"),
    (["--student-preset", "tiny"], "student block_size 32 exceeds the teacher's 16"),  # tiny's context is 32
    (["--hidden-loss", "l2"], "hidden_loss must be one of"),
])
def test_distill_bad_input_is_one_line_and_exit_2(cli_teacher, capsys, extra, message):
    d, text, teacher = cli_teacher
    code = main(distill_argv(d, text, teacher, "bad", *extra))
    _, err = capsys.readouterr()
    assert code == 2
    assert err.count("\n") == 1 and message in err, err


def test_distill_student_with_other_characters_or_text(cli_teacher, tmp_path, capsys):
    d, text, teacher = cli_teacher
    ck = load_checkpoint(teacher)
    other = tmp_path / "other.safetensors"
    chars = list(ck.tokenizer.chars)
    chars[0], chars[1] = chars[1], chars[0]  # same size, other ids: not the teacher's vocabulary
    save_checkpoint(other, ck.config, ck.params, CharTokenizer(chars), ck.meta)
    argv = distill_argv(d, text, teacher, "bad2")
    argv = argv[: argv.index("--n-layer")] + ["--init-from", str(other), "--dtype", "float64"]
    code = main(argv)
    _, err = capsys.readouterr()
    assert code == 2 and "teacher and student vocabularies differ" in err and err.count("\n") == 1, err
    new_text = tmp_path / "new.txt"
    new_text.write_text("abc XYZ", encoding="utf-8")  # characters the teacher never saw
    code = main(distill_argv(d, new_text, teacher, "bad3"))
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and "X" in err, err


def test_a_structurally_pruned_teacher_teaches_a_uniform_student(toy_teacher):
    """A teacher with heads removed (per-layer head counts): the default student config drops the
    per-layer sizes (the student is uniform), initializing from its blocks is a clear error, and a
    randomly initialized student trains against it."""
    from minigpt.compress.distill import student_config_fields
    from minigpt.compress.structured import prune_structured

    config, params, _ = prune_structured(toy_teacher.config, toy_teacher.params, "heads", 0.5)
    assert config.head_counts is not None
    fields = student_config_fields(config, None, {})
    assert "head_counts" not in fields and "mlp_widths" not in fields
    student = GPTConfig(**fields)
    with pytest.raises(InputError, match="structurally pruned.*--student-init random"):
        init_student(config, params, student, "every-other")
    teacher = Checkpoint(config, params, toy_teacher.tokenizer)
    objective = DistillObjective(teacher, DistillConfig(teacher="unused", student_init="random"))
    objective.prepare(student, toy_teacher.tokenizer, 0, np.dtype(np.float64))
    s_params = init_student(config, params, student, "random", seed=0, dtype=np.float64)
    x = np.array([[1, 2, 3, 4]])
    loss, grads, _ = objective.loss_and_grads(student, s_params, x, x, None, 1.0)
    assert np.isfinite(loss) and set(grads) == set(s_params)
    with_attention = DistillObjective(teacher, DistillConfig(teacher="unused", student_init="random", attention_weight=1.0))
    with pytest.raises(InputError, match="had heads removed"):
        with_attention.prepare(student, toy_teacher.tokenizer, 0, np.dtype(np.float64))
