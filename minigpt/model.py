"""The GPT-2 model as a sequence of layer calls: parameters, forward and hand-written backward.

Architecture (GPT-2, pre-LayerNorm), as Hugging Face's GPT2LMHeadModel and nanoGPT's GPT:
    x = wte[idx] + wpe[0..T-1]                                   embedding (+ dropout)
    L times:  x = x + dropout(c_proj(attention(c_attn(ln_1(x)))))
              x = x + dropout(mlp.c_proj(act(mlp.c_fc(ln_2(x)))))
    logits = ln_f(x) @ wte^T                                     the output layer is tied to wte

Parameters are a flat dict name -> ndarray, named and laid out exactly as Hugging Face's GPT-2
state dict (linear weights are (in, out), as HF's Conv1D), so weights move between minigpt,
Hugging Face and safetensors files without renaming. With bias=False the bias tensors are absent.
The dtype of every computation follows the parameters (float32 or float64).

F below is the active backend's set of layer functions (minigpt.backend): the NumPy layers of
minigpt/layers, the specification, or their numba twins in minigpt/kernels, which take the same
arguments and return the same results. The forward keeps F in its cache so the backward runs on
the same set.

Legend: B batch, T time, C channels (n_embd), NH heads, hs head size, V vocabulary,
L layers, maxT block_size.
"""

from __future__ import annotations

import numpy as np

from . import backend
from .config import GPTConfig
from .errors import InputError
from .layers import IGNORE_INDEX

# ----------------------------------------------------------------------------------------------
# parameters


