"""Compressed storage of named tensors: the codecs that make a pruned or quantized checkpoint
really smaller on disk, and load back to exactly the dense values the model ran with.

A codec turns one dense array into a few smaller arrays (its "parts") plus a small JSON-able
info dict, and back:

    encode(array, **options) -> (parts: {part_name: ndarray}, info: dict)
    decode(parts, info)       -> ndarray   (the dense values, bit for bit what encode was given
                                            whenever the codec is lossless for that array)

Codecs are registered by name (`register_codec`); the compression modules register theirs
(pruning: sparse formats; quantization: integer codes with scales). A checkpoint stores an
encoded tensor `name` as its parts, each a safetensors tensor called `name:part`, and records
{"codec", "info", "parts"} for it in the metadata's `encodings` JSON (see minigpt.checkpoint).
Tensors without an encoding are stored dense, as in every other checkpoint, so a file may mix
both. Loading decodes every encoded tensor to a dense array; the encoded form stays available
(Checkpoint.encoded) for code that runs on it directly, such as integer-only inference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

PART_SEPARATOR = ":"  # "h.0.attn.c_attn.weight:values"; ":" never occurs in a parameter name


@dataclass(frozen=True)
class Codec:
    name: str
    encode: Callable  # (array, **options) -> (parts, info)
    decode: Callable  # (parts, info) -> ndarray


@dataclass
class Encoded:
    """One tensor in a codec's stored form: what a checkpoint writes in place of the dense array."""

    codec: str
    parts: dict  # part name -> ndarray
    info: dict = field(default_factory=dict)  # JSON-able: shapes, dtypes, bit widths, ...

    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in self.parts.values())


CODECS: dict[str, Codec] = {}


def register_codec(name: str, encode: Callable, decode: Callable) -> Codec:
    """Make a codec available to checkpoints under name (re-registering replaces it)."""
    if not name or PART_SEPARATOR in name:
        raise ValueError(f"a codec name must be non-empty and free of {PART_SEPARATOR!r}: {name!r}")
    codec = Codec(name, encode, decode)
    CODECS[name] = codec
    return codec


def get_codec(name: str) -> Codec:
    _load_builtin_codecs()
    if name not in CODECS:
        known = ", ".join(sorted(CODECS)) or "none"
        raise InputError(f"unknown tensor codec {name!r} (known: {known}); is this minigpt too old for the file?")
    return CODECS[name]


def encode(array: np.ndarray, codec: str, **options) -> Encoded:
    parts, info = get_codec(codec).encode(array, **options)
    for part in parts:
        if not part or PART_SEPARATOR in part:
            raise ValueError(f"codec {codec}: bad part name {part!r}")
    return Encoded(codec, {k: np.ascontiguousarray(v) for k, v in parts.items()}, dict(info))


def decode(encoded: Encoded) -> np.ndarray:
    return get_codec(encoded.codec).decode(encoded.parts, encoded.info)


def _load_builtin_codecs():
    """Import the compression modules that register codecs, so a checkpoint that uses one loads
    without the caller importing it first. A module not present yet is simply skipped."""
    import importlib

    for module in ("prune", "quantize"):
        try:
            importlib.import_module(f"{__package__}.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"{__package__}.{module}":
                raise
