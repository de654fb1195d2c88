"""Softmax cross-entropy over the vocabulary, averaged over the targets that are not ignored.

Matches torch.nn.functional.cross_entropy(logits.view(-1, V), targets.view(-1), ignore_index=-1)
(reduction "mean" over non-ignored targets), which is nanoGPT's loss, with one difference: when
every target is ignored torch returns nan (0/0) and minigpt returns a loss of 0 with zero
gradients, so a fully masked batch cannot stop a training run.

Where the targets come from: the data loader shifts them, targets[b, t] = idx[b, t + 1] in the
text, so logits[b, t] is scored on predicting the next token.

Legend: B batch, T time, V vocabulary.
"""

import numpy as np

IGNORE_INDEX = -1


def log_softmax(logits):
    """log softmax over the last axis, computed stably by subtracting the row maximum."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def cross_entropy_forward(logits, targets):
    """
    Parameters
    ----------
    logits : array of shape (B, T, V)
    targets : int array of shape (B, T), values in [0, V) or IGNORE_INDEX (-1) to skip a position

    Returns
    -------
    loss : float, mean of -log softmax(logits)[target] over the N non-ignored positions
    cache : (probs (B, T, V), targets, N)
    """
    valid = targets != IGNORE_INDEX  # (B, T)
    logp = log_softmax(logits)  # (B, T, V)
    safe_targets = np.where(valid, targets, 0)  # any index in range for the ignored positions
    nll = -np.take_along_axis(logp, safe_targets[..., None], axis=-1)[..., 0]  # (B, T)
    n = int(valid.sum())
    loss = float(nll[valid].sum() / max(n, 1))
    return loss, (np.exp(logp), targets, n)


def cross_entropy_backward(cache, dloss=1.0):
    """
    Returns
    -------
    dlogits : array of shape (B, T, V): (softmax(logits) - onehot(target)) * dloss / N at
        non-ignored positions, and 0 at ignored ones. Softmax and cross-entropy are
        differentiated together (llm.c's crossentropy_softmax_backward): the fused form is short
        and avoids dividing by small probabilities.
    """
    probs, targets, n = cache
    # BEGIN SOLUTION cross_entropy_backward
    # HINT: probs - onehot(target), times dloss / max(n, 1); rows with IGNORE_INDEX targets are 0
    valid = targets != IGNORE_INDEX
    dlogits = probs.copy()
    b, t = np.nonzero(valid)
    dlogits[b, t, targets[b, t]] -= 1.0
    dlogits *= (valid[..., None] * (dloss / max(n, 1))).astype(probs.dtype)
    # END SOLUTION
    return dlogits
