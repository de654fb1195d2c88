"""GPTConfig validation: every bad value raises InputError naming the field; valid configs pass;
the dict round trip and head_size."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from minigpt import GPTConfig, InputError

SIZE_FIELDS = ["vocab_size", "block_size", "n_layer", "n_head", "n_embd"]


def test_defaults_are_valid():
    """The defaults (nanoGPT-like, GPT-2 numerics) build a valid config."""
    c = GPTConfig()
    assert (c.vocab_size, c.block_size, c.n_layer, c.n_head, c.n_embd) == (65, 64, 4, 4, 128)
    assert (c.dropout, c.bias, c.activation, c.layer_norm_epsilon) == (0.0, True, "gelu", 1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(vocab_size=1, block_size=1, n_layer=1, n_head=1, n_embd=1),
        dict(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768),
        dict(n_head=3, n_embd=96, dropout=0.999, bias=False, activation="relu", layer_norm_epsilon=1e-12),
        dict(dropout=0, layer_norm_epsilon=1),  # ints are numbers
    ],
)
def test_valid_configs(kwargs):
    """Valid values, including the boundaries (sizes 1, dropout 0 and just below 1), pass."""
    c = GPTConfig(**kwargs)
    for k, v in kwargs.items():
        assert getattr(c, k) == v


@pytest.mark.parametrize("value", [0, -1], ids=["zero", "negative"])
@pytest.mark.parametrize("name", SIZE_FIELDS)
def test_non_positive_sizes(name, value):
    """Each size field must be positive: 0 and -1 raise InputError naming the field and value."""
    with pytest.raises(InputError, match=rf"^{name} must be a positive integer, got {value}$"):
        GPTConfig(**{name: value})


@pytest.mark.parametrize("value", [4.0, 4.5, "4", None], ids=["float", "fraction", "str", "none"])
@pytest.mark.parametrize("name", SIZE_FIELDS)
def test_non_integer_sizes(name, value):
    """Each size field must be an int: floats (even 4.0), strings and None raise InputError."""
    with pytest.raises(InputError, match=rf"^{name} must be a positive integer"):
        GPTConfig(**{name: value})


@pytest.mark.parametrize("name", SIZE_FIELDS)
def test_bool_sizes(name):
    """True is an int in Python but not a size: it raises InputError naming the field."""
    with pytest.raises(InputError, match=rf"^{name} must be a positive integer, got True"):
        GPTConfig(**{name: True})


def test_n_embd_not_divisible_by_n_head():
    """n_embd must be a multiple of n_head; the message names both and suggests a value."""
    with pytest.raises(InputError) as info:
        GPTConfig(n_embd=10, n_head=4)
    msg = str(info.value)
    assert "n_embd (10) must be divisible by n_head (4)" in msg
    assert "try n_embd=" in msg
    suggested = int(msg.rsplit("try n_embd=", 1)[1])
    GPTConfig(n_embd=suggested, n_head=4)  # the suggestion is valid


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, math.nan, "0.1", None])
def test_bad_dropout(value):
    """dropout must be a number in [0, 1): negative, 1.0 (would divide by zero), above 1, nan and
    non-numbers raise InputError naming the field."""
    with pytest.raises(InputError, match=r"^dropout must be in \[0, 1\)"):
        GPTConfig(dropout=value)


@pytest.mark.parametrize("value", ["tanh", "GELU", "", None])
def test_unknown_activation(value):
    """Only "gelu" and "relu" are activations; the message names the field and the choices."""
    with pytest.raises(InputError, match=r"^activation must be one of gelu, relu"):
        GPTConfig(activation=value)


@pytest.mark.parametrize("value", [0.0, -1e-5, 0, math.inf, math.nan, "1e-5"])
def test_bad_layer_norm_epsilon(value):
    """layer_norm_epsilon must be a positive finite number."""
    with pytest.raises(InputError, match=r"^layer_norm_epsilon must be a positive number"):
        GPTConfig(layer_norm_epsilon=value)


@pytest.mark.parametrize("value", [1, "true", None])
def test_bad_bias(value):
    """bias must be a bool (1 or "true" are not accepted)."""
    with pytest.raises(InputError, match=r"^bias must be true or false"):
        GPTConfig(bias=value)


def test_input_error_is_value_error():
    """InputError subclasses ValueError, so callers can catch it the usual way."""
    with pytest.raises(ValueError):
        GPTConfig(n_layer=0)


@pytest.mark.parametrize("n_embd, n_head, hs", [(128, 4, 32), (768, 12, 64), (8, 8, 1), (6, 1, 6)])
def test_head_size(n_embd, n_head, hs):
    """head_size is n_embd // n_head."""
    assert GPTConfig(n_embd=n_embd, n_head=n_head).head_size == hs


def test_dict_round_trip():
    """from_dict(to_dict(c)) == c, and to_dict holds every field as a plain value."""
    c = GPTConfig(vocab_size=50, block_size=16, n_layer=3, n_head=2, n_embd=12, dropout=0.2,
                  bias=False, activation="relu", layer_norm_epsilon=1e-6)  # fmt: skip
    d = c.to_dict()
    assert d == dict(vocab_size=50, block_size=16, n_layer=3, n_head=2, n_embd=12, dropout=0.2,
                     bias=False, activation="relu", layer_norm_epsilon=1e-6)  # fmt: skip
    assert GPTConfig.from_dict(d) == c
    assert GPTConfig.from_dict({}) == GPTConfig()  # missing keys take the defaults


def test_from_dict_unknown_key():
    """from_dict rejects unknown keys (e.g. a typo in a checkpoint), naming them."""
    with pytest.raises(InputError, match=r"unknown GPTConfig fields: n_heads, zzz"):
        GPTConfig.from_dict({"n_heads": 4, "zzz": 1, "n_layer": 2})


def test_from_dict_validates():
    """from_dict validates like the constructor."""
    with pytest.raises(InputError, match="n_layer must be a positive integer"):
        GPTConfig.from_dict({"n_layer": 0})


def test_replace_validates_and_config_is_frozen():
    """replace() returns a validated new config; a config cannot be modified in place."""
    c = GPTConfig()
    assert c.replace(n_layer=2).n_layer == 2 and c.n_layer == 4
    with pytest.raises(InputError, match="n_head"):
        c.replace(n_head=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.n_layer = 2


@pytest.mark.parametrize("field", ["dropout", "layer_norm_epsilon"])
def test_bool_is_not_a_number_for_float_fields(field):
    """True/False are not accepted where a probability or epsilon is expected (True would act as 1)."""
    with pytest.raises(InputError, match=field):
        GPTConfig(**{field: True})


def test_numpy_integer_sizes_are_accepted_as_plain_ints():
    """Sizes computed with NumPy work, and are stored as Python ints (so configs stay JSON-safe)."""
    cfg = GPTConfig(n_layer=np.int64(2), n_embd=np.int32(64), n_head=np.int64(4))
    assert cfg.n_layer == 2 and type(cfg.n_layer) is int and type(cfg.n_embd) is int
    json.dumps(cfg.to_dict())
