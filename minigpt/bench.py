"""`minigpt bench`: training-step speed of both backends and of PyTorch, side by side in one run.

For each preset (float32, random weights and tokens: speed does not depend on them):
- ms per training step (forward + backward + gradient clipping + AdamW) for the numba and NumPy
  backends and, when torch is installed, a PyTorch twin written below (a plain eager nn.Module
  fed minigpt's parameters, as nanoGPT's model runs on a CPU). The implementations alternate run
  by run and we compare medians: this machine's speed drifts by up to 2x within minutes, and
  alternating spreads the drift over all of them. Each run starts after a short idle pause, so
  that the threads of the previous implementation have stopped spinning (PAUSE_S);
- tokens/s and achieved GFLOP/s with nanoGPT's estimate (model.estimate_mfu): 6N + 12 L C T
  flops per token, N the parameters without the position embeddings; and its fraction of this
  machine's float32 matmul rate, a 1024^3 sgemm through NumPy timed in the same alternation;
- where a step goes: the time in each layer function and in AdamW, per backend;
- sampling tokens/s on the numba backend: batch 1, 200 new tokens from a 1-token prompt, KV cache
  (the median of `repeats` runs).
"""

from __future__ import annotations

import os
import platform
import time
from collections import defaultdict
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np

from . import backend
from .config import GPTConfig
from .errors import InputError
from .model import gpt_backward, gpt_forward, init_params, num_params
from .optim import AdamW, clip_grad_norm

VOCAB = 65  # tiny Shakespeare's characters
PRESETS = {
    # nanoGPT's CPU recipe ("baby") and the shakespeare_char model ("small") at batch 8
    "baby": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12),
    "small": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=8),
}
DEFAULT_STEPS = {"baby": 10, "small": 2}  # steps per timed run: each run lasts about 0.5-3 s
IMPLEMENTATIONS = ("numba", "numpy", "torch")


def preset_config(name: str) -> tuple[GPTConfig, int]:
    if name not in PRESETS:
        raise InputError(f"unknown bench preset {name!r}: choose from {', '.join(PRESETS)}")
    fields = dict(PRESETS[name])
    batch_size = fields.pop("batch_size")
    return GPTConfig(vocab_size=VOCAB, bias=False, dropout=0.0, **fields), batch_size


def flops_per_token(config: GPTConfig, params) -> int:
    """nanoGPT's estimate: 6 N (a multiply-add forward, two backward, per parameter) plus the
    attention scores and weighted sum, 12 L C T; N leaves out the position embeddings."""
    n = num_params(params) - params["wpe.weight"].size
    return 6 * n + 12 * config.n_layer * config.n_embd * config.block_size


SGEMM_N = 1024  # the ceiling's matrix product: (n, n) @ (n, n) float32, 2 n^3 flops


def sgemm_stepper(n: int = SGEMM_N):
    """One n^3 float32 matrix product through NumPy's BLAS: this machine's matmul rate. It is timed
    as one more implementation in the same alternation as the training steps, so the ceiling
    and the steps see the same machine (measured once up front, a slow moment made the small
    preset's step reach 122% of it)."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), np.float32)
    return lambda: np.matmul(a, b, out=out)


# ----------------------------------------------------------------------------------------------
# the training steps being timed


def minigpt_stepper(config: GPTConfig, params, batch_size: int, backend_name: str, seed: int = 0):
    """A function running one training step of minigpt on the given backend (fixed random batch)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, config.vocab_size, (batch_size, config.block_size))
    y = rng.integers(0, config.vocab_size, (batch_size, config.block_size))
    params = {k: v.copy() for k, v in params.items()}
    optimizer = AdamW(params, 0.9, 0.99, 1e-8, 0.1)

    def step():
        with backend.use_backend(backend_name):
            _, loss, cache = gpt_forward(config, params, x, y)
            grads = gpt_backward(cache)
            clip_grad_norm(grads, 1.0)
            optimizer.step(params, grads, 1e-3)
        return loss

    return step


