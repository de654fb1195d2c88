"""The training loop: it learns, logs the documented records, resumes exactly, and never loses
the last good checkpoint."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from minigpt import InputError
from minigpt.checkpoint import load_checkpoint, save_checkpoint
from minigpt.data import split
from minigpt.evaluate import estimate_loss
from minigpt.train import (
    CKPT_NAME,
    METRICS_NAME,
    RESUME_NAME,
    STREAM_EVAL,
    TrainConfig,
    TrainingError,
    preset,
    step_rng,
    train,
)

ROOT = Path(__file__).resolve().parent.parent
MODEL = dict(n_layer=2, n_head=2, n_embd=16, block_size=16, dropout=0.1)


@pytest.fixture
def text_file(tmp_path):
    """A few KB of text with some structure to learn."""
    rng = np.random.default_rng(0)
    words = ["the ", "cat ", "sat ", "on ", "a ", "mat.\n", "dog ", "ran "]
    path = tmp_path / "text.txt"
    path.write_text("".join(rng.choice(words, 1500)), encoding="utf-8")
    return path


def config(tmp_path, text_file, **overrides):
    base = dict(out_dir=str(tmp_path / "out"), data=str(text_file), dtype="float64", batch_size=4,
                max_iters=12, eval_interval=4, eval_iters=2, log_interval=1, warmup_iters=2,
                lr_decay_iters=12, learning_rate=3e-3, min_lr=3e-4, gradient_accumulation_steps=2)  # fmt: skip
    base.update(overrides)
    return TrainConfig(**base)


def records(out_dir):
    return [json.loads(line) for line in (Path(out_dir) / METRICS_NAME).read_text().splitlines()]


def test_training_learns_and_writes_documented_files(tmp_path, text_file):
    """The loss falls, and out_dir holds the best-val checkpoint, the resume state and
    metrics.jsonl whose eval and log records carry the documented keys."""
    tc = config(tmp_path, text_file, max_iters=40, eval_interval=20, gradient_accumulation_steps=1,
                learning_rate=1e-2, min_lr=1e-3, lr_decay_iters=40)  # fmt: skip
    summary = train(tc, MODEL, quiet=True)
    recs = records(tc.out_dir)
    evals = [r for r in recs if "val_loss" in r]
    logs = [r for r in recs if "loss" in r]
    assert [r["iter"] for r in evals] == [0, 20, 40]
    assert [r["iter"] for r in logs] == list(range(40))
    for r in evals:
        assert {"iter", "train_loss", "val_loss"} <= set(r)
    for r in logs:
        assert {"iter", "loss", "lr", "ms_per_iter", "tokens_per_s"} <= set(r)
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.5
    ck = load_checkpoint(Path(tc.out_dir) / CKPT_NAME)
    assert ck.meta["val_loss"] == summary["best_val_loss"] == min(r["val_loss"] for r in evals)
    assert ck.config.n_layer == 2 and ck.config.vocab_size == ck.tokenizer.vocab_size
    state = load_checkpoint(Path(tc.out_dir) / RESUME_NAME)
    assert state.meta["step"] == 40 and state.optim


def test_resume_gives_exactly_the_uninterrupted_losses(tmp_path, text_file):
    """Stopped at step 7 (between evaluations, with dropout and gradient accumulation on) and
    resumed to step 12, a float64 run logs exactly the losses of an uninterrupted run and ends
    with bitwise identical parameters and optimizer state."""
    full = config(tmp_path / "a", text_file)
    train(full, MODEL, quiet=True)
    part = config(tmp_path / "b", text_file, max_iters=7)
    train(part, MODEL, quiet=True)
    resumed = config(tmp_path / "b", text_file, resume=True)
    train(resumed, {}, quiet=True)
    def strip(recs):  # timings differ between runs; everything else must not
        return [{k: v for k, v in r.items() if k not in ("ms_per_iter", "tokens_per_s")} for r in recs]

    resumed_recs, full_recs = strip(records(part.out_dir)), strip(records(full.out_dir))
    # the stopped run also evaluated at its own last step (7); every other record is identical
    assert [r for r in resumed_recs if not ("val_loss" in r and r["iter"] == 7)] == full_recs
    assert [r["iter"] for r in resumed_recs if "val_loss" in r] == [0, 4, 7, 8, 12]
    a = load_checkpoint(Path(full.out_dir) / RESUME_NAME)
    b = load_checkpoint(Path(part.out_dir) / RESUME_NAME)
    for name in a.params:
        assert np.array_equal(a.params[name], b.params[name]), name
        assert np.array_equal(a.optim["m"][name], b.optim["m"][name]), name
        assert np.array_equal(a.optim["v"][name], b.optim["v"][name]), name
    assert a.meta["optim_t"] == b.meta["optim_t"] == 12


def test_same_seed_same_run_different_seed_different_run(tmp_path, text_file):
    train(config(tmp_path / "a", text_file, max_iters=3), MODEL, quiet=True)
    train(config(tmp_path / "b", text_file, max_iters=3), MODEL, quiet=True)
    train(config(tmp_path / "c", text_file, max_iters=3, seed=7), MODEL, quiet=True)
    losses = {d: [r["loss"] for r in records(tmp_path / d / "out") if "loss" in r] for d in "abc"}
    assert losses["a"] == losses["b"] != losses["c"]


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, text_file, monkeypatch):
    """A nan gradient at step 6 stops the run with TrainingError before any update or save:
    the best checkpoint and the resume state written at step 4 are untouched."""
    tc = config(tmp_path, text_file, max_iters=12)
    import minigpt.train as train_module

    real_backward = train_module.gpt_backward
    calls = {"n": 0}

    def poisoned(cache, dloss=1.0):
        calls["n"] += 1
        grads = real_backward(cache, dloss)
        if calls["n"] > 6 * tc.gradient_accumulation_steps:  # step 6 onwards
            grads["wte.weight"][0, 0] = np.nan
        return grads

    monkeypatch.setattr(train_module, "gpt_backward", poisoned)
    before = {}

    real_save = train_module.save_checkpoint

    def spy_save(path, *a, **k):
        real_save(path, *a, **k)
        before[Path(path).name] = sha(path)

    monkeypatch.setattr(train_module, "save_checkpoint", spy_save)
    with pytest.raises(TrainingError, match=r"iter 6.*last good checkpoint \(from iter 4\) is intact"):
        train(tc, MODEL, quiet=True)
    state = load_checkpoint(Path(tc.out_dir) / RESUME_NAME)
    assert state.meta["step"] == 4
    assert all(np.isfinite(p).all() for p in state.params.values())
    for name, digest in before.items():
        assert sha(Path(tc.out_dir) / name) == digest


def test_non_finite_weights_are_not_saved(tmp_path, text_file):
    """Starting from weights holding a nan, the first evaluation stops the run before saving."""
    good = config(tmp_path / "good", text_file, max_iters=1)
    train(good, MODEL, quiet=True)
    ck = load_checkpoint(Path(good.out_dir) / CKPT_NAME)
    ck.params["ln_f.weight"][0] = np.nan
    bad_path = tmp_path / "nan.safetensors"
    save_checkpoint(bad_path, ck.config, ck.params, ck.tokenizer, ck.meta)
    tc = config(tmp_path / "ft", text_file, init_from=str(bad_path))
    with pytest.raises(TrainingError, match="nan"):
        train(tc, {}, quiet=True)
    assert not (Path(tc.out_dir) / CKPT_NAME).exists()
    assert not (Path(tc.out_dir) / RESUME_NAME).exists()


def test_init_from_fine_tunes_and_checks_the_config(tmp_path, text_file):
    """--init-from starts from the checkpoint's weights (its first evaluation matches the
    checkpoint's own loss on the same data) with a fresh optimizer; a conflicting model field
    or text with characters the checkpoint does not know is a clear error."""
    base = config(tmp_path / "base", text_file, max_iters=8)
    train(base, MODEL, quiet=True)
    ck_path = Path(base.out_dir) / RESUME_NAME
    ft = config(tmp_path / "ft", text_file, max_iters=2, init_from=str(ck_path))
    train(ft, {"dropout": 0.0}, quiet=True)
    first = records(ft.out_dir)[0]
    ck = load_checkpoint(ck_path)
    train_ids, val_ids = split(ck.tokenizer.encode(text_file.read_text(encoding="utf-8")), ck.config.block_size)
    rng = step_rng(ft.seed, 0, STREAM_EVAL)  # an evaluation estimates the train loss first, then val
    args = (ft.batch_size, ck.config.block_size, ft.eval_iters, rng)
    assert first["train_loss"] == estimate_loss(ck.config, ck.params, train_ids, *args)
    expected = estimate_loss(ck.config, ck.params, val_ids, *args)
    assert first["val_loss"] == expected  # the checkpoint's weights, evaluated on the same batches
    with pytest.raises(InputError, match="n_layer=3 does not fit"):
        train(config(tmp_path / "x", text_file, init_from=str(ck_path)), {"n_layer": 3}, quiet=True)
    other = tmp_path / "other.txt"
    other.write_text("ZZZ" * 1000, encoding="utf-8")
    with pytest.raises(InputError, match="'Z'"):
        train(config(tmp_path / "y", other, init_from=str(ck_path)), {}, quiet=True)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(batch_size=0), "batch_size"),
        (dict(learning_rate=-1.0), "learning_rate"),
        (dict(beta2=1.0), "beta2"),
        (dict(dtype="float16"), "dtype"),
        (dict(resume=True, init_from="x"), "exclude each other"),
    ],
)
def test_bad_training_settings(tmp_path, text_file, overrides, message):
    with pytest.raises(InputError, match=message):
        config(tmp_path, text_file, **overrides)


def test_bad_data_and_output_dir(tmp_path, text_file):
    short = tmp_path / "short.txt"
    short.write_text("abc" * 10, encoding="utf-8")
    with pytest.raises(InputError, match="too short"):
        train(config(tmp_path, short), MODEL, quiet=True)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot write to output directory"):
        train(config(tmp_path, text_file, out_dir=str(blocker / "sub")), MODEL, quiet=True)
    with pytest.raises(InputError, match="nothing to resume"):
        train(config(tmp_path / "none", text_file, resume=True), {}, quiet=True)


def test_presets_match_the_published_baby_recipe():
    """--preset baby is nanoGPT's CPU Shakespeare recipe, value for value."""
    model, tr = preset("baby")
    assert model == dict(n_layer=4, n_head=4, n_embd=128, block_size=64, bias=False, dropout=0.0)
    expected = dict(batch_size=12, max_iters=2000, learning_rate=1e-3, warmup_iters=100, lr_decay_iters=2000,
                    min_lr=1e-4, beta1=0.9, beta2=0.99, weight_decay=0.1, grad_clip=1.0, eval_interval=250,
                    eval_iters=20)  # fmt: skip
    assert {k: tr[k] for k in expected} == expected
    with pytest.raises(InputError, match="unknown preset"):
        preset("huge")


