"""Knowledge distillation: a small student GPT trained to imitate a trained teacher GPT.

The teacher's next-token distribution says more than the one-hot label: after "th" it puts
weight on "e", "a", "i" and "o", in proportions the data alone shows the student only slowly.
Distillation trains the student on those distributions (and optionally on the teacher's
hidden states and attention maps), with every loss's backward pass written here by hand.

Losses on the logits, at a temperature T, with p = softmax(teacher / T), q = softmax(student / T):
- soft targets (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network"):
      T^2 * KL(p || q) = T^2 * sum_v p_v (log p_v - log q_v)
  Its gradient with respect to the student's logits is T * (q - p) per position: the factor T^2
  undoes the 1/T^2 by which the soft gradients shrink, so the mix with the hard labels below
  keeps its balance when T changes (the paper, section 2).
  Matches T**2 * torch.nn.functional.kl_div(log_softmax(s/T), log_softmax(t/T), log_target=True,
  reduction="sum") / N.
- reverse KL, T^2 * KL(q || p), mode-seeking, the divergence MiniLLM (Gu et al. 2023) minimizes.
  MiniLLM optimizes the sequence-level reverse KL on the student's own samples by policy
  gradient; here it is the token-level reverse KL on the training data's prefixes (no sampling).
- Jensen-Shannon, T^2 * JS(p, q) = T^2 * (KL(p || m) + KL(q || m)) / 2 with m = (p + q) / 2:
  symmetric and bounded by T^2 ln 2.
The distillation loss mixes one of them with the ordinary cross-entropy on the labels:
      loss = alpha * soft + (1 - alpha) * cross_entropy(student logits at T = 1, targets)

Losses on the hidden states (each block's output, the residual stream), student layer i against
teacher layer map[i]:
- MSE (TinyBERT, Jiao et al. 2020): mean((H_s W - H_t)^2) with W a learned (C_s, C_t)
  projection when the widths differ (one W shared by every mapped pair, as the paper's W_h) and
  no projection when they are equal. Matches torch.nn.functional.mse_loss(reduction="mean") over
  the kept positions and C_t channels.
- cosine (DistilBERT, Sanh et al. 2019): mean(1 - cos(H_s W, H_t)) over the kept positions, as
  torch.nn.CosineEmbeddingLoss with target 1, the norms clamped below at eps = 1e-8 as
  torch.nn.functional.cosine_similarity does.
- attention maps (TinyBERT's attention loss, here as a KL instead of its MSE): the mean over
  heads and kept query positions of KL(A_t || A_s) between the teacher's and the student's
  attention probabilities (B, NH, T, T), which needs as many heads in both.

Reduction, everywhere: a per-token loss averaged over the N positions whose target is not
IGNORE_INDEX (-1), as minigpt's cross_entropy; every position when no targets are given. With
N = 0 the loss is 0 and the gradients are 0, as cross_entropy.

Student initialization from the teacher: DistilBERT's "one layer out of two" (teacher blocks 0,
2, 4, ...), any list of teacher blocks, or random (the control). A narrower student keeps the
teacher's most important residual channels, attention heads and MLP neurons, ranked by weight
magnitude (a simple version of the width pruning in Minitron, Muralidharan et al. 2024).

Legend: B batch, T time, C channels (C_s student, C_t teacher), V vocabulary, NH heads,
N kept positions, L layers.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from ..checkpoint import Checkpoint, load_checkpoint
from ..config import GPTConfig, is_number
from ..errors import InputError
from ..layers import IGNORE_INDEX, cross_entropy_backward, cross_entropy_forward
from ..layers.attention import masked_softmax, merge_heads, split_heads
from ..layers.cross_entropy import log_softmax
from ..layers.layernorm import layernorm_backward, layernorm_forward
from ..layers.linear import linear_backward, linear_forward
from ..model import gpt_backward, gpt_forward, init_params, param_shapes
from ..train import Objective, TrainConfig, train

DIVERGENCES = ("kl", "reverse_kl", "js")
HIDDEN_LOSSES = ("mse", "cosine")
COSINE_EPS = 1e-8
PROJ_NAME = "distill.hidden_proj.weight"  # the extra trainable tensor (C_s, C_t) of the MSE / cosine losses


# ----------------------------------------------------------------------------------------------
# checks


def check_temperature(temperature) -> float:
    if not is_number(temperature) or not (temperature > 0 and math.isfinite(temperature)):
        raise InputError(f"temperature must be a number > 0, got {temperature!r}")
    return float(temperature)


def check_alpha(alpha) -> float:
    if not is_number(alpha) or not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be in [0, 1] (the soft loss's weight), got {alpha!r}")
    return float(alpha)


def kept_positions(targets, shape) -> tuple[np.ndarray, int]:
    """(mask (B, T) of the positions the losses average over, N = their count)."""
    if targets is None:
        return np.ones(shape, dtype=bool), int(np.prod(shape))
    mask = np.asarray(targets) != IGNORE_INDEX
    return mask, int(mask.sum())


# ----------------------------------------------------------------------------------------------
# losses on the logits: forward KL (soft targets), reverse KL, Jensen-Shannon


def soft_loss_forward(student_logits, teacher_logits, temperature: float, targets=None, divergence: str = "kl"):
    """
    Parameters
    ----------
    student_logits, teacher_logits : arrays of shape (B, T, V)
    temperature : T > 0; both distributions are softmax(logits / T)
    targets : int array (B, T) or None; positions with IGNORE_INDEX (-1) are left out
    divergence : "kl" (T^2 KL(p || q), Hinton), "reverse_kl" (T^2 KL(q || p)) or "js"
        (T^2 JS(p, q)), with p the teacher's distribution and q the student's

    Returns
    -------
    loss : float, the divergence per position summed over V, times T^2, averaged over the N kept
        positions. Rounding can make a row's divergence a hair below 0; rows are clamped at 0
        (the true value is never negative). Equal logits give exactly 0.
    cache : for soft_loss_backward
    """
    T = check_temperature(temperature)
    if divergence not in DIVERGENCES:
        raise InputError(f"divergence must be one of {', '.join(DIVERGENCES)}, got {divergence!r}")
    if student_logits.shape != teacher_logits.shape:
        raise InputError(f"student logits {student_logits.shape} and teacher logits {teacher_logits.shape} differ "
                         "in shape (teacher and student vocabularies must be the same)")
    mask, n = kept_positions(targets, student_logits.shape[:2])
    logq = log_softmax(student_logits / T)  # (B, T, V), the student
    logp = log_softmax(teacher_logits / T)  # (B, T, V), the teacher
    q, p = np.exp(logq), np.exp(logp)
    # BEGIN SOLUTION soft_loss_rows
    # HINT: rows (B, T) = the divergence summed over V, from logp, logq, p, q; js also sets logm (log of (p + q) / 2)
    logm = None
    if divergence == "kl":
        rows = np.sum(p * (logp - logq), axis=-1)  # (B, T)
    elif divergence == "reverse_kl":
        rows = np.sum(q * (logq - logp), axis=-1)
    else:
        # log m = log((p + q) / 2) = max(log p, log q) + log((1 + e^-|log p - log q|) / 2), written
        # with expm1/log1p so that p == q gives log m == log p exactly (and a JS of exactly 0)
        logm = np.maximum(logp, logq) + np.log1p(np.expm1(-np.abs(logp - logq)) / 2)
        rows = 0.5 * np.sum(p * (logp - logm) + q * (logq - logm), axis=-1)
    # END SOLUTION
    rows = np.maximum(rows, 0.0)
    loss = float(T * T * rows[mask].sum() / max(n, 1))
    return loss, (divergence, T, mask, n, logq, logp, q, p, logm, rows)


def soft_loss_backward(cache, dloss: float = 1.0):
    """
    Returns
    -------
    dstudent_logits : (B, T, V), zero at left-out positions. Per kept position, with z = s / T
    and the chain rule's 1/T folded into T^2 (so T * ... / N):
        kl:          T * (q - p) / N                          (Hinton's equation 2, times T^2)
        reverse_kl:  T * q * (log q - log p - KL(q||p)) / N   (the softmax Jacobian applied to log(q/p))
        js:          T * q * (g - sum_v q g) / N with g = (log q - log m) / 2, dJS/dq = g
    The teacher gets no gradient: it is fixed.
    """
    divergence, T, mask, n, logq, logp, q, p, logm, rows = cache
    # BEGIN SOLUTION soft_loss_dz
    # HINT: dz = d(divergence of the row) / d(student logits / T), per position, as the docstring's three formulas
    if divergence == "kl":
        dz = q - p
    elif divergence == "reverse_kl":
        dz = q * (logq - logp - rows[..., None])
    else:
        g = 0.5 * (logq - logm)
        dz = q * (g - np.sum(q * g, axis=-1, keepdims=True))
    # END SOLUTION
    scale = (mask[..., None] * (T * dloss / max(n, 1))).astype(q.dtype)
    return dz * scale


def distill_loss_forward(student_logits, teacher_logits, targets, alpha: float = 0.5, temperature: float = 2.0,
                         divergence: str = "kl"):
    """alpha * soft + (1 - alpha) * cross_entropy(student_logits, targets).

    Both terms average over the same N positions (targets != -1). With targets None only the
    soft term exists and alpha must be 1.

    Returns
    -------
    loss : float
    parts : {"soft_loss": float, "ce_loss": float} (ce_loss absent without targets), unweighted
    cache : for distill_loss_backward
    """
    alpha = check_alpha(alpha)
    check_temperature(temperature)
    if targets is None and alpha != 1.0:
        raise InputError(f"without targets only the soft loss exists: alpha must be 1, got {alpha}")
    soft, soft_cache = soft_loss_forward(student_logits, teacher_logits, temperature, targets, divergence)
    parts, ce_cache, ce = {"soft_loss": soft}, None, 0.0
    if targets is not None:
        ce, ce_cache = cross_entropy_forward(student_logits, np.asarray(targets))
        parts["ce_loss"] = ce
    loss = alpha * soft + (1.0 - alpha) * ce
    return loss, parts, (alpha, soft_cache, ce_cache)


def distill_loss_backward(cache, dloss: float = 1.0):
    """dstudent_logits (B, T, V) = alpha * dsoft + (1 - alpha) * dce. A term whose weight is 0 is
    skipped, so alpha = 0 gives exactly cross_entropy_backward and alpha = 1 exactly the soft
    loss's gradient."""
    alpha, soft_cache, ce_cache = cache
    d = 0.0
    if alpha != 0.0:
        d = soft_loss_backward(soft_cache, alpha * dloss)
    if alpha != 1.0:
        dce = cross_entropy_backward(ce_cache, (1.0 - alpha) * dloss)
        d = dce if alpha == 0.0 else d + dce
    return d


# ----------------------------------------------------------------------------------------------
# losses on the hidden states: MSE (TinyBERT) and cosine (DistilBERT), through a projection


def hidden_loss_forward(kind: str, h_student, h_teacher, proj=None, targets=None):
    """
    Parameters
    ----------
    kind : "mse" or "cosine"
    h_student : (B, T, C_s), a student block's output
    h_teacher : (B, T, C_t), a teacher block's output
    proj : (C_s, C_t) or None (then C_s must equal C_t): the student's states are compared as
        h_student @ proj
    targets : (B, T) or None; positions with IGNORE_INDEX are left out

    Returns
    -------
    loss : float. mse: sum over kept positions and C_t channels of (h_s W - h_t)^2, / (N C_t).
        cosine: sum over kept positions of 1 - cos(h_s W, h_t), / N.
    cache : for hidden_loss_backward
    """
    if kind not in HIDDEN_LOSSES:
        raise InputError(f"hidden loss must be one of {', '.join(HIDDEN_LOSSES)}, got {kind!r}")
    a = h_student if proj is None else h_student @ proj  # (B, T, C_t)
    if a.shape != h_teacher.shape:
        raise InputError(f"student hidden states {a.shape} do not match the teacher's {h_teacher.shape}: "
                         "widths that differ need a projection")
    mask, n = kept_positions(targets, a.shape[:2])
    if kind == "mse":
        diff = a - h_teacher  # (B, T, C_t)
        loss = float(np.sum(diff[mask] ** 2) / max(n * a.shape[-1], 1))
        extra = (diff,)
    else:
        na = np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), COSINE_EPS)  # (B, T, 1)
        nb = np.maximum(np.linalg.norm(h_teacher, axis=-1, keepdims=True), COSINE_EPS)
        cos = np.sum(a * h_teacher, axis=-1, keepdims=True) / (na * nb)  # (B, T, 1)
        loss = float(np.sum(1.0 - cos[mask]) / max(n, 1))
        extra = (cos, na, nb)
    return loss, (kind, h_student, h_teacher, proj, a, mask, n, extra)


