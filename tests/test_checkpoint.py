"""Checkpoints: exact round trips, safety against safetensors' non-contiguous bug, atomic writes,
and validation of every kind of bad file (each one an InputError naming the problem).

Bad files are crafted with safetensors.numpy.save_file and metadata copied from a valid checkpoint.
The metadata's sha256 is recomputed with minigpt.checkpoint.tensors_digest wherever the test means
to reach a check that comes after the checksum (missing/extra tensors, shapes, dtypes, vocab).
"""

import json
import os
import pickle
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.numpy import save_file as st_save_file

import minigpt.checkpoint as ckpt_mod
from minigpt import GPTConfig, InputError, init_params, param_shapes
from minigpt.checkpoint import load_checkpoint, save_checkpoint, tensors_digest
from minigpt.tokenizer import CharTokenizer

PACKAGE = Path(__file__).resolve().parent.parent / "minigpt"
CHARS = list("\n !,.abcdeé日")  # non-ASCII and a newline, to exercise the JSON vocabulary


def tiny_config(bias=True, **kw):
    return GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=8, bias=bias, **kw)


def special_params(config, dtype):
    """init_params plus values whose bits are easy to lose: -0.0, NaN, +-inf, a subnormal."""
    params = init_params(config, seed=3, dtype=dtype)
    w = params["wte.weight"]
    w[0, :5] = [-0.0, np.nan, np.inf, -np.inf, np.finfo(dtype).smallest_subnormal]
    return params


def moments(params, seed):
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal(p.shape).astype(p.dtype) for n, p in params.items()}


def assert_bitwise_equal(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def read_raw(path):
    """(tensors, metadata) of a safetensors file, read directly with safetensors."""
    with safe_open(str(path), framework="np") as f:
        names = f.keys()  # a safe_open handle is not iterable
        return {k: f.get_tensor(k) for k in names}, dict(f.metadata() or {})


def write_raw(path, tensors, metadata, redigest=True):
    """Write a crafted file; redigest=True makes its sha256 match the (modified) tensors."""
    metadata = dict(metadata)
    if redigest:
        metadata["sha256"] = tensors_digest(tensors)
    st_save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata=metadata)


@pytest.fixture
def valid(tmp_path):
    """A valid float32 checkpoint with optimizer moments; returns its path."""
    config = tiny_config()
    params = init_params(config, seed=1)
    path = tmp_path / "valid.safetensors"
    save_checkpoint(
        path,
        config,
        params,
        CharTokenizer(CHARS),
        meta={"iter": 7},
        optim={"m": moments(params, 1), "v": moments(params, 2)},
    )
    return path


def load_error(path) -> str:
    with pytest.raises(InputError) as exc:
        load_checkpoint(path)
    msg = str(exc.value)
    assert str(path) in msg, "the message names the file"
    assert "\n" not in msg, "InputError messages are one line"
    return msg


# ------------------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("with_optim", [True, False])
def test_round_trip_is_exact(tmp_path, dtype, bias, with_optim):
    """save then load gives bitwise-equal params (including -0.0, NaN, inf, subnormals) in
    param_shapes order, the same config, vocabulary, meta, and optimizer moments when given."""
    config = tiny_config(bias=bias, activation="relu", dropout=0.1, layer_norm_epsilon=1e-6)
    params = special_params(config, dtype)
    tok = CharTokenizer(CHARS)
    meta = {
        "iter": 120,
        "val_loss": 1.2345678901234567,
        "train": {"lr": 1e-3, "name": "bébé"},
        "list": [1, 2],
    }
    optim = {"m": moments(params, 5), "v": moments(params, 6)} if with_optim else None
    path = tmp_path / "sub" / "dir" / "ck.safetensors"  # parent directories are created
    save_checkpoint(path, config, params, tok, meta=meta, optim=optim)

    ck = load_checkpoint(path)
    assert ck.config == config
    assert ck.tokenizer.chars == CHARS
    assert ck.meta == meta
    assert list(ck.params) == list(param_shapes(config))
    for name, p in params.items():
        assert_bitwise_equal(ck.params[name], p)
    if with_optim:
        assert set(ck.optim) == {"m", "v"}
        for kind in ("m", "v"):
            assert list(ck.optim[kind]) == list(param_shapes(config))
            for name in params:
                assert_bitwise_equal(ck.optim[kind][name], optim[kind][name])
    else:
        assert ck.optim == {}


