"""Linear layer: out = x @ w + b, with w stored (in, out).

Matches Hugging Face's GPT-2 `Conv1D` (weight of shape (in, out), forward `x @ W + b`), which is
why minigpt's parameters load from GPT-2 checkpoints without transposes. torch.nn.Linear stores
the transpose, (out, in).

Legend: B batch, T time, C_in / C_out input and output channels.
"""



def linear_forward(x, w, b=None):
    """out = x @ w + b.

    Parameters
    ----------
    x : array of shape (..., C_in), e.g. (B, T, C_in)
    w : array of shape (C_in, C_out)
    b : array of shape (C_out,) or None (no bias)

    Returns
    -------
    out : array of shape (..., C_out)
    cache : (x, w, has_bias) for the backward pass
    """
    C_in, C_out = w.shape
    x2 = x.reshape(-1, C_in)  # (B*T, C_in): batch and time folded into rows, so one matrix product
    out = (x2 @ w).reshape(*x.shape[:-1], C_out)  # (one BLAS call is faster than B calls of T rows)
    if b is not None:
        out += b
    return out, (x, w, b is not None)


def linear_backward(dout, cache):
    """Gradients of out = x @ w + b.

    Parameters
    ----------
    dout : array of shape (..., C_out), the gradient of the loss with respect to out

    Returns
    -------
    dx : (..., C_in)    dx = dout @ w.T
    dw : (C_in, C_out)  dw = x.T @ dout, summed over every leading (batch and time) position
    db : (C_out,) or None  db = dout summed over every leading position
    """
    x, w, has_bias = cache
    # BEGIN SOLUTION linear_backward
    # HINT: fold (B, T) into rows; dx = dout @ w.T, dw = x.T @ dout, db = dout summed over rows (or None)
    C_in, C_out = w.shape
    x2 = x.reshape(-1, C_in)  # (B*T, C_in): fold batch and time, so each gradient is one matmul
    dout2 = dout.reshape(-1, C_out)  # (B*T, C_out)
    dx = (dout2 @ w.T).reshape(x.shape)
    dw = x2.T @ dout2
    db = dout2.sum(axis=0) if has_bias else None
    # END SOLUTION
    return dx, dw, db
