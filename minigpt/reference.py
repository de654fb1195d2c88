"""Golden reference files, and a checker that says exactly where another implementation differs.

An engineer writing a GPT in another framework or language (CUDA, Triton, Rust, JAX, ...) checks it
against minigpt the way llm.c's test_gpt2 checks C against PyTorch: run the same inputs through
the same parameters and compare every tensor. Two kinds of files, both safetensors (any language
reads them: an 8-byte little-endian header length, a JSON header, raw little-endian data):

The whole model (`minigpt reference export`, `export_model`)
------------------------------------------------------------
Legend: B batch, T time, C channels, NH heads, hs head size, V vocabulary, L layers, K steps.
Every float tensor has the file's dtype (float32 or float64); ids are int32.

    inputs                    (B, T) int32   token ids
    targets                   (B, T) int32   targets[b, t] is the token that FOLLOWS inputs[b, t]:
                                             each row is a sequence s of T + 1 tokens with
                                             inputs = s[:-1] and targets = s[1:] (the shift is
                                             already done; a candidate must not shift again).
                                             -1 would mean "ignored" (none are, by default)
    params.<name>             the initial parameters under Hugging Face GPT-2 names and layouts
                              (`wte.weight` (V, C), `h.0.attn.c_attn.weight` (C, 3C) stored
                              (in, out): a layer computes x @ w + b), as README's table
    acts.emb                  (B, T, C)     wte[inputs] + wpe[0..T-1]
    for each layer i, acts.h.<i>.:
      ln_1                    (B, T, C)     LayerNorm output (eps from the config)
      ln_1.mean, ln_1.rstd    (B, T)        its mean and 1 / sqrt(biased variance + eps)
      qkv                     (B, T, 3C)    c_attn output: q = [:, :, 0:C], k = [C:2C], v = [2C:3C];
                                            head h uses channels h*hs .. (h+1)*hs - 1 of each
      preatt                  (B, NH, T, T) q k^T / sqrt(hs) for every pair, future ones included
                                            (they are masked to -inf before the softmax)
      att                     (B, NH, T, T) attention probabilities (causal softmax), 0 above the diagonal
      atty                    (B, T, C)     attention output, heads side by side, before c_proj
      attproj                 (B, T, C)     attn.c_proj output
      res_1                   (B, T, C)     residual stream after the attention branch
      ln_2, ln_2.mean, ln_2.rstd            as ln_1, on res_1
      fc                      (B, T, 4C)    mlp.c_fc output
      fc_act                  (B, T, 4C)    the activation: GELU (tanh approximation, HF "gelu_new") or ReLU
      fcproj                  (B, T, C)     mlp.c_proj output
      res_2                   (B, T, C)     residual stream after the block (the next block's input)
    acts.ln_f, acts.ln_f.mean, acts.ln_f.rstd   final LayerNorm, (B, T, C), (B, T), (B, T)
    acts.logits               (B, T, V)     ln_f @ wte^T (the output layer is tied to wte)
    acts.probs                (B, T, V)     softmax of the logits
    acts.losses               (B, T)        -log probs[target] per position (0 where ignored)
    loss                      ()            mean of acts.losses over the non-ignored positions
    grads.<name>              d loss / d parameter, every parameter (wte's gradient includes the
                              output layer's contribution)
    train.loss                (K,)          K AdamW steps on the same batch: the loss at step k,
                                            before that step's update (train.loss[0] == loss)
    train.lr                  (K,)          the learning rate of step k (warmup, cosine, then min_lr)
    train.grad_norm           (K,)          global gradient norm of step k, before clipping
    final.<name>              the parameters after the K steps

Metadata (strings): format "minigpt-reference", format_version, kind "model", config (JSON of
GPTConfig), settings (JSON of ReferenceSettings: seed, dtype, batch, steps and the AdamW, clipping
and schedule hyperparameters), minigpt_version, doc (a one-line pointer here) and order
(JSON list of the tensor names in computation order; safetensors itself sorts them by name).

One optimizer step, exactly (minigpt.optim, torch.optim.AdamW semantics):
    g <- g * min(1, grad_clip / (norm + 1e-6))   over all gradients together (no clipping if grad_clip is 0)
    p <- p * (1 - lr * weight_decay)              only tensors with 2 or more dimensions
    m <- beta1 m + (1 - beta1) g;  v <- beta2 v + (1 - beta2) g^2
    p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)   with t = k + 1

Per-op files (`minigpt reference ops`, `export_ops`)
----------------------------------------------------
One file per op, metadata kind "op:<name>" and the op's settings (eps, n_head, AdamW
hyperparameters) in `settings`. Inputs, the op's outputs, an upstream gradient d<out> and every
input and parameter gradient d<input>, so a kernel is checked one op at a time:

    linear         x (B,T,Cin), weight (Cin,Cout), bias (Cout,) -> out; dout -> dx, dweight, dbias
    layernorm      x (B,T,C), weight, bias (C,) -> out, mean, rstd (B,T); dout -> dx, dweight, dbias
    attention      qkv (B,T,3C) -> out (B,T,C), att (B,NH,T,T); dout -> dqkv   (n_head in settings)
    gelu, relu     x -> out; dout -> dx
    embedding      inputs (B,T) int32, wte (V,C), wpe (maxT,C) -> out (B,T,C); dout -> dwte, dwpe
    cross_entropy  logits (B,T,V), targets (B,T) int32 (some -1: ignored) -> loss (), probs, losses (B,T);
                   dloss () -> dlogits
    adamw          for a 2-D tensor `w` (decayed) and a 1-D tensor `b` (not decayed):
                   <p>.param, <p>.grad, <p>.m, <p>.v (the state before) -> <p>.param_out, <p>.m_out,
                   <p>.v_out, at step t (settings: t after the increment, lr, beta1, beta2, eps,
                   weight_decay); no clipping here

The checker (`minigpt reference check`, `check`)
------------------------------------------------
Tensor by tensor, a candidate passes when

    max |candidate - golden|  <=  atol + rtol * max |golden|          (over the tensor)

rtol is relative to the tensor's largest magnitude, not to each element: an elementwise relative
error blows up on elements that are near zero by chance (cancellation), where any two correct
implementations differ (the same choice as minigpt.gradcheck). Integer tensors must be equal.
The defaults depend on the lower precision of the two files (TOLERANCES below).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from . import backend
from .config import GPTConfig
from .errors import InputError
from .layers import (
    attention_backward,
    attention_forward,
    cross_entropy_backward,
    cross_entropy_forward,
    embedding_backward,
    embedding_forward,
    gelu_backward,
    gelu_forward,
    layernorm_backward,
    layernorm_forward,
    linear_backward,
    linear_forward,
    relu_backward,
    relu_forward,
)
from .layers.attention import masked_softmax, split_heads
from .model import gpt_backward, gpt_forward, init_params
from .optim import AdamW, clip_grad_norm, get_lr

FORMAT = "minigpt-reference"
FORMAT_VERSION = "1"
DOC = "format documented in minigpt/reference.py and README 'Use minigpt as a reference'"


@dataclass(frozen=True)
class Tolerance:
    rtol: float  # relative to the golden tensor's largest magnitude
    atol: float  # absolute floor, for tensors that are (nearly) all zero


# The default tolerances, by the lower precision of the two files compared. They bound the
# difference between two CORRECT implementations that sum in different orders:
# - float64: 1e-10 of the tensor's scale; a correct float64 implementation lands around 1e-14,
#   through the whole model and 10 AdamW steps (PyTorch float64 measured at 2.5e-15).
# - float32: 1e-5 of the tensor's scale, for the forward and the gradients. Rounding differs by
#   ~1e-7 per op and grows through the layers (PyTorch float32 vs minigpt float32 measured up to
#   1.4e-6 on order-1 weights, tests/test_torch_parity.py). Trained parameters (final.*) are
#   looser, 1e-3: Adam divides by sqrt(v), so a gradient
#   element that is tiny and differs by rounding can move its parameter by up to lr per step in a
#   different direction. A real bug (a wrong sign, scale, mask or index) misses these by orders
#   of magnitude.
TOLERANCES = {
    "float64": {"default": Tolerance(rtol=1e-10, atol=1e-14), "final.": Tolerance(rtol=1e-10, atol=1e-14)},
    "float32": {"default": Tolerance(rtol=1e-5, atol=1e-7), "final.": Tolerance(rtol=1e-3, atol=1e-7)},
}


def default_tolerance(name: str, dtype: str) -> Tolerance:
    table = TOLERANCES[dtype]
    for prefix, tol in table.items():
        if prefix != "default" and name.startswith(prefix):
            return tol
    return table["default"]


@dataclass(frozen=True)
class ReferenceSettings:
    """How a reference file is generated (stored as JSON in its metadata)."""

    seed: int = 0  # draws the batch, the parameter noise and the per-op inputs
    dtype: str = "float64"  # float32 or float64
    batch_size: int = 2  # B
    seq_len: int = 0  # T; 0 means block_size
    param_noise: float = 0.1  # N(0, noise^2) added to GPT-2's init so biases and LayerNorm shifts are nonzero
    steps: int = 10  # K AdamW steps on the batch
    learning_rate: float = 1e-3  # peak, after warmup
    min_lr: float = 1e-4
    warmup_iters: int = 2  # with lr_decay_iters 8 and 10 steps, the steps cover warmup, cosine and the floor
    lr_decay_iters: int = 8
    beta1: float = 0.9
    beta2: float = 0.99
    eps: float = 1e-8
    weight_decay: float = 0.1  # on tensors with 2 or more dimensions
    grad_clip: float = 1.0  # global norm; 0 disables

    def __post_init__(self):
        if self.dtype not in ("float32", "float64"):
            raise InputError(f"dtype must be float32 or float64, got {self.dtype!r}")
        for name in ("seed", "seq_len", "steps", "warmup_iters", "lr_decay_iters"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise InputError(f"{name} must be an integer >= 0, got {v!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise InputError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        for name in ("param_noise", "learning_rate", "min_lr", "eps", "weight_decay", "grad_clip"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise InputError(f"{name} must be a number >= 0, got {v!r}")
        for name in ("beta1", "beta2"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
                raise InputError(f"{name} must be in [0, 1), got {v!r}")


# ----------------------------------------------------------------------------------------------
# the whole model


def make_batch(config: GPTConfig, settings: ReferenceSettings):
    """inputs, targets (B, T) int32: random sequences of T + 1 tokens, shifted by one."""
    T = settings.seq_len or config.block_size
    if T > config.block_size:
        raise InputError(f"seq_len {T} exceeds block_size {config.block_size}")
    rng = np.random.default_rng([settings.seed, 0])
    seq = rng.integers(0, config.vocab_size, size=(settings.batch_size, T + 1)).astype(np.int32)
    return seq[:, :-1].copy(), seq[:, 1:].copy()


def make_params(config: GPTConfig, settings: ReferenceSettings) -> dict:
    """GPT-2's init (minigpt.model.init_params) plus N(0, param_noise^2) on every tensor."""
    dtype = np.dtype(settings.dtype)
    params = init_params(config, settings.seed, np.float64)
    rng = np.random.default_rng([settings.seed, 1])
    return {k: (v + rng.normal(0.0, settings.param_noise, v.shape)).astype(dtype) for k, v in params.items()}


