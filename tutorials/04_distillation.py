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
# # Tutorial 4: knowledge distillation, a small GPT taught by a bigger one
#
# A trained model knows more than its top guess. After the characters `"th"` a Shakespeare model
# puts most of its probability on `e`, but also some on `a`, `i`, `o` and `r`, and almost none
# on `z`. The training data shows one next character at a time, a one-hot label. The teacher's
# whole distribution is a richer target. **Distillation** trains a small *student* to match the
# *teacher's* distributions, usually mixed with the ordinary labels.
#
# In this tutorial we:
#
# 1. write the soft-target loss of Hinton et al. (2015) and its gradient by hand, and check both;
# 2. look at the mix with the labels (`alpha`) and at the temperature `T`;
# 3. build a student from the teacher's own blocks;
# 4. distill a tiny model in a few seconds, through the same training loop as `minigpt train`;
# 5. look at the loss curves of the baby Shakespeare benchmark (`benchmarks/distill_baby.py`).
#
# Run it as a script (`python tutorials/04_distillation.py`, about 20 s) or open it as a notebook.
# Plots need matplotlib (`pip install matplotlib`); without it the tutorial prints the numbers.
#
# Shapes: `B` batch, `T` time, `V` vocabulary, `C` channels. (We write the temperature as `tau`
# in code when `T` would be ambiguous.)

# %%
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from minigpt.compress.distill import (
    DistillConfig,
    distill,
    distill_loss_backward,
    distill_loss_forward,
    init_student,
    soft_loss_backward,
    soft_loss_forward,
)
from minigpt.config import GPTConfig
from minigpt.gradcheck import SMOOTH_TOLERANCE, compare, numerical_gradient
from minigpt.layers import cross_entropy_backward, cross_entropy_forward
from minigpt.model import gpt_forward, init_params
from minigpt.train import TrainConfig, train

np.set_printoptions(precision=4, suppress=True, linewidth=110)


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# %% [markdown]
# ## 1. Soft targets and temperature
#
# Dividing the logits by a temperature `tau > 1` before the softmax flattens the distribution, so the
# small probabilities (the "dark knowledge") become visible. Here is one position of a made-up
# teacher over a 5-character vocabulary:

# %%
teacher_logits = np.array([4.0, 2.0, 1.5, 0.0, -3.0])
for tau in (1.0, 2.0, 4.0):
    print(f"tau = {tau}: p = {softmax(teacher_logits / tau)}")

# %% [markdown]
# The soft loss compares the teacher's `p = softmax(t / tau)` with the student's
# `q = softmax(s / tau)` by the KL divergence, times `tau^2`:
#
#     soft = tau^2 * KL(p || q) = tau^2 * sum_v p_v (log p_v - log q_v)
#
# Its gradient with respect to the student's logits is short. The `log p` part does not depend on
# `s`, and `-sum p log softmax(s/tau)` is a cross-entropy with soft labels. Its gradient with
# respect to `z = s / tau` is `q - p` (the same fused form as the ordinary cross-entropy,
# `softmax - onehot`). The chain rule through `z = s / tau` gives a factor `1 / tau`:
#
#     d soft / d s = tau^2 * (1 / tau) * (q - p) = tau * (q - p)
#
# Without the `tau^2` the soft gradients would shrink like `1 / tau^2` as `tau` grows (Hinton et
# al., section 2). With it, the balance against the labels' loss stays about the same whichever
# temperature you choose. minigpt averages the loss over the positions (B, T) whose target is
# not -1, as its cross-entropy does, so the gradient per position is `tau * (q - p) / N`.

# %%
rng = np.random.default_rng(0)
B, T, V, tau = 2, 3, 5, 2.0
s = rng.normal(size=(B, T, V))  # student logits
t = rng.normal(size=(B, T, V)) * 2  # teacher logits
loss, cache = soft_loss_forward(s, t, tau)
ds = soft_loss_backward(cache)

# by hand, in three lines
p, q = softmax(t / tau), softmax(s / tau)
by_hand = tau**2 * np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=-1))
grad_by_hand = tau * (q - p) / (B * T)
print(f"soft loss: minigpt {loss:.10f}, by hand {by_hand:.10f}")
assert np.isclose(loss, by_hand, rtol=1e-12)
assert np.allclose(ds, grad_by_hand, rtol=1e-12)

