# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Tutorial 3: check your own GPT against minigpt, one op at a time
#
# You are writing GPT-2 in something else: CUDA, Triton, Rust, JAX. How do you know it is right?
# Compare it with an implementation you trust, tensor by tensor, on the same inputs and weights.
# minigpt writes those tensors to **golden files** and ships a **checker** that says exactly which
# tensor differs, where, and by how much.
#
# In this tutorial we:
# 1. export a golden file for a small model (every activation, the loss, every gradient, a few AdamW steps);
# 2. "implement" the forward pass ourselves, standing in for your CUDA kernels, with a bug planted in LayerNorm;
# 3. watch the checker find the bug, and name the first tensor where things go wrong;
# 4. do the same one op at a time with the per-op files.
#
# It runs in a few seconds. It needs numpy and an importable minigpt (`pip install -e .` in the
# repository root, or the root on `PYTHONPATH`). The same steps work from the shell with
# `minigpt reference export` and `minigpt reference check`.

# %%
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from minigpt import GPTConfig
from minigpt import reference as ref

workdir = Path(tempfile.mkdtemp())

# %% [markdown]
# ## 1. Export a golden file
#
# A float64 file: with 1e-16 rounding, any difference you see is yours, not minigpt's. The config
# and the generation settings (seed, batch, AdamW hyperparameters) are stored in the file's metadata.

# %%
config = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8)
settings = ref.ReferenceSettings(seed=0, dtype="float64", batch_size=2, steps=3)
tensors, meta = ref.export_model(config, settings)
golden_path = workdir / "golden.safetensors"
ref.write_reference(golden_path, tensors, meta)
print(f"{golden_path.name}: {len(tensors)} tensors")
for name in ["inputs", "targets", "params.h.0.attn.c_attn.weight", "acts.h.0.ln_1", "acts.h.0.att",
             "acts.logits", "loss", "grads.wte.weight", "train.loss"]:
    print(f"  {name:32s} {tensors[name].shape!s:14s} {tensors[name].dtype}")

# %% [markdown]
# Note the targets: they are **already shifted**. Row b of `inputs` and `targets` comes from one
# sequence s of T + 1 tokens, `inputs = s[:-1]` and `targets = s[1:]`, so `targets[b, t]` is the
# token after `inputs[b, t]`. Do not shift them again (Hugging Face's `labels=` argument shifts
# internally; minigpt's and llm.c's targets do not).

# %%
assert np.array_equal(tensors["targets"][:, :-1], tensors["inputs"][:, 1:])

# %% [markdown]
# ## 2. "Your" implementation, with a planted bug
#
# Here is a GPT-2 forward in plain NumPy, written only from the file format (the README's
# "Use minigpt as a reference" section), as you would write it in your own language. It reads the
# parameters from the golden file and records its intermediates under the golden names.
#
# The bug: LayerNorm uses the *unbiased* variance (divide by C - 1), which is what `np.var(ddof=1)`
# or `torch.var` give by default. GPT-2's LayerNorm divides by C. It is the kind of bug that
# "almost works": the outputs are close, and training would still go down.


# %%
def my_layernorm(x, w, b, eps=1e-5, buggy=True):
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True, ddof=1 if buggy else 0)  # the planted bug: ddof=1
    return (x - mean) / np.sqrt(var + eps) * w + b