def layernorm_stats(x, eps):
    """mean and rstd (B, T) of a LayerNorm over the last axis, as torch and llm.c define them."""
    mean = x.mean(axis=-1)
    xc = x - mean[..., None]
    return mean, 1.0 / np.sqrt((xc * xc).mean(axis=-1) + eps)


def on_numpy_backend(fn):
    """Reference files come from the specification, the NumPy layers (minigpt.backend), whatever
    backend is active: the numba kernels are checked against them, not the other way round."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with backend.use_backend("numpy"):
            return fn(*args, **kwargs)

    return wrapper


def trace_forward(config: GPTConfig, params: dict, idx, targets) -> dict:
    """The forward of minigpt.model.gpt_forward spelled out op by op with the same layer
    functions, keeping every intermediate under its documented name (without dropout).
    export_model checks that its logits and loss equal gpt_forward's."""
    P = params.get  # None for the biases that bias=False leaves out
    eps = config.layer_norm_epsilon
    act_forward = {"gelu": gelu_forward, "relu": relu_forward}[config.activation]
    acts = {}
    x, _ = embedding_forward(idx, P("wte.weight"), P("wpe.weight"))  # (B, T, C)
    acts["acts.emb"] = x
    C, NH = config.n_embd, config.n_head
    for i in range(config.n_layer):
        p, a = f"h.{i}.", f"acts.h.{i}."
        ln1, _ = layernorm_forward(x, P(p + "ln_1.weight"), P(p + "ln_1.bias"), eps)  # (B, T, C)
        acts[a + "ln_1"] = ln1
        acts[a + "ln_1.mean"], acts[a + "ln_1.rstd"] = layernorm_stats(x, eps)  # (B, T)
        qkv, _ = linear_forward(ln1, P(p + "attn.c_attn.weight"), P(p + "attn.c_attn.bias"))  # (B, T, 3C)
        acts[a + "qkv"] = qkv
        q, k = split_heads(qkv[..., :C], NH), split_heads(qkv[..., C : 2 * C], NH)  # (B, NH, T, hs)
        T = x.shape[1]
        preatt = (q @ k.transpose(0, 1, 3, 2)) * (1.0 / math.sqrt(C // NH))  # (B, NH, T, T)
        acts[a + "preatt"] = preatt
        acts[a + "att"] = masked_softmax(preatt, np.tri(T, dtype=bool))  # (B, NH, T, T)
        atty, _ = attention_forward(qkv, NH)  # (B, T, C)
        acts[a + "atty"] = atty
        attproj, _ = linear_forward(atty, P(p + "attn.c_proj.weight"), P(p + "attn.c_proj.bias"))
        acts[a + "attproj"] = attproj
        x = x + attproj  # residual
        acts[a + "res_1"] = x
        ln2, _ = layernorm_forward(x, P(p + "ln_2.weight"), P(p + "ln_2.bias"), eps)
        acts[a + "ln_2"] = ln2
        acts[a + "ln_2.mean"], acts[a + "ln_2.rstd"] = layernorm_stats(x, eps)
        fc, _ = linear_forward(ln2, P(p + "mlp.c_fc.weight"), P(p + "mlp.c_fc.bias"))  # (B, T, 4C)
        acts[a + "fc"] = fc
        fc_act, _ = act_forward(fc)
        acts[a + "fc_act"] = fc_act
        fcproj, _ = linear_forward(fc_act, P(p + "mlp.c_proj.weight"), P(p + "mlp.c_proj.bias"))  # (B, T, C)
        acts[a + "fcproj"] = fcproj
        x = x + fcproj  # residual
        acts[a + "res_2"] = x
    lnf, _ = layernorm_forward(x, P("ln_f.weight"), P("ln_f.bias"), eps)
    acts["acts.ln_f"] = lnf
    acts["acts.ln_f.mean"], acts["acts.ln_f.rstd"] = layernorm_stats(x, eps)
    logits, _ = linear_forward(lnf, P("wte.weight").T)  # (B, T, V)
    acts["acts.logits"] = logits
    loss, (probs, _, _) = cross_entropy_forward(logits, targets)
    acts["acts.probs"] = probs
    valid = targets != -1
    safe = np.where(valid, targets, 0)
    picked = np.take_along_axis(probs, safe[..., None], axis=-1)[..., 0]  # (B, T)
    acts["acts.losses"] = np.where(valid, -np.log(picked), 0.0).astype(logits.dtype)
    return acts, logits, loss


@on_numpy_backend
def export_model(config: GPTConfig, settings: ReferenceSettings) -> tuple[dict, dict]:
    """(tensors, metadata) of a whole-model reference file, as the module docstring lays out."""
    if config.dropout != 0.0:
        raise InputError("reference files are made without dropout (its masks are random draws no other "
                         "implementation reproduces): use --dropout 0")
    dtype = np.dtype(settings.dtype)
    idx, targets = make_batch(config, settings)
    params = make_params(config, settings)
    tensors = {"inputs": idx, "targets": targets}
    tensors.update({"params." + k: v.copy() for k, v in params.items()})
    acts, t_logits, t_loss = trace_forward(config, params, idx, targets)
    logits, loss, cache = gpt_forward(config, params, idx, targets)
    if not (np.array_equal(t_logits, logits) and t_loss == loss):
        # the op-by-op walk must be the model itself; if the model changes, so must the walk
        raise RuntimeError("trace_forward no longer reproduces gpt_forward exactly: update minigpt/reference.py")
    tensors.update(acts)
    tensors["loss"] = np.array(loss, dtype=dtype)
    tensors.update({"grads." + k: g for k, g in gpt_backward(cache).items()})
    # K AdamW steps on the same batch, as train.py takes them
    s = settings
    opt = AdamW(params, s.beta1, s.beta2, s.eps, s.weight_decay)
    losses, lrs, norms = [], [], []
    for step in range(s.steps):
        lr = get_lr(step, s.learning_rate, s.warmup_iters, s.lr_decay_iters, s.min_lr)
        _, step_loss, cache = gpt_forward(config, params, idx, targets)
        grads = gpt_backward(cache)
        norms.append(clip_grad_norm(grads, s.grad_clip))
        opt.step(params, grads, lr)
        losses.append(step_loss)
        lrs.append(lr)
    tensors["train.loss"] = np.array(losses, dtype=dtype)
    tensors["train.lr"] = np.array(lrs, dtype=dtype)
    tensors["train.grad_norm"] = np.array(norms, dtype=dtype)
    tensors.update({"final." + k: v for k, v in params.items()})
    meta = {"kind": "model", "config": json.dumps(config.to_dict()), "settings": json.dumps(dataclasses.asdict(s))}
    return tensors, meta


# ----------------------------------------------------------------------------------------------
# per-op files

OPS = ("linear", "layernorm", "attention", "gelu", "relu", "embedding", "cross_entropy", "adamw")


@on_numpy_backend
def export_ops(settings: ReferenceSettings, B=2, T=5, C=8, NH=2, V=11, maxT=8) -> dict[str, tuple[dict, dict]]:
    """{op name: (tensors, metadata)} for every op in OPS, with order-1 random inputs."""
    dtype = np.dtype(settings.dtype)
    rng = np.random.default_rng([settings.seed, 2])

    def randn(*shape):
        return rng.standard_normal(shape).astype(dtype)

    files = {}

    def add(name, tensors, **op_settings):
        op_settings.setdefault("dtype", settings.dtype)
        op_settings.setdefault("seed", settings.seed)
        files[name] = (tensors, {"kind": "op:" + name, "settings": json.dumps(op_settings)})

    x, w, b = randn(B, T, C), randn(C, 3 * C), randn(3 * C)
    out, cache = linear_forward(x, w, b)
    dout = randn(*out.shape)
    dx, dw, db = linear_backward(dout, cache)
    add("linear", {"x": x, "weight": w, "bias": b, "out": out, "dout": dout, "dx": dx, "dweight": dw, "dbias": db})

    eps = 1e-5
    x, w, b = randn(B, T, C) * 2 + 0.5, 1 + 0.1 * randn(C), 0.1 * randn(C)
    out, cache = layernorm_forward(x, w, b, eps)
    mean, rstd = layernorm_stats(x, eps)
    dout = randn(*out.shape)
    dx, dw, db = layernorm_backward(dout, cache)
    add("layernorm", {"x": x, "weight": w, "bias": b, "out": out, "mean": mean, "rstd": rstd, "dout": dout,
                      "dx": dx, "dweight": dw, "dbias": db}, eps=eps)

    qkv = randn(B, T, 3 * C)
    out, cache = attention_forward(qkv, NH)
    q, k = split_heads(qkv[..., :C], NH), split_heads(qkv[..., C : 2 * C], NH)
    att = masked_softmax((q @ k.transpose(0, 1, 3, 2)) / math.sqrt(C // NH), np.tri(T, dtype=bool))
    dout = randn(*out.shape)
    add("attention", {"qkv": qkv, "out": out, "att": att, "dout": dout, "dqkv": attention_backward(dout, cache)},
        n_head=NH)

    for name, fwd, bwd in (("gelu", gelu_forward, gelu_backward), ("relu", relu_forward, relu_backward)):
        x = randn(B, T, 4 * C) * 2
        out, cache = fwd(x)
        dout = randn(*out.shape)
        add(name, {"x": x, "out": out, "dout": dout, "dx": bwd(dout, cache)})

    idx = rng.integers(0, V, (B, T)).astype(np.int32)
    idx[0, :2] = idx[0, 2]  # repeated ids: the backward must accumulate, not overwrite
    wte, wpe = randn(V, C), randn(maxT, C)
    out, cache = embedding_forward(idx, wte, wpe)
    dout = randn(*out.shape)
    dwte, dwpe = embedding_backward(dout, cache)
    add("embedding", {"inputs": idx, "wte": wte, "wpe": wpe, "out": out, "dout": dout, "dwte": dwte, "dwpe": dwpe})

    logits = randn(B, T, V) * 2
    targets = rng.integers(0, V, (B, T)).astype(np.int32)
    targets[0, :2] = -1  # ignored positions
    loss, cache = cross_entropy_forward(logits, targets)
    probs = cache[0]
    valid = targets != -1
    picked = np.take_along_axis(probs, np.where(valid, targets, 0)[..., None], axis=-1)[..., 0]
    dloss = np.array(1.5, dtype=dtype)  # not 1, so a backward that ignores it fails
    add("cross_entropy", {"logits": logits, "targets": targets, "loss": np.array(loss, dtype=dtype), "probs": probs,
                          "losses": np.where(valid, -np.log(picked), 0.0).astype(dtype), "dloss": dloss,
                          "dlogits": cross_entropy_backward(cache, float(dloss))}, ignore_index=-1)

    hp = {"lr": 1e-2, "beta1": settings.beta1, "beta2": settings.beta2, "eps": settings.eps, "weight_decay": 0.1}
    p = {"w": randn(C, 4), "b": randn(4)}
    opt = AdamW(p, hp["beta1"], hp["beta2"], hp["eps"], hp["weight_decay"])
    opt.t = 2  # a state in the middle of training, so the bias corrections matter
    opt.m = {k: 0.1 * randn(*v.shape) for k, v in p.items()}
    opt.v = {k: np.abs(0.01 * randn(*v.shape)) for k, v in p.items()}
    grads = {k: randn(*v.shape) for k, v in p.items()}
    tensors = {}
    for k, v in p.items():
        tensors.update({f"{k}.param": v.copy(), f"{k}.grad": grads[k], f"{k}.m": opt.m[k].copy(),
                        f"{k}.v": opt.v[k].copy()})
    opt.step(p, grads, hp["lr"])
    for k, v in p.items():
        tensors.update({f"{k}.param_out": v, f"{k}.m_out": opt.m[k], f"{k}.v_out": opt.v[k]})
    add("adamw", tensors, t=opt.t, **hp)
    return files


# ----------------------------------------------------------------------------------------------
# files


def write_reference(path, tensors: dict, meta: dict):
    """Write a reference file atomically (temporary name, then rename). meta: kind, config, settings."""
    from . import __version__

    path = Path(path)
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "minigpt_version": __version__, "doc": DOC}
    metadata.update(meta)
    metadata["order"] = json.dumps(list(tensors))  # safetensors sorts names; keep the computation order
    # C-contiguous copies (safetensors 0.8.0 issue #825); not ascontiguousarray, which turns a
    # 0-d array (the loss) into shape (1,)
    arrays = {k: np.array(v, order="C") for k, v in tensors.items()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror}") from None
    os.close(fd)
    try:
        save_file(arrays, tmp, metadata=metadata)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a golden file is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_safetensors(path) -> tuple[dict, dict]:
    """(tensors, metadata) of any safetensors file; InputError when it cannot be read."""
    try:
        with safe_open(str(path), framework="np") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (not a dict)
    except Exception as e:  # noqa: BLE001 (safetensors raises several types for bad files)
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{path}: not a readable safetensors file ({first})") from None
    try:
        order = [name for name in json.loads(metadata.get("order", "[]")) if name in tensors]
    except (json.JSONDecodeError, TypeError):
        order = []
    order += sorted(set(tensors) - set(order))
    return {name: tensors[name] for name in order}, metadata


def file_config(meta: dict):
    """The GPTConfig stored in a reference file's metadata, or None."""
    return GPTConfig.from_dict(json.loads(meta["config"])) if "config" in meta else None


def load_reference(path, config: GPTConfig | None = None) -> tuple[dict, dict]:
    """(tensors, metadata) of a reference file, or of an llm.c file (model checkpoint or debug
    state, recognized by its magic number) under the reference names: a checkpoint gives
    params.<name>, a debug state inputs, targets, acts.logits, loss and grads.<name>. Reading
    a debug state needs the model's config (from the golden file it is compared with)."""
    from . import llmc

    path = Path(path)
    if not path.is_file():
        raise InputError(f"file not found: {path}")
    magic = llmc.peek_magic(path)
    if magic == llmc.MODEL_MAGIC:
        cfg, params = llmc.read_model(path)
        return {"params." + k: v for k, v in params.items()}, {"kind": "llmc-model", "config": json.dumps(cfg.to_dict())}
    if magic == llmc.STATE_MAGIC:
        if config is None:
            raise InputError(f"{path} is an llm.c debug state: compare it with a golden file that has a config")
        state = llmc.read_state(path, config)
        tensors = {"inputs": state["inputs"], "targets": state["targets"], "acts.logits": state["logits"],
                   "loss": state["loss"]}
        tensors.update({"grads." + k: v for k, v in state["grads"].items()})
        return tensors, {"kind": "llmc-state"}
    return read_safetensors(path)


# ----------------------------------------------------------------------------------------------
# the checker


@dataclass
class TensorResult:
    name: str
    shape: tuple
    status: str  # "OK", "NOT OK", or "SHAPE" (shapes differ) / "DTYPE" (integer vs float)
    max_abs_diff: float = 0.0
    index: tuple = ()
    golden: float = 0.0  # both values where |difference| is largest
    candidate: float = 0.0
    rel_error: float = 0.0  # max|diff| / max|golden|
    tolerance_used: float = 0.0  # max|diff| / (atol + rtol * max|golden|); <= 1 passes
    note: str = ""

    @property
    def ok(self):
        return self.status == "OK"


@dataclass
class CheckReport:
    dtype: str
    results: list
    missing: list  # in the golden file, not in the candidate
    extra: list  # in the candidate, not in the golden file
    allow_missing: bool = False

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results) and (self.allow_missing or not self.missing)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "dtype": self.dtype, "missing": self.missing, "extra": self.extra,
                "failed": [r.name for r in self.results if not r.ok],
                "tensors": [dataclasses.asdict(r) for r in self.results]}


def float_kind(a) -> str | None:
    return str(a.dtype) if a.dtype in (np.float32, np.float64) else ("float32" if a.dtype == np.float16 else None)


def compare_tensor(name, golden, candidate, dtype: str, atol=None, rtol=None) -> TensorResult:
    g, c = np.asarray(golden), np.asarray(candidate)
    if g.shape != c.shape:
        return TensorResult(name, g.shape, "SHAPE", note=f"golden shape {g.shape}, candidate shape {c.shape}")
    g_int, c_int = np.issubdtype(g.dtype, np.integer), np.issubdtype(c.dtype, np.integer)
    if g_int != c_int:
        return TensorResult(name, g.shape, "DTYPE", note=f"golden {g.dtype}, candidate {c.dtype}")
    tol = default_tolerance(name, dtype)
    atol = tol.atol if atol is None else atol
    rtol = tol.rtol if rtol is None else rtol
    if g_int:
        atol, rtol = 0.0, 0.0  # ids must be equal
    g64, c64 = g.astype(np.float64), c.astype(np.float64)
    with np.errstate(invalid="ignore"):
        diff = np.abs(c64 - g64)
    same = (np.isnan(c64) & np.isnan(g64)) | (np.isinf(c64) & (c64 == g64))  # nan, inf: equal when both are
    diff = np.where(same, 0.0, np.where(np.isnan(diff), np.inf, diff))
    index = tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), g.shape)) if g.size else ()
    max_diff = float(diff.max(initial=0.0))
    scale = float(np.abs(g64[np.isfinite(g64)]).max(initial=0.0))
    allowed = atol + rtol * scale
    used = max_diff / allowed if allowed > 0 else (0.0 if max_diff == 0 else math.inf)
    rel = max_diff / scale if scale > 0 else (0.0 if max_diff == 0 else math.inf)
    return TensorResult(name, tuple(g.shape), "OK" if used <= 1.0 else "NOT OK", max_diff, index,
                        float(g64[index]) if g.size else 0.0, float(c64[index]) if g.size else 0.0, rel, used)


