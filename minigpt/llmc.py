"""llm.c's binary files: the GPT-2 checkpoint (magic 20240326, version 3) and the debug state
(magic 20240327, version 2), as karpathy/llm.c's train_gpt2.py (write_model, write_state) writes
them and train_gpt2.c / test_gpt2.c read them.

Both files start with a header of 256 little-endian int32 (1024 bytes); the rest is raw
little-endian data, without padding between tensors.

Checkpoint (`gpt2_124M.bin`):
    header[0] = 20240326, header[1] = 3 (all float32, padded vocabulary),
    header[2] = maxT (block_size), [3] = V, [4] = L, [5] = NH, [6] = C, [7] = Vp (V rounded up
    to a multiple of 128); the rest 0. Then the parameters in float32, in this order, each
    layer-indexed tensor for every layer before the next tensor:
        wte (Vp, C)      rows V..Vp-1 are zeros
        wpe (maxT, C)
        ln_1.weight (L, C), ln_1.bias (L, C)
        attn.c_attn.weight (L, 3C, C), attn.c_attn.bias (L, 3C)
        attn.c_proj.weight (L, C, C), attn.c_proj.bias (L, C)
        ln_2.weight (L, C), ln_2.bias (L, C)
        mlp.c_fc.weight (L, 4C, C), mlp.c_fc.bias (L, 4C)
        mlp.c_proj.weight (L, C, 4C), mlp.c_proj.bias (L, C)
        ln_f.weight (C,), ln_f.bias (C,)
    Linear weights are torch.nn.Linear's (out, in): the transpose of minigpt's (in, out).

Debug state (`gpt2_124M_debug_state.bin`):
    header[0] = 20240327, header[1] = 2, header[2] = B, header[3] = T; the rest 0. Then
        x (B, T) int32, the inputs; y (B, T) int32, the targets (already shifted: y[b, t] is the
        token after x[b, t]); logits (B, T, V) float32 (not padded); loss, one float32;
        the gradients of every parameter, float32, in the checkpoint's order and shapes
        (wte's gradient padded to (Vp, C) with zeros).
    The state carries neither V nor the model: read it with the checkpoint's config.

llm.c's GPT-2 always has biases, GELU (tanh approximation) and LayerNorm epsilon 1e-5, and its C
loss has no ignore index: writing refuses models and targets outside that.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .config import GPTConfig
from .errors import InputError
from .model import param_shapes

MODEL_MAGIC, MODEL_VERSION = 20240326, 3
STATE_MAGIC, STATE_VERSION = 20240327, 2
HEADER_INTS = 256
VOCAB_MULTIPLE = 128
I32, F32 = np.dtype("<i4"), np.dtype("<f4")
LAYER_TENSORS = ("ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
                 "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
                 "mlp.c_proj.weight", "mlp.c_proj.bias")


def padded_vocab(V: int) -> int:
    """Vp: V rounded up to a multiple of 128 (llm.c's pad_vocab)."""
    return -(-V // VOCAB_MULTIPLE) * VOCAB_MULTIPLE


def tensor_order(config: GPTConfig) -> list[str]:
    """The parameters' Hugging Face names in llm.c's file order."""
    names = ["wte.weight", "wpe.weight"]
    for t in LAYER_TENSORS:
        names += [f"h.{i}.{t}" for i in range(config.n_layer)]
    return names + ["ln_f.weight", "ln_f.bias"]


def is_linear_weight(name: str) -> bool:
    return name.endswith(".weight") and (".c_attn." in name or ".c_proj." in name or ".c_fc." in name)


def check_llmc_model(config: GPTConfig):
    if not config.uniform:
        raise InputError("llm.c's GPT-2 has n_head heads and a 4 * n_embd MLP in every layer: "
                         "a structurally pruned model cannot be written as an llm.c file")
    if config.activation != "gelu":
        raise InputError("llm.c's GPT-2 uses GELU: an activation='relu' model cannot be written as an llm.c file")
    if config.layer_norm_epsilon != 1e-5:
        raise InputError(f"llm.c's LayerNorm epsilon is 1e-5, this model's is {config.layer_norm_epsilon}")


def flatten(config: GPTConfig, tensors: dict, Vp: int) -> np.ndarray:
    """Parameters (or gradients) in minigpt's names and layouts -> one float32 vector in llm.c's
    order and layouts. Biases that a bias=False model lacks are written as zeros."""
    shapes = param_shapes(config.replace(bias=True))
    parts = []
    for name in tensor_order(config):
        a = tensors.get(name)
        a = np.zeros(shapes[name]) if a is None else np.asarray(a)
        if a.shape != shapes[name]:
            raise InputError(f"{name} has shape {a.shape}, the config needs {shapes[name]}")
        if name == "wte.weight":
            a = np.concatenate([a, np.zeros((Vp - a.shape[0], a.shape[1]))])  # padded rows: zeros
        elif is_linear_weight(name):
            a = a.T  # (in, out) -> nn.Linear's (out, in)
        parts.append(np.asarray(a, dtype=F32).reshape(-1))
    return np.concatenate(parts)


def unflatten(config: GPTConfig, data: np.ndarray, Vp: int) -> dict:
    """The inverse of flatten: llm.c's float32 vector -> {name: array} in minigpt's layouts and
    parameter order; wte loses its padded rows."""
    shapes = param_shapes(config.replace(bias=True))
    out, pos = {}, 0
    for name in tensor_order(config):
        shape = shapes[name]
        if name == "wte.weight":
            shape = (Vp, shape[1])
        elif is_linear_weight(name):
            shape = shape[::-1]
        n = int(np.prod(shape))
        a = data[pos : pos + n].reshape(shape)
        pos += n
        out[name] = a[: config.vocab_size] if name == "wte.weight" else (a.T if is_linear_weight(name) else a)
    return {name: np.array(out[name], order="C") for name in shapes}  # writable copies, not views of the file


def num_floats(config: GPTConfig, Vp: int) -> int:
    return sum(int(np.prod(s)) for s in param_shapes(config.replace(bias=True)).values()) + \
        (Vp - config.vocab_size) * config.n_embd


def header(*values) -> bytes:
    h = np.zeros(HEADER_INTS, dtype=I32)
    h[: len(values)] = values
    return h.tobytes()


def peek_magic(path) -> int | None:
    """The first int32 of a file (llm.c's magic), or None when shorter than 4 bytes."""
    with open(path, "rb") as f:
        b = f.read(4)
    return int(np.frombuffer(b, dtype=I32)[0]) if len(b) == 4 else None


def read_header(path, magic: int, version: int, what: str) -> tuple[np.ndarray, bytes]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"file not found: {path}")
    data = path.read_bytes()
    if len(data) < 4 * HEADER_INTS:
        raise InputError(f"{path}: too short for an llm.c {what} ({len(data)} bytes, the header alone is 1024)")
    h = np.frombuffer(data[: 4 * HEADER_INTS], dtype=I32)
    if h[0] != magic:
        raise InputError(f"{path}: not an llm.c {what} (magic {h[0]}, expected {magic})")
    if h[1] != version:
        raise InputError(f"{path}: llm.c {what} version {h[1]}, only version {version} is supported")
    return h, data[4 * HEADER_INTS :]


# ----------------------------------------------------------------------------------------------
# checkpoint


def write_model(path, config: GPTConfig, params: dict):
    """Write params as an llm.c GPT-2 checkpoint (version 3, float32, padded vocabulary)."""
    check_llmc_model(config)
    Vp = padded_vocab(config.vocab_size)
    data = flatten(config, params, Vp)
    h = header(MODEL_MAGIC, MODEL_VERSION, config.block_size, config.vocab_size, config.n_layer,
               config.n_head, config.n_embd, Vp)
    Path(path).write_bytes(h + data.tobytes())


def read_model(path) -> tuple[GPTConfig, dict]:
    """(config, params) of an llm.c GPT-2 checkpoint; params float32 in minigpt's layouts."""
    h, body = read_header(path, MODEL_MAGIC, MODEL_VERSION, "GPT-2 checkpoint")
    maxT, V, L, NH, C, Vp = (int(v) for v in h[2:8])
    try:
        config = GPTConfig(vocab_size=V, block_size=maxT, n_layer=L, n_head=NH, n_embd=C)
    except InputError as e:
        raise InputError(f"{path}: bad header ({e})") from None
    if Vp < V:
        raise InputError(f"{path}: padded vocabulary {Vp} is smaller than the vocabulary {V}")
    n = num_floats(config, Vp)
    if len(body) != 4 * n:
        raise InputError(f"{path}: {len(body)} bytes of parameters, the header's model needs {4 * n} "
                         f"(truncated or not a version-3 file)")
    return config, unflatten(config, np.frombuffer(body, dtype=F32), Vp)


# ----------------------------------------------------------------------------------------------
# debug state


def write_state(path, config: GPTConfig, inputs, targets, logits, loss, grads: dict):
    """Write an llm.c debug state (version 2): inputs and targets (B, T), logits (B, T, V), the
    loss and every parameter's gradient, all float32 but the ids (int32)."""
    check_llmc_model(config)
    inputs, targets, logits = np.asarray(inputs), np.asarray(targets), np.asarray(logits)
    B, T = inputs.shape
    if targets.shape != (B, T) or logits.shape != (B, T, config.vocab_size):
        raise InputError(f"inputs {inputs.shape}, targets {targets.shape} and logits {logits.shape} do not "
                         f"fit (B, T) and (B, T, {config.vocab_size})")
    if (targets < 0).any():
        raise InputError("llm.c's loss has no ignore index: targets must all be in [0, vocab_size)")
    missing = [k for k, s in param_shapes(config).items() if k not in grads]
    if missing:
        raise InputError(f"gradients missing: {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    if not config.bias:
        raise InputError("llm.c's GPT-2 has biases, and their gradients are not zero: export a bias=True model")
    Vp = padded_vocab(config.vocab_size)
    with open(path, "wb") as f:
        f.write(header(STATE_MAGIC, STATE_VERSION, B, T))
        f.write(inputs.astype(I32).tobytes())
        f.write(targets.astype(I32).tobytes())
        f.write(logits.astype(F32).tobytes())
        f.write(np.asarray(loss, dtype=F32).reshape(1).tobytes())
        f.write(flatten(config, grads, Vp).tobytes())


def read_state(path, config: GPTConfig) -> dict:
    """An llm.c debug state as {"inputs", "targets" (B, T) int32, "logits" (B, T, V), "loss" (),
    "grads": {name: array}}, float32. config: the model's (the state does not carry it); the
    padded vocabulary Vp is read off the file's size."""
    h, body = read_header(path, STATE_MAGIC, STATE_VERSION, "debug state")
    B, T = int(h[2]), int(h[3])
    V, C = config.vocab_size, config.n_embd
    if B < 1 or not 1 <= T <= config.block_size:
        raise InputError(f"{path}: B={B}, T={T} do not fit the model (block_size {config.block_size})")
    n_grads = len(body) // 4 - 2 * B * T - B * T * V - 1
    Vp = V + (n_grads - num_floats(config, V)) // C if n_grads > 0 else -1
    if Vp < V or len(body) % 4 or n_grads != num_floats(config, Vp):
        raise InputError(f"{path}: {len(body)} bytes after the header do not fit B={B}, T={T} and the model "
                         f"(V={V}, C={C}, L={config.n_layer}); is it the state of another model?")
    pos = 0

    def take(n, dtype):
        nonlocal pos
        a = np.frombuffer(body, dtype=dtype, count=n, offset=pos)
        pos += 4 * n
        return a

    inputs = take(B * T, I32).reshape(B, T)
    targets = take(B * T, I32).reshape(B, T)
    logits = take(B * T * V, F32).reshape(B, T, V)
    loss = take(1, F32).reshape(())
    grads = unflatten(config.replace(bias=True), take(n_grads, F32), Vp)
    return {"inputs": inputs.copy(), "targets": targets.copy(), "logits": logits.copy(), "loss": loss.copy(),
            "grads": grads}
