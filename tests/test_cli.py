"""The `minigpt` command-line contract: flags, --json output, files, exit statuses and one-line
errors. Most tests call cli.main in-process (fast); a few run the real `python -m minigpt`."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minigpt.checkpoint import load_checkpoint
from minigpt.cli import main

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--preset", "tiny", "--max-iters", "4", "--eval-interval", "2", "--eval-iters", "1", "--block-size", "16"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained through the command line on a small text file."""
    d = tmp_path_factory.mktemp("cli")
    text = d / "text.txt"
    text.write_text("".join(np.random.default_rng(0).choice(list("abcde \n"), 4000)), encoding="utf-8")
    assert main(["train", *TINY, "--data", str(text), "--out-dir", str(d / "out"), "--dtype", "float64"]) == 0
    return d, text, d / "out" / "ckpt.safetensors"


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_train_writes_checkpoint_and_metrics(trained):
    d, _, ckpt = trained
    ck = load_checkpoint(ckpt)
    assert ck.config.n_layer == 2 and ck.config.block_size == 16  # preset value and flag override
    lines = [json.loads(x) for x in (d / "out" / "metrics.jsonl").read_text().splitlines()]
    assert any("val_loss" in r for r in lines) and any("tokens_per_s" in r for r in lines)


def test_train_json_prints_one_object(tmp_path, trained, capsys):
    _, text, _ = trained
    code, out, err = run(["train", *TINY, "--data", str(text), "--out-dir", str(tmp_path), "--json"], capsys)
    assert code == 0
    summary = json.loads(out)  # exactly one JSON object: the log lines went to stderr
    assert summary["iter"] == 4 and math.isfinite(summary["best_val_loss"])
    assert "step 0:" in err


def test_every_config_field_is_a_flag():
    """--n-layer, --batch-size, ...: one flag per GPTConfig and TrainConfig field."""
    import dataclasses

    from minigpt import GPTConfig
    from minigpt.cli import build_parser
    from minigpt.train import TrainConfig

    train_parser = build_parser()._subparsers._group_actions[0].choices["train"]
    flags = {s for a in train_parser._actions for s in a.option_strings}
    for cls in (GPTConfig, TrainConfig):
        for f in dataclasses.fields(cls):
            if f.metadata.get("cli") is False:  # GPTConfig's per-layer widths: set by `minigpt prune`
                assert "--" + f.name.replace("_", "-") not in flags, f.name
                continue
            assert "--" + f.name.replace("_", "-") in flags, f.name


def test_eval_json(trained, capsys):
    _, _, ckpt = trained
    code, out, _ = run(["eval", "--ckpt", str(ckpt), "--json"], capsys)
    assert code == 0
    r = json.loads(out)
    assert r["perplexity"] == pytest.approx(math.exp(r["val_loss"]), rel=1e-12)
    assert r["bits_per_char"] == pytest.approx(r["val_loss"] / math.log(2), rel=1e-12)
    code2, out2, _ = run(["eval", "--ckpt", str(ckpt), "--json"], capsys)
    assert json.loads(out2) == r  # deterministic


def test_sample_streams_prompt_and_new_tokens(trained, capsys):
    _, _, ckpt = trained
    code, out, _ = run(["sample", "--ckpt", str(ckpt), "--prompt", "abc", "--max-new-tokens", "25"], capsys)
    assert code == 0
    assert out.startswith("abc") and len(out) == 3 + 25 + 1 and out.endswith("\n")
    assert set(out[3:-1]) <= set("abcde \n")
    code, again, _ = run(["sample", "--ckpt", str(ckpt), "--prompt", "abc", "--max-new-tokens", "25",
                          "--no-kv-cache"], capsys)  # fmt: skip
    assert again == out  # same seed, same text, with or without the cache


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--n-embd", "30", "--n-head", "4"], "divisible by n_head"),
        (["train", "--n-layer", "0"], "n_layer must be a positive integer"),
        (["train", "--dropout", "1.0"], "dropout must be in [0, 1)"),
        (["train", "--activation", "tanh"], "activation must be one of"),
        (["train", "--n-layer", "x"], "invalid int value"),
        (["train", "--data", "/no/such/file.txt"], "data file not found"),
        (["train", "--resume", "--out-dir", "/no/such/run"], "nothing to resume"),
        (["sample", "--ckpt", "/no/such.safetensors"], "checkpoint not found"),
        (["eval", "--ckpt", "/no/such.safetensors"], "checkpoint not found"),
        (["bench", "nothing"], "invalid choice"),
    ],
)
def test_bad_input_one_line_exit_2(argv, message, capsys):
    code, out, err = run_catching_exit(argv, capsys)
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def run_catching_exit(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as e:  # argparse errors exit from inside parse_args
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--prompt", "xyz€"], "4 character(s) not in the model's vocabulary: 'x', 'y', 'z', '€'"),
        (["--prompt", ""], "prompt is empty"),
        (["--temperature", "0"], "temperature must be > 0"),
        (["--top-k", "0"], "top_k must be an integer >= 1"),
        (["--top-p", "1.5"], "top_p must be in (0, 1]"),
        (["--top-p", "0"], "top_p must be in (0, 1]"),
    ],
)
def test_bad_sample_input(trained, extra, message, capsys):
    _, _, ckpt = trained
    code, out, err = run_catching_exit(["sample", "--ckpt", str(ckpt), *extra], capsys)
    assert code == 2 and message in err and err.count("\n") == 1
    assert out == ""  # nothing half-printed before the error


