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
# # Tutorial 5: pruning, and making the pruned model really smaller
#
# Many weights of a trained network can be set to zero with little loss. **Pruning** chooses
# which. Users of pruning tools keep hitting three disappointments: the pruned model is *not
# smaller on disk* (the zeros are still stored), it is *not faster* (a zero costs the same
# multiply as any other number), and *pruned weights come back* during fine-tuning (the optimizer
# moves them again). This tutorial goes through each method of `minigpt.compress.prune` and shows
# how each of the three problems is handled:
#
# 1. the count rule and magnitude pruning, per tensor and global;
# 2. N:M (2:4) sparsity and its compressed storage;
# 3. Wanda: weights times activations;
# 4. a sparsity-vs-loss curve on a tiny model trained here;
# 5. fine-tuning and gradual pruning that keep the zeros at zero;
# 6. structured pruning: removing heads and neurons, so the model is smaller *and* faster;
# 7. the baby Shakespeare benchmark (`benchmarks/prune_baby.py`).
#
# Run it as a script (`python tutorials/05_pruning.py`, about 30 s) or as a notebook. Plots
# need matplotlib; without it the tutorial prints the numbers.
#
# Layout reminder: minigpt stores a linear weight as `(in, out)` (Hugging Face's Conv1D), so
# *input channel j is row j* and *output i is column i*; papers write the transpose.

# %%
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from minigpt.checkpoint import load_checkpoint, save_checkpoint
from minigpt.compress import prune, storage, structured
from minigpt.compress.prune_command import eval_windows, windows_loss
from minigpt.data import default_corpus, split
from minigpt.generate import generate
from minigpt.model import gpt_forward
from minigpt.train import RESUME_NAME, TrainConfig, train

np.set_printoptions(precision=3, suppress=True, linewidth=110)
workdir = Path(tempfile.mkdtemp(prefix="minigpt-pruning-"))

# %% [markdown]
# ## 1. How many, and which: the count rule
#
# Pruning a fraction `s` of `n` weights removes exactly `k = round(s·n)` of them, with Python's
# `round`, which rounds halves to the even neighbour (as `torch.nn.utils.prune`). The `k` with the
# lowest score go; for magnitude pruning the score is `|w|`. Equal scores are broken by position:
# the earlier entry (row-major) is pruned first, so the result is deterministic.

# %%
for s, n in [(0.25, 10), (0.5, 7), (0.75, 10)]:
    print(f"s={s}, n={n}: s*n = {s * n} -> prune {prune.n_to_prune(s, n)}")

w = np.array([[0.9, -0.1, 0.4], [-0.3, 0.05, -0.8]], dtype=np.float32)
mask = prune.mask_from_scores(np.abs(w), 0.5)  # True = kept
print("weights\n", w, "\nmask (kept)\n", mask, "\npruned\n", w * mask)
assert (w * mask == 0).sum() == 3

# %% [markdown]
# **Global** pruning ranks every tensor together (the same as ranking their concatenation).
# A tensor of small weights can then lose everything: "layer collapse", which the report flags.

# %%
params = {"big": np.array([1.0, 2.0, 3.0, 4.0]), "small": np.array([0.01, 0.02, 0.03, 0.04])}
per_tensor = prune.masks_from_scores(prune.magnitude_scores(params, params), 0.5, "tensor")
global_ = prune.masks_from_scores(prune.magnitude_scores(params, params), 0.5, "global")
print("per tensor:", {k: v.astype(int) for k, v in per_tensor.items()})
print("global:    ", {k: v.astype(int) for k, v in global_.items()})
assert not global_["small"].any()

# %% [markdown]
# ## 2. N:M sparsity and what it costs to store
#
# In **N:M** sparsity every group of M consecutive input channels keeps exactly N weights, per
# output. 2:4 is what NVIDIA's sparse tensor cores run at twice the dense speed. Here the groups
# run down each column (the input dimension):

# %%
rng = np.random.default_rng(0)
w = rng.normal(size=(8, 3)).astype(np.float32)
w24 = w * prune.nm_mask(np.abs(w), 2, 4)
print(w24)
assert ((w24.reshape(2, 4, 3) != 0).sum(axis=1) == 2).all()

