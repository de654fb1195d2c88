"""The layers of GPT-2, each a pair `xxx_forward(...) -> (out, cache)` and `xxx_backward(dout, cache)`.

Shape legend, used in every module here:
    B batch, T time (sequence length), C channels (n_embd), NH heads, hs head size (C // NH),
    V vocabulary size, L layers, maxT block_size.

Backward functions return fresh gradient arrays; the model adds them up where a tensor is used
twice (the tied token embedding).
"""

from .activation import gelu_backward, gelu_forward, relu_backward, relu_forward
from .attention import attention_backward, attention_forward
from .cross_entropy import IGNORE_INDEX, cross_entropy_backward, cross_entropy_forward
from .dropout import dropout_backward, dropout_forward
from .embedding import embedding_backward, embedding_forward
from .layernorm import layernorm_backward, layernorm_forward
from .linear import linear_backward, linear_forward

__all__ = [
    "IGNORE_INDEX",
    "attention_backward",
    "attention_forward",
    "cross_entropy_backward",
    "cross_entropy_forward",
    "dropout_backward",
    "dropout_forward",
    "embedding_backward",
    "embedding_forward",
    "gelu_backward",
    "gelu_forward",
    "layernorm_backward",
    "layernorm_forward",
    "linear_backward",
    "linear_forward",
    "relu_backward",
    "relu_forward",
]
