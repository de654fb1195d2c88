"""Checkpoints: one safetensors file holding the weights, with the config, the tokenizer's
vocabulary and training metadata as JSON in the header metadata. Nothing is ever pickled.

File layout (safetensors: an 8-byte header length, a JSON header, then raw little-endian data):
- tensors: every parameter under its Hugging Face GPT-2 name (`wte.weight`, `h.0.attn.c_attn.weight`,
  ...); a resume checkpoint adds the AdamW moments as `optim.m.<name>` and `optim.v.<name>`
- metadata (all strings, as safetensors requires):
    format          "minigpt"
    format_version  "1"
    config          JSON of GPTConfig
    vocab           JSON list of the tokenizer's characters (id order)
    meta            JSON of training metadata (iter, losses, train config, optimizer step, ...)
    sha256          a digest of every tensor's name, dtype, shape and bytes, so a flipped bit in
                    the data is caught on load, not only a damaged header
    encodings       (only in compressed checkpoints) JSON {name: {"codec", "info", "parts"}}: the
                    tensors stored in a codec's compressed form, as the tensors `name:part`
                    (minigpt.compress.storage); they load back as dense arrays

Writes are atomic: the file is written under a temporary name in the same directory, flushed to
disk, then renamed over the target, so a crash leaves either the old checkpoint or the new one,
never half of one. Arrays are saved as C-contiguous copies: safetensors 0.8.0 silently writes
garbage for non-contiguous arrays (upstream issue #825).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from .compress import storage
from .config import GPTConfig
from .errors import InputError
from .model import param_shapes
from .tokenizer import CharTokenizer

FORMAT = "minigpt"
FORMAT_VERSION = "1"
OPTIM_PREFIXES = ("optim.m.", "optim.v.")


@dataclass
class Checkpoint:
    config: GPTConfig
    params: dict  # name -> ndarray, in parameter order
    tokenizer: CharTokenizer
    meta: dict = field(default_factory=dict)
    optim: dict = field(default_factory=dict)  # "m" / "v" -> {name: ndarray}, empty without optimizer state
    encoded: dict = field(default_factory=dict)  # name -> storage.Encoded, for tensors stored compressed


def tensors_digest(tensors: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        a = tensors[name]
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def save_checkpoint(
    path, config: GPTConfig, params: dict, tokenizer: CharTokenizer, meta=None, optim=None, encoded=None
):
    """Write a checkpoint atomically. optim: optional {"m": {...}, "v": {...}} AdamW moments.
    encoded: optional {name: storage.Encoded}, tensors to store compressed instead of dense; each
    must decode to exactly params[name] (checked here), so the file loads back to the same model."""
    path = Path(path)
    encoded = encoded or {}
    tensors = {name: np.ascontiguousarray(p) for name, p in params.items() if name not in encoded}
    encodings = {}
    for name, enc in encoded.items():
        if name not in params:
            raise InputError(f"cannot store {name} compressed: the model has no such parameter")
        dense = storage.decode(enc)
        if dense.shape != params[name].shape or dense.dtype != params[name].dtype:
            raise ValueError(f"{name}: codec {enc.codec} decodes to {dense.dtype}{dense.shape}, "
                             f"the parameter is {params[name].dtype}{params[name].shape}")
        if not np.array_equal(dense, params[name], equal_nan=True):
            raise ValueError(f"{name}: codec {enc.codec} does not decode to the parameter's values; "
                             "store the values the model runs with (e.g. the dequantized weights)")
        for part, a in enc.parts.items():
            tensors[f"{name}{storage.PART_SEPARATOR}{part}"] = np.ascontiguousarray(a)
        encodings[name] = {"codec": enc.codec, "info": enc.info, "parts": sorted(enc.parts)}
    for kind in ("m", "v"):
        for name, a in (optim or {}).get(kind, {}).items():
            tensors[f"optim.{kind}.{name}"] = np.ascontiguousarray(a)
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": json.dumps(config.to_dict()),
        "vocab": json.dumps(tokenizer.chars, ensure_ascii=False),
        "meta": json.dumps(meta or {}),
        "sha256": tensors_digest(tensors),
    }
    if encodings:
        metadata["encodings"] = json.dumps(encodings)
    _atomic_save_file(path, tensors, metadata)


def _atomic_save_file(path: Path, tensors: dict, metadata: dict):
    """safetensors' save_file under a temporary name, fsync, then rename over path."""
    _atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata), f"a checkpoint in {path.parent}")