# and against central finite differences (float64)
result = compare("d soft / d s", ds, numerical_gradient(lambda: soft_loss_forward(s, t, tau)[0], s))
print(result)
assert result.rel_error < SMOOTH_TOLERANCE

# %% [markdown]
# Two properties to remember. A student identical to its teacher has a loss of exactly 0 and a
# gradient of exactly 0. Adding a constant to a row of logits changes nothing, because the softmax
# does not see it:

# %%
same_loss, same_cache = soft_loss_forward(t.copy(), t, tau)
assert same_loss == 0.0 and not soft_loss_backward(same_cache).any()
shifted = s.copy()
shifted[0, 1] += 100.0
assert np.isclose(soft_loss_forward(shifted, t, tau)[0], loss, rtol=1e-10)
print("identical student: loss 0, gradient 0; shifted row: same loss")

# %% [markdown]
# ## 2. Mixing with the labels
#
# The distillation loss is `alpha * soft + (1 - alpha) * cross_entropy(s, labels)`. With
# `alpha = 0` it is exactly the ordinary training loss, which is a useful check:

# %%
labels = rng.integers(0, V, size=(B, T))
labels[1, 2] = -1  # an ignored position: both terms leave it out
mix, parts, mix_cache = distill_loss_forward(s, t, labels, alpha=0.0, temperature=tau)
ce, ce_cache = cross_entropy_forward(s, labels)
assert mix == ce and np.array_equal(distill_loss_backward(mix_cache), cross_entropy_backward(ce_cache))
mix, parts, _ = distill_loss_forward(s, t, labels, alpha=0.5, temperature=tau)
print(f"alpha = 0.5: loss {mix:.4f} = 0.5 * soft {parts['soft_loss']:.4f} + 0.5 * ce {parts['ce_loss']:.4f}")

# %% [markdown]
# minigpt has two other divergences (`--divergence`). `reverse_kl` computes `KL(q || p)`, the
# mode-seeking direction that MiniLLM uses: the student is punished for putting probability where
# the teacher puts none. `js` is the Jensen-Shannon divergence, which is symmetric and bounded.
# Losses on the hidden states (`--hidden-loss mse|cosine`) compare the residual streams of
# mapped layers. When the widths differ, a learned projection maps the student's width to the
# teacher's. Every one of these losses has a hand-written backward, checked in
# `tests/test_distill.py`.
#
# ## 3. A student built from the teacher's blocks
#
# DistilBERT started its student from every other layer of its teacher. A student built from
# *all* of a teacher's blocks, at the same width, is the teacher itself, so its distillation loss
# is exactly zero:

# %%
tcfg = GPTConfig(vocab_size=11, block_size=8, n_layer=4, n_head=2, n_embd=16)
tparams = init_params(tcfg, seed=1, dtype=np.float64)
copy = init_student(tcfg, tparams, tcfg, "0,1,2,3", dtype=np.float64)
x = rng.integers(0, 11, size=(2, 8))
t_logits = gpt_forward(tcfg, tparams, x)[0]
assert distill_loss_forward(gpt_forward(tcfg, copy, x)[0], t_logits, None, 1.0, 2.0)[0] == 0.0
half = init_student(tcfg, tparams, tcfg.replace(n_layer=2), "every-other", dtype=np.float64)
narrow = init_student(tcfg, tparams, tcfg.replace(n_layer=2, n_embd=8, n_head=1), "every-other", dtype=np.float64)
print("every other block: soft loss",
      round(distill_loss_forward(gpt_forward(tcfg.replace(n_layer=2), half, x)[0], t_logits, None, 1.0, 2.0)[0], 6))
print("half as wide (the most important channels, heads and neurons kept):", narrow["h.0.mlp.c_fc.weight"].shape)

# %% [markdown]
# ## 4. Distilling a tiny model
#
# `distill` is `train` with another objective. Each step runs the teacher forward in inference
# mode (no labels, no dropout, and no backward cache kept). It then runs the student forward,
# computes the losses above and does one backward pass through the student. Logging,
# evaluation, checkpoints, resume and Ctrl-C all come from `minigpt/train.py`, and the student's
# checkpoint is an ordinary minigpt checkpoint.
#
# On the command line:
#
#     minigpt distill --teacher out/ckpt.safetensors --data input.txt --n-layer 2 \
#         --alpha 0.5 --temperature 2 --student-init every-other --out-dir out-student
#
# Here we use a tiny teacher trained for a few seconds on the Python reference text that ships
# with CPython, and three 1-layer students. The runs are too short to rank the methods, so
# section 5 shows the real comparison.

