"""`minigpt bench`: the JSON contract, the flop count, the PyTorch twin it times, and bad input.

Speed itself is measured by running the bench, never asserted here (no timed tests)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from minigpt import bench, gpt_forward, init_params
from minigpt.errors import InputError

QUICK = ["--presets", "baby", "--repeats", "1", "--warmup", "0", "--steps", "1", "--sample-tokens", "3"]


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "minigpt", "bench", *args], capture_output=True, text=True, cwd=cwd)


def test_bench_json_contract(tmp_path):
    out = tmp_path / "results" / "bench.json"
    r = run_cli(*QUICK, "--no-torch", "--json", "--out", str(out))
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)  # one JSON object on stdout; the table went to stderr
    assert json.loads(out.read_text()) == result
    baby = result["presets"]["baby"]
    for key in ("numba_ms_per_step", "numpy_ms_per_step", "matmul_gflops", "achieved_gflops", "sample_tokens_per_s"):
        assert isinstance(baby[key], float) and baby[key] > 0, key
    assert baby["torch_ms_per_step"] is None  # --no-torch
    # the ceiling is a 1024^3 sgemm timed in the same alternation as the steps, not once up front
    assert set(baby["runs_ms"]) == {"numba", "numpy", "sgemm"}
    sgemm_s = np.median(baby["runs_ms"]["sgemm"]) / 1000
    assert baby["matmul_gflops"] == pytest.approx(2 * bench.SGEMM_N**3 / sgemm_s / 1e9)
    assert baby["achieved_gflops"] == pytest.approx(baby["flops_per_step"] / baby["numba_ms_per_step"] * 1e-6)
    for b in ("numba", "numpy"):  # where the step goes: every timed op, plus the rest
        ops = baby["breakdown_ms"][b]
        assert {"attention_forward", "attention_backward", "linear_forward", "adamw_update", "other"} <= set(ops)
    assert "ms/step" in r.stderr and "numba" in r.stderr


def test_bench_kvcache_json_contract():
    r = run_cli("kvcache", "--max-new-tokens", "4", "--repeats", "2", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["config"]["n_layer"] == 6 and result["config"]["block_size"] == 256
    assert result["backend"] == "numba" and result["max_new_tokens"] == 4 and result["repeats"] == 2
    for key in ("tokens_per_s_kv_cache", "tokens_per_s_no_cache"):
        assert isinstance(result[key], float) and result[key] > 0, key
    assert result["speedup"] == pytest.approx(result["tokens_per_s_kv_cache"] / result["tokens_per_s_no_cache"])


def test_flops_per_token_is_nanogpts_estimate():
    config, B = bench.preset_config("baby")
    params = init_params(config, seed=0)
    N = sum(p.size for p in params.values()) - config.block_size * config.n_embd  # without wpe
    assert bench.flops_per_token(config, params) == 6 * N + 12 * 4 * 128 * 64
    assert (config.n_layer, config.n_head, config.n_embd, config.block_size, B) == (4, 4, 128, 64, 12)
    config, B = bench.preset_config("small")
    assert (config.n_layer, config.n_head, config.n_embd, config.block_size, B) == (6, 6, 384, 256, 8)


def test_torch_twin_computes_minigpts_loss_and_step():
    """The PyTorch model the bench times is the same model: same loss on the same batch."""
    torch = pytest.importorskip("torch", reason="torch not installed (pip install torch==2.13.0)")
    config, _ = bench.preset_config("baby")
    config = config.replace(n_layer=2, block_size=16)
    params = init_params(config, seed=1, dtype=np.float32)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, config.vocab_size, (3, 16)), rng.integers(0, config.vocab_size, (3, 16))
    model = bench.TorchGPT.build(torch, config, params)
    loss = model(torch.as_tensor(x), torch.as_tensor(y)).item()
    _, expected, _ = gpt_forward(config, params, x, y)
    assert loss == pytest.approx(expected, rel=1e-5)
    step = bench.torch_stepper(config, params, 3)
    assert np.isfinite(step())


def test_timed_ops_restores_the_backend():
    from minigpt import backend

    before = backend.ops_for("numba")
    config, B = bench.preset_config("baby")
    config = config.replace(n_layer=1, block_size=8)
    ms = bench.breakdown(config, init_params(config), 2, "numba", steps=1)
    assert backend.ops_for("numba") is before
    assert ms["attention_forward"] > 0 and set(ms) >= {"layernorm_backward", "other"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--presets", "huge"], "unknown bench preset 'huge': choose from baby, small"),
        (["--steps", "0"], "--steps must be >= 1, got 0"),
        (["--repeats", "0"], "--repeats and --sample-tokens must be >= 1"),
        (["--out", "/dev/null/x/bench.json", *QUICK, "--no-torch"], "cannot write /dev/null/x/bench.json"),
        (["kvcache", "--max-new-tokens", "0"], "--max-new-tokens must be >= 1, got 0"),
        (["kvcache", "--repeats", "0"], "--repeats must be >= 1, got 0"),
    ],
)
def test_bench_bad_input_is_a_one_line_error(args, message, tmp_path):
    r = run_cli(*args, cwd=tmp_path)
    assert r.returncode == 2
    assert message in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("minigpt: error:")
    assert len([line for line in r.stderr.splitlines() if "error" in line]) == 1


def test_preset_config_rejects_unknown_names():
    with pytest.raises(InputError, match="unknown bench preset"):
        bench.preset_config("medium")