def hidden_loss_backward(cache, dloss: float = 1.0):
    """
    Returns
    -------
    dh_student : (B, T, C_s)
    dproj : (C_s, C_t), or None without a projection
    With a = h_s W: mse  da = 2 (a - h_t) / (N C_t);
    cosine da = -(h_t / (|a| |h_t|) - cos * a / |a|^2) / N (the derivative of a . b / (|a| |b|),
    where |a| > eps; below eps the norm is a constant and the second term drops).
    Then dh_s = da W^T and dW = h_s^T da, summed over batch and time.
    """
    kind, h_s, h_t, proj, a, mask, n, extra = cache
    m = mask[..., None].astype(a.dtype)  # (B, T, 1)
    if kind == "mse":
        (diff,) = extra
        da = diff * (m * (2.0 * dloss / max(n * a.shape[-1], 1)))
    else:
        cos, na, nb = extra
        unclamped = (np.linalg.norm(a, axis=-1, keepdims=True) > COSINE_EPS).astype(a.dtype)
        dcos = h_t / (na * nb) - unclamped * cos * a / (na * na)  # (B, T, C_t)
        da = -dcos * (m * (dloss / max(n, 1)))
    if proj is None:
        return da, None
    dh_s = da @ proj.T  # (B, T, C_t) @ (C_t, C_s) -> (B, T, C_s)
    dproj = h_s.reshape(-1, h_s.shape[-1]).T @ da.reshape(-1, da.shape[-1])  # (C_s, C_t)
    return dh_s, dproj


