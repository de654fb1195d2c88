"""Structured pruning (minigpt.compress.structured) and the per-layer GPTConfig it needs: removed
heads and neurons give the masked model's logits on both backends; the smaller model saves,
loads, trains and samples; old configs and checkpoints read unchanged; the `minigpt prune`
command end to end."""

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigpt import GPTConfig, InputError, backend, init_params
from minigpt.checkpoint import load_checkpoint, save_checkpoint
from minigpt.cli import main
from minigpt.compress import structured
from minigpt.generate import generate
from minigpt.gradcheck import check_gradients
from minigpt.model import gpt_backward, gpt_forward, param_shapes
from minigpt.tokenizer import CharTokenizer

CONFIG = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=4, n_embd=16, bias=True)


@pytest.mark.parametrize("backend_name", ["numpy", "numba"])
@given(kind=st.sampled_from(structured.KINDS), data=st.data())
def test_removed_units_give_the_masked_models_logits(backend_name, kind, data):
    params = init_params(CONFIG, seed=0, dtype=np.float64)
    for name in params:  # nonzero biases, so a removed neuron's bias matters
        if name.endswith(".bias"):
            params[name] = np.random.default_rng(1).normal(0, 0.1, params[name].shape)
    n = 4 if kind == "heads" else 64
    drop = {
        i: sorted(data.draw(st.sets(st.integers(0, n - 1), max_size=n - 1))) for i in range(CONFIG.n_layer)
    }
    idx = np.random.default_rng(2).integers(0, 11, (2, 8))
    with backend.use_backend(backend_name):
        small_config, small = structured.remove_units(CONFIG, params, kind, drop)
        removed = gpt_forward(small_config, small, idx)[0]
        masked = gpt_forward(CONFIG, structured.mask_units(CONFIG, params, kind, drop), idx)[0]
    np.testing.assert_allclose(removed, masked, rtol=0, atol=1e-12)
    counts = [
        small_config.layer_heads(i) if kind == "heads" else small_config.layer_mlp_width(i) for i in range(2)
    ]
    assert counts == [n - len(drop[i]) for i in range(2)]
    assert sum(a.size for a in small.values()) < sum(a.size for a in params.values()) or not any(
        drop.values()
    )


def test_pruned_model_saves_loads_trains_and_samples(tmp_path):
    params = init_params(CONFIG, seed=0, dtype=np.float64)
    config, small = structured.remove_units(CONFIG, params, "heads", {0: [1, 2], 1: [0]})
    config, small = structured.remove_units(config, small, "neurons", {0: [3], 1: list(range(10))})
    assert config.head_counts == (2, 3) and config.mlp_widths == (63, 54)
    assert {n: a.shape for n, a in small.items()} == param_shapes(config)
    path = tmp_path / "s.safetensors"
    save_checkpoint(path, config, small, CharTokenizer(list("abcdefghijk")))
    ck = load_checkpoint(path)
    assert ck.config == config and all(np.array_equal(ck.params[n], small[n]) for n in small)
    # trains: the hand-written backward matches finite differences at the new shapes
    idx = np.random.default_rng(0).integers(0, 11, (2, 5))
    tgt = np.random.default_rng(1).integers(0, 11, (2, 5))
    grads = gpt_backward(gpt_forward(config, small, idx, tgt)[2])
    names = ["h.0.attn.c_attn.weight", "h.0.attn.c_proj.weight", "h.1.mlp.c_proj.weight", "h.1.mlp.c_fc.bias"]
    check_gradients(lambda: gpt_forward(config, small, idx, tgt)[1], {n: small[n] for n in names}, grads)
    # samples, with and without the KV cache, on both backends
    for name in ("numpy", "numba"):
        with backend.use_backend(name):
            a = list(generate(config, small, [1, 2], 6, seed=0))
            b = list(generate(config, small, [1, 2], 6, seed=0, use_cache=False))
        assert a == b and len(a) == 6


