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
# # Tutorial 7: data-parallel training, provably equal to one big batch
#
# Large models are trained **data-parallel**: every worker holds the whole model, computes the
# gradients of its own shard of the batch, and the shard gradients are combined before one
# identical optimizer step everywhere. That is PyTorch's DistributedDataParallel and Horovod.
# minigpt does it over MPI (`mpiexec -n 2 minigpt train --data-parallel ...`), and this tutorial
# shows why it is *exactly* the same training as one process with the whole batch.
#
# In this tutorial we:
#
# 1. split one batch into K shards, compute each shard's gradients, and recover the full-batch
#    gradient;
# 2. see why the shards must be weighted by their number of targets when some are ignored;
# 3. build the distributed sampler: every rank draws the global batch, keeps its own rows;
# 4. simulate two ranks in one process: one flat gradient buffer per rank, one sum (what
#    `Allreduce` computes), clipping and AdamW on the sum; 5 steps equal the single process;
# 5. run it for real with `mpiexec -n 2` (when mpi4py is installed) and compare;
# 6. look at threads per rank and at the measured speed on a 2-core machine.
#
# Run it as a script (`python tutorials/07_data_parallel.py`, a few seconds) or as a notebook.
# Everything runs in float64 on the NumPy layers (the specification), so that "equal" can mean
# equal to 1e-12.
#
# Shapes: `B` batch (the global batch), `T` time, `K` shards (= ranks `R`), `r` one rank.

# %%
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from minigpt import backend
from minigpt.checkpoint import load_checkpoint
from minigpt.config import GPTConfig
from minigpt.data import get_batch
from minigpt.model import gpt_backward, gpt_forward, init_params
from minigpt.optim import AdamW, clip_grad_norm
from minigpt.parallel import shard_batch, shard_gradients
from minigpt.threads import threads_per_rank
from minigpt.train import TrainConfig, train

backend.set_backend("numpy")  # the readable layers; float64 would make numba compile new kernels
np.set_printoptions(precision=4, suppress=True, linewidth=110)
config = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16)
params = init_params(config, seed=0, dtype=np.float64)
rng = np.random.default_rng(0)
B, T = 8, config.block_size
idx = rng.integers(0, config.vocab_size, (B, T))
targets = rng.integers(0, config.vocab_size, (B, T))


def max_rel_diff(a: dict, b: dict) -> float:
    """The largest difference over all tensors, relative to each tensor's largest entry."""
    return max(float(np.abs(a[n] - b[n]).max() / np.abs(b[n]).max()) for n in b)


# %% [markdown]
# ## 1. Shards of a batch
#
# The loss is a mean over the batch's B·T positions. A mean of means is the mean when the parts
# are the same size: each of K shards (B/K rows) computes its own mean loss and its gradients,
# and the average of the K shard gradients is the full-batch gradient. `shard_gradients` does
# exactly that, in one process; we compare it with one forward/backward of the whole batch:

# %%
_, full_loss, cache = gpt_forward(config, params, idx, targets)
full = gpt_backward(cache)
for K in (1, 2, 4, 8):
    loss, grads = shard_gradients(config, params, idx, targets, K)
    print(f"K = {K}: loss {loss:.12f} (full {full_loss:.12f}), max relative gradient difference "
          f"{max_rel_diff(grads, full):.1e}")
    assert max_rel_diff(grads, full) < 1e-12 and abs(loss - full_loss) < 1e-12

# %% [markdown]
# What is left is rounding: the sums over the batch are added in another order. (The K must
# divide B: `shard_gradients(..., 3)` raises an error naming the batch size.)
#
# ## 2. Ignored targets: weight each shard by its share of the targets
#
# Positions whose target is -1 (padding, a prompt we do not train on) are left out of the mean.
# Then the shards can hold different numbers of targets, and the plain average is wrong: a shard
# with 1 target would weigh as much as a shard with 60. The loss is a mean over the N targets of
# the whole batch, so shard k, holding n_k of them, must count with weight n_k / N:
#
#     dL/dθ = sum_k (n_k / N) · dL_k/dθ
#
# This is the rule minigpt uses everywhere (`shard_batch` returns n_k / N with the shard). With
# no ignored targets every weight is 1/K, the plain average of DDP.

# %%
masked = targets.copy()
masked[:4, 1:] = -1  # the first half keeps 4 targets, the second half 32
_, _, cache = gpt_forward(config, params, idx, masked)
full_masked = gpt_backward(cache)
halves = [shard_batch(idx, masked, k, 2) for k in range(2)]
print("weights n_k / N:", [round(w, 4) for _, _, w in halves])
shard_grads = [gpt_backward(gpt_forward(config, params, x, y)[2]) for x, y, _ in halves]
plain = {n: (shard_grads[0][n] + shard_grads[1][n]) / 2 for n in full_masked}
weighted = {n: halves[0][2] * shard_grads[0][n] + halves[1][2] * shard_grads[1][n] for n in full_masked}
print(f"plain average: off by {max_rel_diff(plain, full_masked):.2e}; "
      f"weighted by n_k / N: off by {max_rel_diff(weighted, full_masked):.1e}")