@given(st.text(min_size=1))
def test_any_vocabulary_round_trips(text):
    """Any character set (control characters, quotes, backslashes, non-BMP characters) survives
    the JSON vocabulary in the header, in the same id order."""
    tok = CharTokenizer.from_text(text)
    config = GPTConfig(vocab_size=tok.vocab_size, block_size=2, n_layer=1, n_head=1, n_embd=2)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "ck.safetensors"
        save_checkpoint(path, config, init_params(config), tok, meta={"text": text})
        ck = load_checkpoint(path)
    assert ck.tokenizer.chars == tok.chars
    assert ck.meta == {"text": text}


def test_meta_defaults_to_empty(tmp_path):
    """Without meta the loaded meta is an empty dict."""
    config = tiny_config()
    path = tmp_path / "ck.safetensors"
    save_checkpoint(path, config, init_params(config), CharTokenizer(CHARS))
    assert load_checkpoint(path).meta == {}


def test_loaded_arrays_are_owned_writable_and_detached_from_file(valid):
    """Loaded params and moments are owned (no view into safetensors' buffers), writable and
    C-contiguous; changing them in place changes neither the file's bytes nor what a second
    load returns."""
    before = valid.read_bytes()
    ck = load_checkpoint(valid)
    arrays = list(ck.params.values()) + [a for d in ck.optim.values() for a in d.values()]
    reference = [a.copy() for a in arrays]
    for a in arrays:
        assert a.flags.writeable and a.flags.c_contiguous and a.flags.owndata
        a += 5.0
        a[...] *= -1.0
    assert valid.read_bytes() == before
    again = load_checkpoint(valid)
    again_arrays = list(again.params.values()) + [a for d in again.optim.values() for a in d.values()]
    for a, ref in zip(again_arrays, reference):
        assert_bitwise_equal(a, ref)


def test_overwrite_while_old_arrays_alive(valid):
    """Saving over a checkpoint whose loaded arrays are still alive works; old arrays keep their
    values and the file holds the new ones."""
    ck = load_checkpoint(valid)
    old = {n: p.copy() for n, p in ck.params.items()}
    new_params = {n: p + 1.0 for n, p in ck.params.items()}
    save_checkpoint(valid, ck.config, new_params, ck.tokenizer)
    reloaded = load_checkpoint(valid)
    for n, value in old.items():
        assert_bitwise_equal(ck.params[n], value)
        assert_bitwise_equal(reloaded.params[n], new_params[n])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_contiguous_arrays_round_trip(tmp_path, dtype):
    """Transposed views, strided views and Fortran-ordered arrays are saved by value, not by
    raw memory (safetensors 0.8.0 silently writes garbage for them, issue #825)."""
    config = tiny_config()
    C, V = config.n_embd, config.vocab_size
    rng = np.random.default_rng(0)
    params = init_params(config, seed=2, dtype=dtype)
    # (C, 3C) as the transpose of a C-contiguous (3C, C) array
    params["h.0.attn.c_attn.weight"] = np.ascontiguousarray(rng.standard_normal((3 * C, C)), dtype=dtype).T
    # a strided view: every other column of a wider array
    params["wte.weight"] = rng.standard_normal((V, 2 * C)).astype(dtype)[:, ::2]
    # a 1-D strided view
    params["h.1.attn.c_attn.bias"] = rng.standard_normal(6 * C).astype(dtype)[::2]
    # Fortran order
    params["h.1.mlp.c_fc.weight"] = np.asfortranarray(rng.standard_normal((C, 4 * C)).astype(dtype))
    m = {n: np.asfortranarray(p * 2) for n, p in params.items()}
    v = {n: (np.abs(p.T) + 1).T for n, p in params.items()}  # transposed views of the right shape
    assert not params["h.0.attn.c_attn.weight"].flags.c_contiguous
    assert not params["wte.weight"].flags.c_contiguous
    assert not params["h.1.attn.c_attn.bias"].flags.c_contiguous
    assert not params["h.1.mlp.c_fc.weight"].flags.c_contiguous
    path = tmp_path / "nc.safetensors"
    save_checkpoint(path, config, params, CharTokenizer(CHARS), optim={"m": m, "v": v})
    ck = load_checkpoint(path)
    for name, p in params.items():
        np.testing.assert_array_equal(ck.params[name], p, err_msg=name)
        assert_bitwise_equal(ck.params[name], np.ascontiguousarray(p))
        assert_bitwise_equal(ck.optim["m"][name], np.ascontiguousarray(m[name]))
        assert_bitwise_equal(ck.optim["v"][name], np.ascontiguousarray(v[name]))
    # and the raw file, read without minigpt, holds the values too
    raw, _ = read_raw(path)
    np.testing.assert_array_equal(raw["h.0.attn.c_attn.weight"], params["h.0.attn.c_attn.weight"])
    np.testing.assert_array_equal(raw["wte.weight"], params["wte.weight"])