def test_corrupted_and_foreign_checkpoints(trained, tmp_path, capsys):
    _, _, ckpt = trained
    data = bytearray(ckpt.read_bytes())
    data[-3] ^= 0xFF
    bad = tmp_path / "flipped.safetensors"
    bad.write_bytes(bytes(data))
    code, _, err = run_catching_exit(["eval", "--ckpt", str(bad)], capsys)
    assert code == 2 and "corrupted" in err
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    code, _, err = run_catching_exit(["sample", "--ckpt", str(text)], capsys)
    assert code == 2 and "not a readable safetensors file" in err


def test_unwritable_output_directory(trained, tmp_path, capsys):
    _, text, _ = trained
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, _, err = run_catching_exit(["train", *TINY, "--data", str(text), "--out-dir", str(blocker / "out")], capsys)
    assert code == 2 and "cannot write to output directory" in err


def test_python_dash_m_and_exit_statuses(trained):
    """The real entry point: `python -m minigpt` works, bad input exits 2 with one stderr line,
    and no subcommand prints help and exits 2."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    _, _, ckpt = trained
    ok = subprocess.run([sys.executable, "-m", "minigpt", "eval", "--ckpt", str(ckpt), "--json"],
                        capture_output=True, text=True, env=env)  # fmt: skip
    assert ok.returncode == 0 and "val_loss" in json.loads(ok.stdout)
    bad = subprocess.run([sys.executable, "-m", "minigpt", "sample", "--ckpt", "missing.safetensors"],
                         capture_output=True, text=True, env=env)  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "checkpoint not found" in bad.stderr
    none = subprocess.run([sys.executable, "-m", "minigpt"], capture_output=True, text=True, env=env)
    assert none.returncode == 2 and "train" in none.stderr


TINY_RUN = ["train", "--preset", "tiny", "--max-iters", "40", "--eval-interval", "20", "--eval-iters", "1",
            "--block-size", "16", "--log-interval", "10"]  # fmt: skip


def test_piped_output_has_plain_lines_only(trained, tmp_path):
    """Not on a terminal (CI logs): no progress bar, no carriage returns, just log lines."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    _, text, _ = trained
    r = subprocess.run([sys.executable, "-m", "minigpt", *TINY_RUN, "--data", str(text), "--out-dir", str(tmp_path)],
                       capture_output=True, text=True, env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stdout + r.stderr and "it/s" not in r.stdout + r.stderr
    assert "iter 10: loss" in r.stdout and "step 20: train loss" in r.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_terminal_output_shows_a_progress_bar(trained, tmp_path):
    """On a terminal, a tqdm progress bar runs alongside the same log lines."""
    import fcntl
    import pty
    import struct
    import termios

    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    _, text, _ = trained
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))  # a 100-column terminal
    proc = subprocess.Popen([sys.executable, "-m", "minigpt", *TINY_RUN, "--data", str(text), "--out-dir",
                             str(tmp_path)], stdout=slave, stderr=slave, env=env)  # fmt: skip
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=60) == 0
    out = b"".join(chunks).decode(errors="replace")
    assert "it/s" in out and "/40" in out  # the bar: rate and total
    assert "iter 10: loss" in out and "step 20: train loss" in out


def test_eval_batch_size_must_be_positive(trained, capsys):
    _, _, ckpt = trained
    code, _, err = run_catching_exit(["eval", "--ckpt", str(ckpt), "--batch-size", "0"], capsys)
    assert code == 2 and "--batch-size must be >= 1" in err and err.count("\n") == 1