def test_old_configs_read_unchanged():
    c = GPTConfig()
    assert "head_counts" not in c.to_dict() and "mlp_widths" not in c.to_dict()  # dense checkpoints as before
    assert c.uniform and c.layer_heads(3) == 4 and c.layer_mlp_width(0) == 512
    d = GPTConfig(n_layer=2, head_counts=[1, 4], mlp_widths=[5, 7]).to_dict()
    assert d["head_counts"] == [1, 4] and GPTConfig.from_dict(d) == GPTConfig(
        n_layer=2, head_counts=(1, 4), mlp_widths=(5, 7)
    )


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(n_layer=2, head_counts=[1]), "head_counts must be a list of 2"),
        (dict(n_layer=2, mlp_widths=[4, 0]), "mlp_widths must hold positive integers"),
        (dict(n_layer=1, head_counts="4"), "head_counts must be a list"),
    ],
)
def test_bad_per_layer_fields(fields, message):
    with pytest.raises(InputError, match=message):
        GPTConfig(**fields)


def test_norm_ranking_and_counts():
    params = init_params(CONFIG, seed=0)
    params["h.0.attn.c_proj.weight"][4:8] *= 0.01  # head 1 of layer 0 (hs 4): tiny weights
    params["h.0.attn.c_attn.weight"][:, structured.head_columns(CONFIG, 0, [1])] *= 0.01
    scores = structured.norm_scores(CONFIG, params, "heads")
    drop = structured.select_drop(scores, 0.25)
    assert list(drop[0]) == [1] and len(drop[1]) == 1  # round(0.25 * 4) = 1 per layer
    neuron_drop = structured.select_drop(structured.norm_scores(CONFIG, params, "neurons"), 0.3)
    assert [len(d) for d in neuron_drop.values()] == [round(0.3 * 64)] * 2


def test_loss_ranking_removes_the_least_harmful_head():
    params = init_params(CONFIG, seed=0, dtype=np.float64)
    calib = np.random.default_rng(0).integers(0, 11, (8, 9))
    scores = structured.loss_scores(CONFIG, params, "heads", calib)
    base = structured.calib_loss(CONFIG, params, calib)
    i, u = 1, int(np.argmin(scores[1]))
    masked = structured.calib_loss(CONFIG, structured.mask_units(CONFIG, params, "heads", {i: [u]}), calib)
    assert masked - base == pytest.approx(scores[1][u])
    assert structured.select_drop(scores, 0.25)[1][0] == u


def test_structured_bad_input():
    params = init_params(CONFIG, seed=0)
    with pytest.raises(InputError, match="every unit of layer"):
        structured.select_drop([np.ones(1), np.ones(4)], 0.6)
    with pytest.raises(InputError, match="comparable scores"):
        structured.prune_structured(CONFIG, params, "heads", 0.25, scope="global")
    with pytest.raises(InputError, match="calibration data"):
        structured.prune_structured(CONFIG, params, "heads", 0.25, score="loss")
    with pytest.raises(InputError, match="neurons or heads"):
        structured.prune_structured(CONFIG, params, "layers", 0.25)


# ----------------------------------------------------------------------------------------------
# the command


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("prune")
    text = d / "text.txt"
    text.write_text("".join(np.random.default_rng(0).choice(list("abcde \n"), 4000)), encoding="utf-8")
    config = GPTConfig(vocab_size=7, block_size=16, n_layer=2, n_head=2, n_embd=32, bias=False)
    path = d / "dense.safetensors"
    save_checkpoint(
        path,
        config,
        init_params(config, seed=0),
        CharTokenizer(sorted(set(text.read_text()))),
        {"train_config": {"data": str(text)}},
    )
    return d, text, path


