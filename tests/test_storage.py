"""Compressed tensor storage in checkpoints (minigpt.compress.storage): a codec's parts go into the
safetensors file in place of the dense tensor and load back to exactly the same dense values.

The codec here is a toy registered by the test (nonzero values plus a packed bitmask); the real
codecs live in the compression modules and have their own round-trip tests.
"""

import json

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file as st_save_file

from minigpt import GPTConfig, InputError, init_params
from minigpt.checkpoint import load_checkpoint, save_checkpoint, tensors_digest
from minigpt.compress import storage
from minigpt.tokenizer import CharTokenizer

NAME = "h.0.mlp.c_fc.weight"


def _encode(a):
    mask = a != 0
    return {"bits": np.packbits(mask.ravel()), "values": a[mask]}, {"shape": list(a.shape), "dtype": a.dtype.str}


def _decode(parts, info):
    n = int(np.prod(info["shape"]))
    mask = np.unpackbits(parts["bits"], count=n).astype(bool)
    out = np.zeros(n, dtype=np.dtype(info["dtype"]))
    out[mask] = parts["values"]
    return out.reshape(info["shape"])


storage.register_codec("test-bitmask", _encode, _decode)


@pytest.fixture
def model():
    config = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16)
    params = init_params(config, seed=0)
    w = params[NAME]
    w[np.abs(w) < np.quantile(np.abs(w), 0.75)] = 0.0  # 75% sparse
    return config, params, CharTokenizer(list("abcdefghijk"))


def save(tmp_path, model, **kw):
    config, params, tok = model
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, config, params, tok, **kw)
    return path


def test_encoded_tensor_round_trips_exactly_and_is_stored_as_its_parts(tmp_path, model):
    config, params, _ = model
    enc = storage.encode(params[NAME], "test-bitmask")
    path = save(tmp_path, model, encoded={NAME: enc})
    with safe_open(str(path), framework="np") as f:
        keys = set(f.keys())
        spec = json.loads(f.metadata()["encodings"])
    assert NAME not in keys and {NAME + ":bits", NAME + ":values"} <= keys
    assert spec[NAME]["codec"] == "test-bitmask"
    ck = load_checkpoint(path)
    assert list(ck.params) == list(params)
    for name in params:
        assert np.array_equal(ck.params[name], params[name]) and ck.params[name].dtype == params[name].dtype
    assert ck.encoded[NAME].codec == "test-bitmask"
    assert enc.nbytes() < params[NAME].nbytes / 3  # 25% of the values + 1 bit per weight


def test_dense_checkpoints_have_no_encodings(tmp_path, model):
    ck = load_checkpoint(save(tmp_path, model))
    assert ck.encoded == {}


def test_save_refuses_an_encoding_that_does_not_decode_to_the_parameter(tmp_path, model):
    config, params, _ = model
    enc = storage.encode(params[NAME] * 2, "test-bitmask")
    with pytest.raises(ValueError, match="does not decode to the parameter's values"):
        save(tmp_path, model, encoded={NAME: enc})


def test_save_refuses_an_unknown_parameter(tmp_path, model):
    enc = storage.encode(np.ones((2, 2), np.float32), "test-bitmask")
    with pytest.raises(InputError, match="no such parameter"):
        save(tmp_path, model, encoded={"h.9.mlp.c_fc.weight": enc})


def test_unknown_codec_name_is_an_input_error():
    with pytest.raises(InputError, match="unknown tensor codec 'nope'"):
        storage.encode(np.ones(3), "nope")


def rewrite(path, edit):
    """Rewrite a checkpoint's tensors/metadata with edit(tensors, metadata), digest recomputed."""
    with safe_open(str(path), framework="np") as f:
        metadata = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    edit(tensors, metadata)
    metadata["sha256"] = tensors_digest(tensors)
    st_save_file(tensors, str(path), metadata=metadata)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t, m: t.pop(NAME + ":values"), "lacks its parts"),
        (lambda t, m: m.update(encodings=m["encodings"].replace("test-bitmask", "zstd9")), "unknown tensor codec"),
        (lambda t, m: m.update(encodings="[1]"), "encodings must be a JSON object"),
        (lambda t, m: m.update(encodings=json.dumps({NAME: {"codec": "test-bitmask"}})), "lacks codec, info or parts"),
        (lambda t, m: t.update({"wte.weight:extra": np.zeros(1, np.float32)}), "belong to no recorded encoding"),
        (lambda t, m: t.update({NAME + ":values": np.zeros(3, np.float32)}), "does not decode"),
    ],
)
def test_damaged_compressed_checkpoints_are_one_line_errors(tmp_path, model, edit, message):
    config, params, _ = model
    path = save(tmp_path, model, encoded={NAME: storage.encode(params[NAME], "test-bitmask")})
    rewrite(path, edit)
    with pytest.raises(InputError, match=message) as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value)