def test_save_does_not_modify_inputs(tmp_path):
    """Saving leaves the caller's arrays (and their memory layout) as they were."""
    config = tiny_config()
    params = init_params(config)
    params["h.0.mlp.c_fc.weight"] = np.asfortranarray(params["h.0.mlp.c_fc.weight"])
    copies = {n: p.copy(order="K") for n, p in params.items()}
    save_checkpoint(tmp_path / "ck.safetensors", config, params, CharTokenizer(CHARS))
    for n, p in params.items():
        assert_bitwise_equal(p, copies[n])
    assert params["h.0.mlp.c_fc.weight"].flags.f_contiguous


# ------------------------------------------------------------------------------------------------
# atomic writes


def test_save_leaves_no_temporary_files(tmp_path):
    """After saving (twice, over the same path) the directory holds only the checkpoint."""
    config = tiny_config()
    params = init_params(config)
    path = tmp_path / "ck.safetensors"
    save_checkpoint(path, config, params, CharTokenizer(CHARS))
    save_checkpoint(path, config, params, CharTokenizer(CHARS))
    assert sorted(os.listdir(tmp_path)) == ["ck.safetensors"]


@pytest.mark.parametrize(
    "error", [RuntimeError("disk on fire"), OSError(28, "No space left on device"), KeyboardInterrupt()]
)
def test_failed_write_keeps_old_checkpoint(valid, monkeypatch, error):
    """If writing fails midway (some bytes already written to the temporary file), the error
    propagates, the old checkpoint is byte-for-byte unchanged and loadable, and no temporary
    file is left. The temporary file is in the target's directory (so the rename is atomic)."""
    before = valid.read_bytes()
    listing = sorted(os.listdir(valid.parent))
    seen = []

    def failing_save_file(tensors, filename, metadata=None):
        seen.append(Path(filename))
        with open(filename, "wb") as f:
            f.write(b'\x10\x00\x00\x00\x00\x00\x00\x00{"partial')
        raise error

    monkeypatch.setattr(ckpt_mod, "save_file", failing_save_file)
    config = tiny_config()
    with pytest.raises(type(error)):
        save_checkpoint(valid, config, init_params(config, seed=9), CharTokenizer(CHARS))
    assert len(seen) == 1
    assert seen[0].parent == valid.parent and seen[0] != valid
    assert not seen[0].exists()
    assert valid.read_bytes() == before
    assert sorted(os.listdir(valid.parent)) == listing
    monkeypatch.undo()
    assert load_checkpoint(valid).meta == {"iter": 7}


def test_failed_first_write_creates_nothing(tmp_path, monkeypatch):
    """A failed write to a new path leaves no file at all: neither the target nor a temp file."""

    def failing_save_file(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"garbage")
        raise RuntimeError("boom")

    monkeypatch.setattr(ckpt_mod, "save_file", failing_save_file)
    config = tiny_config()
    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint(tmp_path / "new.safetensors", config, init_params(config), CharTokenizer(CHARS))
    assert os.listdir(tmp_path) == []


