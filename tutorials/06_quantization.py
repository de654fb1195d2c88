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
# # Tutorial 6: quantization, from round-to-nearest to GPTQ and integer-only inference
#
# A float32 weight takes 4 bytes. Most of them are not needed: a trained GPT keeps its loss
# when each weight is rounded to one of 256 levels (8 bits), and nearly keeps it at 16 levels
# (4 bits) if the rounding is done with care. This tutorial builds that up:
#
# 1. quantize a tensor by hand: scale, zero point, rounding, the error bound;
# 2. granularity: one scale per tensor, per output channel, per group of 32 inputs;
# 3. storing the codes: packing, and the file that is really smaller;
# 4. fake quantization and its straight-through gradient (quantization-aware training);
# 5. GPTQ: rounding with error compensation, against round-to-nearest;
# 6. llama.cpp's Q8_0 / Q4_0 blocks;
# 7. integer-only inference: int8 x int8 -> int32, and a fixed-point multiplier;
# 8. k-means weight sharing;
# 9. a model: which layer hurts (the per-tensor report) and the error histogram;
# 10. the baby Shakespeare benchmark's figures.
#
# Run it as a script (`python tutorials/06_quantization.py`, about 30 s) or open it as a notebook.
# Plots need matplotlib; without it the tutorial prints the numbers.
#
# Conventions: minigpt stores a linear weight (in, out), as Hugging Face's Conv1D. Quantization
# works on its transpose (out, in): one row per output channel, groups along the inputs.

# %%
import itertools
import json
import tempfile
from pathlib import Path

import numpy as np

from minigpt.checkpoint import load_checkpoint, save_checkpoint
from minigpt.compress import ggml, gptq, int8, kmeans
from minigpt.compress import quantize as Q
from minigpt.data import default_corpus, iter_windows, split
from minigpt.kernels.int8 import int8_matmul, int8_matmul_reference
from minigpt.train import TrainConfig, train

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    plt = None
    print("matplotlib is not installed (pip install matplotlib): numbers only, no plots")

rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. One tensor, by hand
#
# Affine quantization maps a real x to an integer code q in [qmin, qmax] and back:
#
#     q = clamp(round(x / s) + z, qmin, qmax)        x_hat = s (q - z)
#
# The range [lo, hi] is widened to contain 0, then `s = (hi - lo) / (qmax - qmin)` and
# `z = qmin - round(lo / s)`. Zero maps to the code z and back to exactly 0.0, so a weight that
# pruning set to zero stays zero. The symmetric scheme fixes z = 0 and uses
# [-(2^(b-1) - 1), 2^(b-1) - 1].

# %%
x = rng.normal(0.3, 1.0, size=(1, 12))
x[0, 0] = 0.0
spec = Q.QuantSpec(bits=4, scheme="affine", granularity="tensor")
q, scale, zero = Q.quantize(x, spec)
x_hat = Q.dequantize(q, scale, zero, spec, np.float64)
s, z = float(scale[0, 0]), int(zero[0, 0])
print(f"4-bit affine: s = {s:.4f}, z = {z}, codes {q.ravel().tolist()}")
print("max error", np.abs(x - x_hat).max(), "<= s/2 =", s / 2)
assert np.abs(x - x_hat).max() <= s / 2 + 1e-12 and x_hat[0, 0] == 0.0
assert q.min() >= 0 and q.max() <= 15

# %% [markdown]
# ## 2. Granularity
#
# One scale for a whole tensor is set by its largest value. If one output channel has large
# weights, every other channel gets a coarse grid. One scale per output channel fixes that; one
# per group of 32 inputs goes further (and costs a float16 scale per 32 weights).
# SQNR (signal-to-quantization-noise ratio, dB) = 10 log10(sum w^2 / sum (w - w_hat)^2).

# %%
w = rng.normal(0, 0.02, size=(128, 64)).astype(np.float32)  # (in, out)
w[:, 5] *= 20  # one output channel with large weights
w[7, :] *= 8  # one input channel too
for text in ("w4t", "w4", "w4g32"):
    qt = Q.quantize_weight(w, Q.parse_spec(text))
    stats = Q.error_stats(w, qt.dequantize())
    print(f"{text:<6} SQNR {stats['sqnr_db']:5.1f} dB   scales: {qt.scale.size}")
sqnr = {t: Q.error_stats(w, Q.quantize_weight(w, Q.parse_spec(t)).dequantize())["sqnr_db"] for t in ("w4t", "w4", "w4g32")}
assert sqnr["w4t"] < sqnr["w4"] < sqnr["w4g32"]