# %% [markdown]
# Zeros in a dense array save nothing. The codecs store a sparse tensor in fewer bytes and decode
# it bit for bit: `bitmask` (one bit per weight plus the kept values) and `nm` (the N kept values
# per group plus each one's position, 2 bits for M = 4). At 50% in float32 both cost 17 bits per
# weight instead of 32: 0.53x. A checkpoint stores them through `save_checkpoint(..., encoded=)`
# and `load_checkpoint` gives back the dense arrays, so `minigpt eval` and `sample` just work.

# %%
big = rng.normal(size=(256, 128)).astype(np.float32)
big *= prune.nm_mask(np.abs(big), 2, 4)
for codec, options in (("bitmask", {}), ("nm", {"n": 2, "m": 4})):
    enc = storage.encode(big, codec, **options)
    assert np.array_equal(storage.decode(enc), big)
    print(f"{codec:8s}: {enc.nbytes():,} bytes for {big.nbytes:,} dense ({enc.nbytes() / big.nbytes:.3f}x)")

# %% [markdown]
# ## 3. Wanda: a weight matters as much as its input
#
# A small weight on an input channel that is always large can matter more than a large weight on
# a channel that is nearly silent. Wanda (Sun et al. 2023) scores `|W_ij| · ||X_j||₂`, with
# `X_j` the input channel's values over a few calibration batches, and compares scores within
# each output. One consequence, and a property the tests check: scaling input channel j by `a`
# and the weights reading it by `1/a` (the layer computes the same thing) leaves the mask
# unchanged. Magnitude pruning does not have this property.

# %%
x = rng.normal(size=(100, 8)) * np.array([1, 1, 1, 1, 1, 1, 1, 20.0])  # channel 7 is loud
w = rng.normal(size=(8, 4))
w[7] *= 0.1  # ... and its weights are small
norms = np.sqrt((x**2).sum(axis=0))
wanda = prune.per_output_mask(prune.wanda_scores(w, norms), 0.5)
magnitude = prune.per_output_mask(np.abs(w), 0.5)
print("row 7 kept by magnitude:", magnitude[7], " by wanda:", wanda[7])
a = 2.0 ** rng.integers(-3, 4, size=8)  # an exact rescaling per input channel
assert np.array_equal(prune.per_output_mask(prune.wanda_scores(w / a[:, None], norms * a), 0.5), wanda)
# the output error of the pruned layer on the calibration inputs
err = {name: np.linalg.norm(x @ w - x @ (w * m)) for name, m in (("magnitude", magnitude), ("wanda", wanda))}
print("output error:", {k: round(v, 2) for k, v in err.items()})
assert err["wanda"] < err["magnitude"]

# %% [markdown]
# ## 4. A sparsity-vs-loss curve on a tiny model
#
# We train a tiny model on the embedded Python reference text for a few seconds, then prune
# copies of it at growing sparsities with random, magnitude and Wanda scores and measure the val
# loss on fixed windows of the val split.

# %%
t0 = time.time()
text_path = workdir / "text.txt"
text_path.write_text(default_corpus()[:200_000], encoding="utf-8")
tc = TrainConfig(
    out_dir=str(workdir / "dense"),
    data=str(text_path),
    max_iters=300,
    batch_size=16,
    learning_rate=3e-3,
    min_lr=3e-4,
    warmup_iters=20,
    lr_decay_iters=300,
    eval_interval=300,
    eval_iters=5,
    log_interval=100,
)
summary = train(tc, dict(n_layer=2, n_head=2, n_embd=64, block_size=32, bias=False), quiet=True)
dense = load_checkpoint(workdir / "dense" / "ckpt.safetensors")
config = dense.config
ids = dense.tokenizer.encode(text_path.read_text(encoding="utf-8"))
train_ids, val_ids = split(ids, config.block_size)
windows = eval_windows(val_ids, config.block_size, 128)
calib = prune.calibration_batch(train_ids, config.block_size, 16)
dense_loss = windows_loss(config, dense.params, windows)
print(f"trained in {time.time() - t0:.1f} s; dense val loss {dense_loss:.3f}")

