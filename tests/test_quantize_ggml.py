"""llama.cpp's Q8_0 and Q4_0 (minigpt.compress.ggml): byte-exact against golden bytes made by
gguf-py (tests/golden/make_ggml_golden.py), block sizes, the error bounds, the nibble layout, and
the codecs in a checkpoint."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from safetensors.numpy import load_file

from minigpt import InputError
from minigpt.compress import ggml, storage

GOLDEN = Path(__file__).parent / "golden" / "ggml_blocks.safetensors"
SEEDS = st.integers(0, 2**32 - 1)


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
def test_byte_exact_against_llama_cpp_golden_bytes(fmt):
    golden = load_file(str(GOLDEN))
    assert np.array_equal(ggml.QUANTIZE[fmt](golden["x"]), golden[fmt])


def test_block_sizes_and_bits_per_weight():
    x = np.zeros(64, np.float32)
    assert ggml.quantize_q8_0(x).size == 2 * 34 and ggml.quantize_q4_0(x).size == 2 * 18
    assert 34 * 8 / 32 == 8.5 and 18 * 8 / 32 == 4.5


def rows(seed, n=4):
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 10.0 ** rng.uniform(-3, 2), size=32 * n)).astype(np.float32)


@given(SEEDS)
def test_q8_0_error_bound(seed):
    x = rows(seed)
    b = x.reshape(-1, 32)
    d = (np.abs(b).max(axis=1) / np.float32(127)).astype(np.float64)[:, None]  # the float d used for rounding
    d16 = ggml.quantize_q8_0(x).reshape(-1, 34)[:, :2].copy().view(np.float16).astype(np.float64)
    x_hat = ggml.dequantize_q8_0(ggml.quantize_q8_0(x)).reshape(-1, 32)
    q = np.round(x_hat / d16)
    # |x - d q| <= d/2 (+ ulps), plus |q| |d - fp16(d)| for the stored scale
    assert np.all(np.abs(b - x_hat) <= d / 2 * (1 + 1e-6) + np.abs(q) * np.abs(d - d16) + 1e-30)


@given(SEEDS)
def test_q4_0_error_bound_and_the_defining_element(seed):
    x = rows(seed)
    b = x.reshape(-1, 32)
    data = ggml.quantize_q4_0(x).reshape(-1, 18)
    nib = data[:, 2:]
    q = np.concatenate([nib & 0x0F, nib >> 4], axis=1).astype(np.int64)  # low nibbles: first 16 values
    first = np.abs(b).argmax(axis=1)
    assert np.all(q[np.arange(len(b)), first] == 0)  # the element that defined d maps to q = 0
    m = b[np.arange(len(b)), first].astype(np.float64)
    d = np.abs(m / -8)[:, None]
    d16 = np.abs(data[:, :2].copy().view(np.float16).astype(np.float64))
    x_hat = ggml.dequantize_q4_0(data.ravel()).reshape(-1, 32)
    assert np.all(np.abs(b - x_hat) <= d * (1 + 1e-6) + 8 * np.abs(d - d16))


def test_q4_0_nibble_layout():
    x = np.zeros(32, np.float32)
    x[0], x[16], x[1] = -8.0, 3.0, 1.0  # d = -8 / -8 = 1: q = x + 8
    data = ggml.quantize_q4_0(x)
    assert data[:2].view(np.float16)[0] == 1.0
    assert data[2] == (0 | (11 << 4)) and data[3] == (9 | (8 << 4))  # byte j: q_j low, q_(j+16) high


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
def test_codec_decodes_exactly_and_stores_the_blocks(fmt):
    w = rows(1, 8).reshape(64, 4)  # (in, out): blocks of 32 along the input dimension
    dense, enc = ggml.quantize_weight_ggml(w, fmt)
    assert np.array_equal(storage.decode(enc), dense) and dense.shape == w.shape
    assert enc.parts["blocks"].nbytes == w.size // 32 * ggml.BLOCK_BYTES[fmt]
    assert np.array_equal(enc.parts["blocks"], ggml.QUANTIZE[fmt](np.ascontiguousarray(w.T)))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ggml.quantize_q8_0(np.ones(31, np.float32)), "multiple of 32"),
        (lambda: ggml.quantize_q4_0(np.full(32, np.nan, np.float32)), "NaN or inf"),
        (lambda: ggml.quantize_q8_0(np.ones(32)), "float32"),
        (lambda: ggml.quantize_weight_ggml(np.ones((30, 4), np.float32), "q8_0"), "not a multiple of 32"),
        (lambda: ggml.quantize_weight_ggml(np.ones((32, 4), np.float32), "q5_k"), "unknown ggml format"),
    ],
)
def test_bad_input(call, message):
    with pytest.raises(InputError, match=message):
        call()