@pytest.mark.parametrize("method", ["magnitude", "nm", "wanda", "heads", "neurons"])
def test_prune_command_writes_a_smaller_checkpoint_that_eval_and_sample_take(model_file, method, capsys):
    d, text, path = model_file
    out = d / f"{method}.safetensors"
    argv = [
        "prune",
        "--ckpt",
        str(path),
        "--out",
        str(out),
        "--method",
        method,
        "--sparsity",
        "0.5",
        "--data",
        str(text),
        "--calib-data",
        str(text),
        "--eval-windows",
        "8",
        "--json",
    ]
    assert main(argv) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["file_bytes_after"] < r["file_bytes_before"] and out.stat().st_size == r["file_bytes_after"]
    assert {"val_loss_before", "val_loss_pruned", "sparsity_total"} <= set(r)
    if method in ("magnitude", "nm", "wanda"):
        assert r["sparsity_pruned_tensors"] == 0.5
        assert r["file_ratio"] <= 0.6
    else:
        assert r["params_after"] < r["params_before"]
    assert main(["eval", "--ckpt", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["val_loss"] > 0
    assert main(["sample", "--ckpt", str(out), "--max-new-tokens", "5", "--prompt", "ab"]) == 0


def test_prune_finetune_keeps_zeros_and_sensitivity_prints_a_table(model_file, capsys):
    d, text, path = model_file
    out = d / "ft.safetensors"
    assert (
        main(
            [
                "prune",
                "--ckpt",
                str(path),
                "--out",
                str(out),
                "--data",
                str(text),
                "--finetune-iters",
                "3",
                "--eval-windows",
                "4",
                "--json",
            ]
        )
        == 0
    )
    r = json.loads(capsys.readouterr().out)
    assert "val_loss_finetuned" in r and r["sparsity_pruned_tensors"] == 0.5
    assert (
        main(
            [
                "prune",
                "sensitivity",
                "--ckpt",
                str(path),
                "--data",
                str(text),
                "--sparsities",
                "0.2",
                "0.8",
                "--tensors",
                "h.0.mlp.c_fc.weight",
                "h.1.attn.c_proj.weight",
                "--eval-windows",
                "4",
                "--json",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    s = json.loads(captured.out)
    assert [(row["tensor"], row["sparsity"]) for row in s["rows"]] == [
        ("h.0.mlp.c_fc.weight", 0.2),
        ("h.0.mlp.c_fc.weight", 0.8),
        ("h.1.attn.c_proj.weight", 0.2),
        ("h.1.attn.c_proj.weight", 0.8),
    ]
    assert "h.0.mlp.c_fc.weight" in captured.err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--sparsity", "1.5"], "sparsity must be in"),
        (["--method", "nm", "--n", "4", "--m", "4"], "1 <= N < M"),
        (["--method", "nm", "--m", "3", "--n", "1"], "not divisible by M=3"),
        (["--tensors", "h.9.mlp.c_fc.weight"], "unknown tensor name"),
        (["--method", "wanda"], "wanda needs calibration data"),
        (["--finetune-iters", "5"], "needs --data"),
        (["--out", ""], "--out is required"),
    ],
)
def test_prune_command_bad_input_exit_2(model_file, extra, message, capsys):
    d, _, path = model_file
    assert main(["prune", "--ckpt", str(path), "--out", str(d / "x.safetensors"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_sensitivity_plot_or_a_clear_message(model_file, tmp_path, monkeypatch, capsys):
    import sys

    d, text, path = model_file
    argv = [
        "prune",
        "sensitivity",
        "--ckpt",
        str(path),
        "--data",
        str(text),
        "--sparsities",
        "0.5",
        "--tensors",
        "h.0.mlp.c_fc.weight",
        "--eval-windows",
        "2",
        "--plot",
        str(tmp_path / "s.png"),
    ]
    try:
        import matplotlib  # noqa: F401

        assert main(argv) == 0 and (tmp_path / "s.png").stat().st_size > 0
    except ImportError:
        pass
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    assert main(argv) == 2
    assert "--plot needs matplotlib" in capsys.readouterr().err


def test_gradual_pruning_resumes_exactly(tmp_path, model_file, capsys):
    """A gradual run stopped midway and resumed ends with exactly the uninterrupted run's weights
    (the masks are rebuilt from the zeros); the flags come from TrainConfig's fields."""
    _, text, _ = model_file
    base = [
        "train",
        "--preset",
        "tiny",
        "--data",
        str(text),
        "--eval-interval",
        "4",
        "--eval-iters",
        "1",
        "--block-size",
        "16",
        "--prune-to",
        "0.5",
        "--prune-start",
        "2",
        "--prune-end",
        "10",
        "--prune-every",
        "2",
    ]
    assert main([*base, "--max-iters", "12", "--out-dir", str(tmp_path / "a")]) == 0
    assert main([*base, "--max-iters", "6", "--out-dir", str(tmp_path / "b")]) == 0
    assert main(["train", "--resume", "--out-dir", str(tmp_path / "b"), "--max-iters", "12"]) == 0
    capsys.readouterr()
    a = load_checkpoint(tmp_path / "a" / "resume.safetensors").params
    b = load_checkpoint(tmp_path / "b" / "resume.safetensors").params
    assert all(np.array_equal(a[n], b[n]) for n in a)
    assert (a["h.0.mlp.c_fc.weight"] == 0).sum() == round(0.5 * a["h.0.mlp.c_fc.weight"].size)