def test_ctrl_c_saves_and_resume_continues(tmp_path, text_file):
    """SIGINT during `minigpt train` finishes the current step, saves the resume state and exits
    with status 130; `--resume` then continues to max_iters from the saved step."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "minigpt", "train", "--data", str(text_file), "--out-dir", str(out),
           "--preset", "tiny", "--block-size", "16", "--max-iters", "100000", "--lr-decay-iters", "100",
           "--eval-interval", "1000", "--log-interval", "1"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    seen = 0
    while time.time() < deadline and seen < 3:  # wait for a few training steps
        line = proc.stdout.readline()
        seen += line.startswith("iter ")
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "continue with --resume" in stderr and "Traceback" not in stderr
    state = load_checkpoint(out / RESUME_NAME)
    stopped = state.meta["step"]
    assert 3 <= stopped < 100000
    done = subprocess.run(cmd[:-8] + ["--resume", "--max-iters", str(stopped + 2)], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert load_checkpoint(out / RESUME_NAME).meta["step"] == stopped + 2
    iters = [r["iter"] for r in records(out) if "loss" in r]
    assert iters == list(range(stopped + 2))  # one uninterrupted log, no duplicates


def test_vocab_size_smaller_than_the_text_and_resume_without_optimizer_state(tmp_path, text_file):
    """--vocab-size below the text's character count, and a resume file that holds weights but no
    optimizer state, are each a one-line InputError."""
    with pytest.raises(InputError, match="vocab_size 3 is smaller than the text's"):
        train(config(tmp_path / "v", text_file), {**MODEL, "vocab_size": 3}, quiet=True)
    tc = config(tmp_path / "r", text_file, max_iters=1)
    train(tc, MODEL, quiet=True)
    ck = load_checkpoint(Path(tc.out_dir) / CKPT_NAME)
    save_checkpoint(Path(tc.out_dir) / RESUME_NAME, ck.config, ck.params, ck.tokenizer, ck.meta)  # no moments
    with pytest.raises(InputError, match="holds no optimizer state"):
        train(config(tmp_path / "r", text_file, resume=True), {}, quiet=True)