def test_unwritable_location_is_input_error(tmp_path):
    """A checkpoint path whose parent is a regular file is an InputError naming the directory."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    config = tiny_config()
    with pytest.raises(InputError, match="cannot write a checkpoint"):
        save_checkpoint(blocker / "ck.safetensors", config, init_params(config), CharTokenizer(CHARS))


# ------------------------------------------------------------------------------------------------
# validation on load


def test_missing_file(tmp_path):
    """A path that does not exist: 'not found'."""
    assert "not found" in load_error(tmp_path / "nope.safetensors")


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"hello",
        b"this is a text file, not a checkpoint\n" * 20,
        bytes(np.random.default_rng(0).integers(0, 256, 600, dtype=np.uint8)),
    ],
    ids=["empty", "tiny", "text", "random"],
)
def test_not_safetensors(tmp_path, content):
    """Empty, text and random-byte files are 'not a readable safetensors file'."""
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    assert "not a readable safetensors file" in load_error(path)


@pytest.mark.parametrize("cut", ["last_byte", "last_bytes", "into_header", "header_length"])
def test_truncated(valid, cut):
    """A checkpoint cut short (in the data, inside the JSON header, or inside the 8-byte length)
    is reported as unreadable / truncated."""
    data = valid.read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    end = {
        "last_byte": len(data) - 1,
        "last_bytes": len(data) - 37,
        "into_header": 8 + header_len // 2,
        "header_length": 5,
    }[cut]
    valid.write_bytes(data[:end])
    msg = load_error(valid)
    assert "not a readable safetensors file" in msg and "truncated" in msg


def test_trailing_garbage(valid):
    """Bytes appended after the data are not silently ignored."""
    valid.write_bytes(valid.read_bytes() + b"\x00\x01")
    assert "not a readable safetensors file" in load_error(valid)


@pytest.mark.parametrize("offset_from_end", [1, 3, 200])
def test_flipped_data_byte_fails_checksum(valid, offset_from_end):
    """One flipped bit in the tensor data (which safetensors cannot notice) fails the checksum."""
    data = bytearray(valid.read_bytes())
    assert len(data) - offset_from_end > 8 + int.from_bytes(data[:8], "little"), "inside the data region"
    data[-offset_from_end] ^= 0x01
    valid.write_bytes(bytes(data))
    assert "checksum" in load_error(valid)


def test_checksum_covers_moments(valid):
    """The checksum covers the optimizer moments too: changing one moment value is caught."""
    tensors, metadata = read_raw(valid)
    tensors["optim.v.wte.weight"] = tensors["optim.v.wte.weight"].copy()
    tensors["optim.v.wte.weight"][0, 0] += 1.0
    write_raw(valid, tensors, metadata, redigest=False)
    assert "checksum" in load_error(valid)


def test_plain_safetensors_without_metadata(tmp_path):
    """A safetensors file written by someone else (with or without unrelated metadata) is
    'not a minigpt checkpoint', even when its tensors have the right names and shapes."""
    params = init_params(tiny_config())
    for i, metadata in enumerate([None, {"format": "pt"}]):
        path = tmp_path / f"plain{i}.safetensors"
        st_save_file(params, str(path), metadata=metadata)
        assert "not a minigpt checkpoint" in load_error(path)


@pytest.mark.parametrize("version", ["2", "0", "", "1.0"])
def test_unknown_format_version(valid, version):
    """Any format_version other than "1" is rejected with a message quoting the version."""
    tensors, metadata = read_raw(valid)
    metadata["format_version"] = version
    write_raw(valid, tensors, metadata)
    msg = load_error(valid)
    assert "format version" in msg and repr(version) in msg


def test_missing_format_version(valid):
    """No format_version at all is rejected too."""
    tensors, metadata = read_raw(valid)
    del metadata["format_version"]
    write_raw(valid, tensors, metadata)
    assert "format version" in load_error(valid)


def test_missing_checksum(valid):
    """A minigpt file whose sha256 entry was removed is treated as corrupted."""
    tensors, metadata = read_raw(valid)
    del metadata["sha256"]
    write_raw(valid, tensors, metadata, redigest=False)
    assert "checksum" in load_error(valid)


@pytest.mark.parametrize("name", ["h.1.mlp.c_fc.weight", "ln_f.bias", "wte.weight"])
def test_missing_tensor(valid, name):
    """A checkpoint lacking a parameter names the missing tensor."""
    tensors, metadata = read_raw(valid)
    del tensors[name]
    write_raw(valid, tensors, metadata)
    msg = load_error(valid)
    assert "missing tensors" in msg and name in msg


def test_many_missing_tensors_are_abbreviated(valid):
    """With more than five missing tensors the message lists five and ends with '...'."""
    tensors, metadata = read_raw(valid)
    missing = [n for n in param_shapes(tiny_config()) if n.startswith("h.1.")]
    for n in missing:
        del tensors[n]
    write_raw(valid, tensors, metadata)
    msg = load_error(valid)
    assert "missing tensors" in msg and msg.endswith("...")
    assert sum(n in msg for n in missing) == 5


@pytest.mark.parametrize("name", ["h.2.ln_1.weight", "lm_head.weight", "h.0.attn.bias"])
def test_extra_tensor(valid, name):
    """A tensor the config has no place for (another layer, an untied head, HF's mask buffer)
    is named in the error."""
    tensors, metadata = read_raw(valid)
    tensors[name] = np.zeros(8, dtype=np.float32)
    write_raw(valid, tensors, metadata)
    msg = load_error(valid)
    assert "no place for" in msg and name in msg


def test_bias_tensors_with_bias_false_config(valid):
    """Bias tensors in a checkpoint whose config says bias=False are extra tensors."""
    tensors, metadata = read_raw(valid)
    config = json.loads(metadata["config"])
    config["bias"] = False
    metadata["config"] = json.dumps(config)
    write_raw(valid, {k: v for k, v in tensors.items() if not k.startswith("optim.")}, metadata)
    msg = load_error(valid)
    assert "no place for" in msg and ".bias" in msg


def test_wrong_shape(valid):
    """A tensor whose shape does not fit the config is named with both shapes."""
    tensors, metadata = read_raw(valid)
    tensors["wpe.weight"] = np.zeros((9, 8), dtype=np.float32)
    write_raw(valid, tensors, metadata)
    msg = load_error(valid)
    assert "wpe.weight" in msg and "(9, 8)" in msg and "(8, 8)" in msg


def test_shapes_checked_against_config(valid):
    """Changing the config in the metadata (block_size 8 -> 16) makes the stored wpe wrong."""
    tensors, metadata = read_raw(valid)
    config = json.loads(metadata["config"])
    config["block_size"] = 16
    metadata["config"] = json.dumps(config)
    write_raw(valid, tensors, metadata)
    msg = load_error(valid)
    assert "wpe.weight" in msg and "(16, 8)" in msg


def test_transposed_shape_rejected(valid):
    """An (out, in) nn.Linear-layout weight (e.g. c_attn as (3C, C)) is rejected, not
    silently accepted."""
    tensors, metadata = read_raw(valid)
    tensors["h.0.attn.c_attn.weight"] = np.ascontiguousarray(tensors["h.0.attn.c_attn.weight"].T)
    write_raw(valid, tensors, metadata)
    msg = load_error(valid)
    assert "h.0.attn.c_attn.weight" in msg and "(24, 8)" in msg


def test_mixed_dtypes(valid):
    """One float64 parameter among float32 ones is rejected, naming both dtypes."""
    tensors, metadata = read_raw(valid)
    tensors["ln_f.weight"] = tensors["ln_f.weight"].astype(np.float64)
    write_raw(valid, tensors, metadata)
    msg = load_error(valid)
    assert "float32 or all float64" in msg and "float64" in msg and "'float32'" in msg


@pytest.mark.parametrize("dtype", [np.float16, np.int32])
def test_unsupported_dtype(valid, dtype):
    """Parameters all of one unsupported dtype (float16, int32) are rejected."""
    tensors, metadata = read_raw(valid)
    tensors = {k: v.astype(dtype) for k, v in tensors.items()}
    write_raw(valid, tensors, metadata)
    msg = load_error(valid)
    assert "float32 or all float64" in msg and np.dtype(dtype).name in msg


def test_vocab_larger_than_vocab_size(valid):
    """A vocabulary with more characters than vocab_size is rejected with both numbers."""
    tensors, metadata = read_raw(valid)
    metadata["vocab"] = json.dumps([chr(ord("A") + i) for i in range(14)])  # vocab_size is 13
    write_raw(valid, tensors, metadata)
    msg = load_error(valid)
    assert "exceeds vocab_size" in msg and "14" in msg and "13" in msg


def test_vocab_equal_to_vocab_size_loads(valid):
    """A vocabulary exactly vocab_size long is fine (boundary of the check above)."""
    tensors, metadata = read_raw(valid)
    chars = [chr(ord("A") + i) for i in range(13)]
    metadata["vocab"] = json.dumps(chars)
    write_raw(valid, tensors, metadata)
    assert load_checkpoint(valid).tokenizer.chars == chars


@pytest.mark.parametrize("vocab", ['["a", "a"]', '["ab"]', "[]"])
def test_invalid_vocab(valid, vocab):
    """Duplicate characters, multi-character entries or an empty vocabulary are InputErrors."""
    tensors, metadata = read_raw(valid)
    metadata["vocab"] = vocab
    write_raw(valid, tensors, metadata)
    with pytest.raises(InputError, match="vocabulary"):
        load_checkpoint(valid)


@pytest.mark.parametrize("key", ["config", "vocab", "meta"])
def test_damaged_metadata_json(valid, key):
    """Metadata entries that are not valid JSON are 'damaged metadata' naming nothing else."""
    tensors, metadata = read_raw(valid)
    metadata[key] = "{not json"
    write_raw(valid, tensors, metadata)
    assert "damaged metadata" in load_error(valid)


def test_missing_config_metadata(valid):
    """A checkpoint without its config entry is 'damaged metadata' naming the key."""
    tensors, metadata = read_raw(valid)
    del metadata["config"]
    write_raw(valid, tensors, metadata)
    msg = load_error(valid)
    assert "damaged metadata" in msg and "config" in msg


@pytest.mark.parametrize(
    "key, value",
    [
        ("config", "[]"),
        ("config", "null"),
        ("config", "5"),
        ("vocab", "5"),
        ("vocab", "null"),
        ("vocab", "[1, 2]"),
        ("meta", "[1]"),
        ("meta", "5"),
    ],
)
def test_metadata_json_of_wrong_type(valid, key, value):
    """Valid JSON of the wrong type (config not an object, vocab not a list of strings, meta not
    an object) is an InputError, not a TypeError or a meta that breaks meta.get later."""
    tensors, metadata = read_raw(valid)
    metadata[key] = value
    write_raw(valid, tensors, metadata)
    load_error(valid)


@pytest.mark.parametrize("change", [{"n_head": 3}, {"n_embd": -8}, {"colour": "red"}])
def test_invalid_config(valid, change):
    """A config that GPTConfig rejects (n_embd not divisible by n_head, a negative size, an
    unknown field) is reported as an invalid config."""
    tensors, metadata = read_raw(valid)
    config = json.loads(metadata["config"])
    config.update(change)
    metadata["config"] = json.dumps(config)
    write_raw(valid, tensors, metadata)
    assert "invalid config" in load_error(valid)


@pytest.mark.parametrize("problem", ["missing", "shape", "extra"])
def test_optimizer_moments_must_match(valid, problem):
    """Moments for a missing parameter, with a wrong shape, or for an unknown parameter are
    rejected."""
    tensors, metadata = read_raw(valid)
    if problem == "missing":
        del tensors["optim.m.ln_f.bias"]
    elif problem == "shape":
        tensors["optim.v.ln_f.bias"] = np.zeros(9, dtype=np.float32)
    else:
        tensors["optim.m.h.7.ln_1.weight"] = np.zeros(8, dtype=np.float32)
    write_raw(valid, tensors, metadata)
    msg = load_error(valid)
    assert "optimizer moments" in msg


@pytest.mark.parametrize("kind", ["m", "v"])
def test_half_optimizer_state_rejected(valid, kind):
    """A checkpoint holding only one of the two moment sets (every optim.v.* or every optim.m.*
    removed) is rejected: resuming from it needs both."""
    tensors, metadata = read_raw(valid)
    tensors = {k: v for k, v in tensors.items() if not k.startswith(f"optim.{kind}.")}
    write_raw(valid, tensors, metadata)
    assert "optimizer moments" in load_error(valid)


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_moment_dtype_must_match_params(valid, dtype):
    """Moments in another dtype than the float32 parameters are rejected (AdamW keeps its moments
    in the parameters' dtype)."""
    tensors, metadata = read_raw(valid)
    tensors = {k: v.astype(dtype) if k.startswith("optim.") else v for k, v in tensors.items()}
    write_raw(valid, tensors, metadata)
    assert "optimizer moments" in load_error(valid)


# ------------------------------------------------------------------------------------------------
# nothing is unpickled


def test_package_never_uses_pickle():
    """No module of the package imports pickle, passes allow_pickle=True, or calls np.load
    (which can unpickle)."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for pattern in (
            r"^\s*import\s+(c?pickle|dill|joblib)\b",
            r"^\s*from\s+(c?pickle|dill|joblib)\s+import",
            r"allow_pickle\s*=\s*True",
            r"\bnp\.load\(",
            r"\bnumpy\.load\(",
            r"pickle\.loads?\(",
        ):
            if re.search(pattern, text, re.MULTILINE):
                offenders.append(f"{path.name}: {pattern}")
    assert offenders == []


def test_load_does_not_unpickle(valid, monkeypatch):
    """load_checkpoint works with every pickle entry point made to fail."""

    def refuse(*args, **kwargs):
        raise AssertionError("pickle used")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    assert load_checkpoint(valid).meta == {"iter": 7}


def test_saved_files_get_the_usual_permissions_not_mkstemps_private_mode(tmp_path):
    """The temporary file behind an atomic write is created 0600 by mkstemp; the saved checkpoint
    must have the mode any new file gets (0666 minus the umask), so others can read a shared model."""
    config = tiny_config()
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, config, init_params(config, seed=0), CharTokenizer(CHARS))
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
