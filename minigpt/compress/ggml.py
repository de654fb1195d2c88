"""llama.cpp's Q8_0 and Q4_0 block formats, byte for byte.

The layouts are ggml's (ggml/src/ggml-common.h `block_q8_0`, `block_q4_0`) and the rounding is
that of its reference quantizers `quantize_row_q8_0_ref` / `quantize_row_q4_0_ref`
(ggml/src/ggml-quants.c), all arithmetic in float32:

    Q8_0  blocks of 32 values -> 34 bytes: d as float16, then 32 int8 codes      (8.5 bits/weight)
          amax = max |x|,  d = amax / 127,  q = roundf(x / d)   (roundf: half away from zero;
          x / d is computed as x * (1/d), and d = 0 gives q = 0)        decode: x_hat = d * q
    Q4_0  blocks of 32 values -> 18 bytes: d as float16, then 16 bytes of nibbles (4.5 bits/weight)
          m = the value with the largest |x| (the first one on ties), signed;  d = m / -8,
          q = min(15, trunc(x / d + 8.5))  in [0, 15]               decode: x_hat = d * (q - 8)
          byte j holds q_j in its low nibble and q_(j+16) in its high nibble

Note the scale used for rounding is the float32 d; the stored (and decoded) one is float16(d).
The element that defined m maps to q = 0 exactly (x/d = -8), and the block's extreme on the
other side may clip at q = 15 (x/d up to +8 -> 16.5, clamped): Q4_0 is asymmetric by design.

A minigpt weight (in, out) is quantized as its transpose (out, in), rows in blocks of 32 along the
input dimension, which is how llama.cpp lays out a linear layer (rows = output channels). The
codecs "q8_0" and "q4_0" store the blocks as one uint8 array, exactly the bytes a GGUF file holds
for that tensor.

Golden tests (tests/test_quantize_ggml.py) compare with bytes produced by gguf-py's NumPy port
of these reference quantizers (tests/golden/make_ggml_golden.py).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from . import storage

QK = 32  # values per block, both formats
BLOCK_BYTES = {"q8_0": 2 + QK, "q4_0": 2 + QK // 2}


def _blocks(x) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise InputError(f"ggml blocks quantize float32 values, got {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise InputError("cannot quantize values containing NaN or inf")
    if x.size % QK:
        raise InputError(f"ggml blocks need a multiple of {QK} values, got {x.size}")
    return x.reshape(-1, QK)


def _inverse(d):
    """1/d in float32, 0 where d is 0 (an all-zero block)."""
    with np.errstate(divide="ignore"):
        return np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)


def _roundf(v):
    """C's roundf on float32 values: half away from zero (exact in float64: v has 24 bits)."""
    v = v.astype(np.float64)
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


def quantize_q8_0(x) -> np.ndarray:
    """float32 values (a multiple of 32) -> uint8 bytes, 34 per block."""
    b = _blocks(x)
    d = (np.abs(b).max(axis=1) / np.float32(127)).astype(np.float32)  # (n,)
    q = _roundf(b * _inverse(d)[:, None]).astype(np.int8)  # (n, 32)
    out = np.empty((b.shape[0], BLOCK_BYTES["q8_0"]), np.uint8)
    out[:, :2] = d.astype(np.float16).view(np.uint8).reshape(-1, 2)  # little-endian float16
    out[:, 2:] = q.view(np.uint8)
    return out.ravel()


def dequantize_q8_0(data) -> np.ndarray:
    blocks = np.asarray(data, np.uint8).reshape(-1, BLOCK_BYTES["q8_0"])
    d = blocks[:, :2].copy().view(np.float16).astype(np.float32)  # (n, 1)
    q = blocks[:, 2:].view(np.int8).astype(np.float32)
    return (q * d).ravel()


def quantize_q4_0(x) -> np.ndarray:
    """float32 values (a multiple of 32) -> uint8 bytes, 18 per block."""
    b = _blocks(x)
    first_largest = np.abs(b).argmax(axis=1)  # argmax takes the first on ties, as ggml's `>` test
    m = b[np.arange(b.shape[0]), first_largest]
    d = (m / np.float32(-8)).astype(np.float32)
    v = (b * _inverse(d)[:, None] + np.float32(8.5)).astype(np.float32)  # float32, as in C
    q = np.minimum(15, np.trunc(v)).astype(np.uint8)  # (n, 32) in [0, 15]
    out = np.empty((b.shape[0], BLOCK_BYTES["q4_0"]), np.uint8)
    out[:, :2] = d.astype(np.float16).view(np.uint8).reshape(-1, 2)
    out[:, 2:] = q[:, : QK // 2] | (q[:, QK // 2 :] << np.uint8(4))
    return out.ravel()


def dequantize_q4_0(data) -> np.ndarray:
    blocks = np.asarray(data, np.uint8).reshape(-1, BLOCK_BYTES["q4_0"])
    d = blocks[:, :2].copy().view(np.float16).astype(np.float32)  # (n, 1)
    nibbles = blocks[:, 2:]
    q = np.concatenate([nibbles & np.uint8(0x0F), nibbles >> np.uint8(4)], axis=1).astype(np.int8) - np.int8(8)
    return (q.astype(np.float32) * d).ravel()


QUANTIZE = {"q8_0": quantize_q8_0, "q4_0": quantize_q4_0}
DEQUANTIZE = {"q8_0": dequantize_q8_0, "q4_0": dequantize_q4_0}


def _encode(array, fmt: str):
    w = np.asarray(array)
    if w.ndim != 2:
        raise InputError(f"{fmt}: expects a 2-D weight (in, out), got shape {w.shape}")
    if w.shape[0] % QK:
        raise InputError(f"{fmt}: the input dimension {w.shape[0]} is not a multiple of {QK}")
    data = QUANTIZE[fmt](np.ascontiguousarray(w.T, dtype=np.float32))  # rows = output channels
    return {"blocks": data}, {"shape": list(w.shape), "layout": "transposed"}


def _decode(parts, info, fmt: str):
    n_in, n_out = info["shape"]
    return np.ascontiguousarray(DEQUANTIZE[fmt](parts["blocks"]).reshape(n_out, n_in).T)


for _fmt in QUANTIZE:
    storage.register_codec(_fmt, lambda a, _f=_fmt: _encode(a, _f), lambda p, i, _f=_fmt: _decode(p, i, _f))


def quantize_weight_ggml(w, fmt: str):
    """(the weight's dequantized values (in, out), its storage.Encoded) for fmt q8_0 or q4_0."""
    if fmt not in QUANTIZE:
        raise InputError(f"unknown ggml format {fmt!r}: choose q8_0 or q4_0")
    enc = storage.encode(w, fmt)
    return storage.decode(enc), enc
