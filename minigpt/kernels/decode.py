"""One new token through the whole model with a KV cache: the decoding step of sampling.

Matches minigpt.model.gpt_forward(config, params, idx, kv=cache) for batch 1 and one new token
(idx of shape (1, 1) at position cache.length): the same logits (V,) of the new position, and the
cache gains its keys and values (float64 to 1e-12, float32 to 1e-5, tests/test_decode.py). The
numba backend's sampling uses it (minigpt.generate.forward_logits); the prompt itself, several
positions at once, still runs through gpt_forward.

Why. At batch 1 and one position every layer is a vector operation, and the step is bound by
memory: each weight is read once per token (42 MB of float32 at the small preset, about 2.5 ms at
this machine's ~18 GB/s). gpt_forward adds about 70 small NumPy and kernel calls per token, each
with its own temporaries and shape handling; here a block is four BLAS matrix-vector products
into preallocated vectors and four small kernels for what lies between them.

What it is made of. `Decoder.__call__` is block_forward for one position, in the same order:
ln_1, c_attn, attention over the cache, c_proj, residual, ln_2, c_fc, activation, mlp.c_proj,
residual. The products y = x @ W (W stored (in, out), as HF's Conv1D) stay in BLAS: sgemv uses
both cores and streams the weights faster than a numba loop (2.5 against 2.8 ms per token for the
small preset's 24 products, measured). The kernels add the biases and residuals and call the
LayerNorm, cached-attention and GELU kernels of layernorm.py, attention.py and activation.py,
inlined (so their source is part of these kernels' cache key, see `twins`).

Legend: C channels, A = NH * hs attention width, F MLP width (4C), V vocabulary.
"""

from types import SimpleNamespace

import numpy as np

from ..model import param_shapes
from . import activation, attention, contiguous, jitable, layernorm, twins


def _inline(twin, dtype):
    """A kernel of another module, as a function this one can call (see kernels.jitable)."""
    return jitable(twin.build(dtype))


@twins(depends=(layernorm,))
def _residual_layernorm(dtype):
    layer_norm = _inline(layernorm._forward, dtype)  # (x (N, C), w, b, eps, out, xhat, rstd)

    def kernel(x, branch, branch_bias, w, b, eps, out):  # all (C,) but out (1, C)
        # x += branch + branch_bias (a residual add, skipped when branch is empty), then out = LN(x)
        C = x.shape[0]
        if branch.shape[0]:
            for j in range(C):
                x[j] += branch[j] + branch_bias[j]
        layer_norm(x.reshape((1, C)), w, b, eps, out, np.empty((1, C), dtype), np.empty(1, dtype))

    return kernel