# %% [markdown]
# ## 3. Storing the codes
#
# Codes of 4 bits go two to a byte (the first in the low nibble), 2-bit codes four to a byte.
# The "uniform" codec stores the packed codes and the scales (and zero points when affine) in
# the checkpoint instead of the float tensor, and decodes them to exactly the values the model
# was evaluated with.

# %%
print("pack [1, 2, 3] at 4 bits:", [hex(b) for b in Q.pack_codes([1, 2, 3], 4)])
enc = Q.quantize_weight(w, Q.parse_spec("w4g32")).encode()
print(f"float32: {w.nbytes} bytes; w4g32: {enc.nbytes()} bytes "
      f"({', '.join(f'{k} {v.nbytes}' for k, v in enc.parts.items())})")
assert enc.nbytes() < w.nbytes / 6

# %% [markdown]
# ## 4. Fake quantization and the straight-through estimator
#
# Quantization-aware training runs the forward on x_hat = fq(x). Rounding has a zero derivative
# almost everywhere, so the backward pretends fq is the identity inside the clipping range and
# flat outside: dx = dy * 1[qmin <= round(x/s) + z <= qmax] (PyTorch's FakeQuantize). That is
# what `minigpt train --qat w4g32` uses.

# %%
spec = Q.QuantSpec(bits=3, granularity="tensor")
narrow = Q._params_from_range(np.array([[-1.0]]), np.array([[1.0]]), spec, np.float64)  # a clipping range [-1, 1]
xs = np.linspace(-2, 2, 9).reshape(1, -1)
y, mask = Q.fake_quant_forward(xs, spec, narrow)
print("x    ", xs.ravel().round(2).tolist())
print("fq(x)", y.ravel().round(3).tolist())
print("STE  ", Q.fake_quant_backward(np.ones_like(xs), mask).ravel().tolist())
assert Q.fake_quant_backward(np.ones_like(xs), mask).ravel().tolist() == [0, 0, 1, 1, 1, 1, 1, 0, 0]

# %% [markdown]
# ## 5. GPTQ
#
# Round-to-nearest (RTN) rounds every weight on its own. GPTQ rounds one input column at a time
# and moves the remaining columns to cancel the error it just made, using the calibration
# inputs' Hessian H = 2 X^T X / N. When the inputs are correlated, this cancels much of the
# output error ||(W - Q) X^T||^2. (With H a multiple of the identity it is exactly RTN.)

# %%
W = rng.normal(0, 1, (32, 64))  # (out, in)
X = rng.normal(0, 1, (512, 64)) @ rng.normal(0, 1, (64, 64))  # correlated inputs
H = gptq.hessian(X)
for text in ("w4", "w3"):
    spec = Q.parse_spec(text)
    codes, sc, zp, _ = gptq.gptq_quantize(W, H, spec)
    rq, rs, rz = Q.quantize(W, spec)
    e_gptq = np.linalg.norm((W - Q.dequantize(codes, sc, zp, spec, np.float64)) @ X.T) ** 2
    e_rtn = np.linalg.norm((W - Q.dequantize(rq, rs, rz, spec, np.float64)) @ X.T) ** 2
    print(f"{text}: output error RTN {e_rtn:.1f}, GPTQ {e_gptq:.1f} ({e_gptq / e_rtn:.2f}x)")
    assert e_gptq < e_rtn

# %% [markdown]
# ## 6. llama.cpp's blocks
#
# Q8_0: blocks of 32 weights, a float16 scale d = max|x| / 127 and 32 int8 codes (34 bytes,
# 8.5 bits per weight). Q4_0: a float16 d = m / -8 (m the signed value of largest magnitude) and
# 32 codes of 4 bits with an offset of 8 (18 bytes, 4.5 bits per weight). minigpt writes the same
# bytes as llama.cpp's reference quantizers (the tests compare them with golden bytes).

# %%
row = rng.normal(0, 1, 64).astype(np.float32)
for fmt in ("q8_0", "q4_0"):
    data = ggml.QUANTIZE[fmt](row)
    err = np.abs(ggml.DEQUANTIZE[fmt](data) - row).max()
    print(f"{fmt}: {data.size} bytes for 64 weights, first block starts {data[:6].tolist()}, max error {err:.3f}")

# %% [markdown]
# ## 7. Integer-only inference
#
# A linear layer in int8: activations and weights quantized symmetric (per token, per output
# channel), one integer matrix product accumulated in int32, and a single rescale. With K inputs
# a sum of K products of two int8 values fits int32 as long as K <= 131071; the kernel refuses
# larger K. The static mode rescales in integers too: M = s_x s_w / s_y is stored as
# M0 * 2^-31 * 2^-n with M0 an int32 (Jacob et al. 2018).

