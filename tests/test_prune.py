"""Pruning (minigpt.compress.prune): the count rule, the orderings, N:M, Wanda, global ranking,
the gradual schedule, masked training, the storage codecs and every bad input.

Property tests draw float arrays of distinct nonzero values (hypothesis), so ties and
pre-existing zeros do not blur what is counted; the tie-break rule has its own test.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from minigpt import GPTConfig, InputError, init_params
from minigpt.checkpoint import load_checkpoint, save_checkpoint
from minigpt.compress import prune, storage
from minigpt.model import gpt_backward, gpt_forward
from minigpt.optim import AdamW
from minigpt.tokenizer import CharTokenizer

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=32)
sparsity = st.floats(0.0, 0.99)


@st.composite
def distinct_nonzero(draw, max_side=12):
    """A 2-D float32 array of distinct nonzero values."""
    shape = draw(st.tuples(st.integers(1, max_side), st.integers(1, max_side)))
    a = draw(arrays(np.float32, shape, elements=finite.filter(lambda x: x != 0), unique=True))
    return a


# ----------------------------------------------------------------------------------------------
# the count rule and orderings


def test_count_is_round_half_to_even():
    """round(s * n) with Python's round: 2.5 -> 2, 3.5 -> 4, 7.5 -> 8 (torch.nn.utils.prune)."""
    assert prune.n_to_prune(0.25, 10) == 2  # 2.5
    assert prune.n_to_prune(0.5, 7) == 4  # 3.5
    assert prune.n_to_prune(0.75, 10) == 8  # 7.5
    assert prune.n_to_prune(0.5, 5) == 2  # 2.5
    w = np.arange(1, 11, dtype=np.float32)
    assert (prune.mask_from_scores(w, 0.25) == 0).sum() == 2


@given(distinct_nonzero(), sparsity)
def test_exact_count_and_order(w, s):
    """Exactly round(s * n) weights pruned, and no kept |w| below a pruned one."""
    mask = prune.masks_from_scores(prune.magnitude_scores({"w": w}, ["w"]), s)["w"]
    pruned = w * mask
    assert (pruned == 0).sum() == round(s * w.size)
    a = np.abs(w)
    if (~mask).any() and mask.any():
        assert a[~mask].max() <= a[mask].min()


@given(distinct_nonzero(), sparsity, sparsity)
def test_masks_nest(w, s1, s2):
    s1, s2 = sorted((s1, s2))
    m1, m2 = prune.mask_from_scores(np.abs(w), s1), prune.mask_from_scores(np.abs(w), s2)
    assert not (m2 & ~m1).any()  # kept at s2 => kept at s1


@given(distinct_nonzero(), sparsity)
def test_applying_a_mask_twice_changes_nothing(w, s):
    masks = {"w": prune.mask_from_scores(np.abs(w), s)}
    once = prune.apply_masks({"w": w.copy()}, masks)["w"]
    twice = prune.apply_masks({"w": once.copy()}, masks)["w"]
    assert np.array_equal(once, twice)
    # pruning the pruned tensor again at the same sparsity (absolute target) is also a no-op
    assert np.array_equal(once * prune.mask_from_scores(np.abs(once), s), once)


def test_matches_torch_l1_unstructured():
    """The same count and the same weights as torch.nn.utils.prune.L1Unstructured (distinct values)."""
    torch = pytest.importorskip("torch")
    from torch.nn.utils import prune as torch_prune

    rng = np.random.default_rng(0)
    for s in (0.05, 0.25, 0.5, 0.55, 0.9):
        w = rng.normal(size=(7, 10))
        theirs = torch_prune.L1Unstructured(amount=s).compute_mask(torch.tensor(w), torch.ones(w.shape))
        assert np.array_equal(prune.mask_from_scores(np.abs(w), s), theirs.numpy().astype(bool))


