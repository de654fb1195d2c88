"""Hugging Face transformers' GPT-2 (GPT2LMHeadModel): load its weights into minigpt, and write
minigpt's weights in the form `GPT2LMHeadModel.from_pretrained` reads.

minigpt's parameters already carry Hugging Face's GPT-2 names and layouts (Conv1D weights
(in, out)), so converting is renaming at most:
- state-dict keys may start with `transformer.` (GPT2LMHeadModel) or not (GPT2Model, and the
  original `gpt2` checkpoint on the Hub); both load;
- `attn.bias` and `attn.masked_bias` are the causal-mask buffers older checkpoints stored, not
  parameters: dropped;
- `lm_head.weight` is tied to `wte.weight` in GPT-2: it must equal it (an untied head is refused)
  and is not written.
Hugging Face's GPT-2 always has biases and uses "gelu_new", the tanh GELU (minigpt's "gelu"). A
bias=False minigpt model is written with zero biases, which computes the same function.

A folder as `save_pretrained` writes it holds config.json and model.safetensors (or shards listed
in model.safetensors.index.json); pickled pytorch_model.bin files are not read (minigpt never
unpickles). Tensors must be float16, float32 or float64 (numpy has no bfloat16).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from .config import GPTConfig
from .errors import InputError
from .model import param_shapes

ACTIVATIONS = {"gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "relu": "relu"}
BUFFERS = (".attn.bias", ".attn.masked_bias")


def config_from_hf(hf_config) -> GPTConfig:
    """A GPTConfig from a transformers GPT2Config or its dict (config.json). Dropout is 0: load
    for inference and comparison; set it with config.replace(dropout=...) to train."""
    c = hf_config.to_dict() if hasattr(hf_config, "to_dict") else dict(hf_config)
    if c.get("model_type", "gpt2") != "gpt2":
        raise InputError(f"not a GPT-2 config: model_type {c.get('model_type')!r}")
    act = c.get("activation_function", "gelu_new")
    if act not in ACTIVATIONS:
        raise InputError(f"activation_function {act!r} is not one minigpt has (gelu_new or relu)")
    n_embd = c.get("n_embd", 768)
    if c.get("n_inner") not in (None, 4 * n_embd):
        raise InputError(f"n_inner={c['n_inner']}: minigpt's MLP is 4 * n_embd = {4 * n_embd} wide")
    for key, expected in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                          ("add_cross_attention", False), ("tie_word_embeddings", True)):
        if c.get(key, expected) != expected:
            raise InputError(f"{key}={c[key]} changes GPT-2's numerics; minigpt computes {key}={expected}")
    return GPTConfig(vocab_size=c.get("vocab_size", 50257), block_size=c.get("n_positions", 1024),
                     n_layer=c.get("n_layer", 12), n_head=c.get("n_head", 12), n_embd=n_embd, dropout=0.0,
                     bias=True, activation=ACTIVATIONS[act], layer_norm_epsilon=c.get("layer_norm_epsilon", 1e-5))


def config_to_hf(config: GPTConfig) -> dict:
    """config.json for GPT2LMHeadModel (the fields transformers' GPT2Config reads)."""
    if not config.uniform:
        raise InputError("GPT2LMHeadModel has the same head count and MLP width in every layer: "
                         "a structurally pruned model cannot be exported to it")
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": config.vocab_size, "n_positions": config.block_size, "n_embd": config.n_embd,
        "n_layer": config.n_layer, "n_head": config.n_head, "n_inner": None,
        "activation_function": "gelu_new" if config.activation == "gelu" else "relu",
        "resid_pdrop": config.dropout, "embd_pdrop": config.dropout, "attn_pdrop": config.dropout,
        "layer_norm_epsilon": config.layer_norm_epsilon, "initializer_range": 0.02,
        "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True, "use_cache": True,
        "bos_token_id": None, "eos_token_id": None,  # a character vocabulary has no <|endoftext|>
    }