def my_gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def my_forward(P, idx, n_layer, n_head, buggy=True):
    """GPT-2 forward; P maps Hugging Face names to arrays. Returns the golden-named activations."""
    out = {}
    B, T = idx.shape
    x = P["wte.weight"][idx] + P["wpe.weight"][:T]
    out["acts.emb"] = x
    C = x.shape[-1]
    hs = C // n_head
    for i in range(n_layer):
        p, a = f"h.{i}.", f"acts.h.{i}."
        h = my_layernorm(x, P[p + "ln_1.weight"], P[p + "ln_1.bias"], buggy=buggy)
        out[a + "ln_1"] = h
        qkv = h @ P[p + "attn.c_attn.weight"] + P[p + "attn.c_attn.bias"]
        out[a + "qkv"] = qkv
        q, k, v = (qkv[..., j * C : (j + 1) * C].reshape(B, T, n_head, hs).transpose(0, 2, 1, 3) for j in range(3))
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hs)
        scores = np.where(np.tri(T, dtype=bool), scores, -np.inf)
        att = np.exp(scores - scores.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        out[a + "att"] = att
        y = (att @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
        out[a + "atty"] = y
        x = x + y @ P[p + "attn.c_proj.weight"] + P[p + "attn.c_proj.bias"]
        out[a + "res_1"] = x
        h = my_layernorm(x, P[p + "ln_2.weight"], P[p + "ln_2.bias"], buggy=buggy)
        out[a + "ln_2"] = h
        h = my_gelu(h @ P[p + "mlp.c_fc.weight"] + P[p + "mlp.c_fc.bias"])
        out[a + "fc_act"] = h
        x = x + h @ P[p + "mlp.c_proj.weight"] + P[p + "mlp.c_proj.bias"]
        out[a + "res_2"] = x
    x = my_layernorm(x, P["ln_f.weight"], P["ln_f.bias"], buggy=buggy)
    out["acts.ln_f"] = x
    logits = x @ P["wte.weight"].T
    out["acts.logits"] = logits
    return out


golden, golden_meta = ref.read_safetensors(golden_path)
cfg = json.loads(golden_meta["config"])
P = {k.removeprefix("params."): v for k, v in golden.items() if k.startswith("params.")}
mine = my_forward(P, golden["inputs"], cfg["n_layer"], cfg["n_head"])
candidate_path = workdir / "mine.safetensors"
ref.write_reference(candidate_path, mine, {"kind": "candidate"})

# %% [markdown]
# ## 3. Run the checker
#
# Our implementation only computes some of the tensors (no gradients, no training), so we pass
# `--allow-missing`: the missing ones are listed but do not fail the check. Each row gives the
# largest absolute difference, where it is and both values there, the relative error (to the
# tensor's largest magnitude) and the share of the tolerance used. The exit status is 1 on any mismatch.

# %%
cmd = [sys.executable, "-m", "minigpt", "reference", "check", str(golden_path), str(candidate_path), "--allow-missing"]
proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
print(proc.stdout)
assert proc.returncode == 1, "the checker must fail the buggy implementation"

# %% [markdown]
# Read the table top to bottom in the order the model computes: `acts.emb` is OK, the very next
# tensor, `acts.h.0.ln_1`, is NOT OK, and everything after it inherits the error. The first
# failing op is the bug. The same through Python:

# %%
report = ref.check(golden, mine, allow_missing=True)  # rows in the golden file's (computation) order
first_bad = next(r.name for r in report.results if not r.ok)
print("first tensor that differs:", first_bad)
assert first_bad == "acts.h.0.ln_1"
r = next(r for r in report.results if r.name == first_bad)
print(f"worst element {r.index}: golden {r.golden:.6f}, mine {r.candidate:.6f}, relative error {r.rel_error:.1e}")

# %% [markdown]
# ## 4. Fix it, check again

# %%
mine = my_forward(P, golden["inputs"], cfg["n_layer"], cfg["n_head"], buggy=False)
report = ref.check(golden, mine, allow_missing=True)
print(ref.format_report(report).splitlines()[-1])
assert report.ok

# %% [markdown]
# ## 5. One op at a time
#
# When a whole model is not ready yet, check kernels one by one. `minigpt reference ops DIR`
# (or `export_ops`) writes one file per op with inputs, outputs, an upstream gradient `dout` and
# the input and parameter gradients. Here is a LayerNorm backward written from its formula, with
# a classic bug: the path through the mean is forgotten.


# %%
def my_layernorm_backward(dout, x, w, eps=1e-5, forget_mean_path=True):
    mean = x.mean(-1, keepdims=True)
    rstd = 1 / np.sqrt(x.var(-1, keepdims=True) + eps)
    xhat = (x - mean) * rstd
    dxhat = dout * w
    dx = dxhat - xhat * (dxhat * xhat).mean(-1, keepdims=True)
    if not forget_mean_path:
        dx = dx - dxhat.mean(-1, keepdims=True)
    C = x.shape[-1]
    dw = (dout * xhat).reshape(-1, C).sum(0)
    db = dout.reshape(-1, C).sum(0)
    return dx * rstd, dw, db


op, _ = ref.export_ops(ref.ReferenceSettings(seed=0))["layernorm"]
for forget in (True, False):
    dx, dw, db = my_layernorm_backward(op["dout"], op["x"], op["weight"], forget_mean_path=forget)
    report = ref.check(op, {"dx": dx, "dweight": dw, "dbias": db}, allow_missing=True)
    print(("buggy" if forget else "fixed"), "->", ", ".join(f"{r.name} {r.status}" for r in report.results))
    assert report.ok != forget
