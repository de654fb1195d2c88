"""Structured pruning: removing whole MLP neurons and attention heads, so the model is a smaller
dense model (fewer parameters, smaller matrices, faster), not a dense model full of zeros.

Units. An MLP neuron j of layer i is column j of mlp.c_fc (and its bias) with row j of
mlp.c_proj: removing it narrows the MLP from F to F - 1. An attention head h is its hs columns in
each of q, k and v of attn.c_attn (and their biases) with its hs rows of attn.c_proj. The result
records each layer's width in GPTConfig.mlp_widths and its head count in GPTConfig.head_counts
(the head size hs = n_embd // n_head is unchanged), so it saves, loads, trains and samples as any
minigpt model.

Masking a unit (zeroing its rows of the output projection, c_proj) gives the same logits as
removing it: the unit's output is multiplied by zero either way. The tests check it.

Ranking (lowest removed first, ties: lower index first):
- "norm": the L2 norm of every weight of the unit (c_fc column, bias and c_proj row; a head's q,
  k, v columns and c_proj rows), as Distiller's L2-ranked structure pruner;
- "loss": the measured increase of the calibration loss when that unit alone is masked (one
  forward per unit: heads are few, neurons are many, so this is slow for neurons).
Counts: round(s * n) units per layer (scope "tensor"), or round(s * total) by one ranking over
all layers (scope "global", loss scores only, since norms of different layers are not
comparable). Every layer keeps at least one unit.

Legend: L layers, C channels, NH_i heads of layer i, hs head size, F_i MLP width of layer i.
"""

from __future__ import annotations

import numpy as np

from ..config import GPTConfig
from ..errors import InputError
from ..model import gpt_forward
from .prune import check_sparsity, n_to_prune

KINDS = ("neurons", "heads")


def _units(config: GPTConfig, kind: str, i: int) -> int:
    return config.layer_mlp_width(i) if kind == "neurons" else config.layer_heads(i)


def head_columns(config: GPTConfig, i: int, heads) -> np.ndarray:
    """The columns of c_attn (C, 3A) that belong to the given heads of layer i, q then k then v."""
    hs, A = config.head_size, config.layer_heads(i) * config.head_size
    cols = (np.asarray(heads)[:, None] * hs + np.arange(hs)).reshape(-1)  # within q (or k, v)
    return np.concatenate([cols, A + cols, 2 * A + cols])


def head_rows(config: GPTConfig, heads) -> np.ndarray:
    """The rows of attn.c_proj (A, C) that carry the given heads' outputs."""
    hs = config.head_size
    return (np.asarray(heads)[:, None] * hs + np.arange(hs)).reshape(-1)


def norm_scores(config: GPTConfig, params: dict, kind: str) -> list[np.ndarray]:
    """Per layer, the L2 norm of each unit's weights: [(NH_i,) or (F_i,)]."""

    def sq(name, axis):
        a = params.get(name)
        return 0.0 if a is None else np.sum(np.asarray(a, dtype=np.float64) ** 2, axis=axis)

    out = []
    for i in range(config.n_layer):
        p, P = f"h.{i}.", params.get
        if kind == "neurons":
            s = sq(p + "mlp.c_fc.weight", 0) + sq(p + "mlp.c_proj.weight", 1)
            if P(p + "mlp.c_fc.bias") is not None:
                s = s + np.asarray(P(p + "mlp.c_fc.bias"), dtype=np.float64) ** 2
        else:
            NH, hs, C = config.layer_heads(i), config.head_size, config.n_embd
            W = np.asarray(params[p + "attn.c_attn.weight"], dtype=np.float64).reshape(C, 3, NH, hs)
            s = np.sum(W**2, axis=(0, 1, 3)) + np.sum(
                np.asarray(params[p + "attn.c_proj.weight"], dtype=np.float64).reshape(NH, hs, C) ** 2,
                axis=(1, 2),
            )
            if P(p + "attn.c_attn.bias") is not None:
                s = s + np.sum(
                    np.asarray(P(p + "attn.c_attn.bias"), dtype=np.float64).reshape(3, NH, hs) ** 2,
                    axis=(0, 2),
                )
        out.append(np.sqrt(s))
    return out


def mask_units(config: GPTConfig, params: dict, kind: str, drop: dict) -> dict:
    """A copy of params with the units drop {layer: indices} masked: their rows of the output
    projection set to zero."""
    params = dict(params)
    for i, units in drop.items():
        units = np.asarray(units, dtype=np.intp)
        if kind == "neurons":
            name, rows = f"h.{i}.mlp.c_proj.weight", units
        else:
            name, rows = f"h.{i}.attn.c_proj.weight", head_rows(config, units)
        w = params[name].copy()
        w[rows] = 0.0
        params[name] = w
    return params