@twins(depends=(attention,))
def _attend(dtype):
    attend = _inline(attention._decode, dtype)  # (qkv (B, Tn, 3A), NH, k_cache, v_cache, start, out)

    def kernel(qkv, bias, n_head, k_cache, v_cache, pos, out):  # qkv (3A,) -> out (A,)
        A3 = qkv.shape[0]
        for j in range(A3):
            qkv[j] += bias[j]
        attend(qkv.reshape((1, 1, A3)), n_head, k_cache, v_cache, pos, out.reshape((1, 1, A3 // 3)))

    return kernel


@twins(depends=(activation,))
def _activation(dtype):
    zero = dtype(0.0)
    gelu = _inline(activation._forward, dtype)  # (x, out, t, n_chunks)

    def kernel(h, bias, relu, out):  # h (F,) the c_fc output without its bias -> out (F,)
        F = h.shape[0]
        for j in range(F):
            h[j] += bias[j]
        if relu:
            for j in range(F):  # x * (x > 0), as minigpt.layers.activation.relu_forward
                out[j] = h[j] * (h[j] > zero)
        else:
            gelu(h, out, np.empty(F, dtype), 1)

    return kernel


class Decoder:
    """The decoding step for one model and one batch-1 KVCache: decoder(token) -> logits (V,) of
    that token at position cache.length, extending the cache (as gpt_forward with kv=cache).

    Built once per sampling run: it gathers each block's arrays (C-contiguous, in the parameters'
    dtype; zero biases when bias=False) and the step's scratch vectors, so a step allocates
    almost nothing."""

    def __init__(self, config, params, kv):
        if kv.k[0].shape[0] != 1:
            raise ValueError("the compiled decoding step runs batch 1 only")
        self.config, self.params, self.kv = config, params, kv
        dtype = self.dtype = params["wte.weight"].dtype
        C = config.n_embd
        shapes = param_shapes(config.replace(bias=True))  # every tensor, biases included

        def get(name):  # (weight, bias): the bias is zeros where bias=False leaves it out
            bias = name.replace(".weight", ".bias")
            return contiguous(params[name], dtype), (
                contiguous(params[bias], dtype) if bias in params else np.zeros(shapes[bias], dtype))

        self.eps = dtype.type(config.layer_norm_epsilon)
        self.relu = config.activation == "relu"
        self.wte, self.wpe = contiguous(params["wte.weight"], dtype), contiguous(params["wpe.weight"], dtype)
        self.ln_f = get("ln_f.weight")
        self.blocks = []
        for i in range(config.n_layer):
            p = f"h.{i}."
            A3, F = shapes[p + "attn.c_attn.bias"][0], shapes[p + "mlp.c_fc.bias"][0]  # 3A and the MLP width
            self.blocks.append(SimpleNamespace(
                n_head=kv.n_heads[i], k_cache=kv.k[i], v_cache=kv.v[i],
                ln_1=get(p + "ln_1.weight"), c_attn=get(p + "attn.c_attn.weight"), c_proj=get(p + "attn.c_proj.weight"),
                ln_2=get(p + "ln_2.weight"), c_fc=get(p + "mlp.c_fc.weight"), mlp_proj=get(p + "mlp.c_proj.weight"),
                qkv=np.empty(A3, dtype), y=np.empty(A3 // 3, dtype), fch=np.empty(F, dtype), act=np.empty(F, dtype),
            ))  # fmt: skip
        self.h, self.branch = np.empty((1, C), dtype), np.empty(C, dtype)  # LayerNorm output; a branch
        self.nothing = np.empty(0, dtype)  # no residual to add before a LayerNorm

    def __call__(self, token: int) -> np.ndarray:
        pos = self.kv.length
        if not 0 <= pos < self.config.block_size:
            raise ValueError(f"position {pos} is outside the block of {self.config.block_size}")
        eps, h, branch, nothing = self.eps, self.h, self.branch, self.nothing
        x = self.wte[token] + self.wpe[pos]  # (C,): the embedding (a new array)
        for b in self.blocks:
            # attention branch: x = x + c_proj(attention(c_attn(ln_1(x))))
            _residual_layernorm(x, nothing, nothing, *b.ln_1, eps, h)  # h = ln_1(x)
            np.dot(h[0], b.c_attn[0], out=b.qkv)  # (3A,); the bias is added by _attend
            _attend(b.qkv, b.c_attn[1], b.n_head, b.k_cache, b.v_cache, pos, b.y)  # (A,), extends the caches
            np.dot(b.y, b.c_proj[0], out=branch)  # (C,)
            # MLP branch: x = x + mlp.c_proj(act(mlp.c_fc(ln_2(x))))
            _residual_layernorm(x, branch, b.c_proj[1], *b.ln_2, eps, h)  # x += attention branch; h = ln_2(x)
            np.dot(h[0], b.c_fc[0], out=b.fch)  # (F,)
            _activation(b.fch, b.c_fc[1], self.relu, b.act)  # + bias, then GELU or ReLU
            np.dot(b.act, b.mlp_proj[0], out=branch)  # (C,)
            x += branch
            x += b.mlp_proj[1]
        _residual_layernorm(x, nothing, nothing, *self.ln_f, eps, h)  # h = ln_f(x)
        logits = self.wte @ h[0]  # (V,): the output layer is tied to wte
        self.kv.length += 1
        return logits
