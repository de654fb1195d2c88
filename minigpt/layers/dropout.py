"""Inverted dropout, as torch.nn.Dropout: zero each element with probability p and scale the
survivors by 1 / (1 - p), so the expected activation is unchanged and evaluation needs no rescaling.

The mask comes from a numpy Generator that the caller passes in, so a seed fixes every mask: the
gradient checks run the same forward twice with the same masks. With p == 0 or no generator
(evaluation), dropout is the identity and draws nothing.
"""



def dropout_forward(x, p, rng):
    """x: any shape. p: drop probability in [0, 1). rng: numpy Generator, or None for evaluation.

    Returns (out, cache) where cache is the scaled keep-mask (same shape as x) or None.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if p == 0.0 or rng is None:
        return x, None
    keep = rng.random(x.shape) >= p  # True with probability 1 - p
    scaled_mask = keep.astype(x.dtype) / (1.0 - p)  # cast keeps float32 activations float32
    return x * scaled_mask, scaled_mask


def dropout_backward(dout, cache):
    """The same mask and scale applied to the gradient."""
    scaled_mask = cache
    return dout if scaled_mask is None else dout * scaled_mask