# %%
sparsities = [0.1, 0.3, 0.5, 0.7, 0.9]
curves = {}
for method in ("random", "magnitude", "wanda"):
    curves[method] = []
    for s in sparsities:
        params = {k: v.copy() for k, v in dense.params.items()}
        prune.prune_params(config, params, method, s, calib=calib)
        curves[method].append(windows_loss(config, params, windows))
print(f"{'sparsity':>9s}" + "".join(f"{m:>11s}" for m in curves))
for i, s in enumerate(sparsities):
    print(f"{s:9.0%}" + "".join(f"{curves[m][i]:11.3f}" for m in curves))
assert curves["magnitude"][2] < curves["random"][2]  # magnitude beats the random baseline at 50%

# %% [markdown]
# ## 5. Fine-tuning without losing the zeros, and gradual pruning
#
# After pruning, a few steps of training recover much of the loss. But an optimizer step moves
# every weight with a gradient, and Adam's moments remember old gradients: pruned weights come
# back unless the training loop stops them. minigpt's training loop, given a pruned model,
# zeroes the gradients of pruned weights before clipping, and after every optimizer step
# multiplies the weights *and AdamW's moments m and v* by the masks. A checkpoint written by
# `minigpt prune` records which tensors were pruned, so `minigpt train --init-from` (and
# `minigpt prune --finetune-iters K`) keep them at zero.

# %%
params = {k: v.copy() for k, v in dense.params.items()}
names = prune.prunable_names(config)
prune.prune_params(config, params, "magnitude", 0.7, names)
pruned_path = workdir / "pruned.safetensors"
save_checkpoint(
    pruned_path,
    config,
    params,
    dense.tokenizer,
    {"pruning": {"tensors": names}},
    encoded=prune.encode_sparse(params, names),
)
# 100 short steps, the same for this fine-tuning run and the gradual-pruning run below
SHORT_RUN = dict(
    data=str(text_path), max_iters=100, batch_size=16, learning_rate=1e-3, min_lr=1e-4, warmup_iters=0,
    lr_decay_iters=100, eval_interval=100, eval_iters=2, log_interval=100,
)
ft = TrainConfig(out_dir=str(workdir / "ft"), init_from=str(pruned_path), **SHORT_RUN)
train(ft, {}, quiet=True)
tuned = load_checkpoint(workdir / "ft" / RESUME_NAME)
for n in names:
    assert np.array_equal(tuned.params[n] == 0, params[n] == 0)  # the same zeros, exactly
    assert (tuned.optim["m"][n][params[n] == 0] == 0).all()  # and no momentum left to revive them
print(
    f"70%: dense {dense_loss:.3f}, pruned {windows_loss(config, params, windows):.3f}, "
    f"after 100 steps {windows_loss(config, tuned.params, windows):.3f}"
)
print(
    f"file: dense {(workdir / 'dense' / 'ckpt.safetensors').stat().st_size:,} bytes, "
    f"pruned {pruned_path.stat().st_size:,} bytes"
)

# %% [markdown]
# **Gradual pruning** (Zhu & Gupta 2017) prunes during training instead, along a cubic schedule
# `s_t = s_f (1 - (1 - (t - t0)/(n·Δt))³)`: fast at first, when there are many unimportant weights,
# slowly at the end. `minigpt train --prune-to 0.7 --prune-start I --prune-end J` does it.

# %%
print("schedule:", [round(prune.cubic_sparsity(t, 0.7, 0, 100), 3) for t in range(0, 101, 20)])
gr = TrainConfig(
    out_dir=str(workdir / "gradual"),
    init_from=str(workdir / "dense" / "ckpt.safetensors"),
    prune_to=0.7,
    prune_start=0,
    prune_end=80,
    prune_every=10,
    **SHORT_RUN,
)
train(gr, {}, quiet=True)
gradual = load_checkpoint(workdir / "gradual" / RESUME_NAME).params
assert all((gradual[n] == 0).sum() == round(0.7 * gradual[n].size) for n in names)
print(f"gradual 70% in 100 steps: {windows_loss(config, gradual, windows):.3f}")

