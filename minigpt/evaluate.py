"""Measuring the loss: a quick estimate during training, and the exact figure on a whole split.

- `estimate_loss`: the mean loss over eval_iters random batches (nanoGPT's estimate_loss), used
  every eval_interval steps; cheap and a little noisy.
- `evaluate`: the loss over every target of a split exactly once, in consecutive windows of
  block_size (deterministic), with perplexity exp(loss) and bits per character loss / ln 2.
- `mean_loss`: the loss over every target of given (x, y) batches, each batch weighted by its
  number of targets; `evaluate` and the compression modules' fixed evaluation sets use it.
  With a character tokenizer one token is one character, so bits per token is bits per char.

No dropout in either (evaluation mode).
"""

from __future__ import annotations

import math

import numpy as np

from .config import GPTConfig
from .data import get_batch, iter_windows
from .model import gpt_forward


def estimate_loss(config: GPTConfig, params, ids, batch_size: int, block_size: int, eval_iters: int, rng) -> float:
    """Mean loss over eval_iters random batches of ids."""
    losses = []
    for _ in range(eval_iters):
        x, y = get_batch(ids, batch_size, block_size, rng)
        losses.append(gpt_forward(config, params, x, y)[1])
    return float(np.mean(losses))


def mean_loss(config: GPTConfig, params, batches) -> tuple[float, int]:
    """(mean loss over every target of the (x, y) batches, number of targets): each batch's mean
    weighted by its targets, so unequal batches count per token. Targets must not be ignored (-1)."""
    total, count = 0.0, 0
    for x, y in batches:
        _, loss, _ = gpt_forward(config, params, x, y)
        total += loss * y.size
        count += y.size
    return total / count, count


def evaluate(config: GPTConfig, params, ids, batch_size: int = 32) -> dict:
    """Loss over every target of ids (windows of block_size), weighted by token count."""
    loss, count = mean_loss(config, params, iter_windows(ids, config.block_size, batch_size))
    return {
        "val_loss": loss,
        "perplexity": math.exp(loss),
        "bits_per_char": loss / math.log(2),
        "tokens": count,
    }
