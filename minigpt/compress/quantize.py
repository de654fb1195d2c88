"""Uniform integer quantization of weights: round-to-nearest, fake quantization for training, and
the compressed storage of the integer codes.

The rules are PyTorch's (torch.ao.quantization, its MinMax observers and FakeQuantize):

    affine     q = clamp(round(x / s) + z, qmin, qmax),  x_hat = s * (q - z),  codes in [0, 2^b - 1]
    symmetric  z = 0, codes in [-(2^(b-1) - 1), 2^(b-1) - 1]  (the "restricted" range, so that
               Q(-x) = -Q(x); 8 bits give [-127, 127], as LLM.int8() and llama.cpp's Q8_0)

    range      [lo, hi] widened to contain 0, so that zero is exactly representable (a pruned weight
               stays exactly 0): lo = min(x_min, 0), hi = max(x_max, 0)
    affine     s = (hi - lo) / (qmax - qmin),  z = qmin - round(lo / s)
    symmetric  s = max(-lo, hi) / qmax

round() is round half to even (NumPy's and PyTorch's rule); `rounding="stochastic"` rounds up with
probability equal to the fractional part (unbiased: E[x_hat] = x inside the range).
The clipping range [x_min, x_max] comes from the values' min and max ("minmax"), from a percentile
of |x| ("percentile", outliers are clipped), or from a search over shrunk ranges that minimises the
squared error ("mse", as GPTQ's reference code does with its `mse` option).

Granularity: one (s, z) per tensor, per output channel, or per group of G consecutive input
channels of each output channel. minigpt's linear weights are stored (in, out), as Hugging Face's
Conv1D; this module quantizes their transpose W^T (out, in), PyTorch's Linear layout, so "per
channel" is one scale per row and groups run along the rows. `quantize_weight` does the
transposing; the functions on 2-D arrays below take (out, in).

Storage (codec "uniform", see minigpt.compress.storage): the codes minus qmin as unsigned integers
packed at b bits each (8 bits: one per byte; 4 bits: two per byte, the first in the low nibble;
2 bits: four per byte, the first in the lowest two bits; 3, 5, 6, 7 bits: a little-endian bit
stream), the scales (float16 for groups, as GPTQ and llama.cpp; else the weights' dtype) and, for
the affine scheme, the zero points packed the same way. Decoding computes s * (q - z) with the
very function the model's weights were made with, so a checkpoint loads to the exact values the
model was evaluated with.

What gets quantized by default: the weights of the linear layers (attn.c_attn, attn.c_proj,
mlp.c_fc, mlp.c_proj of every block). The token and position embeddings, LayerNorms and biases
stay float: they are ~2% of the baby model, and the token embedding is also the output layer.

Fake quantization (quantization-aware training) runs x -> x_hat in the forward; its backward is
the straight-through estimator of PyTorch's FakeQuantize: dx = dy * 1[qmin <= round(x/s) + z <= qmax]
(gradients pass inside the clipping range and are zero outside; no 1/s factor).

Legend: R rows (output channels), K columns (input channels), G groups per row, gs group size.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass, replace
from types import SimpleNamespace

import numpy as np

from ..errors import InputError
from . import storage

SCHEMES = ("sym", "affine")
GRANULARITIES = ("tensor", "channel", "group")
CLIPS = ("minmax", "percentile", "mse")
ROUNDINGS = ("nearest", "stochastic")
LINEAR_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
FP16_MIN_SCALE = 2.0**-14  # smallest normal float16: group scales are stored in float16
MSE_GRID = np.linspace(1.0, 0.5, 51)  # shrink factors of the range tried by clip="mse"


@dataclass(frozen=True)
class QuantSpec:
    """How to quantize one tensor. `name` gives the short form ("w4g32", "w8", "w8t", "w4g32-affine")."""

    bits: int = 8
    scheme: str = "sym"
    granularity: str = "channel"
    group_size: int = 32  # used when granularity == "group"
    clip: str = "minmax"
    percentile: float = 99.9  # used when clip == "percentile": the |x| percentile kept per range
    rounding: str = "nearest"

    def __post_init__(self):
        if isinstance(self.bits, bool) or not isinstance(self.bits, (int, np.integer)) or not 2 <= self.bits <= 8:
            raise InputError(f"bits must be an integer in 2..8, got {self.bits!r}")
        for field, allowed in (("scheme", SCHEMES), ("granularity", GRANULARITIES), ("clip", CLIPS),
                               ("rounding", ROUNDINGS)):
            if getattr(self, field) not in allowed:
                raise InputError(f"{field} must be one of {', '.join(allowed)}, got {getattr(self, field)!r}")
        if self.granularity == "group" and (not isinstance(self.group_size, (int, np.integer)) or self.group_size < 1):
            raise InputError(f"group size must be an integer >= 1, got {self.group_size!r}")
        if not 50.0 < self.percentile <= 100.0:
            raise InputError(f"percentile must be in (50, 100], got {self.percentile}")

    @property
    def qmin(self) -> int:
        return 0 if self.scheme == "affine" else -(2 ** (self.bits - 1) - 1)

    @property
    def qmax(self) -> int:
        return 2**self.bits - 1 if self.scheme == "affine" else 2 ** (self.bits - 1) - 1

    @property
    def name(self) -> str:
        g = {"tensor": "t", "channel": "", "group": f"g{self.group_size}"}[self.granularity]
        return f"w{self.bits}{g}" + ("-affine" if self.scheme == "affine" else "")


SPEC_PATTERN = re.compile(r"^w([0-9]+)(t|g([0-9]+))?(-affine|-sym)?$")


def parse_spec(text: str, **overrides) -> QuantSpec:
    """'w8' (8 bits, per channel), 'w8t' (per tensor), 'w4g32' (4 bits, groups of 32), with
    '-affine' for a zero point: the form of `minigpt train --qat` and of per-tensor overrides."""
    m = SPEC_PATTERN.match(str(text).strip().lower())
    if not m:
        raise InputError(f"quantization spec {text!r} is not of the form w<bits>[t|g<group>][-affine], e.g. w4g32")
    granularity = "tensor" if m.group(2) == "t" else "group" if m.group(3) else "channel"
    fields = dict(bits=int(m.group(1)), granularity=granularity, scheme="affine" if m.group(4) == "-affine" else "sym")
    if m.group(3):
        fields["group_size"] = int(m.group(3))
    return QuantSpec(**{**fields, **overrides})


def check_finite(x, what="weights"):
    if not np.all(np.isfinite(x)):
        raise InputError(f"cannot quantize {what} containing NaN or inf")


# ----------------------------------------------------------------------------------------------
# quantization parameters, quantize, dequantize (arrays of shape (R, K): rows are output channels)


def _grouped(w, spec: QuantSpec):
    """w (R, K) viewed as (R', G, gs): the values sharing one (scale, zero point)."""
    R, K = w.shape
    if spec.granularity == "tensor":
        return w.reshape(1, 1, R * K)
    if spec.granularity == "channel":
        return w.reshape(R, 1, K)
    if K % spec.group_size:
        raise InputError(f"group size {spec.group_size} does not divide the input dimension {K}")
    return w.reshape(R, K // spec.group_size, spec.group_size)


def _scale_dtype(spec: QuantSpec, dtype):
    return np.dtype(np.float16) if spec.granularity == "group" else np.dtype(dtype)


def _params_from_range(lo, hi, spec: QuantSpec, dtype):
    """(scale, zero) from a range [lo, hi] (arrays of equal shape), zero kept representable."""
    # BEGIN SOLUTION quant_scale
    # HINT: widen [lo, hi] to contain 0; sym: the larger of |lo|, hi over qmax; affine: the range over qmax - qmin
    lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
    if spec.scheme == "sym":
        scale = np.maximum(-lo, hi) / spec.qmax
    else:
        scale = (hi - lo) / (spec.qmax - spec.qmin)
    scale = np.where(scale > 0, scale, 1.0)  # an all-zero group: any scale represents it exactly
    # END SOLUTION
    sdt = _scale_dtype(spec, dtype)
    if sdt == np.float16:
        if np.any(scale > np.finfo(np.float16).max):
            raise InputError("weights too large for float16 group scales; use per-channel quantization")
        scale = np.maximum(scale, FP16_MIN_SCALE)  # no subnormal or zero scales
        s16 = scale.astype(np.float16)
        # round up, never down: a symmetric range then still covers the largest |x| (no clipping)
        scale = np.where(s16.astype(np.float64) < scale, np.nextafter(s16, np.float16(np.inf)), s16)
    scale = scale.astype(sdt)
    # BEGIN SOLUTION quant_zero_point
    # HINT: sym: 0; affine: the integer that lo maps to qmin, rounded and clipped to [qmin, qmax], int32
    if spec.scheme == "sym":
        zero = np.zeros(scale.shape, np.int32)
    else:
        s = scale.astype(np.float64)
        zero = np.clip(spec.qmin - np.round(lo / s), spec.qmin, spec.qmax).astype(np.int32)
    # END SOLUTION
    return scale, zero


def compute_qparams(w, spec: QuantSpec):
    """Scales and zero points for w (R, K): arrays of shape (R', G) (R' = 1 per tensor, G = 1
    unless grouped). Scales are stored in their storage dtype (see the module docstring)."""
    w = np.asarray(w)
    check_finite(w)
    v = _grouped(w.astype(np.float64), spec)  # (R', G, gs)
    if spec.clip == "percentile":
        a = np.percentile(np.abs(v), spec.percentile, axis=-1)
        lo, hi = np.maximum(v.min(axis=-1), -a), np.minimum(v.max(axis=-1), a)
        return _params_from_range(lo, hi, spec, w.dtype)
    lo, hi = v.min(axis=-1), v.max(axis=-1)
    if spec.clip == "minmax":
        return _params_from_range(lo, hi, spec, w.dtype)
    # mse: shrink the range by each factor of the grid; keep, per group, the one with the least error
    best = None
    for f in MSE_GRID:
        scale, zero = _params_from_range(lo * f, hi * f, spec, w.dtype)
        q = quantize_grouped(v, scale, zero, spec, "nearest")
        err = ((dequantize_grouped(q, scale, zero, np.float64) - v) ** 2).sum(axis=-1)
        if best is None:
            best = (err, scale, zero)
        else:
            better = err < best[0]
            best = (np.where(better, err, best[0]), np.where(better, scale, best[1]), np.where(better, zero, best[2]))
    return best[1], best[2]


def quantize_grouped(v, scale, zero, spec: QuantSpec, rounding=None, rng=None):
    """v (R', G, gs), scale and zero (R', G) -> integer codes (R', G, gs) int32 in [qmin, qmax]."""
    # BEGIN SOLUTION quant_codes
    # HINT: t = v / scale (float64); stochastic: floor(t + uniform[0, 1)); else np.round; add zero, clip, int32
    t = v / scale.astype(np.float64)[..., None]
    if (rounding or spec.rounding) == "stochastic":
        rng = rng if rng is not None else np.random.default_rng(0)
        r = np.floor(t + rng.random(t.shape))  # up with probability frac(t)
    else:
        r = np.round(t)  # half to even
    return np.clip(r + zero[..., None], spec.qmin, spec.qmax).astype(np.int32)
    # END SOLUTION


def dequantize_grouped(q, scale, zero, dtype=np.float32):
    """x_hat = s * (q - z), computed in dtype: the one formula every decoder here uses."""
    dtype = np.dtype(dtype)
    # BEGIN SOLUTION dequant
    # HINT: s * (q - z), with (q - z) and s both cast to dtype before the product
    return (q - zero[..., None]).astype(dtype) * scale.astype(dtype)[..., None]
    # END SOLUTION


def quantize(w, spec: QuantSpec, rng=None):
    """Round-to-nearest (or stochastic) quantization of w (R, K): (codes (R, K) int32, scale, zero)."""
    w = np.asarray(w)
    if w.ndim != 2:
        raise InputError(f"quantize expects a 2-D array (out, in), got shape {w.shape}")
    scale, zero = compute_qparams(w, spec)
    q = quantize_grouped(_grouped(w.astype(np.float64), spec), scale, zero, spec, rng=rng)
    return q.reshape(w.shape), scale, zero


def dequantize(q, scale, zero, spec: QuantSpec, dtype=np.float32):
    """Codes (R, K) back to values (R, K) of dtype."""
    return dequantize_grouped(_grouped(q, spec), scale, zero, dtype).reshape(q.shape)


def fake_quant_forward(x, spec: QuantSpec, qparams=None):
    """x_hat = dequantize(quantize(x)) in x's dtype, and the cache for the backward: the mask of
    values inside the clipping range (qmin <= round(x/s) + z <= qmax). x: (R, K); qparams: a
    fixed (scale, zero), or None to compute them from x (the weights' own range)."""
    x = np.asarray(x)
    scale, zero = qparams if qparams is not None else compute_qparams(x, spec)
    v = _grouped(x.astype(np.float64), spec)
    # BEGIN SOLUTION fake_quant_mask
    # HINT: the codes before clipping, round(v / s) + z; the mask: where they lie in [qmin, qmax]; then clip
    unclipped = np.round(v / scale.astype(np.float64)[..., None]) + zero[..., None]
    mask = ((unclipped >= spec.qmin) & (unclipped <= spec.qmax)).reshape(x.shape)
    q = np.clip(unclipped, spec.qmin, spec.qmax).astype(np.int32)
    # END SOLUTION
    return dequantize_grouped(q, scale, zero, x.dtype).reshape(x.shape), mask


def fake_quant_backward(dout, mask):
    """Straight-through estimator: the gradient passes where x was inside the range, else 0."""
    # BEGIN SOLUTION fake_quant_ste
    # HINT: straight-through: what passes where the value was inside the range, and where the clamp was flat? keep dout's dtype
    return np.where(mask, dout, 0).astype(dout.dtype)
    # END SOLUTION


# ----------------------------------------------------------------------------------------------
# packing integer codes into bytes


def pack_codes(u, bits: int) -> np.ndarray:
    """Unsigned codes u (any shape, values in [0, 2^bits)) -> uint8 bytes, `bits` bits per code."""
    u = np.asarray(u).ravel()
    if u.size and (u.min() < 0 or u.max() >= 2**bits):
        raise ValueError(f"codes out of range for {bits} bits")
    u = u.astype(np.uint8)
    if bits == 8:
        return u.copy()
    if bits in (2, 4):
        per = 8 // bits
        u = np.concatenate([u, np.zeros(-u.size % per, np.uint8)]).reshape(-1, per)  # (bytes, codes per byte)
        out = np.zeros(u.shape[0], np.uint8)
        for i in range(per):  # the first code of each byte in its lowest bits
            out |= u[:, i] << np.uint8(i * bits)
        return out
    # any other width: the codes' low `bits` bits, least significant first, as one bit stream
    stream = np.unpackbits(u[:, None], axis=1, bitorder="little")[:, :bits]  # (n, bits)
    return np.packbits(stream.ravel(), bitorder="little")


def unpack_codes(packed, bits: int, count: int) -> np.ndarray:
    """The inverse of pack_codes: `count` unsigned codes as uint8."""
    packed = np.asarray(packed, np.uint8).ravel()
    if bits == 8:
        return packed[:count].copy()
    if bits in (2, 4):
        per, mask = 8 // bits, np.uint8(2**bits - 1)
        out = np.stack([(packed >> np.uint8(i * bits)) & mask for i in range(per)], axis=1)
        return out.ravel()[:count]
    stream = np.unpackbits(packed, bitorder="little")[: count * bits].reshape(count, bits)
    return np.packbits(stream, axis=1, bitorder="little").ravel()


def packed_nbytes(count: int, bits: int) -> int:
    return (count * bits + 7) // 8


# ----------------------------------------------------------------------------------------------
# a quantized weight of the model, and its codec


@dataclass
class QTensor:
    """A quantized minigpt weight. The weight is stored (in, out); codes, scale and zero belong to
    its transpose (out, in) (rows are output channels). dequantize() returns the (in, out) values."""

    codes: np.ndarray  # (out, in) int32 in [qmin, qmax]
    scale: np.ndarray  # (R', G)
    zero: np.ndarray  # (R', G) int32
    spec: QuantSpec
    dtype: str = "float32"

    @property
    def shape(self):
        return self.codes.shape[::-1]

    def dequantize(self) -> np.ndarray:
        return np.ascontiguousarray(dequantize(self.codes, self.scale, self.zero, self.spec, self.dtype).T)

    def encode(self) -> storage.Encoded:
        return storage.encode(self.dequantize(), "uniform", qtensor=self)


def quantize_weight(w, spec: QuantSpec, rng=None) -> QTensor:
    """Round-to-nearest quantization of a minigpt weight w (in, out)."""
    w = np.asarray(w)
    if w.ndim != 2:
        raise InputError(f"a linear weight must be 2-D (in, out), got shape {w.shape}")
    codes, scale, zero = quantize(np.ascontiguousarray(w.T), spec, rng=rng)
    return QTensor(codes, scale, zero, spec, w.dtype.name)


def _spec_info(spec: QuantSpec) -> dict:
    return {"bits": spec.bits, "scheme": spec.scheme, "granularity": spec.granularity, "group_size": spec.group_size}


def _encode_uniform(array, qtensor: QTensor | None = None, spec: QuantSpec | None = None, **spec_fields):
    """Codec "uniform": parts codes / scales / zeros (affine only); see the module docstring."""
    if qtensor is None:
        qtensor = quantize_weight(array, spec or QuantSpec(**spec_fields))
    s = qtensor.spec
    parts = {"codes": pack_codes(qtensor.codes - s.qmin, s.bits), "scales": qtensor.scale}
    if s.scheme == "affine":
        parts["zeros"] = pack_codes(qtensor.zero - s.qmin, s.bits)
    info = {"shape": list(qtensor.shape), "dtype": qtensor.dtype, "layout": "transposed", **_spec_info(s),
            "scale_shape": list(qtensor.scale.shape)}
    return parts, info


def qtensor_from_encoded(enc: storage.Encoded) -> QTensor:
    """The QTensor a "uniform" encoding holds (integer-only inference runs on its codes)."""
    info, parts = enc.info, enc.parts
    spec = QuantSpec(bits=int(info["bits"]), scheme=info["scheme"], granularity=info["granularity"],
                     group_size=int(info["group_size"]))
    n_in, n_out = info["shape"]
    codes = unpack_codes(parts["codes"], spec.bits, n_in * n_out).astype(np.int32).reshape(n_out, n_in) + spec.qmin
    scale = np.asarray(parts["scales"]).reshape(info["scale_shape"])
    if spec.scheme == "affine":
        zero = unpack_codes(parts["zeros"], spec.bits, scale.size).astype(np.int32).reshape(scale.shape) + spec.qmin
    else:
        zero = np.zeros(scale.shape, np.int32)
    return QTensor(codes, scale, zero, spec, info["dtype"])


def _decode_uniform(parts, info):
    return qtensor_from_encoded(storage.Encoded("uniform", parts, info)).dequantize()


storage.register_codec("uniform", _encode_uniform, _decode_uniform)


# ----------------------------------------------------------------------------------------------
# the model's weights


def linear_weight_names(params) -> list[str]:
    """The weights of every linear layer (the tensors quantized by default), in forward order."""
    return [n for n in params if n.startswith("h.") and n.endswith(LINEAR_SUFFIXES)]


def quantize_params(params, spec: QuantSpec, names=None, overrides=None, rng=None):
    """Round-to-nearest on the linear weights. overrides: {name: QuantSpec or None (keep float)}.
    Returns (params with the dequantized weights, {name: QTensor})."""
    overrides = overrides or {}
    out, qtensors = dict(params), {}
    for name in names if names is not None else linear_weight_names(params):
        s = overrides.get(name, spec)
        if s is None:
            continue
        qtensors[name] = quantize_weight(params[name], s, rng=rng)
        out[name] = qtensors[name].dequantize()
    return out, qtensors


def error_stats(w, w_hat) -> dict:
    """MSE, SQNR in dB (10 log10 of signal power over error power) and cosine similarity."""
    w, w_hat = np.asarray(w, np.float64).ravel(), np.asarray(w_hat, np.float64).ravel()
    err = ((w - w_hat) ** 2).sum()
    signal = (w**2).sum()
    sqnr = float("inf") if err == 0 else 10.0 * np.log10(signal / err)
    cos = float(w @ w_hat / (np.linalg.norm(w) * np.linalg.norm(w_hat))) if signal and (w_hat**2).sum() else 0.0
    return {"mse": float(err / w.size), "sqnr_db": float(sqnr), "cosine": cos}


def with_spec(spec: QuantSpec, **fields) -> QuantSpec:
    return replace(spec, **fields)


# ----------------------------------------------------------------------------------------------
# the whole model: calibration, quantize every linear weight, the per-tensor report


def weight_key(w):
    """Identify a weight array by its memory and view, to find it inside linear_forward calls."""
    return (w.__array_interface__["data"][0], w.shape, w.strides)


@contextmanager
def patched_linear(linear_forward):
    """Run a block with the active backend's linear_forward replaced (the model code unchanged)."""
    from .. import backend

    name = backend.get_backend()
    ns = SimpleNamespace(**vars(backend.ops_for(name)))
    ns.linear_forward = linear_forward
    with backend.patched(name, ns):
        yield


def linear_hessians(config, params, batches, names) -> dict:
    """H = (2/N) X^T X of the inputs X (N, in) of each named linear weight, over the calibration
    batches (token id arrays (B, T)) run through the model as it is in params."""
    from .. import backend
    from ..model import gpt_forward

    keys = {weight_key(params[n]): n for n in names}
    sums, counts = {}, {}
    float_linear = backend.ops().linear_forward

    def recording_linear(x, w, b=None):
        name = keys.get(weight_key(w))
        if name is not None:
            x2 = x.reshape(-1, x.shape[-1]).astype(np.float64)
            sums[name] = sums.get(name, 0.0) + x2.T @ x2
            counts[name] = counts.get(name, 0) + x2.shape[0]
        return float_linear(x, w, b)

    with patched_linear(recording_linear):
        for idx in batches:
            gpt_forward(config, params, idx)
    return {n: 2.0 / counts[n] * sums[n] for n in names}


def check_calibration(batches, config):
    """Calibration batches must be token ids of shape (B, T) that fit the model."""
    from ..model import check_tokens

    if not batches:
        raise InputError("no calibration data: give at least one batch of token ids")
    for x in batches:
        check_tokens(x, config, "calibration data")


METHODS = ("rtn", "gptq", "kmeans", "q8_0", "q4_0")


def quantize_model(config, params, method: str, spec: QuantSpec, batches=None, overrides=None,
                   act_order=False, blocksize=128, percdamp=0.01):
    """Quantize the linear weights of a model. Returns (params with the dequantized weights,
    {name: storage.Encoded}). overrides: {name: QuantSpec, or None to keep it float} (mixed
    precision; for kmeans only the bits count, for q8_0/q4_0 only None).
    GPTQ runs layer by layer in forward order, each layer's Hessian measured on the model with
    the layers before it already quantized (as the reference code does block by block)."""
    from . import ggml, kmeans

    if method not in METHODS:
        raise InputError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    overrides = overrides or {}
    unknown = [n for n in overrides if n not in params]
    if unknown:
        raise InputError(f"override for {unknown[0]}: the model has no such tensor")
    names = linear_weight_names(params)
    for n in names:
        check_finite(params[n], n)
    out, encoded = dict(params), {}
    if method == "gptq":
        check_calibration(batches, config)
    for name in names:
        s = overrides.get(name, spec)
        if s is None:
            continue
        w = params[name]
        if method == "rtn":
            qt = quantize_weight(w, s)
            out[name], encoded[name] = qt.dequantize(), qt.encode()
        elif method == "gptq":
            from .gptq import gptq_weight

            H = linear_hessians(config, out, batches, [name])[name]
            qt = gptq_weight(w, H, s, blocksize=blocksize, percdamp=percdamp, act_order=act_order)
            out[name], encoded[name] = qt.dequantize(), qt.encode()
        elif method == "kmeans":
            idx, codebook, shared = kmeans.share_weight(w, s.bits)
            out[name] = shared
            encoded[name] = storage.encode(shared, "kmeans", bits=s.bits, idx=idx, codebook=codebook)
        else:
            out[name], encoded[name] = ggml.quantize_weight_ggml(w, method)
    return out, encoded


def eval_loss(config, params, batches_xy) -> float:
    """Mean loss over fixed (x, y) batches, weighted by tokens."""
    from ..evaluate import mean_loss

    return mean_loss(config, params, batches_xy)[0]


def report(config, params, quantized, batches_xy) -> dict:
    """Per-tensor errors of a quantization: for every quantized tensor its MSE, SQNR (dB), cosine
    similarity and the loss change on batches_xy when only that tensor is quantized; plus the
    loss of the float model and of the whole quantized one."""
    base = eval_loss(config, params, batches_xy)
    rows = []
    for name in params:
        if quantized[name] is params[name] or np.array_equal(quantized[name], params[name]):
            continue
        only = dict(params)
        only[name] = quantized[name]
        row = {"name": name, **error_stats(params[name], quantized[name])}
        row["delta_loss"] = eval_loss(config, only, batches_xy) - base
        rows.append(row)
    return {"float_loss": base, "quantized_loss": eval_loss(config, quantized, batches_xy), "tensors": rows}


def format_report(rep: dict) -> str:
    lines = [f"{'tensor':<28} {'MSE':>10} {'SQNR dB':>8} {'cosine':>9} {'d loss':>9}"]
    for r in rep["tensors"]:
        lines.append(f"{r['name']:<28} {r['mse']:>10.3e} {r['sqnr_db']:>8.2f} {r['cosine']:>9.6f} "
                     f"{r['delta_loss']:>+9.4f}")
    lines.append(f"loss: float {rep['float_loss']:.4f}, all quantized {rep['quantized_loss']:.4f} "
                 f"({rep['quantized_loss'] - rep['float_loss']:+.4f})")
    return "\n".join(lines)


def plot_report(rep: dict, path) -> bool:
    """A bar chart of each tensor's loss change (PNG); False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = [r["name"] for r in rep["tensors"]]
    fig, ax = plt.subplots(figsize=(8, 0.25 * len(names) + 1.5))
    ax.barh(names, [r["delta_loss"] for r in rep["tensors"]])
    ax.invert_yaxis()
    ax.set_xlabel("val loss change when only this tensor is quantized")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


# ----------------------------------------------------------------------------------------------
# quantization-aware training (minigpt train --qat w4g32)


def qat_objective(spec_text: str):
    """The training objective of `minigpt train --qat SPEC`: the forward runs on fake-quantized
    linear weights, the backward passes their gradients straight through inside the clipping
    range (fake_quant_backward). The model keeps training its float weights; quantizing the
    result with the same spec (minigpt quantize --method rtn) gives the weights it trained with."""
    from ..model import gpt_backward, gpt_forward
    from ..train import Objective

    spec = parse_spec(spec_text)

    class QATObjective(Objective):
        name = "qat"

        def loss_and_grads(self, config, params, x, y, rng, dloss):
            fq, masks = dict(params), {}
            for name in linear_weight_names(params):
                wt, mask = fake_quant_forward(params[name].T, spec)  # (out, in): rows are channels
                fq[name], masks[name] = np.ascontiguousarray(wt.T), mask.T
            _, loss, cache = gpt_forward(config, fq, x, y, rng=rng)
            grads = gpt_backward(cache, dloss=dloss)
            for name, mask in masks.items():
                grads[name] = fake_quant_backward(grads[name], mask)
            return loss, grads, {}

        def meta(self):
            return {"qat": spec.name}

    return QATObjective()


from . import ggml as _ggml  # noqa: F401  (registers the q8_0 / q4_0 codecs)
from . import kmeans as _kmeans  # noqa: F401  (registers the kmeans codec)