# %% [markdown]
# ## 6. Structured pruning: a smaller dense model
#
# Unstructured zeros save bytes but not time: a NumPy matrix product multiplies zeros like any
# other number. Removing whole **MLP neurons** (a column of `c_fc` with the matching row of
# `c_proj`) or **attention heads** (their columns of q, k, v and rows of `c_proj`) gives smaller
# matrices. The new widths go into the config (`mlp_widths`, `head_counts`), and the model
# saves, loads, trains and samples as any other. Zeroing a unit's output rows gives exactly the
# same logits as removing it:

# %%
small_config, small, drop = structured.prune_structured(config, dense.params, "neurons", 0.5)
masked = structured.mask_units(config, dense.params, "neurons", drop)
idx = windows[:4, :-1]
diff = np.abs(gpt_forward(small_config, small, idx)[0] - gpt_forward(config, masked, idx)[0]).max()
print(
    f"mlp widths {small_config.mlp_widths}; parameters {sum(a.size for a in dense.params.values()):,} -> "
    f"{sum(a.size for a in small.values()):,}; max logit difference removed vs masked {diff:.1e}"
)
assert diff < 1e-4
prompt = dense.tokenizer.encode("def ")
print("sample:", repr(dense.tokenizer.decode(list(generate(small_config, small, prompt, 40, seed=0)))))

# %% [markdown]
# ## 7. The baby Shakespeare benchmark
#
# `benchmarks/prune_baby.py` runs the same comparisons on the baby Shakespeare model (4 layers,
# 4 heads, 128 channels, 2000 steps): val loss against sparsity for each method, one-shot and
# after 200 fine-tuning steps, file sizes, and the speed of the structurally pruned models. Its
# results are in `benchmarks/prune_baby.json`; the README lists the headline figures.

# %%
here = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
results_path = here.parent / "benchmarks" / "prune_baby.json"
bench = json.loads(results_path.read_text(encoding="utf-8")) if results_path.is_file() else None
if bench is None:
    print(f"{results_path} not found: run benchmarks/prune_baby.py to produce it")
else:
    print(f"dense val loss {bench['dense_loss']:.4f} ({bench['eval']})")
    for method, rows in bench["curves"].items():
        print(f"{method:17s}" + " ".join(f"{r['sparsity']:.0%}:{r['loss']:.3f}" for r in rows))
    for kind, e in bench["structured"].items():
        print(
            f"25% {kind} removed: training step {e['step_speedup']:.2f}x, "
            f"sampling {e['sample_speedup']:.2f}x faster; "
            f"val {e['loss']:.3f} -> {e['loss_finetuned']:.3f} after fine-tuning"
        )
    print("targets:", bench["targets"])

# %%
try:
    import matplotlib

    if not os.environ.get("DISPLAY") and "MPLBACKEND" not in os.environ:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    plt = None
    print("matplotlib is not installed (pip install matplotlib): skipping the plot")

if plt is not None:
    fig, axes = plt.subplots(1, 2 if bench else 1, figsize=(11 if bench else 5.5, 4), squeeze=False)
    ax = axes[0][0]
    for method, losses in curves.items():
        ax.plot(sparsities, losses, marker="o", label=method)
    ax.axhline(dense_loss, color="k", ls="--", lw=1, label="dense")
    ax.set(title="tiny model (this tutorial)", xlabel="sparsity", ylabel="val loss")
    ax.legend()
    if bench:
        ax = axes[0][1]
        for method, rows in bench["curves"].items():
            ax.plot([r["sparsity"] for r in rows], [r["loss"] for r in rows], marker="o", label=method)
            tuned_rows = [r for r in rows if "loss_finetuned" in r]
            ax.plot(
                [r["sparsity"] for r in tuned_rows],
                [r["loss_finetuned"] for r in tuned_rows],
                marker="x",
                ls=":",
                color=ax.lines[-1].get_color(),
            )
        ax.axhline(bench["dense_loss"], color="k", ls="--", lw=1, label="dense")
        ax.set(
            title="baby Shakespeare (dotted: +200 fine-tuning steps)",
            xlabel="sparsity",
            ylabel="val loss",
            ylim=(1.8, 3.5),
        )
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(workdir / "sparsity_vs_loss.png", dpi=100)
    print(f"saved {workdir / 'sparsity_vs_loss.png'}")