# %%
workdir = Path(tempfile.mkdtemp(prefix="minigpt_tutorial04_"))  # the runs write here
quick = dict(batch_size=8, max_iters=120, learning_rate=3e-3, warmup_iters=10, lr_decay_iters=120, min_lr=3e-4,
             eval_interval=40, eval_iters=4, log_interval=10, seed=1337)
teacher_model = dict(n_layer=2, n_head=2, n_embd=32, block_size=32, bias=False)
t0 = time.perf_counter()
teacher = train(TrainConfig(out_dir=str(workdir / "teacher"), **dict(quick, max_iters=240, lr_decay_iters=240)),
                teacher_model, quiet=True)
student_model = dict(teacher_model, n_layer=1)
runs = {"scratch": train(TrainConfig(out_dir=str(workdir / "scratch"), **quick), student_model, quiet=True)}
for name, init in (("distill-random", "random"), ("distill-teacher", "every-other")):
    dc = DistillConfig(teacher=teacher["ckpt"], alpha=0.5, temperature=2.0, student_init=init)
    runs[name] = distill(TrainConfig(out_dir=str(workdir / name), **quick), dc, {}, student_model, quiet=True)
print(f"teacher ({teacher['params']:,} parameters): val loss {teacher['val_loss']:.4f}")
for name, r in runs.items():
    print(f"student {name:16s} ({r['params']:,} parameters): val loss {r['val_loss']:.4f}")
print(f"({time.perf_counter() - t0:.1f} s)")
assert all(np.isfinite(r["val_loss"]) for r in runs.values())

# %% [markdown]
# ## 5. The baby Shakespeare benchmark
#
# `benchmarks/distill_baby.py` distills the baby Shakespeare model (4 layers, 128 channels,
# 2000 steps) into two students: 2 layers at 128 channels, and 4 layers at 64 channels. Each
# student is trained three ways with the same batches and schedule. The script writes its
# figures and curves to `benchmarks/distill_baby.json`, which we read here. The README lists
# the measured table.

# %%
here = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
results_path = here.parent / "benchmarks" / "distill_baby.json"
bench = json.loads(results_path.read_text(encoding="utf-8")) if results_path.is_file() else None
if bench is None:
    print(f"{results_path} not found: run benchmarks/distill_baby.py to produce it")
else:
    print(f"teacher: val loss {bench['teacher']['val_loss_whole']:.4f} (whole val split)")
    for key, run in bench["runs"].items():
        gap = run.get("gap_closed_whole")
        print(f"{key:24s} {run['params']:>9,} params  val {run['val_loss_whole']:.4f}"
              + ("" if gap is None else f"  gap closed {gap:.0%}"))

# %%
try:
    import matplotlib

    if not os.environ.get("DISPLAY") and "MPLBACKEND" not in os.environ:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    plt = None
    print("matplotlib is not installed (pip install matplotlib): skipping the plots")

if plt is not None:
    # one panel per student: its three training runs, and the teacher for reference
    if bench:
        groups = {}
        for key, run in bench["runs"].items():
            groups.setdefault(run["student"], {})[run["mode"]] = run["curves"]["evals"]
    else:  # no benchmark results: plot the tiny runs of section 4
        groups = {"tiny 1-layer student": {
            name: [json.loads(line) for line in (workdir / name / "metrics.jsonl").read_text().splitlines()
                   if "val_loss" in line] for name in runs}}
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 4), squeeze=False)
    for ax, (student, curves) in zip(axes[0], groups.items()):
        for mode, evals in curves.items():
            ax.plot([e["iter"] for e in evals], [e["val_loss"] for e in evals], marker="o", ms=3, label=mode)
        if bench:
            ax.axhline(bench["teacher"]["val_loss_estimate"], color="k", ls="--", lw=1, label="teacher")
            ax.set_ylim(1.7, 2.6)
        ax.set_title(f"student {student}")
        ax.set_xlabel("step")
        ax.set_ylabel("val loss (20-batch estimate)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(workdir / "distillation_curves.png", dpi=100)
    print(f"saved {workdir / 'distillation_curves.png'}")