def torch_stepper(config: GPTConfig, params, batch_size: int, seed: int = 0):
    """The same training step in PyTorch eager mode, or None when torch is not installed."""
    try:
        import torch
    except ImportError:
        return None
    model = TorchGPT.build(torch, config, params)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    rng = np.random.default_rng(seed)
    x = torch.as_tensor(rng.integers(0, config.vocab_size, (batch_size, config.block_size)))
    y = torch.as_tensor(rng.integers(0, config.vocab_size, (batch_size, config.block_size)))

    def step():
        loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss.item()

    return step


class TorchGPT:
    """A plain eager PyTorch GPT-2 (nanoGPT's modules: nn.Linear, F.layer_norm, torch's fused
    scaled_dot_product_attention), holding copies of minigpt's parameters. Built lazily so that
    importing minigpt.bench does not import torch."""

    @staticmethod
    def build(torch, config: GPTConfig, params):
        nn, F = torch.nn, torch.nn.functional
        C, NH, eps = config.n_embd, config.n_head, config.layer_norm_epsilon
        act = (lambda u: F.gelu(u, approximate="tanh")) if config.activation == "gelu" else F.relu

        def linear(name, bias):  # minigpt/HF store (in, out); nn.Linear stores (out, in)
            w = params[name + ".weight"]
            layer = nn.Linear(w.shape[0], w.shape[1], bias=bias)
            with torch.no_grad():
                layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T)))
                if bias:
                    layer.bias.copy_(torch.from_numpy(params[name + ".bias"]))
            return layer

        def norm(name):
            ln = nn.LayerNorm(C, eps=eps, bias=config.bias)
            with torch.no_grad():
                ln.weight.copy_(torch.from_numpy(params[name + ".weight"]))
            return ln

        class Block(nn.Module):
            def __init__(self, i):
                super().__init__()
                p = f"h.{i}."
                self.ln_1, self.ln_2 = norm(p + "ln_1"), norm(p + "ln_2")
                self.c_attn, self.c_proj = linear(p + "attn.c_attn", config.bias), linear(p + "attn.c_proj", config.bias)
                self.c_fc, self.mlp_proj = linear(p + "mlp.c_fc", config.bias), linear(p + "mlp.c_proj", config.bias)

            def forward(self, x):
                B, T, _ = x.shape
                q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
                q, k, v = (t.view(B, T, NH, C // NH).transpose(1, 2) for t in (q, k, v))
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                x = x + self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))
                return x + self.mlp_proj(act(self.c_fc(self.ln_2(x))))

        class GPT(nn.Module):
            def __init__(self):
                super().__init__()
                self.wte = nn.Parameter(torch.from_numpy(params["wte.weight"].copy()))
                self.wpe = nn.Parameter(torch.from_numpy(params["wpe.weight"].copy()))
                self.h = nn.ModuleList(Block(i) for i in range(config.n_layer))
                self.ln_f = norm("ln_f")

            def forward(self, idx, targets):
                T = idx.shape[1]
                x = self.wte[idx] + self.wpe[:T]
                for block in self.h:
                    x = block(x)
                logits = self.ln_f(x) @ self.wte.T  # tied
                return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)

        return GPT()


# ----------------------------------------------------------------------------------------------
# measuring


# Idle time before each timed run. OpenBLAS's worker threads (both minigpt backends) keep spinning
# for up to about 0.1 s after a matrix product before they sleep, and took a core from the PyTorch
# run that followed: measured at baby, torch's median went from 59-62 ms with this pause to 68-70
# ms without it (numba's and NumPy's were unchanged). The pause lets each run start on idle cores.
PAUSE_S = 0.25


