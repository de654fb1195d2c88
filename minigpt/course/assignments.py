"""The registry of assignments: which solution regions each one asks for, how its parts are
graded and for how many points, and the task as the student copy's README tells it.

An assignment is a list of parts. A part names the solution regions it covers (the ids after
`# BEGIN SOLUTION` in the reference code), one grading test file in minigpt/course/graders, and
its points: all of them when every test in the file passes, none otherwise. A part's tests must
call only its own regions' code (among the assignment's), so one mistake costs one part.

Adding an assignment (the instructor's guide, docs/instructors.md, walks through it): mark the
regions in the reference code, write one grading file per part, add an `Assignment` below. The
tests in tests/test_assignment.py check every registered assignment: its regions exist, the
student copy imports and fails only with NotImplementedError, stubs score 0, the reference
scores full marks, and each listed planted mistake costs exactly its part.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError


@dataclass(frozen=True)
class Mistake:
    """A wrong variant of a part's reference code that its grading tests must catch: the text old
    in region, replaced by new, fails the part with a first failing check containing expect.
    tests/test_assignment.py plants each one and checks it costs exactly its part's points."""

    region: str
    old: str
    new: str
    expect: str


@dataclass(frozen=True)
class Part:
    name: str  # a short identifier, unique within the assignment; hidden tests test_<name>*.py join it
    points: int
    regions: tuple[str, ...]  # solution region ids
    tests: str  # file name in minigpt/course/graders
    summary: str  # one line for the score table and the README
    mistakes: tuple[Mistake, ...] = ()  # at least one per assignment


@dataclass(frozen=True)
class Assignment:
    number: int
    name: str
    title: str
    parts: tuple[Part, ...]
    task: str  # the README's body: what to write and the math (Markdown)

    @property
    def regions(self) -> tuple[str, ...]:
        return tuple(r for p in self.parts for r in p.regions)

    @property
    def max_points(self) -> int:
        return sum(p.points for p in self.parts)

    def part(self, name: str) -> Part:
        for p in self.parts:
            if p.name == name:
                return p
        raise KeyError(name)


BACKPROP = Assignment(
    1, "backprop", "Layer backward passes",
    (
        Part("linear", 20, ("linear_backward",), "test_backprop_linear.py",
             "linear_backward: dx, dw, db of out = x @ w + b",
             (Mistake("linear_backward", "dx = (dout2 @ w.T)", "dx = -(dout2 @ w.T)",
                      "dx: gradient check failed, rel error 2.00e+00"),)),
        Part("layernorm", 30, ("layernorm_backward",), "test_backprop_layernorm.py",
             "layernorm_backward: dx, dw, db of LayerNorm"),
        Part("gelu", 20, ("gelu_backward",), "test_backprop_gelu.py",
             "gelu_backward: dx of GELU (tanh approximation)"),
        Part("cross_entropy", 30, ("cross_entropy_backward",), "test_backprop_cross_entropy.py",
             "cross_entropy_backward: dlogits of softmax + cross-entropy, ignored targets"),
    ),
    """\
Write the backward pass of four layers of GPT-2. Each layer is a pair `xxx_forward(...) -> (out,
cache)` / `xxx_backward(dout, cache)`: the forward is given, and its docstring and cache tell you
what the backward receives. `dout` is the gradient of the loss with respect to `out`; return the
gradients with respect to the inputs, each shaped like its input.

- `minigpt/layers/linear.py`, `linear_backward`: `out = x @ w + b` with `x` (B, T, C_in), `w`
  (C_in, C_out). Fold batch and time into rows: `dx = dout @ w.T`, `dw = x.T @ dout`,
  `db = sum over rows of dout`.
- `minigpt/layers/layernorm.py`, `layernorm_backward`: with `xhat = (x - mean) * rstd` and
  `out = xhat * w + b`, `dw = sum(dout * xhat)`, `db = sum(dout)` over (B, T), and with
  `dxhat = dout * w`:
  `dx = rstd * (dxhat - mean_C(dxhat) - xhat * mean_C(dxhat * xhat))`.
  Derive the three terms (the direct path, the path through the mean, the path through the
  variance) before you write them.
- `minigpt/layers/activation.py`, `gelu_backward`: `gelu(x) = 0.5 x (1 + tanh(u))` with
  `u = sqrt(2/pi) (x + 0.044715 x^3)`; the cache holds `x` and `t = tanh(u)`.
- `minigpt/layers/cross_entropy.py`, `cross_entropy_backward`: the loss is the mean over the N
  positions whose target is not -1 of `-log softmax(logits)[target]`. Differentiated together,
  softmax and cross-entropy give `dlogits = (softmax(logits) - onehot(target)) * dloss / N` at
  those positions and 0 at ignored ones.

Every backward is graded by a gradient check: your gradient against central finite differences
of the forward (float64, step 1e-5), passing at a relative error below 1e-7
(`minigpt.gradcheck`).
""",
)