def test_ties_prune_the_earlier_entry_first():
    w = np.array([[1.0, 2.0, 1.0], [1.0, 3.0, 0.5]])
    mask = prune.mask_from_scores(np.abs(w), 0.5)  # 3 of 6: 0.5, then the first two 1.0s (flat 0, 2)
    assert mask.tolist() == [[False, True, False], [True, True, False]]


@given(st.lists(distinct_nonzero(6), min_size=1, max_size=4), sparsity)
def test_global_equals_pruning_the_concatenation(ws, s):
    scores = {f"t{i}": np.abs(w) for i, w in enumerate(ws)}
    g = prune.global_masks(scores, s)
    flat = prune.mask_from_scores(np.concatenate([x.ravel() for x in scores.values()]), s)
    assert np.array_equal(np.concatenate([m.ravel() for m in g.values()]), flat)
    assert sum((~m).sum() for m in g.values()) == round(s * sum(x.size for x in scores.values()))


def test_global_reports_an_emptied_tensor():
    params = {"a": np.full((4, 4), 1e-3, np.float32), "b": np.ones((4, 4), np.float32)}
    masks = prune.global_masks(prune.magnitude_scores(params, ["a", "b"]), 0.5)
    prune.apply_masks(params, masks)
    assert prune.report(params, ["a", "b"], {})["emptied_tensors"] == ["a"]


def test_random_baseline_is_seeded_and_counts_exactly():
    params = {"w": np.ones((8, 8), np.float32)}
    a = prune.masks_from_scores(prune.random_scores(params, ["w"], seed=3), 0.3)["w"]
    b = prune.masks_from_scores(prune.random_scores(params, ["w"], seed=3), 0.3)["w"]
    c = prune.masks_from_scores(prune.random_scores(params, ["w"], seed=4), 0.3)["w"]
    assert np.array_equal(a, b) and not np.array_equal(a, c) and (~a).sum() == round(0.3 * 64)


# ----------------------------------------------------------------------------------------------
# N:M