# ----------------------------------------------------------------------------------------------
# attention maps: KL(A_teacher || A_student), per head and query row


def attention_kl_forward(att_student, att_teacher, targets=None):
    """
    Parameters
    ----------
    att_student, att_teacher : (B, NH, T, T) attention probabilities (rows sum to 1 over the
        keys 0..t; the future is exactly 0)
    targets : (B, T) or None; a query position t is kept when targets[b, t] != IGNORE_INDEX

    Returns
    -------
    loss : float, sum over heads, kept query rows and keys of A_t (log A_t - log A_s), / (N NH).
        Masked (future) entries are 0 in both and add nothing.
    cache
    """
    if att_student.shape != att_teacher.shape:
        raise InputError(f"attention maps {att_student.shape} and {att_teacher.shape} differ: the attention loss "
                         "needs as many heads and positions in student and teacher")
    B, NH, T, _ = att_student.shape
    mask, n = kept_positions(targets, (B, T))
    # log of the probabilities where they are positive; 0 * log 0 counts as 0
    pos = att_teacher > 0
    logt = np.log(np.where(pos, att_teacher, 1.0))
    logs = np.log(np.where(pos, np.maximum(att_student, np.finfo(att_student.dtype).tiny), 1.0))
    rows = np.sum(np.where(pos, att_teacher * (logt - logs), 0.0), axis=-1)  # (B, NH, T)
    rows = np.maximum(rows, 0.0)
    loss = float(rows.transpose(0, 2, 1)[mask].sum() / max(n * NH, 1))
    return loss, (att_student, att_teacher, mask, n)