# %%
a = rng.integers(-128, 128, (4, 300)).astype(np.int8)
b = rng.integers(-128, 128, (300, 5)).astype(np.int8)
assert np.array_equal(int8_matmul(a, b), int8_matmul_reference(a, b))
m = 0.0123
m0, n = int8.quantize_multiplier(m)
acc = rng.integers(-(10**6), 10**6, 8)
print(f"M = {m} = {m0} * 2^-31 * 2^-{n}; requantize {acc[:3].tolist()} -> {int8.requantize(acc[:3], m0, n).tolist()} "
      f"(float: {(acc[:3] * m).round(2).tolist()})")
assert np.all(np.abs(int8.requantize(acc, m0, n) - acc * m) <= 1)

# %% [markdown]
# ## 8. Weight sharing with k-means
#
# Deep Compression clusters a tensor's weights into 2^b shared values: b-bit indices plus a
# small codebook. Lloyd's iterations never increase the squared error; linear initialization
# keeps a centroid for the rare large weights.

# %%
idx, c, history = kmeans.kmeans_1d(w, 4)
print(f"k-means 4 bits: {len(np.unique(c[idx]))} distinct values, SSE {history[0]:.4f} -> {history[-1]:.4f} "
      f"in {len(history) - 1} iterations")
assert all(b <= a + 1e-12 for a, b in itertools.pairwise(history))
print(f"indices packed: {Q.packed_nbytes(idx.size, 4)} bytes, Huffman-coded: {kmeans.huffman_nbytes(idx)} bytes")

# %% [markdown]
# ## 9. A model: which layer hurts?
#
# We train a tiny model for a few seconds, quantize its linear weights to 3 bits, and measure
# for each tensor the loss change when *only that tensor* is quantized. (`minigpt quantize
# report --ckpt CKPT --bits 3 --png report.png` does the same from the command line.)

# %%
work = Path(tempfile.mkdtemp())
summary = train(TrainConfig(out_dir=str(work / "tiny"), max_iters=200, eval_interval=200, eval_iters=2, batch_size=8,
                            learning_rate=1e-2, warmup_iters=10, lr_decay_iters=200),
                dict(n_layer=2, n_head=2, n_embd=32, block_size=32, bias=False), quiet=True)
ck = load_checkpoint(summary["ckpt"])
_, val_ids = split(ck.tokenizer.encode(default_corpus()), ck.config.block_size)
val = list(iter_windows(val_ids, ck.config.block_size, 32))[:4]
q3, enc3 = Q.quantize_model(ck.config, ck.params, "rtn", Q.parse_spec("w3"))
rep = Q.report(ck.config, ck.params, q3, val)
print(Q.format_report(rep))
path = work / "w3.safetensors"
save_checkpoint(path, ck.config, q3, ck.tokenizer, encoded=enc3)
print(f"the 3-bit checkpoint: {path.stat().st_size:,} bytes; it loads to the quantized values:",
      np.array_equal(load_checkpoint(path).params["h.0.mlp.c_fc.weight"], q3["h.0.mlp.c_fc.weight"]))

name = "h.0.mlp.c_fc.weight"
errors = (q3[name] - ck.params[name]).ravel()
if plt is not None:
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.hist(errors, bins=60)
    ax.set_title(f"{name}: w_hat - w at 3 bits per channel")
    fig.tight_layout()
    fig.savefig(work / "error_histogram.png")
else:  # a text histogram
    counts, edges = np.histogram(errors, bins=12)
    for cnt, lo in zip(counts, edges):
        print(f"{lo:+.4f} {'#' * int(50 * cnt / counts.max())}")

# %% [markdown]
# ## 10. The baby Shakespeare benchmark
#
# `benchmarks/quantize_baby.py` runs every method on the baby model (2000 steps of tiny
# Shakespeare) and measures the whole val split. Its results, when present in the repository:

# %%
bench = Path(__file__).resolve().parent.parent / "benchmarks" / "quantize_baby.json" if "__file__" in globals() else None
if bench is not None and bench.is_file():
    res = json.loads(bench.read_text())
    for r in res["runs"]:
        size = f"{r['ratio']:.3f}x the float32 file" if r.get("ratio") else ""
        print(f"{r['label']:<44} val loss {r['val_loss']:.4f} ({r['delta']:+.4f})  {size}")
    fast = max(res["gemm"], key=lambda g: g["int8_gemm_gops"])
    print(f"int8 GEMM peak {fast['int8_gemm_gops']:.0f} GOP/s vs sgemm {fast['sgemm_gflops']:.0f} GFLOP/s "
          f"at M={fast['M']}, K={fast['K']}, N={fast['N']}")
else:
    print("benchmarks/quantize_baby.json not found: run benchmarks/quantize_baby.py")