def _atomic_write(path: Path, write, what: str):
    """write(tmp) fills a temporary file beside path; it is fsynced and renamed over path, so a
    crash never leaves a half-written file under the final name. `what` names it in errors."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise InputError(f"cannot write {what}: {e.strerror}") from None
    try:
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp made it private (0600); give it a new file's usual mode
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them visible
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass  # not supported on every platform; the write itself is complete


def _umask() -> int:
    """The process's umask (reading it means setting it; it is put straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_tensors(path, tensors: dict, meta=None):
    """Named arrays that are not a model (e.g. a distillation projection and its AdamW moments)
    with a JSON meta dict, written atomically and checksummed like a checkpoint."""
    path = Path(path)
    tensors = {name: np.ascontiguousarray(a) for name, a in tensors.items()}
    metadata = {"format": FORMAT + "-tensors", "meta": json.dumps(meta or {}), "sha256": tensors_digest(tensors)}
    _atomic_save_file(path, tensors, metadata)


def load_tensors(path) -> tuple[dict, dict]:
    """(tensors, meta) from a file save_tensors wrote; any problem is an InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"file not found: {path}")
    try:
        with safe_open(str(path), framework="np") as f:
            metadata = f.metadata() or {}
            tensors = {name: np.array(f.get_tensor(name)) for name in f.keys()}  # noqa: SIM118 (not a dict)
        meta = json.loads(metadata["meta"])
    except Exception as e:  # noqa: BLE001 (safetensors raises several error types for damaged files)
        _fail(path, f"not a readable minigpt tensor file ({type(e).__name__})")
    if metadata.get("format") != FORMAT + "-tensors" or tensors_digest(tensors) != metadata.get("sha256"):
        _fail(path, "not a minigpt tensor file, or its data does not match its checksum")
    return tensors, meta


def _fail(path, problem: str):
    raise InputError(f"checkpoint {path}: {problem}")


def load_checkpoint(path) -> Checkpoint:
    """Read and validate a checkpoint. Every problem is an InputError naming it: a missing file,
    a file that is not safetensors (or is truncated), a file that is not a minigpt checkpoint,
    corrupted data, missing or extra tensors, shapes or a vocabulary that do not fit the config."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="np") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (not a dict)
    except Exception as e:  # noqa: BLE001 (safetensors raises several error types for bad headers and short files)
        first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
        _fail(path, f"not a readable safetensors file, truncated or corrupted ({first_line})")
    if metadata.get("format") != FORMAT:
        _fail(path, "a safetensors file without minigpt metadata (config, vocab); not a minigpt checkpoint")
    if metadata.get("format_version") != FORMAT_VERSION:
        _fail(path, f"format version {metadata.get('format_version')!r}, this minigpt reads {FORMAT_VERSION!r}")
    if tensors_digest(tensors) != metadata.get("sha256"):
        _fail(path, "tensor data does not match its checksum; the file is corrupted")
    try:
        config_dict = json.loads(metadata["config"])
        chars = json.loads(metadata["vocab"])
        meta = json.loads(metadata.get("meta", "{}"))
        encodings = json.loads(metadata.get("encodings", "{}"))
    except (KeyError, json.JSONDecodeError) as e:
        _fail(path, f"damaged metadata ({type(e).__name__}: {e})")
    if not isinstance(config_dict, dict) or not isinstance(meta, dict):
        _fail(path, "damaged metadata: config and meta must be JSON objects")
    if not isinstance(chars, list) or not all(isinstance(c, str) for c in chars):
        _fail(path, "damaged metadata: vocab must be a JSON list of characters")
    try:
        config = GPTConfig.from_dict(config_dict)
    except (InputError, TypeError) as e:
        _fail(path, f"invalid config ({e})")
    try:
        tokenizer = CharTokenizer(chars)
    except InputError as e:
        _fail(path, f"invalid vocabulary ({e})")
    if tokenizer.vocab_size > config.vocab_size:
        _fail(path, f"vocabulary of {tokenizer.vocab_size} characters exceeds vocab_size {config.vocab_size}")

    shapes = param_shapes(config)
    tensors, encoded = _decode_tensors(path, tensors, encodings)
    optim = {"m": {}, "v": {}}
    params = {}
    for name, a in tensors.items():
        if name.startswith(OPTIM_PREFIXES):  # "optim.m.<param>" or "optim.v.<param>"
            _, kind, param = name.split(".", 2)
            optim[kind][param] = a
        else:
            params[name] = a
    missing = [n for n in shapes if n not in params]
    extra = [n for n in params if n not in shapes]
    if missing:
        _fail(path, f"missing tensors for its config: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    if extra:
        _fail(path, f"tensors its config has no place for: {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}")
    dtypes = {a.dtype for a in params.values()}
    if len(dtypes) != 1 or dtypes.pop() not in (np.float32, np.float64):
        _fail(path, f"parameters must all be float32 or all float64, got {sorted({str(a.dtype) for a in params.values()})}")
    for name, shape in shapes.items():
        if params[name].shape != shape:
            _fail(path, f"tensor {name} has shape {params[name].shape}, its config needs {shape}")
    if bool(optim["m"]) != bool(optim["v"]):
        _fail(path, "optimizer moments are incomplete: resuming needs both optim.m.* and optim.v.* (or neither)")
    dtype = params[next(iter(shapes))].dtype
    for kind in ("m", "v"):
        d = optim[kind]
        if d and (set(d) != set(shapes) or any(d[n].shape != shapes[n] or d[n].dtype != dtype for n in shapes)):
            _fail(path, f"optimizer moments optim.{kind}.* do not match the parameters' names, shapes and dtype")
    # owned, writable, contiguous arrays, in parameter order: safe for in-place updates
    params = {name: np.array(params[name], order="C", copy=True) for name in shapes}
    optim = {k: {n: np.array(d[n], order="C", copy=True) for n in shapes} for k, d in optim.items() if d}
    return Checkpoint(config=config, params=params, tokenizer=tokenizer, meta=meta, optim=optim, encoded=encoded)


def _decode_tensors(path, tensors: dict, encodings) -> tuple[dict, dict]:
    """Replace every tensor stored compressed (its parts `name:part`) by its dense decoding.
    Returns (dense tensors by name, {name: storage.Encoded})."""
    if not isinstance(encodings, dict):
        _fail(path, "damaged metadata: encodings must be a JSON object")
    tensors = dict(tensors)
    encoded = {}
    for name, spec in encodings.items():
        try:
            codec, info, part_names = spec["codec"], spec["info"], spec["parts"]
        except (KeyError, TypeError):
            _fail(path, f"damaged metadata: the encoding of {name} lacks codec, info or parts")
        keys = [f"{name}{storage.PART_SEPARATOR}{part}" for part in part_names]
        missing = [k for k in keys if k not in tensors]
        if missing:
            _fail(path, f"compressed tensor {name} lacks its parts {', '.join(missing)}")
        enc = storage.Encoded(codec, {part: tensors.pop(k) for part, k in zip(part_names, keys)}, info)
        try:
            tensors[name] = storage.decode(enc)
        except InputError as e:
            _fail(path, str(e))
        except Exception as e:  # noqa: BLE001 (a damaged part can fail inside any codec)
            _fail(path, f"compressed tensor {name} ({codec}) does not decode: {type(e).__name__}: {e}")
        encoded[name] = enc
    stray = [k for k in tensors if storage.PART_SEPARATOR in k]
    if stray:
        _fail(path, f"tensors {', '.join(stray[:5])} belong to no recorded encoding")
    return tensors, encoded


def atomic_write_text(path, text: str):
    """Write a small text file (JSON results) atomically: a temporary file, then a rename."""
    path = Path(path)
    _atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), str(path))