def attention_kl_backward(cache, dloss: float = 1.0):
    """dscores (B, NH, T, T): the gradient at the student's attention scores (q k^T / sqrt(hs),
    before the softmax), not at the probabilities: through the softmax, -A_t / A_s becomes the
    fused (A_s - A_t) / (N NH), as cross-entropy's. Masked entries get 0."""
    att_s, att_t, mask, n = cache
    NH = att_s.shape[1]
    rowmask = mask[:, None, :, None].astype(att_s.dtype)  # (B, 1, T, 1): the kept query rows
    return (att_s - att_t) * (rowmask * (dloss / max(n * NH, 1)))


def attention_map_forward(config: GPTConfig, params, i: int, x):
    """Block i's attention probabilities, recomputed from the block's input x (B, T, C) with the
    NumPy layers, as model.block_forward computes them: ln_1, c_attn, q k^T / sqrt(hs), causal
    softmax. Recomputing (one LayerNorm and one matrix product per mapped layer) keeps this
    module independent of how a backend lays out its caches.

    Returns att (B, NH, T, T) and a cache for attention_map_backward."""
    p, P = f"h.{i}.", params.get
    ln1, ln1_cache = layernorm_forward(x, P(p + "ln_1.weight"), P(p + "ln_1.bias"), config.layer_norm_epsilon)
    qkv, qkv_cache = linear_forward(ln1, P(p + "attn.c_attn.weight"), P(p + "attn.c_attn.bias"))  # (B, T, 3C)
    C, NH = config.n_embd, config.n_head
    q, k = split_heads(qkv[..., :C], NH), split_heads(qkv[..., C:2 * C], NH)  # (B, NH, T, hs)
    scale = 1.0 / math.sqrt(config.head_size)
    T = x.shape[1]
    att = masked_softmax((q @ k.transpose(0, 1, 3, 2)) * scale, np.tri(T, dtype=bool))  # (B, NH, T, T)
    return att, (p, ln1_cache, qkv_cache, q, k, scale)