def time_alternating(steppers: dict, steps: int, repeats: int, warmup: int, pause: float = PAUSE_S) -> dict:
    """ms per step of each stepper: `warmup` untimed steps each, then `repeats` rounds in which
    every stepper runs `steps` steps in turn (the order rotating each round), each run after
    `pause` idle seconds (see PAUSE_S); median per stepper."""
    for step in steppers.values():
        for _ in range(warmup):
            step()
    runs = defaultdict(list)
    names = list(steppers)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            time.sleep(pause)
            t0 = time.perf_counter()
            for _ in range(steps):
                steppers[name]()
            runs[name].append((time.perf_counter() - t0) / steps * 1000)
    return {name: {"median": float(np.median(v)), "min": float(np.min(v)), "runs": v} for name, v in runs.items()}


@contextmanager
def timed_ops(backend_name: str):
    """Time every call of the backend's layer functions (and AdamW's update) while the block runs.
    Yields a dict op name -> total seconds."""
    totals = defaultdict(float)
    base = backend.ops_for(backend_name)

    def wrap(name, fn):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[name] += time.perf_counter() - t0

        return timed

    wrapped = {k: wrap(k, v) if callable(v) else v for k, v in vars(base).items()}
    with backend.patched(backend_name, SimpleNamespace(**wrapped)):
        yield totals


def breakdown(config, params, batch_size, backend_name, steps) -> dict:
    """Where one training step goes: ms per step in each op, and the rest (Python, residual adds,
    the tied-embedding sum, gradient scaling) as "other"."""
    step = minigpt_stepper(config, params, batch_size, backend_name)
    step()  # warm-up (compiles the kernels on first use)
    with timed_ops(backend_name) as totals:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        total = time.perf_counter() - t0
    ms = {name: t / steps * 1000 for name, t in sorted(totals.items(), key=lambda kv: -kv[1])}
    ms["other"] = total / steps * 1000 - sum(ms.values())
    return ms


def sampling_tokens_per_s(config, params, new_tokens: int, repeats: int, caches=(True,),
                          backend_name: str = "numba") -> dict:  # fmt: skip
    """Sampling speed: batch 1, new_tokens from a 1-token prompt, with (True) and/or without
    (False) the KV cache. One run is too short to trust on a machine that drifts, so the runs
    alternate as the training steps do (time_alternating) and each figure is new_tokens over the
    median run. Returns {use_cache: tokens/s}."""
    from .generate import generate

    with backend.use_backend(backend_name):
        runs = {c: (lambda c=c: list(generate(config, params, [0], new_tokens, seed=0, use_cache=c))) for c in caches}
        for c in caches:  # warm-up: load or compile the kernels
            list(generate(config, params, [0], 8, seed=0, use_cache=c))
        times = time_alternating(runs, steps=1, repeats=repeats, warmup=0)
    return {c: new_tokens / (times[c]["median"] / 1000) for c in caches}


