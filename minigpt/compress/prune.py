"""Pruning: setting weights to zero (unstructured, N:M, Wanda), keeping them at zero while training
(gradual pruning), and storing the zeros so the checkpoint is really smaller.

Works on any dict of named NumPy arrays, and so on minigpt's parameters. A *mask* is a boolean
array of the weight's shape, True where the weight is kept; pruning multiplies by it.

The count rule. Pruning a fraction s of n weights zeroes exactly k = round(s * n) of them, with
Python's round (half to even: round(2.5) = 2, round(3.5) = 4), as torch.nn.utils.prune's
`_compute_nparams_toprune`. (Wanda's and SparseGPT's reference code truncate with int() instead;
the two agree whenever s * n is a whole number, e.g. 50% of 128.) The k weights with the lowest
scores go; among equal scores the one earlier in row-major (flat index) order goes first (a
stable sort), so the result is deterministic and the masks of growing sparsities nest.

Methods (the scores, lowest pruned first):
- magnitude   |w|, per tensor, or global: one ranking over the concatenation of every tensor
              (torch.nn.utils.prune.global_unstructured); a global ranking may empty a whole
              tensor, which the report shows.
- random      a seeded uniform random score: the baseline every method must beat.
- nm          N:M semi-structured (2:4 by default, any 1 <= N < M): in every group of M
              consecutive input channels, per output, the N largest |w| stay (Mishra et al.
              2021, Ampere's sparse tensor cores; torch.ao.pruning's WeightNormSparsifier).
- wanda       |W_ij| * ||X_j||_2 (Sun et al. 2023, locuslab/wanda lib/prune.py): X_j is input
              channel j of the layer over every calibration token, and scores are compared
              within each output, round(s * d_in) pruned per output. As the reference code,
              blocks are pruned in order and block i's activations are measured with blocks
              0..i-1 already pruned. No weight update, no retraining. With n and m: Wanda N:M.
- neurons, heads   structured: whole MLP neurons and attention heads, physically removed
              (minigpt.compress.structured).

Layout. minigpt stores a linear weight as (in, out) (Hugging Face's Conv1D), so the *input*
dimension is axis 0: "output row i" of the papers' (out, in) W is column i here, and N:M groups
run down the columns.

Scope. By default the 2-D weights of attention and MLP (c_attn, attn.c_proj, c_fc, mlp.c_proj)
of every block; embeddings (wte, wpe) and LayerNorm weights only when asked.

Gradual pruning (`GradualPruning`, `minigpt train --prune-to S --prune-start I --prune-end J`):
the cubic schedule of Zhu & Gupta (2017), s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3, with
s_i = 0, t0 = I, t0 + n dt = J, and t the number of completed optimizer updates. Every dt updates
(`--prune-every`) the masks are recomputed by magnitude on the current weights, pruned weights
ranked below every kept one so the masks only grow. After every optimizer step the masks are
reapplied to the weights and to AdamW's moments m and v, and gradients of pruned weights are
zeroed before clipping: a pruned weight then stays exactly 0 (its decay, m and v are all 0), the
complaint about other tools' "weights that come back during fine-tuning".

Storage. The codecs registered here turn a sparse tensor into fewer bytes and back, bit for bit
(minigpt.compress.storage): "bitmask" (1 bit per weight saying kept or not, then the kept values)
and "nm" (an N:M tensor as its N kept values per group plus each one's position in the group,
ceil(log2 M) bits: 2:4 in float32 costs 17 bits per weight instead of 32). `encode_sparse` picks
the smallest for each tensor.

Legend: d_in, d_out input and output channels of a linear weight (d_in, d_out); L layers;
B batch, T time, C channels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..config import GPTConfig
from ..errors import InputError
from . import storage

# ----------------------------------------------------------------------------------------------
# which tensors

LINEAR_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
EMBEDDINGS = ("wte.weight", "wpe.weight")


def prunable_names(config: GPTConfig, embeddings: bool = False, layernorm: bool = False) -> list[str]:
    """The default scope: every block's attention and MLP weights; embeddings and LayerNorm
    weights when asked. Biases are never pruned (they are few and cheap)."""
    names = [f"h.{i}.{w}" for i in range(config.n_layer) for w in LINEAR_WEIGHTS]
    if embeddings:
        names = list(EMBEDDINGS) + names
    if layernorm:
        names += [f"h.{i}.{ln}.weight" for i in range(config.n_layer) for ln in ("ln_1", "ln_2")] + [
            "ln_f.weight"
        ]
    return names


def check_names(params: dict, names) -> list[str]:
    """names as a list, each one a tensor of params (else an InputError naming it)."""
    names = list(names)
    for name in names:
        if name not in params:
            raise InputError(
                f"unknown tensor name {name!r}: the model has no such parameter "
                f"(e.g. {', '.join(list(params)[2:5])})"
            )
    if len(set(names)) != len(names):
        raise InputError("a tensor is named twice")
    return names


# ----------------------------------------------------------------------------------------------
# the count rule and masks from scores


def check_sparsity(sparsity) -> float:
    if (
        isinstance(sparsity, bool)
        or not isinstance(sparsity, (int, float, np.floating))
        or not 0.0 <= sparsity < 1.0
    ):
        raise InputError(f"sparsity must be in [0, 1), got {sparsity!r}")
    return float(sparsity)


def n_to_prune(sparsity: float, n: int) -> int:
    """k = round(s * n), half to even (Python's round), as torch.nn.utils.prune."""
    # BEGIN SOLUTION prune_count
    # HINT: the rule of torch.nn.utils.prune: s * n rounded half to even (check the sparsity first)
    return round(check_sparsity(sparsity) * n)  # a float times an int, rounded: an int
    # END SOLUTION


def mask_from_scores(scores: np.ndarray, sparsity: float) -> np.ndarray:
    """Keep-mask of scores' shape with the round(s * n) lowest scores pruned (ties: lower flat
    index first)."""
    scores = np.asarray(scores)
    # BEGIN SOLUTION magnitude_mask
    # HINT: k = n_to_prune(...); a stable argsort of the flattened scores; the k lowest are False
    k = n_to_prune(sparsity, scores.size)
    order = np.argsort(scores, axis=None, kind="stable")  # ascending; stable: ties by flat index
    mask = np.ones(scores.size, dtype=bool)
    mask[order[:k]] = False
    # END SOLUTION
    return mask.reshape(scores.shape)


def global_masks(scores: dict, sparsity: float) -> dict:
    """One ranking over every tensor: exactly pruning the concatenation of the flattened scores
    (in the dict's order) and splitting the mask back."""
    names = list(scores)
    flat = mask_from_scores(np.concatenate([np.ravel(scores[n]) for n in names]), sparsity)
    out, start = {}, 0
    for n in names:
        size = np.size(scores[n])
        out[n] = flat[start : start + size].reshape(np.shape(scores[n]))
        start += size
    return out


def masks_from_scores(scores: dict, sparsity: float, scope: str = "tensor") -> dict:
    if scope == "tensor":
        return {n: mask_from_scores(s, sparsity) for n, s in scores.items()}
    if scope == "global":
        return global_masks(scores, sparsity)
    raise InputError(f"scope must be tensor or global, got {scope!r}")


def magnitude_scores(params: dict, names) -> dict:
    return {n: np.abs(params[n]) for n in check_names(params, names)}


def random_scores(params: dict, names, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {n: rng.random(params[n].shape) for n in check_names(params, names)}


def check_nm(n: int, m: int) -> tuple[int, int]:
    for name, v in (("n", n), ("m", m)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise InputError(f"N:M: {name} must be an integer, got {v!r}")
    if not 1 <= n < m or m > 256:
        raise InputError(f"N:M needs 1 <= N < M <= 256, got N={n}, M={m}")
    return int(n), int(m)


def nm_mask(scores: np.ndarray, n: int = 2, m: int = 4) -> np.ndarray:
    """Keep-mask with exactly n kept in every group of m consecutive entries along axis 0 (the
    input dimension of a (d_in, d_out) weight), for every column: the n highest scores of the
    group (ties: the earlier entry is pruned first)."""
    n, m = check_nm(n, m)
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise InputError(f"N:M pruning needs a 2-D weight (d_in, d_out), got shape {scores.shape}")
    d_in, d_out = scores.shape
    if d_in % m != 0:
        raise InputError(f"N:M: the input dimension {d_in} is not divisible by M={m}")
    # BEGIN SOLUTION nm_mask
    # HINT: view as (d_in // M, M, d_out); in each group of M along axis 1 the M - N lowest (stable) go
    groups = scores.reshape(d_in // m, m, d_out)  # (G, M, d_out)
    order = np.argsort(groups, axis=1, kind="stable")  # ascending within each group
    mask = np.ones(groups.shape, dtype=bool)
    np.put_along_axis(mask, order[:, : m - n], False, axis=1)  # the M - N lowest go
    # END SOLUTION
    return mask.reshape(d_in, d_out)


def per_output_mask(scores: np.ndarray, sparsity: float) -> np.ndarray:
    """Wanda's comparison group: round(s * d_in) lowest scores pruned in each column (output)."""
    scores = np.asarray(scores)
    k = n_to_prune(sparsity, scores.shape[0])
    order = np.argsort(scores, axis=0, kind="stable")  # (d_in, d_out), ascending per column
    mask = np.ones(scores.shape, dtype=bool)
    np.put_along_axis(mask, order[:k], False, axis=0)
    return mask


def apply_masks(params: dict, masks: dict) -> dict:
    """Zero the pruned weights in place (p *= mask); applying a mask twice changes nothing."""
    for name, mask in masks.items():
        params[name] *= mask
    return params


# ----------------------------------------------------------------------------------------------
# Wanda: calibration activations


def linear_inputs(block_cache) -> dict:
    """The inputs of block i's four linear layers, from its forward cache (model.block_forward):
    {weight suffix: x (B, T, d_in)}. The linear caches are (x, w, has_bias)."""
    ln1_cache, qkv_cache, att_cache, attproj_cache, attdrop_cache, ln2_cache, fc_cache, *_rest = block_cache
    fcproj_cache = _rest[1]
    return {
        "attn.c_attn.weight": qkv_cache[0],
        "attn.c_proj.weight": attproj_cache[0],
        "mlp.c_fc.weight": fc_cache[0],
        "mlp.c_proj.weight": fcproj_cache[0],
    }


def input_norms(config: GPTConfig, params: dict, calib: np.ndarray, layer: int) -> dict:
    """||X_j||_2 over every calibration token, for each input channel j of layer's linear
    weights: {name: (d_in,)}, accumulated in float64. calib: token ids (N, T)."""
    from ..model import gpt_forward

    sumsq = {}
    for start in range(0, len(calib), 8):  # 8 sequences per forward: bounded memory
        _, _, cache = gpt_forward(config, params, calib[start : start + 8])
        for suffix, x in linear_inputs(cache[4][layer]).items():
            x2 = x.reshape(-1, x.shape[-1]).astype(np.float64)  # (B*T, d_in)
            sumsq[suffix] = sumsq.get(suffix, 0.0) + np.einsum("td,td->d", x2, x2)
    return {f"h.{layer}.{suffix}": np.sqrt(s) for suffix, s in sumsq.items()}


def wanda_scores(w: np.ndarray, x_norm: np.ndarray) -> np.ndarray:
    """S_ij = |W_ij| * ||X_j||_2 in the (d_in, d_out) layout: row j scaled by input j's norm."""
    return np.abs(w) * np.asarray(x_norm)[:, None]


def wanda_masks(config: GPTConfig, params: dict, names, sparsity: float, calib, nm=None) -> dict:
    """Prune names with Wanda, block by block, **in place** (block i's activations come from the
    already pruned blocks 0..i-1, as locuslab/wanda). Returns the masks. calib: token ids
    (N, T) of calibration text; nm: (N, M) for Wanda N:M instead of a per-output fraction."""
    names = check_names(params, names)
    if calib is None or np.size(calib) == 0:
        raise InputError(
            "wanda needs calibration data: give --calib-data PATH (a text file in the model's characters)"
        )
    calib = np.asarray(calib)[:, : config.block_size]  # windows of T + 1 tokens: the inputs are the first T
    by_layer = {}
    for name in names:
        parts = name.split(".", 2)
        if parts[0] != "h" or parts[2] not in LINEAR_WEIGHTS:
            raise InputError(f"wanda prunes linear weights (c_attn, c_proj, c_fc) only, not {name}")
        by_layer.setdefault(int(parts[1]), []).append(name)
    if nm is None:
        check_sparsity(sparsity)
    masks = {}
    for layer in sorted(by_layer):
        norms = input_norms(config, params, calib, layer)
        for name in by_layer[layer]:
            scores = wanda_scores(params[name], norms[name])
            masks[name] = nm_mask(scores, *nm) if nm is not None else per_output_mask(scores, sparsity)
            params[name] *= masks[name]
    return masks


def calibration_batch(ids: np.ndarray, block_size: int, n_seqs: int = 32, seed: int = 0) -> np.ndarray:
    """n_seqs random windows of block_size + 1 tokens (N, T + 1) from ids (inputs and their
    next tokens): the calibration set. Default 32 windows (2,048 input tokens at block_size 64)."""
    if len(ids) <= block_size + 1:
        raise InputError(f"calibration text too short: {len(ids)} tokens for windows of {block_size + 1}")
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(ids) - block_size, size=n_seqs)
    return np.stack([ids[s : s + block_size + 1] for s in starts])


# ----------------------------------------------------------------------------------------------
# one-shot pruning of a model


METHODS = ("magnitude", "random", "wanda", "nm", "neurons", "heads")


def prune_params(
    config: GPTConfig,
    params: dict,
    method: str,
    sparsity: float = 0.5,
    names=None,
    scope: str = "tensor",
    n: int = 2,
    m: int = 4,
    calib=None,
    seed: int = 0,
) -> dict:
    """Unstructured or N:M pruning of params **in place**; returns the masks.
    names: the tensors (default prunable_names(config)). For nm the sparsity is (M - N) / M."""
    names = check_names(params, prunable_names(config) if names is None else names)
    if method in ("nm", "wanda") and scope != "tensor":
        raise InputError(
            f"{method} compares weights within each output (or group), so --scope global does not apply"
        )
    if method == "magnitude":
        masks = masks_from_scores(magnitude_scores(params, names), sparsity, scope)
    elif method == "random":
        masks = masks_from_scores(random_scores(params, names, seed), sparsity, scope)
    elif method == "nm":
        masks = {name: nm_mask(np.abs(params[name]), n, m) for name in names}
    elif method == "wanda":
        return wanda_masks(config, params, names, sparsity, calib)
    else:
        raise InputError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    apply_masks(params, masks)
    return masks


# ----------------------------------------------------------------------------------------------
# gradual pruning (Zhu & Gupta 2017) and masked training


def cubic_sparsity(t: int, final: float, start: int, end: int, initial: float = 0.0) -> float:
    """s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3 with t0 = start, t0 + n dt = end;
    s_i before start, s_f from end on."""
    if t <= start:
        return initial
    if t >= end:
        return final
    return final + (initial - final) * (1.0 - (t - start) / (end - start)) ** 3


class MaskedTraining:
    """The training hook (minigpt.train) that keeps pruned weights at exactly zero: gradients of
    pruned weights are zeroed before clipping, and after every optimizer step the masks are
    reapplied to the weights and to AdamW's moments m and v. Fixed masks: fine-tuning a pruned
    model."""

    def __init__(self, masks: dict, info: dict | None = None):
        self.masks = masks
        self.info = dict(info or {})

    def mask_grads(self, grads: dict):
        for name, mask in self.masks.items():
            grads[name] *= mask

    def update_masks(self, completed: int, params: dict):
        """Gradual pruning changes the masks here; fixed masks do not."""

    def after_step(self, completed: int, params: dict, optimizer):
        """Called after optimizer update number `completed` (counted from 1)."""
        self.update_masks(completed, params)
        for name, mask in self.masks.items():
            params[name] *= mask
            optimizer.m[name] *= mask
            optimizer.v[name] *= mask

    def ready(self, step: int) -> bool:
        """Whether the model at this step has its final masks (only then is a best model kept)."""
        return True

    def encoded(self, params: dict) -> dict:
        return encode_sparse(params, self.masks)

    def meta(self) -> dict:
        return {"pruning": {"tensors": list(self.masks), **self.info}}


class GradualPruning(MaskedTraining):
    """Magnitude pruning of `names` towards `final` on the cubic schedule, every `every` updates
    between start and end (and at end itself)."""

    def __init__(self, params: dict, names, final: float, start: int, end: int, every: int = 10, masks=None):
        names = check_names(params, names)
        self.final, self.start, self.end, self.every = check_sparsity(final), start, end, every
        masks = masks or {name: np.ones(params[name].shape, dtype=bool) for name in names}
        super().__init__(
            masks,
            {
                "method": "gradual magnitude (Zhu & Gupta cubic)",
                "sparsity": final,
                "start": start,
                "end": end,
                "every": every,
            },
        )

    def is_pruning_step(self, completed: int) -> bool:
        return self.start < completed <= self.end and (
            (completed - self.start) % self.every == 0 or completed == self.end
        )

    def update_masks(self, completed: int, params: dict):
        if not self.is_pruning_step(completed):
            return
        s = cubic_sparsity(completed, self.final, self.start, self.end)
        for name, mask in self.masks.items():
            scores = np.where(mask, np.abs(params[name]), -1.0)  # pruned ones rank lowest: masks only grow
            self.masks[name] = mask_from_scores(scores, s)

    def ready(self, step: int) -> bool:
        return step >= self.end


def training_pruner(tc, params: dict, init_meta: dict | None = None, step: int = 0):
    """The hook minigpt.train uses: GradualPruning when tc.prune_to > 0; fixed masks (the
    current zeros) when the starting checkpoint was pruned (its meta has "pruning"); else None.
    On --resume the masks are the current zeros of the pruned tensors (a kept weight that is
    exactly 0.0 by chance would count as pruned: a measure-zero event in float training)."""
    pruning = (init_meta or {}).get("pruning")
    if tc.prune_to > 0:
        names = [n for n in params if n.split(".", 2)[-1] in LINEAR_WEIGHTS]  # the default scope
        masks = {n: params[n] != 0 for n in names} if step > tc.prune_start else None
        return GradualPruning(params, names, tc.prune_to, tc.prune_start, tc.prune_end, tc.prune_every, masks)
    if pruning and pruning.get("tensors"):
        names = check_names(params, pruning["tensors"])
        return MaskedTraining(
            {n: params[n] != 0 for n in names}, {k: v for k, v in pruning.items() if k != "tensors"}
        )
    return None


# ----------------------------------------------------------------------------------------------
# compressed storage: the codecs


def _bitmask_encode(a: np.ndarray):
    mask = a != 0  # -0.0 counts as 0 and decodes as +0.0 (equal, as np.array_equal sees it)
    return {"mask": np.packbits(mask.ravel()), "values": a[mask]}, {
        "shape": list(a.shape),
        "dtype": a.dtype.str,
    }


def _bitmask_decode(parts, info):
    n = math.prod(info["shape"])
    mask = np.unpackbits(parts["mask"], count=n).astype(bool)
    out = np.zeros(n, dtype=np.dtype(info["dtype"]))
    out[mask] = parts["values"]
    return out.reshape(info["shape"])


def _nm_encode(a: np.ndarray, n: int = 2, m: int = 4):
    """A (d_in, d_out) tensor with at most n nonzeros in every group of m along axis 0: values
    (G * n, d_out) and the positions in the group (ceil(log2 m) bits each, packed)."""
    n, m = check_nm(n, m)
    if a.ndim != 2 or a.shape[0] % m:
        raise ValueError(f"nm codec: needs a 2-D tensor whose first dimension divides by {m}, got {a.shape}")
    d_in, d_out = a.shape
    groups = a.reshape(d_in // m, m, d_out)
    if ((groups != 0).sum(axis=1) > n).any():
        raise ValueError(f"nm codec: the tensor is not {n}:{m} sparse (a group has more than {n} nonzeros)")
    # the nonzeros first (in position order), zeros after; keep n positions, ascending
    idx = np.sort(np.argsort(groups == 0, axis=1, kind="stable")[:, :n], axis=1).astype(
        np.uint8
    )  # (G, n, d_out)
    values = np.take_along_axis(groups, idx.astype(np.intp), axis=1)
    bits = max(1, math.ceil(math.log2(m)))
    idx_bits = np.unpackbits(idx[..., None], axis=-1)[..., 8 - bits :]  # (G, n, d_out, bits), MSB first
    parts = {"values": values.reshape(-1, d_out), "index": np.packbits(idx_bits.ravel())}
    return parts, {"shape": [d_in, d_out], "dtype": a.dtype.str, "n": n, "m": m, "index_bits": bits}


def _nm_decode(parts, info):
    d_in, d_out = info["shape"]
    n, m, bits = info["n"], info["m"], info["index_bits"]
    G = d_in // m
    idx_bits = np.unpackbits(parts["index"], count=G * n * d_out * bits).reshape(G, n, d_out, bits)
    idx = (idx_bits.astype(np.intp) << np.arange(bits - 1, -1, -1)).sum(axis=-1)  # (G, n, d_out)
    out = np.zeros((G, m, d_out), dtype=np.dtype(info["dtype"]))
    np.put_along_axis(out, idx, parts["values"].reshape(G, n, d_out), axis=1)
    return out.reshape(d_in, d_out)


storage.register_codec("bitmask", _bitmask_encode, _bitmask_decode)
storage.register_codec("nm", _nm_encode, _nm_decode)


def encode_sparse(params: dict, names, nm=None) -> dict:
    """{name: storage.Encoded} for the tensors of names that are smaller compressed: the
    smaller of nm (when nm=(N, M) is given and the tensor is N:M; preferred on a tie, as the
    format sparse hardware runs) and bitmask; tensors that would not shrink are left out
    (stored dense). At 2:4 in float32 both cost 17 bits per weight."""
    out = {}
    for name in names:
        a = params[name]
        candidates = []
        if nm is not None and a.ndim == 2 and a.shape[0] % nm[1] == 0:
            try:
                candidates.append(storage.encode(a, "nm", n=nm[0], m=nm[1]))
            except ValueError:
                pass  # not N:M sparse
        candidates.append(storage.encode(a, "bitmask"))
        best = min(candidates, key=lambda e: e.nbytes())  # the first of equals
        if best.nbytes() < a.nbytes:
            out[name] = best
    return out


# ----------------------------------------------------------------------------------------------
# the report


@dataclass
class TensorReport:
    name: str
    shape: tuple
    zeros: int
    size: int
    codec: str  # "dense" or the codec's name
    nbytes_dense: int
    nbytes_stored: int

    @property
    def sparsity(self) -> float:
        return self.zeros / self.size if self.size else 0.0


def report(params: dict, names, encoded: dict) -> dict:
    """Per-tensor and total sparsity, parameter counts, stored bytes (the tensor data; the file
    adds a header of a few kB)."""
    rows = []
    for name in names:
        a = params[name]
        enc = encoded.get(name)
        rows.append(
            TensorReport(
                name,
                tuple(a.shape),
                int(a.size - np.count_nonzero(a)),
                int(a.size),
                enc.codec if enc else "dense",
                int(a.nbytes),
                enc.nbytes() if enc else int(a.nbytes),
            )
        )
    total = sum(int(a.size) for a in params.values())
    zeros = sum(int(a.size - np.count_nonzero(a)) for a in params.values())
    pruned_size = sum(r.size for r in rows)
    return {
        "tensors": [
            dict(
                name=r.name,
                shape=list(r.shape),
                sparsity=r.sparsity,
                zeros=r.zeros,
                size=r.size,
                codec=r.codec,
                bytes_dense=r.nbytes_dense,
                bytes_stored=r.nbytes_stored,
            )
            for r in rows
        ],
        "params": total,
        "nonzero_params": total - zeros,
        "sparsity_total": zeros / total if total else 0.0,
        "sparsity_pruned_tensors": sum(r.zeros for r in rows) / pruned_size if pruned_size else 0.0,
        "emptied_tensors": [r.name for r in rows if r.size and r.zeros == r.size],  # layer collapse (global)
        "tensor_bytes_dense": sum(int(a.nbytes) for a in params.values()),
        "tensor_bytes_stored": sum(int(a.nbytes) for n, a in params.items() if n not in encoded)
        + sum(e.nbytes() for e in encoded.values()),
    }


def format_report(rep: dict) -> str:
    lines = [f"{'tensor':28s} {'shape':>12s} {'sparsity':>9s} {'codec':>8s} {'bytes':>10s} {'stored':>10s}"]
    for r in rep["tensors"]:
        lines.append(
            f"{r['name']:28s} {'x'.join(map(str, r['shape'])):>12s} {r['sparsity']:9.1%} "
            f"{r['codec']:>8s} {r['bytes_dense']:10,d} {r['bytes_stored']:10,d}"
        )
    lines.append(
        f"parameters {rep['params']:,} ({rep['nonzero_params']:,} nonzero, total sparsity "
        f"{rep['sparsity_total']:.1%}); tensor bytes {rep['tensor_bytes_dense']:,} -> "
        f"{rep['tensor_bytes_stored']:,}"
    )
    if rep.get("emptied_tensors"):
        lines.append(
            f"warning: every weight of {', '.join(rep['emptied_tensors'])} was pruned (layer collapse)"
        )
    return "\n".join(lines)