def attention_map_backward(dscores, cache):
    """From a gradient at the attention scores (B, NH, T, T) back to the block's input.

    scores = q k^T * scale: dq = dscores k * scale, dk = dscores^T q * scale, dv = 0; then the
    c_attn and ln_1 backward passes. Returns dx (B, T, C) and {name: gradient} for c_attn and
    ln_1 (biases when the model has them)."""
    p, ln1_cache, qkv_cache, q, k, scale = cache
    dq = (dscores @ k) * scale  # (B, NH, T, T) @ (B, NH, T, hs) -> (B, NH, T, hs)
    dk = (dscores.transpose(0, 1, 3, 2) @ q) * scale
    dqkv = np.concatenate([merge_heads(dq), merge_heads(dk), np.zeros_like(merge_heads(dq))], axis=-1)  # (B, T, 3C)
    dln1, dw, db = linear_backward(dqkv, qkv_cache)
    dx, dlnw, dlnb = layernorm_backward(dln1, ln1_cache)
    pairs = (("attn.c_attn.weight", dw), ("attn.c_attn.bias", db), ("ln_1.weight", dlnw), ("ln_1.bias", dlnb))
    return dx, {p + name: g for name, g in pairs if g is not None}


# ----------------------------------------------------------------------------------------------
# student initialization from the teacher


def teacher_blocks_for(init: str, n_student: int, n_teacher: int) -> list[int] | None:
    """The teacher blocks the student's blocks start from: "every-other" (0, 2, 4, ...: DistilBERT),
    a comma-separated list ("0,3"), or None for "random"."""
    if init == "random":
        return None
    if init == "every-other":
        blocks = [2 * i for i in range(n_student)]
        if blocks[-1] >= n_teacher:
            raise InputError(f"--student-init every-other needs a teacher with at least {blocks[-1] + 1} layers for "
                             f"{n_student} student layers; the teacher has {n_teacher}: list the blocks (e.g. 0,1)")
        return blocks
    try:
        blocks = [int(b) for b in init.split(",")]
    except ValueError:
        raise InputError(f"--student-init must be random, every-other or a list of teacher blocks like 0,2; "
                         f"got {init!r}") from None
    if len(blocks) != n_student:
        raise InputError(f"--student-init lists {len(blocks)} teacher blocks for a student of {n_student} layers")
    bad = [b for b in blocks if not 0 <= b < n_teacher]
    if bad:
        raise InputError(f"--student-init names teacher layer {bad[0]}, which does not exist "
                         f"(the teacher has layers 0..{n_teacher - 1})")
    return blocks


def _importance_order(scores, keep: int) -> np.ndarray:
    """The indices of the `keep` largest scores, in their original order."""
    return np.sort(np.argsort(-scores, kind="stable")[:keep])


