"""Data parallelism, the idea in one process: split a batch into shards, compute each shard's
gradients on its own (as each worker of PyTorch DDP or Horovod does), combine them, and get
exactly the gradient of the whole batch.

The rule that makes it exact, with ignored targets too: the loss is a mean over the N non-ignored
targets of the whole batch, so shard k (holding n_k of them) must contribute its gradient scaled by
n_k / N. Each shard's loss is already a mean over its own n_k targets, so

    dL/dθ = sum_k (n_k / N) · dL_k/dθ

When every shard holds the same number of targets (no ignored positions, equal shard sizes), the
weights are all 1/K and this is the plain average of the shard gradients that DDP computes with an
allreduce. A shard whose targets are all ignored has n_k = 0 and contributes nothing.

Multi-process training over MPI builds on this (the sum over k becomes one Allreduce); it is not
in minigpt yet.

Legend: B batch, T time, K shards.
"""

from __future__ import annotations

import numpy as np

from .config import GPTConfig
from .errors import InputError
from .layers import IGNORE_INDEX
from .model import gpt_backward, gpt_forward


def shard_gradients(config: GPTConfig, params, idx, targets, n_shards: int):
    """The full batch's loss and gradients, computed shard by shard.

    Parameters
    ----------
    idx, targets : int arrays of shape (B, T); B must be divisible by n_shards
    n_shards : K, the number of workers to simulate; shard k holds rows [k B/K, (k+1) B/K)

    Returns
    -------
    loss : float, equal to gpt_forward's loss on the whole batch
    grads : dict like params, equal to gpt_backward's gradients on the whole batch (up to rounding)
    """
    idx, targets = np.asarray(idx), np.asarray(targets)
    B = idx.shape[0]
    if isinstance(n_shards, bool) or not isinstance(n_shards, int) or n_shards < 1 or B % n_shards:
        raise InputError(f"the shard count must be a positive divisor of the batch size {B}, got {n_shards}")
    n_total = int((targets != IGNORE_INDEX).sum())  # N: every worker can count it from the global batch
    shard_size = B // n_shards
    loss, grads = 0.0, None
    for k in range(n_shards):
        rows = slice(k * shard_size, (k + 1) * shard_size)
        n_k = int((targets[rows] != IGNORE_INDEX).sum())
        weight = n_k / max(n_total, 1)  # this shard's share of the targets
        _, shard_loss, cache = gpt_forward(config, params, idx[rows], targets[rows])
        shard_grads = gpt_backward(cache, dloss=weight)
        loss += weight * shard_loss
        grads = shard_grads if grads is None else {name: grads[name] + g for name, g in shard_grads.items()}
    return loss, grads