ATTENTION = Assignment(
    2, "attention", "Causal self-attention, forward and backward",
    (
        Part("forward", 40, ("attention_forward",), "test_attention_forward.py",
             "attention_forward: heads, scaled scores, causal softmax, dropout, weighted values",
             (Mistake("attention_forward", "masked_softmax(scores, causal)",
                      "masked_softmax(scores, np.ones((T, T), dtype=bool))", "out: rel error"),)),
        Part("backward", 60, ("attention_backward",), "test_attention_backward.py",
             "attention_backward: dqkv through the softmax, checked against your forward",
             (Mistake("attention_backward", "dk = (dscores.transpose(0, 1, 3, 2) @ q) * scale",
                      "dk = -(dscores.transpose(0, 1, 3, 2) @ q) * scale", "dqkv: gradient check failed"),)),
    ),
    """\
Write multi-head causal self-attention in `minigpt/layers/attention.py`, between the two linear
layers of GPT-2's attention block. The input `qkv` (B, T, 3C) holds q, k and v side by side.
The helpers `split_heads`, `merge_heads` and `masked_softmax` are given.

Forward (`attention_forward`), per head, with hs = C / NH:

    S = q k^T / sqrt(hs)                  (B, NH, T, T)
    A = softmax(S) over the keys, where key j > query i is masked out (probability exactly 0)
    Y = dropout(A) v                      (B, NH, T, hs), heads merged back to (B, T, C)

Return `(out, (q, k, v, att, att_mask))`: the backward reads this cache.

Backward (`attention_backward`), in reverse: `dA_d = dY v^T`, `dv = A_d^T dY`, dropout's mask on
`dA`, the softmax's row-wise Jacobian `dS = A * (dA - sum_k(dA * A))`, and `dq = dS k / sqrt(hs)`,
`dk = dS^T q / sqrt(hs)`. Return `dqkv` (B, T, 3C) laid out as `qkv`.

The forward is graded on fixed values, on causality (changing a later position must not change
an earlier output) and on its cache; the backward by a gradient check against finite
differences of your own forward.
""",
)

OPTIM = Assignment(
    3, "optim", "AdamW and the learning-rate schedule",
    (
        Part("adamw", 60, ("adamw_update",), "test_optim_adamw.py",
             "adamw_update: one in-place AdamW step, decoupled weight decay"),
        Part("lr_schedule", 40, ("get_lr",), "test_optim_lr_schedule.py",
             "get_lr: linear warmup, cosine decay, then min_lr",
             (Mistake("get_lr", "return learning_rate * (it + 1) / (warmup_iters + 1)",
                      "return learning_rate * it / warmup_iters", "get_lr(it=0,"),)),
    ),
    """\
Write the optimizer step and the learning-rate schedule of `minigpt/optim.py`.

`adamw_update(p, g, m, v, lr, beta1, beta2, eps, weight_decay, t, decay)`, as torch.optim.AdamW,
updating p, m and v in place (the optimizer keeps those arrays):

    p <- p * (1 - lr * weight_decay)          only if decay (matrices and embeddings)
    m <- beta1 m + (1 - beta1) g
    v <- beta2 v + (1 - beta2) g^2
    p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

`get_lr(it, learning_rate, warmup_iters, lr_decay_iters, min_lr)`, nanoGPT's schedule for step
`it` (from 0): `learning_rate * (it + 1) / (warmup_iters + 1)` during warmup
(`it < warmup_iters`); `min_lr` after `lr_decay_iters`; in between, a cosine from
`learning_rate` down to `min_lr`: `min_lr + 0.5 (1 + cos(pi r)) (learning_rate - min_lr)` with
`r = (it - warmup_iters) / (lr_decay_iters - warmup_iters)`.
""",
)