def init_student(teacher_config: GPTConfig, teacher_params, student_config: GPTConfig, init: str,
                 seed: int = 0, dtype=np.float32) -> dict:
    """The student's starting weights.

    "random": init_params(student_config, seed). Otherwise block i of the student is a copy of
    teacher block blocks[i] (teacher_blocks_for), and the embeddings and ln_f are the teacher's
    (wpe cut to the student's block_size). A student as wide as its teacher with as many heads
    gets exact copies. A narrower one (C_s < C_t) needs the teacher's head size; it keeps
      - the C_s residual channels with the largest sum of squared weights that read or write
        them (wte and wpe columns, c_attn and c_fc rows, both c_proj columns, across all blocks),
      - per block, the NH_s heads with the largest squared weights (their q, k, v columns of
        c_attn and rows of attn.c_proj), and the 4 C_s MLP neurons with the largest squared
        weights (c_fc column and mlp.c_proj row),
    each in its original order. A tensor the teacher lacks (a bias when the teacher has none)
    keeps its random initialization.
    """
    tc, sc = teacher_config, student_config
    params = init_params(sc, seed, dtype)
    blocks = teacher_blocks_for(init, sc.n_layer, tc.n_layer)
    if blocks is None:
        return params
    Ct, Cs = tc.n_embd, sc.n_embd
    if tc.head_counts is not None or tc.mlp_widths is not None:
        raise InputError("the teacher is structurally pruned (per-layer head counts or MLP widths), so its blocks "
                         "do not fit a uniform student; start the student from random weights: --student-init random")
    if sc.vocab_size != tc.vocab_size:
        raise InputError(f"teacher and student vocabularies differ: {tc.vocab_size} and {sc.vocab_size}")
    if Cs > Ct or sc.n_head > tc.n_head or (Cs < Ct and sc.head_size != tc.head_size):
        raise InputError(f"a student initialized from the teacher's blocks must be at most as wide ({Cs} > {Ct}?) "
                         f"with at most as many heads and, when narrower, the teacher's head size {tc.head_size} "
                         f"(the student has {sc.n_head} heads of {sc.head_size}); or use --student-init random")
    if sc.block_size > tc.block_size:
        raise InputError(f"student block_size {sc.block_size} exceeds the teacher's {tc.block_size}")
    P = teacher_params
    hs = tc.head_size

    def sq(a, axis):
        return np.sum(np.asarray(a, dtype=np.float64) ** 2, axis=axis)

    # residual channels, shared by every layer
    score = sq(P["wte.weight"], 0) + sq(P["wpe.weight"], 0)
    for j in range(tc.n_layer):
        p = f"h.{j}."
        score += sq(P[p + "attn.c_attn.weight"], 1) + sq(P[p + "mlp.c_fc.weight"], 1)
        score += sq(P[p + "attn.c_proj.weight"], 0) + sq(P[p + "mlp.c_proj.weight"], 0)
    ch = _importance_order(score, Cs) if Cs < Ct else np.arange(Ct)

    def put(name, value):
        params[name] = np.array(value, dtype=params[name].dtype, order="C")

    put("wte.weight", P["wte.weight"][:, ch])
    put("wpe.weight", P["wpe.weight"][: sc.block_size][:, ch])
    for name in ("ln_f.weight", "ln_f.bias"):
        if name in P and name in params:
            put(name, P[name][ch])
    for i, j in enumerate(blocks):
        s, t = f"h.{i}.", f"h.{j}."
        W = P[t + "attn.c_attn.weight"]  # (Ct, 3Ct): q, k, v, each NH_t heads of hs columns
        head_score = sum(sq(W[:, k * Ct:(k + 1) * Ct].reshape(Ct, tc.n_head, hs), (0, 2)) for k in range(3))
        head_score = head_score + sq(P[t + "attn.c_proj.weight"].reshape(tc.n_head, hs, Ct), (1, 2))
        heads = _importance_order(head_score, sc.n_head) if sc.n_head < tc.n_head else np.arange(tc.n_head)
        hcols = (heads[:, None] * hs + np.arange(hs)).reshape(-1)  # the kept heads' columns within q (or k, v)
        qkv_cols = np.concatenate([hcols, Ct + hcols, 2 * Ct + hcols])
        fc_score = sq(P[t + "mlp.c_fc.weight"], 0) + sq(P[t + "mlp.c_proj.weight"], 1)
        neurons = _importance_order(fc_score, 4 * Cs) if Cs < Ct else np.arange(4 * Ct)
        selections = {  # student tensor: (teacher tensor, row indices or None, column indices or None)
            "ln_1.weight": (ch, None), "ln_1.bias": (ch, None), "ln_2.weight": (ch, None), "ln_2.bias": (ch, None),
            "attn.c_attn.weight": (ch, qkv_cols), "attn.c_attn.bias": (qkv_cols, None),
            "attn.c_proj.weight": (hcols, ch), "attn.c_proj.bias": (ch, None),
            "mlp.c_fc.weight": (ch, neurons), "mlp.c_fc.bias": (neurons, None),
            "mlp.c_proj.weight": (neurons, ch), "mlp.c_proj.bias": (ch, None),
        }
        for name, (rows, cols) in selections.items():
            if s + name not in params or t + name not in P:
                continue
            a = P[t + name][rows]
            put(s + name, a if cols is None else a[:, cols])
    assert all(params[n].shape == shape for n, shape in param_shapes(sc).items())
    return params


# ----------------------------------------------------------------------------------------------
# layer maps


def parse_layer_map(text: str | None, n_student: int, n_teacher: int) -> list[tuple[int, int]]:
    """"0:1,1:3" -> [(0, 1), (1, 3)]: student layer 0 learns teacher layer 1's output, and so on.
    None: each student layer i maps to teacher layer round((i + 1) L_t / L_s) - 1, so the last
    student layer meets the last teacher layer and the others are spread evenly below it."""
    if text is None:
        return [(i, max(0, round((i + 1) * n_teacher / n_student) - 1)) for i in range(n_student)]
    pairs = []
    for item in text.split(","):
        try:
            s, t = (int(v) for v in item.split(":"))
        except ValueError:
            raise InputError(f"--layer-map must look like 0:1,1:3 (student layer:teacher layer), got {text!r}") from None
        if not 0 <= s < n_student:
            raise InputError(f"--layer-map names student layer {s}, which does not exist "
                             f"(the student has layers 0..{n_student - 1})")
        if not 0 <= t < n_teacher:
            raise InputError(f"--layer-map names teacher layer {t}, which does not exist "
                             f"(the teacher has layers 0..{n_teacher - 1})")
        pairs.append((s, t))
    return pairs


# ----------------------------------------------------------------------------------------------
# the distillation objective, plugged into train.py's loop