assert max_rel_diff(plain, full_masked) > 1e-2 and max_rel_diff(weighted, full_masked) < 1e-12

# %% [markdown]
# ## 3. The distributed sampler
#
# For R ranks to train *the same run* as one process, they must consume the same global
# batches. minigpt's batches are a pure function of (seed, step): step s draws its windows with a
# generator seeded `[seed, s, 0]`. So every rank draws the whole global batch (B window starts:
# a few integers, no communication) and keeps rows `[r B/R, (r+1) B/R)`. Every rank can also
# count N, the global batch's targets, for its weight n_r / N.

# %%
ids = np.arange(1000) % config.vocab_size  # stand-in token ids
R, seed, step = 2, 1337, 5
x_global, y_global = get_batch(ids, B, T, np.random.default_rng([seed, step, 0]))
rows = []
for r in range(R):  # what rank r does, on its own
    x_r, y_r, w_r = shard_batch(*get_batch(ids, B, T, np.random.default_rng([seed, step, 0])), r, R)
    print(f"rank {r}: rows {r * B // R}..{(r + 1) * B // R - 1}, first tokens {x_r[:, 0]}, weight {w_r}")
    rows.append(x_r)
assert np.array_equal(np.concatenate(rows), x_global)  # disjoint shards that together are the global batch

# %% [markdown]
# ## 4. Two ranks simulated in one process: one flat buffer, one sum
#
# Each rank computes its shard's gradients, scaled by its weight. The ranks then need the **sum**
# of these. MPI's `Allreduce(SUM)` computes an elementwise sum of one buffer across ranks and
# leaves the result on every rank. One call per tensor would pay the latency ~80 times per
# step, so each rank copies all its gradients into **one flat contiguous buffer** (plus the loss)
# and reduces that once. The gradients are then *views* into the summed buffer: clipping scales
# the buffer in place, and AdamW reads it. Every rank holds the same summed buffer, so every rank
# computes the same clipping factor and the same update, and the parameters stay bitwise equal.
#
# Clipping must come *after* the sum: clipping each shard's gradient separately is a different
# (and rank-dependent) operation. Here we run 5 AdamW steps both ways, with clipping active:

# %%
names = sorted(params)
sizes = [params[n].size for n in names]


def pack(grads: dict, loss: float) -> np.ndarray:
    """One rank's flat buffer: every gradient flattened in a fixed order, then the loss."""
    return np.concatenate([grads[n].ravel() for n in names] + [np.array([loss])])


def unpack(buf: np.ndarray) -> dict:
    views, offset = {}, 0
    for n, size in zip(names, sizes):
        views[n] = buf[offset : offset + size].reshape(params[n].shape)  # a view, no copy
        offset += size
    return views


single = {n: p.copy() for n, p in params.items()}
ranks = [{n: p.copy() for n, p in params.items()} for _ in range(R)]  # each rank's copy (the broadcast)
opt_single = AdamW(single, weight_decay=0.1)
opts = [AdamW(p, weight_decay=0.1) for p in ranks]
for step in range(5):
    x, y = get_batch(ids, B, T, np.random.default_rng([seed, step, 0]))
    _, loss_single, cache = gpt_forward(config, single, x, y)
    g = gpt_backward(cache)
    norm_single = clip_grad_norm(g, 0.5)
    opt_single.step(single, g, lr=1e-2)

    buffers = []
    for r in range(R):
        x_r, y_r, w_r = shard_batch(x, y, r, R)
        _, loss_r, cache = gpt_forward(config, ranks[r], x_r, y_r)
        buffers.append(pack(gpt_backward(cache, dloss=w_r), w_r * loss_r))
    summed = np.sum(buffers, axis=0)  # what one Allreduce(SUM) leaves on every rank
    for r in range(R):
        buf = summed.copy()  # rank r's copy of the result
        g_r = unpack(buf)
        norm_r = clip_grad_norm(g_r, 0.5)  # scales buf in place
        opts[r].step(ranks[r], g_r, lr=1e-2)
    print(f"step {step}: loss {loss_single:.6f} single, {summed[-1]:.6f} data-parallel; "
          f"gradient norm {norm_single:.4f} / {norm_r:.4f} (clipped to 0.5)")
print(f"after 5 steps: max relative difference to the single process {max_rel_diff(ranks[0], single):.1e}")
assert all(np.array_equal(ranks[0][n], ranks[1][n]) for n in names)  # the ranks: bitwise equal
assert max_rel_diff(ranks[0], single) < 1e-10

