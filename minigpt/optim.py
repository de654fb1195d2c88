"""AdamW, global-norm gradient clipping and the warmup + cosine learning-rate schedule.

- `AdamW` matches torch.optim.AdamW (Loshchilov & Hutter, decoupled weight decay) step for step:
      p <- p * (1 - lr * weight_decay)                   decay first, not through the gradient
      m <- beta1 m + (1 - beta1) g;   v <- beta2 v + (1 - beta2) g^2
      p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
  Weight decay applies to tensors with 2 or more dimensions only (matrices and embeddings), not
  to biases and LayerNorm weights, as nanoGPT's configure_optimizers.
- `clip_grad_norm` matches torch.nn.utils.clip_grad_norm_: one norm over all gradients, scaled
  by max_norm / (norm + 1e-6) when it exceeds max_norm.
- `get_lr` is nanoGPT's schedule: linear warmup, cosine decay to min_lr, then constant.
"""

from __future__ import annotations

import math

import numpy as np

from . import backend


class AdamW:
    """AdamW over a dict of named parameters, updated in place. State: the step count t and
    the first and second moments m and v (one array per parameter, like the parameter)."""

    def __init__(self, params: dict, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01):
        self.beta1, self.beta2, self.eps, self.weight_decay = beta1, beta2, eps, weight_decay
        self.t = 0
        self.m = {name: np.zeros_like(p) for name, p in params.items()}
        self.v = {name: np.zeros_like(p) for name, p in params.items()}

    def step(self, params: dict, grads: dict, lr: float):
        """One update of every parameter in place with learning rate lr."""
        self.t += 1
        update = backend.ops().adamw_update  # this module's adamw_update, or its numba twin
        for name, p in params.items():
            decay = p.ndim >= 2  # weights and embeddings decay; biases and LayerNorm gains do not
            update(p, grads[name], self.m[name], self.v[name], lr, self.beta1, self.beta2, self.eps,
                   self.weight_decay, self.t, decay)  # fmt: skip


def adamw_update(p, g, m, v, lr, beta1, beta2, eps, weight_decay, t, decay):
    """One AdamW step of parameter p in place (torch.optim.AdamW's arithmetic, in its order).

    p, g, m, v : arrays of one shape: the parameter, its gradient, the first and second moments
        (m and v are updated in place too)
    t : the step number, counted from 1, for the bias corrections
    decay : whether weight decay applies to this parameter
    """
    # BEGIN SOLUTION adamw_update
    # HINT: in place (p -= ..., never p = ...), in the docstring's order: decay, moments, step
    bias_correction1 = 1.0 - beta1**t
    bias_correction2_sqrt = math.sqrt(1.0 - beta2**t)
    if decay and weight_decay != 0.0:
        p *= 1.0 - lr * weight_decay  # decoupled weight decay: not part of the gradient, not in m or v
    m *= beta1
    m += (1.0 - beta1) * g
    v *= beta2
    v += (1.0 - beta2) * (g * g)
    denom = np.sqrt(v) / bias_correction2_sqrt + eps
    p -= (lr / bias_correction1) * (m / denom)
    # END SOLUTION


def sum_of_squares(g) -> float:
    """The sum of g's squared elements, accumulated in float64."""
    return float(np.sum(np.square(g, dtype=np.float64)))


def global_norm(grads: dict) -> float:
    """sqrt of the sum of squares of every gradient element (accumulated in float64)."""
    sumsq = backend.ops().sum_of_squares  # this module's sum_of_squares, or its numba twin
    return math.sqrt(sum(sumsq(g) for g in grads.values()))


def clip_grad_norm(grads: dict, max_norm: float) -> float:
    """Scale all gradients in place so their global norm is at most max_norm; returns the norm
    before clipping. max_norm <= 0 turns clipping off."""
    norm = global_norm(grads)
    coef = max_norm / (norm + 1e-6)
    if max_norm > 0.0 and coef < 1.0:  # torch clamps coef to at most 1
        for g in grads.values():
            g *= coef
    return norm


def get_lr(it: int, learning_rate: float, warmup_iters: int, lr_decay_iters: int, min_lr: float) -> float:
    """nanoGPT's schedule for step it (0-based)."""
    # BEGIN SOLUTION get_lr
    # HINT: warmup learning_rate * (it + 1) / (warmup_iters + 1); min_lr after lr_decay_iters; cosine between
    if it < warmup_iters:  # 1) linear warmup to learning_rate
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:  # 2) after the decay, hold min_lr
        return min_lr
    # 3) in between, cosine decay from learning_rate down to min_lr
    decay_ratio = (it - warmup_iters) / max(lr_decay_iters - warmup_iters, 1)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))  # goes 1 -> 0
    return min_lr + coeff * (learning_rate - min_lr)
    # END SOLUTION