@given(st.data(), st.integers(2, 8))
def test_nm_groups_hold_exactly_n_and_the_top_n(data, m):
    n = data.draw(st.integers(1, m - 1))
    d_in = m * data.draw(st.integers(1, 3))
    w = data.draw(
        arrays(
            np.float32,
            (d_in, data.draw(st.integers(1, 5))),
            elements=finite.filter(lambda x: x != 0),
            unique=True,
        )
    )
    mask = prune.nm_mask(np.abs(w), n, m)
    groups = mask.reshape(d_in // m, m, -1)
    assert (groups.sum(axis=1) == n).all()
    a = np.abs(w).reshape(d_in // m, m, -1)
    kept_min = np.where(groups, a, np.inf).min(axis=1)
    pruned_max = np.where(groups, -np.inf, a).max(axis=1)
    assert (pruned_max <= kept_min).all()


# ----------------------------------------------------------------------------------------------
# Wanda


@given(st.data())
def test_wanda_mask_invariant_to_rescaling_an_input_channel(data):
    """Scaling input channel j's activations by a and W's row j (input j, our (in, out) layout) by
    1/a leaves the scores, so the mask, unchanged. a = 2^k: the scaling is exact in float."""
    d_in, d_out = data.draw(st.integers(2, 8)), data.draw(st.integers(1, 6))
    w = data.draw(arrays(np.float64, (d_in, d_out), elements=finite.filter(lambda x: x != 0), unique=True))
    x = data.draw(arrays(np.float64, (5, d_in), elements=st.floats(-10, 10, allow_subnormal=False)))
    s = data.draw(sparsity)
    k = data.draw(st.lists(st.integers(-6, 6), min_size=d_in, max_size=d_in))
    a = 2.0 ** np.array(k)
    norms = np.sqrt((x**2).sum(axis=0))
    scaled_norms = np.sqrt(((x * a) ** 2).sum(axis=0))
    base = prune.per_output_mask(prune.wanda_scores(w, norms), s)
    assert np.array_equal(prune.per_output_mask(prune.wanda_scores(w / a[:, None], scaled_norms), s), base)
    assert ((~base).sum(axis=0) == round(s * d_in)).all()  # round(s * d_in) per output


def test_wanda_equals_per_output_magnitude_when_all_norms_are_equal():
    w = np.random.default_rng(0).normal(size=(16, 6))
    assert np.array_equal(
        prune.per_output_mask(prune.wanda_scores(w, np.full(16, 3.0)), 0.5),
        prune.per_output_mask(np.abs(w), 0.5),
    )


def test_wanda_on_a_model_counts_per_output_and_uses_activations():
    config = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16)
    params = init_params(config, seed=0, dtype=np.float64)
    calib = np.random.default_rng(0).integers(0, 11, (6, 9))
    masks = prune.prune_params(config, params, "wanda", 0.5, calib=calib)
    for name, mask in masks.items():
        assert ((~mask).sum(axis=0) == round(0.5 * mask.shape[0])).all()
        assert np.array_equal(params[name] == 0, ~mask)
    # not plain per-output magnitude: the activations matter
    fresh = init_params(config, seed=0, dtype=np.float64)
    name = "h.1.mlp.c_proj.weight"
    assert not np.array_equal(masks[name], prune.per_output_mask(np.abs(fresh[name]), 0.5))


# ----------------------------------------------------------------------------------------------
# gradual schedule and masked training


@given(st.floats(0.01, 0.99), st.integers(0, 50), st.integers(1, 100))
def test_cubic_schedule(final, start, length):
    end = start + length
    s = [prune.cubic_sparsity(t, final, start, end) for t in range(end + 5)]
    assert s[start] == 0.0 and s[end] == final and s[-1] == final
    steps = np.diff(s[start : end + 1])
    assert (steps >= -1e-15).all()  # non-decreasing
    assert (np.diff(steps) <= 1e-12).all()  # increments non-increasing (concave)


@given(st.integers(1, 12), st.sampled_from([0.3, 0.5, 0.8]))
def test_pruned_weights_and_adam_moments_stay_exactly_zero(steps, s):
    """Through any number of masked AdamW steps (weight decay on), pruned weights and their m
    and v are exactly 0, and the kept weights do train."""
    config = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8)
    params = init_params(config, seed=1)
    names = prune.prunable_names(config)
    opt = AdamW(params, weight_decay=0.1)
    rng = np.random.default_rng(0)

    def step(hook=None):
        _, _, cache = gpt_forward(config, params, rng.integers(0, 11, (2, 8)), rng.integers(0, 11, (2, 8)))
        grads = gpt_backward(cache)
        if hook:
            hook.mask_grads(grads)
        opt.step(params, grads, 1e-2)
        if hook:
            hook.after_step(1, params, opt)

    for _ in range(2):  # dense steps first: AdamW's moments hold momentum for every weight
        step()
    masks = prune.prune_params(config, params, "magnitude", s, names)
    hook = prune.MaskedTraining(masks)
    before = {n: params[n].copy() for n in names}
    for _ in range(steps):
        step(hook)
    for n in names:
        for a in (params[n], opt.m[n], opt.v[n]):
            assert (a[~masks[n]] == 0).all()
        assert not np.array_equal(params[n][masks[n]], before[n][masks[n]])


def test_gradual_pruning_in_train_reaches_the_target_and_stores_compressed(tmp_path):
    from minigpt.train import CKPT_NAME, RESUME_NAME, TrainConfig, train

    text = tmp_path / "t.txt"
    text.write_text("".join(np.random.default_rng(0).choice(list("abcde \n"), 3000)), encoding="utf-8")
    tc = TrainConfig(
        out_dir=str(tmp_path / "out"),
        data=str(text),
        batch_size=4,
        max_iters=20,
        eval_interval=10,
        eval_iters=1,
        log_interval=10,
        warmup_iters=2,
        lr_decay_iters=20,
        prune_to=0.6,
        prune_start=2,
        prune_end=14,
        prune_every=4,
    )
    train(tc, dict(n_layer=1, n_head=2, n_embd=16, block_size=16), quiet=True)
    state = load_checkpoint(tmp_path / "out" / RESUME_NAME)
    best = load_checkpoint(tmp_path / "out" / CKPT_NAME)
    for name in prune.prunable_names(state.config):
        p = state.params[name]
        assert (p == 0).sum() == round(0.6 * p.size)
        assert (state.optim["m"][name][p == 0] == 0).all() and (state.optim["v"][name][p == 0] == 0).all()
        assert (
            best.encoded[name].codec == "bitmask"
        )  # the best checkpoint is the final-sparsity one, compressed
    assert best.meta["iter"] >= 14