def run(presets=("baby", "small"), repeats: int = 5, warmup: int = 1, steps: dict | None = None,
        torch: bool = True, sample_tokens: int = 200, say=print) -> dict:  # fmt: skip
    """The whole benchmark; returns the JSON-able result (see the module docstring)."""
    if repeats < 1 or warmup < 0 or sample_tokens < 1:
        raise InputError("--repeats and --sample-tokens must be >= 1 and --warmup >= 0")
    configs = {name: preset_config(name) for name in presets}  # validates the names first
    result = {"machine": machine_info(), "settings": {"repeats": repeats, "warmup": warmup, "dtype": "float32"},
              "presets": {}}  # fmt: skip
    for name, (config, batch_size) in configs.items():
        n_steps = (steps or {}).get(name, DEFAULT_STEPS.get(name, 2))
        params = init_params(config, seed=0, dtype=np.float32)
        tokens = batch_size * config.block_size
        flops = flops_per_token(config, params) * tokens
        say(f"\n{name}: L{config.n_layer} H{config.n_head} C{config.n_embd} T{config.block_size} B{batch_size}, "
            f"{num_params(params):,} parameters, {flops / 1e9:.2f} GFLOP per step; "
            f"{repeats} alternating runs of {n_steps} steps each, and of {n_steps} {SGEMM_N}^3 sgemm ...")  # fmt: skip
        steppers = {"numba": minigpt_stepper(config, params, batch_size, "numba"),
                    "numpy": minigpt_stepper(config, params, batch_size, "numpy"), "sgemm": sgemm_stepper()}  # fmt: skip
        torch_step = torch_stepper(config, params, batch_size) if torch else None
        if torch_step is not None:
            steppers["torch"] = torch_step
        times = time_alternating(steppers, n_steps, repeats, warmup)
        ms = {impl: (times[impl]["median"] if impl in times else None) for impl in IMPLEMENTATIONS}
        ceiling = 2 * SGEMM_N**3 / (times["sgemm"]["median"] / 1000) / 1e9  # GFLOP/s
        entry = {
            "config": config.to_dict(), "batch_size": batch_size, "params": num_params(params),
            "flops_per_step": flops, "steps_per_run": n_steps,
            "numba_ms_per_step": ms["numba"], "numpy_ms_per_step": ms["numpy"], "torch_ms_per_step": ms["torch"],
            "runs_ms": {impl: t["runs"] for impl, t in times.items()},
            "tokens_per_s": {impl: tokens / (v / 1000) for impl, v in ms.items() if v is not None},
            "matmul_gflops": ceiling,
            "achieved_gflops": flops / (ms["numba"] / 1000) / 1e9,
        }  # fmt: skip
        entry["fraction_of_matmul_rate"] = entry["achieved_gflops"] / ceiling
        entry["numpy_over_numba"] = ms["numpy"] / ms["numba"]
        entry["numba_over_torch"] = ms["numba"] / ms["torch"] if ms["torch"] else None
        entry["breakdown_ms"] = {b: breakdown(config, params, batch_size, b, n_steps) for b in ("numba", "numpy")}
        entry["sample_tokens_per_s"] = sampling_tokens_per_s(config, params, sample_tokens, repeats)[True]
        result["presets"][name] = entry
        say(format_preset(name, entry))
    return result


def machine_info() -> dict:
    import numba

    from . import kernels  # noqa: F401 (selects the threading layer, as any kernel use does)

    info = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "numpy": np.__version__, "numba": numba.__version__,
            "numba_threading_layer": numba.config.THREADING_LAYER, "numba_threads": numba.config.NUMBA_NUM_THREADS}  # fmt: skip
    try:
        import torch

        info["torch"], info["torch_threads"] = torch.__version__, torch.get_num_threads()
    except ImportError:
        info["torch"] = None
    return info


def format_preset(name: str, e: dict) -> str:
    lines = [f"  float32 matmul rate ({SGEMM_N}^3 sgemm, in the same alternation): {e['matmul_gflops']:.1f} GFLOP/s",
             f"  {'':8} {'ms/step':>9} {'tokens/s':>10} {'GFLOP/s':>8} {'of matmul':>9}"]  # fmt: skip
    for impl in IMPLEMENTATIONS:
        ms = e[f"{impl}_ms_per_step"]
        if ms is None:
            lines.append(f"  {impl:8} {'(torch not installed)':>30}")
            continue
        gflops = e["flops_per_step"] / (ms / 1000) / 1e9
        lines.append(f"  {impl:8} {ms:9.1f} {e['tokens_per_s'][impl]:10,.0f} {gflops:8.1f} "
                     f"{gflops / e['matmul_gflops']:9.0%}")  # fmt: skip
    ratio = f"numpy / numba {e['numpy_over_numba']:.2f}x"
    if e["numba_over_torch"] is not None:
        ratio += f", numba / torch {e['numba_over_torch']:.2f}x"
    lines.append(f"  {ratio}; sampling (numba, KV cache, batch 1): {e['sample_tokens_per_s']:.0f} tokens/s")
    for b, ops in e["breakdown_ms"].items():
        top = ", ".join(f"{k.replace('_forward', ' fwd').replace('_backward', ' bwd')} {v:.1f}"
                        for k, v in ops.items())  # fmt: skip
        lines.append(f"  {b} step: {top}")
    return "\n".join(lines)