def to_numpy(t) -> np.ndarray:
    if hasattr(t, "detach"):  # a torch tensor
        t = t.detach().cpu().numpy()
    return np.asarray(t)


def params_from_hf(state_dict, config: GPTConfig) -> dict:
    """minigpt's parameter dict from a GPT-2 state dict (name -> torch tensor or ndarray), in
    parameter order, with the dtype it had. Missing, unexpected or misshapen tensors are refused."""
    sd = {}
    for key, value in state_dict.items():
        name = key.removeprefix("transformer.")
        if name.endswith(BUFFERS):
            continue
        sd[name] = value
    head = sd.pop("lm_head.weight", None)
    shapes = param_shapes(config)
    missing = [n for n in shapes if n not in sd]
    extra = [n for n in sd if n not in shapes]
    if missing or extra:
        raise InputError(f"state dict does not fit the config: missing {missing[:3]}, unexpected {extra[:3]}")
    params = {}
    for name, shape in shapes.items():
        a = to_numpy(sd[name])
        if a.shape != shape:
            raise InputError(f"{name} has shape {a.shape}, the config needs {shape}")
        if a.dtype not in (np.float16, np.float32, np.float64):
            raise InputError(f"{name} has dtype {a.dtype}: convert the model to float32 first")
        params[name] = np.ascontiguousarray(a)
    if head is not None and not np.array_equal(to_numpy(head), params["wte.weight"]):
        raise InputError("lm_head.weight differs from wte.weight: minigpt's output layer is tied to wte")
    return params


def load_hf(path) -> tuple[GPTConfig, dict]:
    """(config, params) from a save_pretrained folder (config.json + model.safetensors, or its
    shards), or from a model.safetensors file with config.json beside it."""
    from .reference import read_safetensors

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise InputError(f"{cfg_path} not found: a Hugging Face model folder holds config.json and model.safetensors")
    try:
        config = config_from_hf(json.loads(cfg_path.read_text(encoding="utf-8")))
    except json.JSONDecodeError as e:
        raise InputError(f"{cfg_path}: not valid JSON ({e})") from None
    if path.is_file():
        files = [path]
    elif (folder / "model.safetensors").is_file():
        files = [folder / "model.safetensors"]
    elif (folder / "model.safetensors.index.json").is_file():
        index = json.loads((folder / "model.safetensors.index.json").read_text(encoding="utf-8"))
        files = [folder / f for f in sorted(set(index["weight_map"].values()))]
    else:
        hint = " (pytorch_model.bin is a pickle, which minigpt does not read: re-save it with " \
               "save_pretrained, which writes safetensors)" if (folder / "pytorch_model.bin").exists() else ""
        raise InputError(f"no model.safetensors in {folder}{hint}")
    state = {}
    for f in files:
        state.update(read_safetensors(f)[0])
    return config, params_from_hf(state, config)


def save_hf(folder, config: GPTConfig, params: dict, dtype=np.float32):
    """Write config.json and model.safetensors as GPT2LMHeadModel.save_pretrained does
    (`transformer.` names, no lm_head: it is tied), so `GPT2LMHeadModel.from_pretrained(folder)`
    loads them. Biases that a bias=False model lacks are written as zeros."""
    folder = Path(folder)
    full = param_shapes(config.replace(bias=True))
    tensors = {}
    for name, shape in full.items():
        a = params.get(name)
        if a is None and name in param_shapes(config):
            raise InputError(f"parameter {name} missing")
        a = np.zeros(shape) if a is None else a
        tensors["transformer." + name] = np.ascontiguousarray(a, dtype=dtype)  # safetensors 0.8.0 issue #825
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create {folder}: {e.strerror}") from None
    hf_config = config_to_hf(config)
    hf_config["torch_dtype"] = np.dtype(dtype).name
    (folder / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")
    fd, tmp = tempfile.mkstemp(prefix=".model.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"format": "pt"})  # transformers requires format "pt"
        os.replace(tmp, folder / "model.safetensors")
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
