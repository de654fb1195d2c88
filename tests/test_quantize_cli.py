"""`minigpt quantize`, `minigpt quantize report`, `minigpt train --qat` and `--int8` on eval and
sample: the files they write, their JSON, and their one-line errors (exit status 2)."""

import json

import numpy as np
import pytest

from minigpt import GPTConfig, init_params
from minigpt.checkpoint import load_checkpoint, save_checkpoint
from minigpt.cli import main
from minigpt.tokenizer import CharTokenizer


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A small random float32 model (input dims multiples of 32, for Q8_0/Q4_0) and a text file."""
    d = tmp_path_factory.mktemp("quantize")
    text = d / "text.txt"
    text.write_text("".join(np.random.default_rng(0).choice(list("abcde \n"), 3000)), encoding="utf-8")
    config = GPTConfig(vocab_size=7, block_size=16, n_layer=1, n_head=2, n_embd=32, bias=False)
    tok = CharTokenizer(sorted(set(text.read_text())))
    path = d / "float.safetensors"
    save_checkpoint(path, config, init_params(config, seed=0), tok, {"train_config": {"data": str(text)}})
    return d, path


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("flags", "max_ratio"),
    [(["--bits", "8"], 0.5), (["--bits", "4", "--group-size", "32"], 0.5), (["--method", "gptq", "--bits", "3"], 0.5),
     (["--method", "kmeans", "--bits", "4"], 0.5), (["--method", "q8_0"], 0.5), (["--method", "q4_0"], 0.5),
     (["--bits", "2", "--scheme", "affine", "--override", "h.0.mlp.c_fc.weight=w8", "--clip", "mse"], 0.5)],
)
def test_quantize_writes_a_smaller_checkpoint_that_eval_loads(ckpt, tmp_path, capsys, flags, max_ratio):
    _, path = ckpt
    out = tmp_path / "q.safetensors"
    code, stdout, err = run(["quantize", "--ckpt", str(path), "--out", str(out), *flags, "--eval", "--json",
                             "--calib-batches", "2", "--calib-batch-size", "4"], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    assert result["bytes"] == out.stat().st_size and result["ratio"] < max_ratio  # the model is mostly linears
    assert "wte.weight" in result["float"] and len(result["quantized"]) == 4
    ck = load_checkpoint(out)
    assert set(ck.encoded) == set(result["quantized"])
    if "kmeans" in flags:
        assert 0 < result["huffman_index_bytes"] <= result["packed_index_bytes"] + 16 * 4
    code, stdout, _ = run(["eval", "--ckpt", str(out), "--json"], capsys)
    assert code == 0 and json.loads(stdout)["val_loss"] == pytest.approx(result["val_loss"], rel=1e-6)


def test_eval_and_sample_with_int8(ckpt, tmp_path, capsys):
    _, path = ckpt
    w8 = tmp_path / "w8.safetensors"
    assert main(["quantize", "--ckpt", str(path), "--out", str(w8), "--bits", "8"]) == 0
    capsys.readouterr()
    losses = {}
    for name, extra in (("float", []), ("dynamic", ["--int8"]), ("static", ["--int8", "static"]),
                        ("smooth", ["--int8", "--smooth-alpha", "0.5"])):
        code, stdout, err = run(["eval", "--ckpt", str(w8), "--json", *extra], capsys)
        assert code == 0, err
        losses[name] = json.loads(stdout)["val_loss"]
    for name in ("dynamic", "static", "smooth"):
        assert losses[name] != losses["float"] and abs(losses[name] - losses["float"]) < 0.05
    code, stdout, _ = run(["sample", "--ckpt", str(w8), "--int8", "--max-new-tokens", "5", "--prompt", "ab"], capsys)
    assert code == 0 and stdout.startswith("ab") and len(stdout.rstrip("\n")) == 7


def test_report_prints_the_table_and_json(ckpt, capsys):
    _, path = ckpt
    code, stdout, err = run(["quantize", "report", "--ckpt", str(path), "--bits", "3", "--json", "--val-batches", "1"],
                            capsys)
    assert code == 0
    rep = json.loads(stdout)
    assert len(rep["tensors"]) == 4 and {"mse", "sqnr_db", "cosine", "delta_loss"} <= set(rep["tensors"][0])
    assert "SQNR dB" in err


def test_train_with_qat(ckpt, tmp_path, capsys):
    d, _ = ckpt
    code, stdout, err = run(["train", "--preset", "tiny", "--max-iters", "3", "--eval-interval", "3", "--eval-iters", "1",
                             "--block-size", "16", "--data", str(d / "text.txt"), "--out-dir", str(tmp_path),
                             "--qat", "w4g32", "--json"], capsys)
    assert code == 0, err
    assert load_checkpoint(tmp_path / "ckpt.safetensors").meta["qat"] == "w4g32"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bits", "9"], "bits must be an integer in 2..8"),
        (["--bits", "4", "--group-size", "5"], "group size 5 does not divide"),
        (["--override", "h.0.mlp.c_fc.weight"], "is not NAME=SPEC"),
        (["--override", "h.0.mlp.c_fc.weight=int3"], "not of the form"),
        (["--override", "h.9.mlp.c_fc.weight=w8"], "no such tensor"),
        (["--granularity", "channel", "--group-size", "32"], "--group-size needs --granularity group"),
        (["--calib-batches", "0", "--method", "gptq"], "--calib-batches must be >= 1"),
        (["--method", "q4_0", "--out", "CKPT/y.safetensors"], "cannot write"),  # a file as the directory
    ],
)
def test_bad_quantize_input_is_one_line_and_exit_2(ckpt, tmp_path, capsys, argv, message):
    _, path = ckpt
    argv = ["quantize", "--ckpt", str(path), *(["--out", str(tmp_path / "x.safetensors")] if "--out" not in argv else []),
            *[a.replace("CKPT", str(path)) for a in argv]]
    code, _, err = run(argv, capsys)
    assert code == 2 and message in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["quantize", "--bits", "4"], "--out is required"),
        (["eval", "--smooth-alpha", "0.5"], "--smooth-alpha needs --int8"),
        (["train", "--preset", "tiny", "--qat", "w4x"], "not of the form"),
    ],
)
def test_other_bad_input(ckpt, capsys, argv, message):
    _, path = ckpt
    if argv[0] != "train":
        argv = [*argv, "--ckpt", str(path)]
    code, _, err = run(argv, capsys)
    assert code == 2 and message in err