def param_shapes(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter's name and shape, in Hugging Face GPT-2 state-dict order.

    A = NH_i * hs is layer i's attention width and F its MLP width: C and 4C in GPT-2, narrower
    after structured pruning (config.head_counts, config.mlp_widths)."""
    V, maxT, C = config.vocab_size, config.block_size, config.n_embd
    shapes = {"wte.weight": (V, C), "wpe.weight": (maxT, C)}
    for i in range(config.n_layer):
        p = f"h.{i}."
        A, F = config.layer_heads(i) * config.head_size, config.layer_mlp_width(i)
        shapes[p + "ln_1.weight"] = (C,)
        shapes[p + "ln_1.bias"] = (C,)
        shapes[p + "attn.c_attn.weight"] = (C, 3 * A)
        shapes[p + "attn.c_attn.bias"] = (3 * A,)
        shapes[p + "attn.c_proj.weight"] = (A, C)
        shapes[p + "attn.c_proj.bias"] = (C,)
        shapes[p + "ln_2.weight"] = (C,)
        shapes[p + "ln_2.bias"] = (C,)
        shapes[p + "mlp.c_fc.weight"] = (C, F)
        shapes[p + "mlp.c_fc.bias"] = (F,)
        shapes[p + "mlp.c_proj.weight"] = (F, C)
        shapes[p + "mlp.c_proj.bias"] = (C,)
    shapes["ln_f.weight"] = (C,)
    shapes["ln_f.bias"] = (C,)
    if not config.bias:
        shapes = {name: s for name, s in shapes.items() if not name.endswith(".bias")}
    return shapes


def init_params(config: GPTConfig, seed: int = 0, dtype=np.float32) -> dict[str, np.ndarray]:
    """GPT-2 initialization: weights normal(0, 0.02), the residual projections (attn.c_proj and
    mlp.c_proj) normal(0, 0.02 / sqrt(2L)) so the residual stream's variance does not grow with
    depth, biases 0, LayerNorm weights 1.

    Values are drawn in float64 and then cast, so the same seed gives the same model in float32
    and float64 (up to float32 rounding).
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise InputError(f"dtype must be float32 or float64, got {dtype}")
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in param_shapes(config).items():
        if name.endswith(".bias"):
            p = np.zeros(shape)
        elif ".ln_" in name or name.startswith("ln_f"):
            p = np.ones(shape)
        else:
            std = 0.02 / np.sqrt(2 * config.n_layer) if name.endswith("c_proj.weight") else 0.02
            p = rng.normal(0.0, std, size=shape)
        params[name] = p.astype(dtype)
    return params


def num_params(params: dict[str, np.ndarray]) -> int:
    return sum(p.size for p in params.values())


def check_tokens(idx, config: GPTConfig, what: str = "token ids") -> np.ndarray:
    """Validate token ids (B, T) for the model: integers in [0, V) with 1 <= T <= block_size."""
    idx = np.asarray(idx)
    if idx.ndim != 2:
        raise InputError(f"{what} must have shape (B, T), got shape {idx.shape}")
    if not np.issubdtype(idx.dtype, np.integer):
        raise InputError(f"{what} must be integers, got dtype {idx.dtype}")
    if idx.shape[1] < 1 or idx.shape[1] > config.block_size:
        raise InputError(f"{what}: sequence length T={idx.shape[1]} must be in [1, block_size={config.block_size}]")
    lo, hi = (int(idx.min()), int(idx.max())) if idx.size else (0, 0)
    if lo < 0 or hi >= config.vocab_size:
        bad = lo if lo < 0 else hi
        raise InputError(f"{what}: id {bad} is out of range [0, {config.vocab_size}) (vocab_size)")
    return idx


def check_targets(targets, shape, config: GPTConfig) -> np.ndarray:
    """Validate targets: integers of the token ids' shape, in [0, V) or IGNORE_INDEX."""
    targets = np.asarray(targets)
    if targets.shape != shape:
        raise InputError(f"targets shape {targets.shape} must equal the token ids' shape {shape}")
    ok = (targets == IGNORE_INDEX) | ((targets >= 0) & (targets < config.vocab_size))
    if not np.issubdtype(targets.dtype, np.integer) or not ok.all():
        raise InputError(f"targets must be integers in [0, {config.vocab_size}) or {IGNORE_INDEX} (ignored)")
    return targets


# ----------------------------------------------------------------------------------------------
# one transformer block


def block_forward(config: GPTConfig, params, i: int, x, rng=None, kv=None, F=None):
    """One pre-LayerNorm block. x: (B, T, C) -> (B, T, C). Returns (out, cache).
    kv: a KVCache (generate.py) for incremental decoding, or None.
    F: the layer functions (minigpt.backend.ops()); None for the active backend's."""
    F = F or backend.ops()
    p = f"h.{i}."
    P = params.get  # None for a bias that bias=False leaves out
    eps, drop = config.layer_norm_epsilon, config.dropout
    act_forward = getattr(F, f"{config.activation}_forward")  # gelu_forward or relu_forward
    # attention branch
    ln1, ln1_cache = F.layernorm_forward(x, P(p + "ln_1.weight"), P(p + "ln_1.bias"), eps)  # (B, T, C)
    qkv, qkv_cache = F.linear_forward(ln1, P(p + "attn.c_attn.weight"), P(p + "attn.c_attn.bias"))  # (B, T, 3A)
    if kv is None:  # A = NH_i * hs: C unless structured pruning removed heads of this layer
        atty, att_cache = F.attention_forward(qkv, config.layer_heads(i), drop, rng)  # (B, T, A)
    else:  # decoding: also attend to the cached keys and values of earlier positions
        atty, att_cache = kv.attend(i, qkv), None
    attproj, attproj_cache = F.linear_forward(atty, P(p + "attn.c_proj.weight"), P(p + "attn.c_proj.bias"))
    attproj, attdrop_cache = F.dropout_forward(attproj, drop, rng)
    x = x + attproj  # residual
    # MLP branch
    ln2, ln2_cache = F.layernorm_forward(x, P(p + "ln_2.weight"), P(p + "ln_2.bias"), eps)  # (B, T, C)
    fch, fc_cache = F.linear_forward(ln2, P(p + "mlp.c_fc.weight"), P(p + "mlp.c_fc.bias"))  # (B, T, F), F = 4C
    fch_act, act_cache = act_forward(fch)  # (B, T, F)
    fcproj, fcproj_cache = F.linear_forward(fch_act, P(p + "mlp.c_proj.weight"), P(p + "mlp.c_proj.bias"))
    fcproj, fcdrop_cache = F.dropout_forward(fcproj, drop, rng)
    x = x + fcproj  # residual
    cache = (ln1_cache, qkv_cache, att_cache, attproj_cache, attdrop_cache,
             ln2_cache, fc_cache, act_cache, fcproj_cache, fcdrop_cache)
    return x, cache


def block_backward(config: GPTConfig, i: int, dx, cache, grads, F=None):
    """The block in reverse. dx: (B, T, C), the gradient at the block's output; returns the
    gradient at its input and writes the block's parameter gradients into grads.
    F: the layer functions that ran the forward (None: the active backend's)."""
    F = F or backend.ops()
    p = f"h.{i}."
    (ln1_cache, qkv_cache, att_cache, attproj_cache, attdrop_cache,
     ln2_cache, fc_cache, act_cache, fcproj_cache, fcdrop_cache) = cache
    act_backward = getattr(F, f"{config.activation}_backward")
    g = grads  # bias gradients are None when bias=False; gpt_backward drops them
    # MLP branch: x_out = x_mid + dropout(c_proj(act(c_fc(ln_2(x_mid)))))
    dfcproj = F.dropout_backward(dx, fcdrop_cache)  # the residual passes dx to both paths
    dfch_act, g[p + "mlp.c_proj.weight"], g[p + "mlp.c_proj.bias"] = F.linear_backward(dfcproj, fcproj_cache)
    dfch = act_backward(dfch_act, act_cache)  # (B, T, 4C)
    dln2, g[p + "mlp.c_fc.weight"], g[p + "mlp.c_fc.bias"] = F.linear_backward(dfch, fc_cache)
    dx_ln2, g[p + "ln_2.weight"], g[p + "ln_2.bias"] = F.layernorm_backward(dln2, ln2_cache)
    dx = dx + dx_ln2  # gradient at x_mid: residual path + MLP path
    # attention branch: x_mid = x_in + dropout(c_proj(attention(c_attn(ln_1(x_in)))))
    dattproj = F.dropout_backward(dx, attdrop_cache)
    datty, g[p + "attn.c_proj.weight"], g[p + "attn.c_proj.bias"] = F.linear_backward(dattproj, attproj_cache)
    dqkv = F.attention_backward(datty, att_cache)  # (B, T, 3C)
    dln1, g[p + "attn.c_attn.weight"], g[p + "attn.c_attn.bias"] = F.linear_backward(dqkv, qkv_cache)
    dx_ln1, g[p + "ln_1.weight"], g[p + "ln_1.bias"] = F.layernorm_backward(dln1, ln1_cache)
    return dx + dx_ln1  # gradient at x_in


# ----------------------------------------------------------------------------------------------
# the whole model


def gpt_forward(config: GPTConfig, params, idx, targets=None, rng=None, kv=None, hidden=None):
    """
    Parameters
    ----------
    config : GPTConfig
    params : dict name -> ndarray, as init_params returns
    idx : int array of shape (B, T), token ids, T <= block_size
    targets : int array of shape (B, T) or None. targets[b, t] is the token that should follow
        idx[b, t] (the data loader shifts by one); IGNORE_INDEX (-1) skips a position.
    rng : numpy Generator for the dropout masks, or None to run without dropout (evaluation).
        A generator seeded the same way gives the same masks.
    kv : a KVCache (generate.py) holding the keys and values of the kv.length earlier positions,
        or None. With it, idx holds the next tokens only, at positions kv.length onwards, and
        the cache is extended by them. Inference only: no dropout and no backward.
    hidden : a list or None. A list receives the residual stream (B, T, C) as Hugging Face's
        output_hidden_states: hidden[0] is the embeddings' output (after dropout), hidden[i + 1]
        block i's output. Distillation compares them (compress/distill.py).

    Returns
    -------
    logits : array of shape (B, T, V)
    loss : float (mean cross-entropy over non-ignored targets), or None without targets
    cache : everything gpt_backward needs
    """
    idx = check_tokens(idx, config)
    if kv is not None and targets is not None:
        raise InputError("the KV cache is for inference only: call gpt_forward with targets and no kv to train")
    start = 0 if kv is None else kv.length
    if start + idx.shape[1] > config.block_size:
        raise InputError(f"positions up to {start + idx.shape[1]} exceed block_size {config.block_size}")
    if targets is not None:
        targets = check_targets(targets, idx.shape, config)
    P = params.get
    F = backend.ops()  # the layer functions of the active backend
    if kv is not None:
        rng = None  # no dropout while decoding
    x, emb_cache = F.embedding_forward(idx, P("wte.weight"), P("wpe.weight"), start)  # (B, T, C)
    x, embdrop_cache = F.dropout_forward(x, config.dropout, rng)
    if hidden is not None:
        hidden.append(x)
    block_caches = []
    for i in range(config.n_layer):
        x, block_cache = block_forward(config, params, i, x, rng, kv, F)  # (B, T, C)
        block_caches.append(block_cache)
        if hidden is not None:
            hidden.append(x)
    lnf, lnf_cache = F.layernorm_forward(x, P("ln_f.weight"), P("ln_f.bias"), config.layer_norm_epsilon)
    logits, head_cache = F.linear_forward(lnf, P("wte.weight").T)  # (B, T, C) @ (C, V) -> (B, T, V), tied
    loss, ce_cache = F.cross_entropy_forward(logits, targets) if targets is not None else (None, None)
    if kv is not None:
        kv.length += idx.shape[1]
    cache = (config, F, emb_cache, embdrop_cache, block_caches, lnf_cache, head_cache, ce_cache)
    return logits, loss, cache


def gpt_backward(cache, dloss: float = 1.0, dlogits=None, dhidden=None):
    """The forward in reverse: returns a dict of gradients with the same names and shapes as the
    parameters. dloss scales the seed gradient (e.g. 1 / grad_accum_steps).

    For losses computed outside the model (distillation, compress/distill.py):
    dlogits : (B, T, V) or None, the gradient at the logits; it replaces the cross-entropy's
        (dloss is then not applied: scale dlogits yourself), and the forward needs no targets.
    dhidden : dict {j: (B, T, C)} or None, extra gradients at the hidden state hidden[j] of
        gpt_forward (j = 0 the embeddings' output, j = i + 1 block i's output), added to what
        flows back from the layers above (hidden-state losses)."""
    config, F, emb_cache, embdrop_cache, block_caches, lnf_cache, head_cache, ce_cache = cache
    if dlogits is None:
        if ce_cache is None:
            raise InputError("gpt_backward needs a loss: call gpt_forward with targets")
        dlogits = F.cross_entropy_backward(ce_cache, dloss)  # (B, T, V)
    grads = {}
    dlnf, dwte_head, _ = F.linear_backward(dlogits, head_cache)  # dwte_head: (C, V), of wte^T
    dx, grads["ln_f.weight"], grads["ln_f.bias"] = F.layernorm_backward(dlnf, lnf_cache)  # (B, T, C)
    dhidden = dhidden or {}
    for i in reversed(range(config.n_layer)):
        if i + 1 in dhidden:
            dx = dx + dhidden[i + 1]  # block i's output also feeds a hidden-state loss
        dx = block_backward(config, i, dx, block_caches[i], grads, F)  # (B, T, C)
    if 0 in dhidden:
        dx = dx + dhidden[0]  # the embeddings' output (block 0's input) feeds one too
    dx = F.dropout_backward(dx, embdrop_cache)
    dwte, grads["wpe.weight"] = F.embedding_backward(dx, emb_cache)
    grads["wte.weight"] = dwte + dwte_head.T  # tied: the embedding and the output layer both use wte
    return {name: grads[name] for name in param_shapes(config)}  # parameter order; drops None biases