KVCACHE = Assignment(
    4, "kvcache", "The KV cache",
    (
        Part("attend", 70, ("attention_forward_kv",), "test_kvcache_attend.py",
             "attention_forward_kv: store new keys and values, attend over every cached position",
             (Mistake("attention_forward_kv", "np.tri(Tn, end, k=start, dtype=bool)", "np.tri(Tn, end, k=0, dtype=bool)",
                      "output for positions"),)),
        Part("decode", 30, ("generate_step",), "test_kvcache_decode.py",
             "generate's step: one new token per forward while the cache has room",
             (Mistake("generate_step", "0 < kv.length < maxT", "0 < kv.length", "exceed block_size"),)),
    ),
    """\
Make sampling cost one position per new token instead of the whole context.

`attention_forward_kv(qkv, n_head, k_cache, v_cache, start)` in `minigpt/layers/attention.py`:
`qkv` (B, Tn, 3C) holds the new positions start .. start+Tn-1. Write their keys and values into
the caches (B, NH, maxT, hs) at [start, start + Tn), then attend from the Tn new queries to every
key in [0, start + Tn), where new query i (position start + i) sees keys 0 .. start + i. The
result must equal the last Tn positions of `attention_forward` on the whole sequence.

`logits_next` inside `generate` (`minigpt/generate.py`, region `generate_step`): with a cache
that holds 0 < length < block_size positions, only the newest token is new: feed it alone.
Otherwise (the first step, or a context that is full, where every position shifts) reset the
cache and feed the last block_size tokens. Without a cache (`kv is None`) always feed the last
block_size tokens. Return the logits (V,) of the last position.
""",
)

DISTILL = Assignment(
    7, "distill", "The distillation loss and its gradient",
    (
        Part("loss", 40, ("soft_loss_rows",), "test_distill_loss.py",
             "soft_loss_forward: KL, reverse KL and Jensen-Shannon per position"),
        Part("gradient", 60, ("soft_loss_dz",), "test_distill_gradient.py",
             "soft_loss_backward: their gradients with respect to the student's logits",
             (Mistake("soft_loss_dz", "dz = q * (logq - logp - rows[..., None])", "dz = q * (logq - logp + rows[..., None])",
                      "dstudent_logits (reverse_kl"),)),
    ),
    """\
Write the soft-target losses of knowledge distillation in `minigpt/compress/distill.py`. With
the teacher's distribution `p = softmax(teacher / T)` and the student's `q = softmax(student / T)`
(given, with their logarithms `logp`, `logq`), compute per position, summed over the vocabulary:

    kl          KL(p || q) = sum_v p_v (log p_v - log q_v)          (Hinton et al. 2015)
    reverse_kl  KL(q || p) = sum_v q_v (log q_v - log p_v)          (MiniLLM)
    js          (KL(p || m) + KL(q || m)) / 2, m = (p + q) / 2      (set logm too)

(`soft_loss_forward`, region `soft_loss_rows`: the rows (B, T); the code after it scales by T^2
and averages over the kept positions.)

In `soft_loss_backward` (region `soft_loss_dz`), the gradient of each row with respect to the
student's scaled logits z = s / T: `q - p` for kl; `q * (log q - log p - KL(q || p))` for
reverse_kl; for js, `q * (g - sum_v q_v g_v)` with `g = (log q - log m) / 2`. Derive them: the
softmax Jacobian `dq_v / dz_u = q_v (1[u = v] - q_u)` does most of the work.
""",
)

PRUNING = Assignment(
    5, "pruning", "Magnitude and N:M pruning",
    (
        Part("magnitude", 60, ("prune_count", "magnitude_mask"), "test_pruning_magnitude.py",
             "the count rule round(s * n), half to even, and the mask of the k lowest scores",
             (Mistake("prune_count", "return round(check_sparsity(sparsity) * n)",
                      "return int(check_sparsity(sparsity) * n)", "n_to_prune(sparsity=0.35, n=10)"),)),
        Part("n_m", 40, ("nm_mask",), "test_pruning_n_m.py",
             "the N:M mask: N kept in every M consecutive inputs of each output",
             (Mistake("nm_mask", "order[:, : m - n]", "order[:, : m - n + 1]", "2:4 mask"),)),
    ),
    """\
Write the two pruning rules every other method in `minigpt/compress/prune.py` builds on. A
mask is a boolean array shaped like the weight: True keeps the weight, False prunes (zeroes) it.

Part magnitude:
- region `prune_count` (`n_to_prune(sparsity, n)`): how many of n weights a sparsity s prunes.
  The rule is torch.nn.utils.prune's: s * n rounded half to even (Python's `round`), so that
  0.25 of 10 prunes 2 and 0.35 of 10 prunes 4. Refuse a sparsity outside [0, 1) with
  `check_sparsity`.
- region `magnitude_mask` (`mask_from_scores(scores, sparsity)`): prune the k lowest scores
  (for magnitude pruning the scores are |w|). Rank the flattened scores; equal scores go in flat
  index order, lowest index first, so that masks are deterministic and nest as the sparsity grows.
  Global pruning (`global_masks`, given) ranks every tensor together by calling your function on
  the concatenation.

Part n_m (`nm_mask(scores, n, m)`, region `nm_mask`): semi-structured N:M sparsity, the pattern
sparse tensor cores run (2:4 by default). minigpt's linear weights are (d_in, d_out); in every
column, each group of M consecutive rows (inputs) keeps exactly its N highest scores; on a tie the
earlier row is pruned first. `d_in % m == 0` is checked for you.
""",
)