def test_train_keeps_the_zeros_of_a_pruned_checkpoint(tmp_path):
    """`minigpt train --init-from pruned.safetensors` does not let pruned weights come back."""
    from minigpt.train import RESUME_NAME, TrainConfig, train

    text = tmp_path / "t.txt"
    text.write_text("".join(np.random.default_rng(0).choice(list("abcde \n"), 3000)), encoding="utf-8")
    config = GPTConfig(vocab_size=7, block_size=16, n_layer=1, n_head=2, n_embd=16)
    params = init_params(config, seed=0)
    names = prune.prunable_names(config)
    prune.prune_params(config, params, "magnitude", 0.5, names)
    src = tmp_path / "p.safetensors"
    save_checkpoint(
        src, config, params, CharTokenizer(sorted(set(text.read_text()))), {"pruning": {"tensors": names}}
    )
    tc = TrainConfig(
        out_dir=str(tmp_path / "out"),
        data=str(text),
        init_from=str(src),
        batch_size=4,
        max_iters=6,
        eval_interval=6,
        eval_iters=1,
        log_interval=6,
    )
    train(tc, {}, quiet=True)
    tuned = load_checkpoint(tmp_path / "out" / RESUME_NAME).params
    for n in names:
        assert np.array_equal(tuned[n] == 0, params[n] == 0)


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(prune_to=1.0), "prune_to must be a sparsity"),
        (dict(prune_to=0.5, prune_start=5, prune_end=5), "prune_start < prune_end"),
        (dict(prune_to=0.5, prune_start=-1, prune_end=5), "prune_start must be an integer >= 0"),
        (dict(prune_to=0.5, prune_end=5, prune_every=0), "prune_every must be"),
    ],
)
def test_bad_gradual_settings(fields, message):
    from minigpt.train import TrainConfig

    with pytest.raises(InputError, match=message):
        TrainConfig(**fields)


# ----------------------------------------------------------------------------------------------
# storage


@given(arrays(np.float32, st.tuples(st.integers(1, 9), st.integers(1, 9)), elements=finite), sparsity)
def test_bitmask_codec_round_trips_exactly(w, s):
    w = w * prune.mask_from_scores(np.abs(w), s)
    enc = storage.encode(w, "bitmask")
    back = storage.decode(enc)
    assert back.dtype == w.dtype and back.shape == w.shape and np.array_equal(back, w)


