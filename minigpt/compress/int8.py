"""Integer-only inference of the linear layers: int8 activations x int8 weights -> int32 sums in a
numba kernel -> requantization by a fixed-point multiplier (Jacob et al., CVPR 2018, "Quantization
and Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference"; the fixed-point
steps are gemmlowp's SaturatingRoundingDoublingHighMul and RoundingDivideByPOT, as TFLite).

A linear layer y = x @ W (+ b), W (K, N) stored (in, out):

  weights     int8, symmetric, one scale per output channel: W_q = round(W / s_w), s_w = max|W_:,j| / 127
  activations int8, symmetric, in one of two modes
    dynamic   one scale per token (row of x), computed at run time: s_x,i = max|x_i,:| / 127;
              the int32 sums are scaled back to float: y_ij = s_x,i * s_w,j * acc_ij (+ b_j)
              (LLM.int8()'s vector-wise quantization, without its outlier decomposition)
    static    one scale per tensor for the input (s_x) and one for the output (s_y), both from
              calibration batches (the max |value| seen, a MinMax observer); everything between
              is integer: acc = x_q @ W_q + b_q (b_q = round(b / (s_x s_w)), int32), then
              y_q = clamp(round(M_j * acc), -127, 127) with M_j = s_x s_w,j / s_y applied as
              an int32 multiplier and a shift, M_j = M0_j * 2^-31 * 2^-n_j, M0_j in [2^30, 2^31).
              The next (float) operation sees s_y * y_q.
  SmoothQuant (optional, alpha in [0, 1]; Xiao et al. 2023): per input channel k a factor
              s_k = max|X_:,k|^alpha / max|W_k,:|^(1 - alpha) from calibration moves the
              activations' outliers into the weights: x @ W = (x / s) @ (s W), exactly in real
              arithmetic; x / s is what gets quantized.

What runs in int8: every linear layer of the model, the 4 per block and the output layer (the
tied token embedding, wte^T). Attention's score and value products, softmax, LayerNorm, GELU,
the residual adds and the embedding lookup stay float32.

How it plugs in: `int8_inference(model)` swaps the active backend's linear_forward for one that
looks up each weight's int8 version (by the weight array's memory address and shape, so the
model code is unchanged), for the duration of a `with` block. A linear layer whose weight has no
int8 version is an error, never a silent float fallback.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from .. import backend
from ..errors import InputError
from ..kernels.int8 import int8_matmul
from .quantize import linear_weight_names, patched_linear, qtensor_from_encoded, weight_key

QMAX = 127  # int8 symmetric, restricted range [-127, 127]
MODES = ("dynamic", "static")


# ----------------------------------------------------------------------------------------------
# fixed-point multipliers


def quantize_multiplier(m: float) -> tuple[int, int]:
    """A real multiplier m > 0 as (m0, n): m = m0 * 2^-31 * 2^-n with m0 in [2^30, 2^31) an int32
    (n >= 0 for m < 1; requantize refuses a negative n)."""
    if not (np.isfinite(m) and m > 0):
        raise InputError(f"a requantization multiplier must be a positive number, got {m}")
    mant, exp = np.frexp(m)  # m = mant * 2^exp, mant in [0.5, 1)
    m0 = round(float(mant) * 2**31)
    if m0 == 2**31:  # mant rounded up to 1.0
        m0 //= 2
        exp += 1
    return m0, int(-exp)


def _trunc_div_pow2(v, e: int):
    """v / 2^e rounded toward zero (C's integer division), for int64 arrays."""
    return np.where(v >= 0, v >> e, -((-v) >> e))


def requantize(acc, m0, n):
    """round(acc * m0 * 2^-31 * 2^-n) in integer arithmetic, elementwise (m0, n broadcast along
    the last axis). gemmlowp's SaturatingRoundingDoublingHighMul (acc * m0 / 2^31 to the nearest
    integer, ties toward +inf: a nudge of +-2^30, then C's truncating division) and then
    RoundingDivideByPOT (x / 2^n to the nearest, ties away from zero). Multipliers must be < 1
    (n >= 0), as in every requantization of a layer's int32 sums to its int8 output. Returns int64."""
    acc = np.asarray(acc).astype(np.int64)
    m0 = np.asarray(m0, np.int64)
    right = np.asarray(n, np.int64)
    if np.any(right < 0):
        raise InputError("requantization multipliers must be < 1 (the output scale is too small for the sums)")
    if acc.size and np.abs(acc).max() >= 2**31:
        raise InputError("requantize takes int32 sums; a value does not fit int32")
    prod = acc * m0  # |acc| < 2^31, m0 < 2^31: fits int64
    nudge = np.where(prod >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    high = _trunc_div_pow2(prod + nudge, 31)  # SaturatingRoundingDoublingHighMul (saturation: never
    # needed here, it only guards acc = m0 = -2^31)
    mask = (np.int64(1) << right) - 1
    remainder = high & mask
    threshold = (mask >> 1) + (high < 0)
    return (high >> right) + (remainder > threshold)


# ----------------------------------------------------------------------------------------------
# one linear layer


def quantize_rows_int8(x):
    """Per-row symmetric int8: (x_q (M, K) int8, s (M,) float32); an all-zero row gets s = 1."""
    s = np.abs(x).max(axis=1) / np.float32(QMAX)
    s = np.where(s > 0, s, 1.0).astype(np.float32)
    return np.clip(np.round(x / s[:, None]), -QMAX, QMAX).astype(np.int8), s


def quantize_weight_int8(w):
    """w (K, N) -> (w_q (K, N) int8, s_w (N,) float32): symmetric, per output channel (column)."""
    s = np.abs(w).max(axis=0) / np.float32(QMAX)
    s = np.where(s > 0, s, 1.0).astype(np.float32)
    return np.clip(np.round(w / s), -QMAX, QMAX).astype(np.int8), s


class Int8Linear:
    """One linear layer in int8. w: the float weight (K, N), or wq/s_w given (e.g. from a W8
    checkpoint's codes). calib: {"x_absmax": (K,), "y_absmax": float} for static mode or SmoothQuant."""

    def __init__(self, w, b=None, mode="dynamic", calib=None, smooth_alpha=None, wq=None, s_w=None):
        if mode not in MODES:
            raise InputError(f"int8 mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode, self.K, self.N = mode, *np.shape(w)
        self.b = None if b is None else np.asarray(b, np.float32)
        self.smooth = None
        if smooth_alpha is not None:
            if calib is None or not 0.0 <= smooth_alpha <= 1.0:
                raise InputError("SmoothQuant needs calibration data and an alpha in [0, 1]")
            wmax = np.maximum(np.abs(w).max(axis=1), 1e-5)
            xmax = np.maximum(calib["x_absmax"], 1e-5)
            self.smooth = (xmax**smooth_alpha / wmax ** (1 - smooth_alpha)).astype(np.float32)  # (K,)
            w = w * self.smooth[:, None]
            wq = None  # the stored codes belong to the unsmoothed weight
        if wq is None:
            wq, s_w = quantize_weight_int8(np.asarray(w, np.float32))
        self.wq, self.s_w = np.ascontiguousarray(wq, np.int8), np.asarray(s_w, np.float32)
        if mode == "static":
            if calib is None:
                raise InputError("static int8 activations need calibration data")
            x_absmax = calib["x_absmax"] / (self.smooth if self.smooth is not None else 1.0)
            self.s_x = np.float32(max(float(np.max(x_absmax)), 1e-8) / QMAX)
            self.s_y = np.float32(max(float(calib["y_absmax"]), 1e-8) / QMAX)
            multipliers = self.s_x.astype(np.float64) * self.s_w / self.s_y
            pairs = [quantize_multiplier(m) for m in multipliers]
            self.m0 = np.array([p[0] for p in pairs], np.int64)
            self.shift = np.array([p[1] for p in pairs], np.int64)
            if self.b is not None:
                self.b_q = np.round(self.b / (self.s_x * self.s_w)).astype(np.int32)

    def __call__(self, x):
        """x (..., K) float -> (..., N) float32."""
        lead = x.shape[:-1]
        x2 = np.asarray(x, np.float32).reshape(-1, self.K)
        if self.smooth is not None:
            x2 = x2 / self.smooth
        if self.mode == "dynamic":
            xq, s_x = quantize_rows_int8(x2)
            acc = int8_matmul(xq, self.wq)  # (M, N) int32
            y = acc.astype(np.float32) * (s_x[:, None] * self.s_w[None, :])
            if self.b is not None:
                y += self.b
        else:
            xq = np.clip(np.round(x2 / self.s_x), -QMAX, QMAX).astype(np.int8)
            acc = int8_matmul(xq, self.wq)
            if self.b is not None:
                acc = acc.astype(np.int64) + self.b_q
            yq = np.clip(requantize(acc, self.m0, self.shift), -QMAX, QMAX)  # the int8 output
            y = yq.astype(np.float32) * self.s_y
        return y.reshape(*lead, self.N)


# ----------------------------------------------------------------------------------------------
# the whole model


def int8_weight_names(params) -> list[str]:
    return [*linear_weight_names(params), "wte.weight"]


def _weight_view(params, name):
    return params[name].T if name == "wte.weight" else params[name]  # the output layer uses wte^T


def _bias(params, name):
    return None if name == "wte.weight" else params.get(name.removesuffix(".weight") + ".bias")


def calibrate(config, params, batches) -> dict:
    """Run the float model on batches (token id arrays (B, T)) and record, per linear weight, the
    largest |input| per input channel and the largest |output|: {name: {"x_absmax", "y_absmax"}}."""
    from ..model import gpt_forward

    names = {weight_key(_weight_view(params, n)): n for n in int8_weight_names(params)}
    stats = {}
    float_linear = backend.ops().linear_forward

    def recording_linear(x, w, b=None):
        out, cache = float_linear(x, w, b)
        name = names.get(weight_key(w))
        if name is not None:
            xa = np.abs(x.reshape(-1, x.shape[-1])).max(axis=0)
            ya = float(np.abs(out).max())
            s = stats.setdefault(name, {"x_absmax": np.zeros_like(xa), "y_absmax": 0.0})
            s["x_absmax"] = np.maximum(s["x_absmax"], xa)
            s["y_absmax"] = max(s["y_absmax"], ya)
        return out, cache

    with patched_linear(recording_linear):
        for idx in batches:
            gpt_forward(config, params, idx)
    missing = [n for n in names.values() if n not in stats]
    if missing:
        raise RuntimeError(f"calibration saw no input for {', '.join(missing)}")
    return stats


class Int8Model:
    """Every linear layer of a model in int8. params: the float (or dequantized) parameters the
    rest of the model runs with; encoded: a checkpoint's storage.Encoded tensors (W8 per-channel
    symmetric codes are used as they are); calib: calibrate()'s statistics (static mode, SmoothQuant)."""

    def __init__(self, params, mode="dynamic", calib=None, smooth_alpha=None, encoded=None):
        self.params, self.mode = params, mode
        self.layers, self.from_codes = {}, []
        encoded = encoded or {}
        for name in int8_weight_names(params):
            w = _weight_view(params, name)
            wq = s_w = None
            enc = encoded.get(name)
            if enc is not None and enc.codec == "uniform" and smooth_alpha is None:
                qt = qtensor_from_encoded(enc)
                s = qt.spec
                if s.bits == 8 and s.scheme == "sym" and s.granularity == "channel":
                    wq, s_w = qt.codes.T.astype(np.int8), qt.scale.astype(np.float32).ravel()
                    self.from_codes.append(name)
            self.layers[weight_key(w)] = Int8Linear(w, _bias(params, name), mode, (calib or {}).get(name),
                                              smooth_alpha, wq, s_w)

    def linear_forward(self, x, w, b=None):
        layer = self.layers.get(weight_key(w))
        if layer is None:
            raise RuntimeError(f"a linear layer with weight shape {w.shape} has no int8 version; "
                               "int8 inference runs every linear layer in int8")
        return layer(x), None  # inference only: no cache for a backward


@contextmanager
def int8_inference(model: Int8Model):
    """Within the block, the model's linear layers run in int8 (gpt_forward, evaluate, generate)."""
    with patched_linear(model.linear_forward):
        yield model


def calibration_batches(ids, block_size: int, n_batches: int = 8, batch_size: int = 16):
    """The first n_batches x batch_size consecutive windows of ids (deterministic)."""
    from ..data import iter_windows

    out = []
    for x, _ in iter_windows(ids, block_size, batch_size):
        out.append(x)
        if len(out) == n_batches:
            break
    if not out:
        raise InputError(f"calibration text is too short: it needs more than block_size={block_size} tokens")
    return out