@dataclass
class DistillConfig:
    teacher: str | None = None  # the teacher's checkpoint (required)
    alpha: float = 0.5  # weight of the soft loss; 1 - alpha on the labels' cross-entropy
    temperature: float = 2.0  # T > 0 of the soft loss
    divergence: str = "kl"  # kl (Hinton), reverse_kl (MiniLLM) or js
    hidden_loss: str | None = None  # mse (TinyBERT) or cosine (DistilBERT) between mapped hidden states; None: off
    hidden_weight: float = 1.0  # weight of the hidden loss (mean over the mapped pairs)
    attention_weight: float = 0.0  # weight of the attention-map KL (mean over the mapped pairs); 0: off
    layer_map: str | None = None  # student:teacher pairs, e.g. 0:1,1:3; default spreads them evenly
    student_init: str = "every-other"  # every-other, a list of teacher blocks (0,3) or random

    def __post_init__(self):
        if not self.teacher:
            raise InputError("distillation needs a teacher: give --teacher CKPT")
        check_alpha(self.alpha)
        check_temperature(self.temperature)
        if self.divergence not in DIVERGENCES:
            raise InputError(f"divergence must be one of {', '.join(DIVERGENCES)}, got {self.divergence!r}")
        if self.hidden_loss is not None and self.hidden_loss not in HIDDEN_LOSSES:
            raise InputError(f"hidden_loss must be one of {', '.join(HIDDEN_LOSSES)}, got {self.hidden_loss!r}")
        for name in ("hidden_weight", "attention_weight"):
            v = getattr(self, name)
            if not is_number(v) or not (v >= 0 and math.isfinite(v)):
                raise InputError(f"{name} must be a number >= 0, got {v!r}")


class DistillObjective(Objective):
    """Each step: the teacher's forward in inference mode (no targets, no dropout; its cache is
    dropped at once, only the hidden states the losses need are kept), the student's forward,
    the distillation losses, and one backward through the student with the gradients at its
    logits and hidden states."""

    name = "distill"

    def __init__(self, teacher: Checkpoint, dc: DistillConfig):
        super().__init__()
        self.teacher, self.dc = teacher, dc
        self.tparams = teacher.params
        self.pairs: list[tuple[int, int]] = []

    def new_tokenizer(self, text):
        return self.teacher.tokenizer  # the student reads and writes the teacher's characters

    def init_params(self, config, seed, dtype):
        return init_student(self.teacher.config, self.teacher.params, config, self.dc.student_init, seed, dtype)

    def prepare(self, config, tokenizer, seed, dtype):
        t = self.teacher.config
        if config.vocab_size != t.vocab_size or tokenizer.chars != self.teacher.tokenizer.chars:
            raise InputError(f"teacher and student vocabularies differ (vocab_size {t.vocab_size} and "
                             f"{config.vocab_size}); the student must use the teacher's characters")
        if config.block_size > t.block_size:
            raise InputError(f"student block_size {config.block_size} exceeds the teacher's {t.block_size}")
        self.tparams = {n: p.astype(dtype, copy=False) for n, p in self.teacher.params.items()}
        needs_map = self.dc.hidden_loss is not None or self.dc.attention_weight > 0
        self.pairs = parse_layer_map(self.dc.layer_map, config.n_layer, t.n_layer) if needs_map else []
        if self.dc.layer_map is not None and not needs_map:
            parse_layer_map(self.dc.layer_map, config.n_layer, t.n_layer)  # still check it
        if self.dc.attention_weight > 0 and t.head_counts is not None:
            raise InputError("the attention loss compares whole layers' heads; this teacher had heads removed "
                             "(per-layer head counts): use the soft-target and hidden losses only")
        if self.dc.attention_weight > 0 and config.n_head != t.n_head:
            raise InputError(f"the attention loss needs as many heads in student ({config.n_head}) and teacher ({t.n_head})")
        if self.dc.hidden_loss is not None and config.n_embd != t.n_embd:
            # TinyBERT's W_h; small random start, float64 draws as init_params
            rng = np.random.default_rng([seed, 7])
            w = rng.normal(0.0, 1.0 / math.sqrt(config.n_embd), size=(config.n_embd, t.n_embd))
            self.extra = {PROJ_NAME: w.astype(dtype)}

    def loss_and_grads(self, config, params, x, y, rng, dloss):
        """hidden[j] below is the residual stream as gpt_forward lists it: j = 0 the embeddings'
        output, j = i + 1 block i's output; so layer-map pair (i, k) compares hidden[i + 1] of
        the student with hidden[k + 1] of the teacher, and the attention maps of blocks i and k
        are recomputed from their inputs hidden[i] and hidden[k]."""
        dc = self.dc
        tcfg = self.teacher.config
        t_hidden = [] if self.pairs else None
        t_logits, _, _ = gpt_forward(tcfg, self.tparams, x, hidden=t_hidden)  # the teacher's cache is dropped
        s_hidden = [] if self.pairs else None
        logits, _, cache = gpt_forward(config, params, x, rng=rng, hidden=s_hidden)
        loss, logs, lcache = distill_loss_forward(logits, t_logits, y, dc.alpha, dc.temperature, dc.divergence)
        dlogits = distill_loss_backward(lcache, dloss)
        dhidden, extra_grads = {}, {}

        def add(d, key, value):
            d[key] = d[key] + value if key in d else value

        proj = self.extra.get(PROJ_NAME)
        if dc.hidden_loss:
            w, total = dc.hidden_weight / len(self.pairs), 0.0
            for sl, tl in self.pairs:
                h, hcache = hidden_loss_forward(dc.hidden_loss, s_hidden[sl + 1], t_hidden[tl + 1], proj, y)
                dh, dp = hidden_loss_backward(hcache, w * dloss)
                add(dhidden, sl + 1, dh)
                if dp is not None:
                    add(extra_grads, PROJ_NAME, dp)
                total += h / len(self.pairs)
            loss += dc.hidden_weight * total
            logs["hidden_loss"] = total
        if dc.attention_weight > 0:
            w, total = dc.attention_weight / len(self.pairs), 0.0
            for sl, tl in self.pairs:
                att_t, _ = attention_map_forward(tcfg, self.tparams, tl, t_hidden[tl])
                att_s, mcache = attention_map_forward(config, params, sl, s_hidden[sl])
                a, acache = attention_kl_forward(att_s, att_t, y)
                dx, g = attention_map_backward(attention_kl_backward(acache, w * dloss), mcache)
                add(dhidden, sl, dx)  # the gradient at block sl's input
                for name, val in g.items():
                    add(extra_grads, name, val)  # c_attn and ln_1: added to the model's gradients below
                total += a / len(self.pairs)
            loss += dc.attention_weight * total
            logs["attention_loss"] = total
        grads = gpt_backward(cache, dlogits=dlogits, dhidden=dhidden or None)
        for name, val in extra_grads.items():
            add(grads, name, val)
        if proj is not None and PROJ_NAME not in grads:
            grads[PROJ_NAME] = np.zeros_like(proj)
        return loss, grads, logs

    def meta(self):
        return {"distill": dataclasses.asdict(self.dc), "teacher_config": self.teacher.config.to_dict()}


