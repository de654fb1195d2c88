"""Layer normalization over the last axis.

Matches torch.nn.LayerNorm(C, eps=1e-5) (biased variance, eps inside the square root), which is
what GPT-2 uses. With bias=False (nanoGPT's option) the shift b is absent.

Legend: B batch, T time, C channels.
"""

import numpy as np


def layernorm_forward(x, w, b, eps=1e-5):
    """out = (x - mean) / sqrt(var + eps) * w + b, statistics over the last axis.

    Parameters
    ----------
    x : array of shape (B, T, C) (any leading shape works)
    w : array of shape (C,), the scale (gamma)
    b : array of shape (C,) or None, the shift (beta)
    eps : float, added to the variance

    Returns
    -------
    out : array of shape (B, T, C)
    cache : (xhat, w, rstd, has_bias): the normalized input (B, T, C) and 1/std (B, T, 1).
        llm.c keeps mean and rstd and recomputes xhat to save memory; we keep xhat, which makes
        the backward read more directly, at the cost of one more (B, T, C) array.
    """
    mean = x.mean(axis=-1, keepdims=True)  # (B, T, 1)
    xc = x - mean  # (B, T, C)
    var = (xc * xc).mean(axis=-1, keepdims=True)  # (B, T, 1), biased as torch
    rstd = 1.0 / np.sqrt(var + eps)  # (B, T, 1)
    xhat = xc * rstd  # (B, T, C)
    out = xhat * w
    if b is not None:
        out += b
    return out, (xhat, w, rstd, b is not None)


def layernorm_backward(dout, cache):
    """Gradients of layernorm_forward.

    Returns
    -------
    dx : (B, T, C)
    dw : (C,)
    db : (C,) or None

    Notes
    -----
    With xhat = (x - mean) * rstd and dxhat = dout * w, the input gradient is
        dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
    (means over C): term 1 is the direct path, term 2 the path through the mean, and term 3 the
    path through the variance.
    """
    xhat, w, rstd, has_bias = cache
    # BEGIN SOLUTION layernorm_backward
    # HINT: dw, db sum over (B, T); dxhat = dout * w; dx has three terms (direct, mean, variance)
    C = xhat.shape[-1]
    dout2 = dout.reshape(-1, C)
    dw = (dout2 * xhat.reshape(-1, C)).sum(axis=0)
    db = dout2.sum(axis=0) if has_bias else None
    dxhat = dout * w  # (B, T, C)
    dx = rstd * (
        dxhat  # term 1
        - dxhat.mean(axis=-1, keepdims=True)  # term 2: through the mean
        - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True)  # term 3: through the variance
    )
    # END SOLUTION
    return dx, dw, db