QUANTIZATION = Assignment(
    6, "quantization", "Round-to-nearest quantization and fake quantization",
    (
        Part("rtn", 60, ("quant_scale", "quant_zero_point", "quant_codes", "dequant"), "test_quantization_rtn.py",
             "the scale and zero point, the integer codes (nearest and stochastic rounding), dequantization",
             (Mistake("quant_scale", "scale = np.maximum(-lo, hi) / spec.qmax",
                      "scale = np.maximum(-lo, hi) / (spec.qmax + 1)", "scales (sym, 4 bits, per channel): rel error"),)),
        Part("fake_quant", 40, ("fake_quant_mask", "fake_quant_ste"), "test_quantization_fake_quant.py",
             "fake quantization: the in-range mask and the straight-through gradient",
             (Mistake("fake_quant_ste", "return np.where(mask, dout, 0).astype(dout.dtype)",
                      "return dout.astype(dout.dtype)", "dx (straight-through"),)),
    ),
    """\
Write uniform integer quantization in `minigpt/compress/quantize.py`, the rules of PyTorch's
torch.ao.quantization. A weight matrix (R, K) is quantized per tensor, per row (output channel)
or per group of G consecutive inputs of a row; each group of values shares one scale s and one
zero point z. With b bits:

    symmetric  codes in [-(2^(b-1) - 1), 2^(b-1) - 1], z = 0
    affine     codes in [0, 2^b - 1]

Part rtn (round-to-nearest):
- region `quant_scale` (in `_params_from_range`): widen the range [lo, hi] to contain 0, so that
  zero is exactly representable (a pruned weight must stay 0), then the scale that maps the range
  onto the codes: the larger of |lo| and hi over qmax (symmetric), or (hi - lo) / (qmax - qmin)
  (affine). A group of zeros gets scale 1.
- region `quant_zero_point`: z = 0 (symmetric); affine: the code that lo maps to must be qmin.
- region `quant_codes` (in `quantize_grouped`): q = clip(round(x / s) + z, qmin, qmax), rounding
  half to even (`np.round`), or, with stochastic rounding, up with probability equal to the
  fractional part (floor(t + u) with u uniform in [0, 1)).
- region `dequant` (in `dequantize_grouped`): x_hat = s (q - z).
The result must satisfy |x - x_hat| <= s / 2 for every value inside the range.

Part fake_quant (quantization-aware training): region `fake_quant_mask` in `fake_quant_forward`
computes the codes before clipping and the mask of values inside [qmin, qmax]; region
`fake_quant_ste` is the backward, the straight-through estimator: round() has derivative 0 almost
everywhere, so QAT pretends it is the identity inside the clipping range. What is the gradient
outside it, where the clamp is flat?
""",
)

# in the order `minigpt assignment list` shows them
ASSIGNMENTS: dict[str, Assignment] = {
    a.name: a for a in (BACKPROP, ATTENTION, OPTIM, KVCACHE, PRUNING, QUANTIZATION, DISTILL)
}


def get_assignment(name: str) -> Assignment:
    """The assignment named name (or numbered, as "1"); InputError for an unknown one."""
    for a in ASSIGNMENTS.values():
        if name in (a.name, str(a.number)):
            return a
    raise InputError(f"unknown assignment {name!r}: choose one of {', '.join(ASSIGNMENTS)} "
                     "(minigpt assignment list)")