# %% [markdown]
# ## 5. For real, over MPI
#
# `minigpt/parallel.py` does the same with mpi4py (`pip install 'minigpt[mpi]'` brings mpi4py and
# the MPICH library as wheels, with `mpiexec`):
#
#     mpiexec -n 2 minigpt train --data-parallel --preset tiny --batch-size 8 --out-dir out
#
# - `--batch-size` is the **global** batch: R must divide it (otherwise a one-line error).
# - Rank 0's parameters (and AdamW moments, after `--resume`) are broadcast to every rank at the
#   start (`Bcast`, buffer-based).
# - Each step: one `Allreduce` of one flat buffer, the buffer-based uppercase call (mpi4py's
#   lowercase `allreduce` pickles Python objects and was measured 20x slower).
# - Only rank 0 logs, evaluates and writes checkpoints. At every evaluation the ranks compare a
#   hash of their parameters: they must be bitwise equal.
# - A rank that raises aborts the whole job with a one-line error naming it; a rank that dies is
#   seen by mpiexec; a rank that hangs is caught by a watchdog (`--collective-timeout`, default
#   600 s). Checkpoints are written atomically, so the last one survives.
#
# If mpi4py and mpiexec are installed, we run 2 ranks for 10 steps and compare with one process
# (float64, the NumPy layers):

# %%
mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
try:
    import mpi4py  # noqa: F401 (the package only: importing mpi4py.MPI would start MPI here)
except ImportError:
    mpiexec = None
if mpiexec is None:
    print("mpi4py or mpiexec not installed: skipping the real run (pip install 'minigpt[mpi]')")
else:
    work = Path(tempfile.mkdtemp())
    text = work / "text.txt"
    text.write_text(" ".join(np.random.default_rng(0).choice(["to", "be", "or", "not", "that", "is", "\n"], 1500)))
    common = dict(data=str(text), dtype="float64", batch_size=4, max_iters=10, eval_interval=5, eval_iters=2,
                  warmup_iters=2, lr_decay_iters=10, learning_rate=3e-3)
    model = dict(n_layer=2, n_head=2, n_embd=16, block_size=16)
    train(TrainConfig(out_dir=str(work / "single"), **common), model, quiet=True)
    model = dict(model, bias=True, dropout=0.0)  # GPTConfig's defaults; the command's default preset differs
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in {**common, **model}.items() if not isinstance(v, bool)]
    flags.append("--bias")
    env = dict(os.environ, MINIGPT_BACKEND="numpy")
    proc = subprocess.run([mpiexec, "-n", "2", sys.executable, "-m", "minigpt", "train", "--data-parallel", *flags,
                           f"--out-dir={work / 'dp'}", "--json"], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    a = load_checkpoint(work / "dp" / "resume.safetensors").params
    b = load_checkpoint(work / "single" / "resume.safetensors").params
    diff = max(float(np.abs(a[n] - b[n]).max()) for n in b)
    print(f"{summary['world_size']} ranks, {summary['iter']} steps: largest parameter difference to one process {diff:.1e}")
    assert summary["world_size"] == 2 and diff < 1e-10

# %% [markdown]
# ## 6. Threads, and what 2 ranks buy on 2 cores
#
# NumPy's BLAS and numba each start one thread per core, and read that count once, when they load.
# Two ranks on 2 cores would run 2 x (2 + 2) threads on 2 cores; measured here that made the
# matrix products 1.75x slower. So `import minigpt` under `mpiexec` (before it imports NumPy)
# sets `OPENBLAS_NUM_THREADS`, `OMP_NUM_THREADS`, `MKL_NUM_THREADS` and `NUMBA_NUM_THREADS` to
# cores // (ranks on this machine), unless you set them yourself (`minigpt/threads.py`):

# %%
for cores, ranks_here in ((2, 1), (2, 2), (8, 2), (2, 3)):
    print(f"{cores} cores, {ranks_here} rank(s) on the machine: {threads_per_rank(cores, ranks_here)} thread(s) per rank")

# %% [markdown]
# On one machine, data parallelism cannot create cores: 1 process with 2 threads and 2 ranks with
# 1 thread each use the same 2 cores. What 2 ranks can win is the part of a step that one process
# does not spread over its threads (numba's serial loops, Python overhead); what they pay is the
# Allreduce (copying and summing ~41 MiB per step for the small model). The benchmark
# (`benchmarks/data_parallel.py`) measured, on the `small` preset (6 layers, 384 channels,
# block 256, global batch 8):

# %%
bench = Path(__file__).resolve().parent.parent / "benchmarks" / "data_parallel.json" if "__file__" in globals() else None
if bench is not None and bench.is_file():
    result = json.loads(bench.read_text())
    best = result["best_tokens_per_s"]
    print(f"tokens/s: one process {best['single']:,.0f}, 1 rank {best['dp1']:,.0f}, 2 ranks {best['dp2']:,.0f} "
          f"on {result['cores']} cores")
    ar = result["allreduce"]
    print(f"one Allreduce of {ar['mib']:.1f} MiB over 2 ranks: {ar['allreduce_ms_median']:.1f} ms")
else:
    print("benchmarks/data_parallel.json not found (run benchmarks/data_parallel.py)")

# %% [markdown]
# Across machines the same command runs with a hostfile (see the README's "Data-parallel training
# over MPI"): there each rank brings its own cores, and the Allreduce crosses the network.