def check(golden: dict, candidate: dict, atol=None, rtol=None, allow_missing=False) -> CheckReport:
    """Compare two dicts of tensors by name, in the golden file's order (computation order for
    files minigpt writes, so the first failing tensor is where a bug starts). atol / rtol override
    the defaults of TOLERANCES, which follow the lower precision of the two files."""
    kinds = {float_kind(a) for a in list(golden.values()) + list(candidate.values())} - {None}
    dtype = "float32" if "float32" in kinds or not kinds else "float64"
    results = [compare_tensor(name, g, candidate[name], dtype, atol, rtol) for name, g in golden.items()
               if name in candidate]
    missing = [name for name in golden if name not in candidate]
    extra = [name for name in candidate if name not in golden]
    return CheckReport(dtype, results, missing, extra, allow_missing)


def share(used: float) -> str:
    """The share of the tolerance a difference uses: a percentage, or a multiple when far above."""
    return f"{100 * used:.1f}%" if used < 10 else f"{used:.2g}x"


def format_report(report: CheckReport, only_failures: bool = False) -> str:
    """The checker's table, one row per tensor, then missing and extra tensors and a verdict."""
    rows = [("name", "shape", "max |diff|", "at index", "golden", "candidate", "rel err", "tol used", "")]
    for r in report.results:
        if only_failures and r.ok:
            continue
        if r.status in ("SHAPE", "DTYPE"):
            rows.append((r.name, str(r.shape), "-", "-", "-", "-", "-", "-", f"NOT OK ({r.note})"))
            continue
        rows.append((r.name, str(r.shape), f"{r.max_abs_diff:.3e}", str(r.index), f"{r.golden:.10g}",
                     f"{r.candidate:.10g}", f"{r.rel_error:.2e}", share(r.tolerance_used), r.status))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    if report.allow_missing and report.missing:
        shown = ", ".join(report.missing[:4]) + (", ..." if len(report.missing) > 4 else "")
        lines.append(f"not compared (--allow-missing): {len(report.missing)} golden tensors the candidate "
                     f"does not have ({shown})")
    else:
        lines += [f"MISSING {name}: in the golden file, not in the candidate" for name in report.missing]
    for name in report.extra:
        lines.append(f"EXTRA {name}: in the candidate, not in the golden file (not compared)")
    failed = [r.name for r in report.results if not r.ok]
    n = len(report.results)
    if report.ok:
        lines.append(f"OK: {n} tensors match ({report.dtype} tolerances)")
    else:
        parts = []
        if failed:
            parts.append(f"{len(failed)} of {n} tensors differ (first: {failed[0]})")
        if report.missing and not report.allow_missing:
            parts.append(f"{len(report.missing)} missing")
        lines.append("NOT OK: " + ", ".join(parts) + f" ({report.dtype} tolerances)")
    return "\n".join(lines)