def calib_loss(config: GPTConfig, params: dict, calib: np.ndarray) -> float:
    """Mean next-token loss over calibration windows calib (N, T + 1)."""
    losses = [
        gpt_forward(config, params, calib[s : s + 8, :-1], calib[s : s + 8, 1:])[1]
        for s in range(0, len(calib), 8)
    ]
    return float(np.mean(losses))


def loss_scores(config: GPTConfig, params: dict, kind: str, calib) -> list[np.ndarray]:
    """Per layer, the calibration-loss increase when each unit alone is masked. calib: token
    ids (N, T + 1), inputs and their next tokens."""
    if calib is None or np.size(calib) == 0:
        raise InputError("ranking by measured loss needs calibration data: give --calib-data PATH")
    base = calib_loss(config, params, calib)
    return [
        np.array(
            [
                calib_loss(config, mask_units(config, params, kind, {i: [u]}), calib) - base
                for u in range(_units(config, kind, i))
            ]
        )
        for i in range(config.n_layer)
    ]


def select_drop(scores: list, sparsity: float, scope: str = "tensor") -> dict:
    """{layer: sorted indices to remove}: the lowest scores, round(s * n) per layer or round(s *
    total) over all layers; InputError if a layer would lose every unit."""
    check_sparsity(sparsity)
    if scope == "tensor":
        drop = {
            i: np.sort(np.argsort(s, kind="stable")[: n_to_prune(sparsity, s.size)])
            for i, s in enumerate(scores)
        }
    elif scope == "global":
        flat = np.concatenate(scores)
        layer_of = np.concatenate([np.full(s.size, i) for i, s in enumerate(scores)])
        unit_of = np.concatenate([np.arange(s.size) for s in scores])
        gone = np.argsort(flat, kind="stable")[: n_to_prune(sparsity, flat.size)]
        drop = {i: np.sort(unit_of[gone][layer_of[gone] == i]) for i in range(len(scores))}
    else:
        raise InputError(f"scope must be tensor or global, got {scope!r}")
    for i, s in enumerate(scores):
        if len(drop[i]) >= s.size:
            raise InputError(
                f"sparsity {sparsity} would remove every unit of layer {i}; every layer keeps at least one"
            )
    return drop


def remove_units(config: GPTConfig, params: dict, kind: str, drop: dict) -> tuple[GPTConfig, dict]:
    """The smaller model without the units drop {layer: indices}: a new config (head_counts or
    mlp_widths) and new, contiguous parameter arrays (params is not changed)."""
    if kind not in KINDS:
        raise InputError(f"structured pruning removes neurons or heads, not {kind!r}")
    params = dict(params)
    counts = [_units(config, kind, i) for i in range(config.n_layer)]
    for i, units in drop.items():
        keep = np.setdiff1d(np.arange(counts[i]), np.asarray(units, dtype=np.intp))  # sorted: original order
        p = f"h.{i}."
        if kind == "neurons":
            sel = {
                "mlp.c_fc.weight": (slice(None), keep),
                "mlp.c_fc.bias": (keep,),
                "mlp.c_proj.weight": (keep,),
            }
        else:
            cols = head_columns(config, i, keep)
            sel = {
                "attn.c_attn.weight": (slice(None), cols),
                "attn.c_attn.bias": (cols,),
                "attn.c_proj.weight": (head_rows(config, keep),),
            }
        for name, index in sel.items():
            if p + name in params:
                params[p + name] = np.ascontiguousarray(params[p + name][index])
        counts[i] = len(keep)
    field = "mlp_widths" if kind == "neurons" else "head_counts"
    return config.replace(**{field: tuple(counts)}), params


def prune_structured(
    config: GPTConfig,
    params: dict,
    kind: str,
    sparsity: float,
    score: str = "norm",
    scope: str = "tensor",
    calib=None,
) -> tuple[GPTConfig, dict, dict]:
    """Remove a fraction of the neurons or heads: (new config, new params, {layer: removed})."""
    if kind not in KINDS:
        raise InputError(f"structured pruning removes neurons or heads, not {kind!r}")
    if score == "norm":
        if scope == "global":
            raise InputError("global ranking needs comparable scores: use --score loss with --scope global")
        scores = norm_scores(config, params, kind)
    elif score == "loss":
        scores = loss_scores(config, params, kind, calib)
    else:
        raise InputError(f"score must be norm or loss, got {score!r}")
    drop = select_drop(scores, sparsity, scope)
    new_config, new_params = remove_units(config, params, kind, drop)
    return new_config, new_params, drop