@given(
    st.data(), st.sampled_from([(2, 4), (1, 4), (4, 8), (1, 2)]), st.sampled_from([np.float32, np.float64])
)
def test_nm_codec_round_trips_exactly(data, nm, dtype):
    n, m = nm
    w = data.draw(
        arrays(dtype, (m * data.draw(st.integers(1, 4)), data.draw(st.integers(1, 5))), elements=finite)
    )
    w = w * prune.nm_mask(np.abs(w), n, m)  # at most n nonzeros per group (fewer where w had zeros)
    enc = storage.encode(w, "nm", n=n, m=m)
    assert np.array_equal(storage.decode(enc), w) and storage.decode(enc).dtype == w.dtype
    bits = int(np.ceil(np.log2(m)))
    assert enc.parts["values"].nbytes == w.nbytes * n // m
    assert enc.parts["index"].nbytes == -(-w.size * n // m * bits // 8)


def test_nm_codec_refuses_a_tensor_that_is_not_nm():
    with pytest.raises(ValueError, match="not 2:4 sparse"):
        storage.encode(np.ones((4, 2), np.float32), "nm", n=2, m=4)


def test_pruned_checkpoint_is_smaller_and_loads_back_identical(tmp_path):
    config = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=32, bias=False)
    params = init_params(config, seed=0)
    tok = CharTokenizer(list("abcdefghijk"))
    dense_path, nm_path = tmp_path / "d.safetensors", tmp_path / "nm.safetensors"
    save_checkpoint(dense_path, config, params, tok)
    names = prune.prunable_names(config)
    prune.prune_params(config, params, "nm", names=names)
    enc = prune.encode_sparse(params, names, nm=(2, 4))
    save_checkpoint(nm_path, config, params, tok, encoded=enc)
    ck = load_checkpoint(nm_path)
    assert all(np.array_equal(ck.params[n], params[n]) for n in params)
    assert nm_path.stat().st_size <= 0.6 * dense_path.stat().st_size


# ----------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda p, c: prune.prune_params(c, p, "magnitude", 1.0), r"sparsity must be in \[0, 1\)"),
        (lambda p, c: prune.prune_params(c, p, "magnitude", -0.1), r"sparsity must be in \[0, 1\)"),
        (lambda p, c: prune.prune_params(c, p, "nm", n=4, m=4), "1 <= N < M"),
        (lambda p, c: prune.prune_params(c, p, "nm", n=2, m=5), "not divisible by M=5"),
        (
            lambda p, c: prune.prune_params(c, p, "magnitude", 0.5, names=["h.0.attn.c_atn.weight"]),
            "unknown tensor name",
        ),
        (lambda p, c: prune.prune_params(c, p, "wanda", 0.5), "wanda needs calibration data"),
        (
            lambda p, c: prune.prune_params(
                c, p, "wanda", 0.5, names=["wte.weight"], calib=np.zeros((1, 9), int)
            ),
            "linear weights",
        ),
        (
            lambda p, c: prune.prune_params(c, p, "magnitude", 0.5, scope="layer"),
            "scope must be tensor or global",
        ),
        (lambda p, c: prune.prune_params(c, p, "svd", 0.5), "unknown method"),
        (
            lambda p, c: prune.prune_params(c, p, "wanda", 0.5, scope="global", calib=np.zeros((1, 9), int)),
            "scope global does not apply",
        ),
    ],
)
def test_bad_input_is_a_clear_error(call, message):
    config = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16)
    with pytest.raises(InputError, match=message):
        call(init_params(config, seed=0), config)


def test_gradual_masks_change_only_every_dt_and_only_grow():
    """Masks are recomputed after updates start + k * dt (and at end), to round(s_t * n) zeros,
    each mask a subset of the one before; in between they stay as they are."""
    from types import SimpleNamespace

    rng = np.random.default_rng(0)
    params = {"w": rng.normal(size=(16, 8)).astype(np.float32)}
    opt = SimpleNamespace(m={"w": np.ones((16, 8), np.float32)}, v={"w": np.ones((16, 8), np.float32)})
    g = prune.GradualPruning(params, ["w"], 0.8, start=2, end=13, every=4)
    previous, changed = g.masks["w"].copy(), []
    for t in range(1, 20):
        params["w"] += rng.normal(size=(16, 8)).astype(np.float32) * 0.01  # training moves the kept weights
        g.after_step(t, params, opt)
        mask = g.masks["w"]
        if not np.array_equal(mask, previous):
            changed.append(t)
        assert not (mask & ~previous).any()  # only grows
        last = max([u for u in (6, 10, 13) if u <= t], default=None)
        expected = 0 if last is None else round(prune.cubic_sparsity(last, 0.8, 2, 13) * 128)
        assert (params["w"] == 0).sum() == expected and (opt.m["w"] == 0).sum() == expected
        previous = mask.copy()
    assert changed == [6, 10, 13]
    assert not g.ready(12) and g.ready(13)
