"""The MLP's activation functions: GELU (tanh approximation, as GPT-2) and ReLU.

GELU matches torch.nn.functional.gelu(x, approximate="tanh") and Hugging Face's "gelu_new":
    gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
ReLU matches torch.nn.functional.relu; its derivative at exactly 0 is taken as 0, as torch does.

Legend: B batch, T time, C channels (4 n_embd inside the MLP).
"""

import math

import numpy as np

GELU_SCALE = math.sqrt(2.0 / math.pi)
GELU_CUBIC = 0.044715


def gelu_forward(x):
    """GELU, tanh approximation. x: any shape, e.g. (B, T, 4C). Returns (out, cache) with out like x."""
    u = GELU_SCALE * (x + GELU_CUBIC * (x * x * x))  # x * x * x: pow is several times slower
    t = np.tanh(u)
    out = 0.5 * x * (1.0 + t)
    return out, (x, t)


def gelu_backward(dout, cache):
    """dx = dout * gelu'(x), where with u = sqrt(2/pi) (x + 0.044715 x^3) and t = tanh(u):
    gelu'(x) = 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)."""
    x, t = cache
    # BEGIN SOLUTION gelu_backward
    # HINT: product rule on 0.5 x (1 + t), with dt/dx = (1 - t^2) du/dx; then times dout
    du_dx = GELU_SCALE * (1.0 + 3.0 * GELU_CUBIC * x * x)
    dx = dout * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du_dx)
    # END SOLUTION
    return dx


def relu_forward(x):
    """ReLU: max(x, 0). x: any shape. Returns (out, cache)."""
    mask = x > 0
    return x * mask, mask


def relu_backward(dout, cache):
    """dx = dout where x > 0, else 0 (the kink at 0 gets gradient 0, as torch)."""
    mask = cache
    return dout * mask