def student_config_fields(teacher_config: GPTConfig, base: dict | None, overrides: dict) -> dict:
    """The student's GPTConfig fields: base (a preset's model fields) or, without one, the
    teacher's config with half its layers; then the flags given. The vocabulary is always the
    teacher's: a different vocab_size is an error."""
    if base is None:  # a uniform student: a structurally pruned teacher's per-layer sizes do not carry over
        base = dict(teacher_config.to_dict(), n_layer=max(1, teacher_config.n_layer // 2))
        base.pop("head_counts", None)
        base.pop("mlp_widths", None)
    fields = {**base, **overrides}
    vocab = fields.get("vocab_size", teacher_config.vocab_size)
    if "vocab_size" in overrides and vocab != teacher_config.vocab_size:
        raise InputError(f"teacher and student vocabularies differ: the teacher has vocab_size "
                         f"{teacher_config.vocab_size}, the student was given {vocab}")
    fields["vocab_size"] = teacher_config.vocab_size
    return fields


def distill(tc: TrainConfig, dc: DistillConfig, student_fields: dict | None = None, student_base: dict | None = None,
            stream=None, quiet: bool = False) -> dict:
    """Distill dc.teacher into a student with train.py's loop (logging, evaluation on the
    student's own cross-entropy, checkpoints, resume, Ctrl-C, metrics.jsonl). Returns train's
    summary plus the teacher's parameter count.

    student_fields: GPTConfig fields given for the student (flags); student_base: a preset's
    model fields, or None for the teacher's config with half its layers. With tc.resume or
    tc.init_from the student comes from the checkpoint, and given fields must agree with it."""
    from ..model import num_params

    teacher = load_checkpoint(dc.teacher)
    objective = DistillObjective(teacher, dc)
    student_fields = dict(student_fields or {})
    if "vocab_size" in student_fields and student_fields["vocab_size"] != teacher.config.vocab_size:
        student_config_fields(teacher.config, {}, student_fields)  # raises: the vocabularies differ
    model_config = student_fields if (tc.resume or tc.init_from) else \
        student_config_fields(teacher.config, student_base, student_fields)
    summary = train(tc, model_config, stream=stream, quiet=quiet, objective=objective)
    summary["teacher_params"] = num_params(teacher.params)
    return summary
