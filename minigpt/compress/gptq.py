"""GPTQ: quantize a layer's weights column by column, correcting the columns not yet quantized for
each rounding error (Frantar, Ashkboos, Hoefler, Alistarh, ICLR 2023; the rules of the authors'
reference code, IST-DASLab/gptq gptq.py).

For a linear layer with weights W (R, K) (rows = output channels, PyTorch's layout) and
calibration inputs X (N, K), GPTQ minimizes ||(W - Q) X^T||^2 over Q on the quantization grid.
Every row shares the Hessian H = (2/N) X^T X (K, K):

    dead inputs (H_jj = 0) are set to H_jj = 1 and W[:, j] = 0
    damping     H += lambda I, lambda = percdamp * mean(diag H)   (percdamp 0.01)
    U           the upper Cholesky factor of H^-1 (H^-1 = U^T U)
    for j = 0 .. K-1 (or in act-order: by decreasing diag H):
        q_j = quant(w_j)                          (w_j: column j, already corrected)
        err_j = (w_j - q_j) / U_jj
        W[:, j+1:] -= err_j U[j, j+1:]            (the optimal update of the remaining columns)
        loss += (w_j - q_j)^2 / U_jj^2 / 2

Lazy batches: the update of columns beyond the current block of B columns is applied once per
block, as one matrix product W[:, i2:] -= Err U[i1:i2, i2:] (the same arithmetic, fewer passes
over W). Group parameters (scale, zero point per G columns) are computed when the group's first
column is reached, from the columns as corrected so far; the block size is rounded up to a
multiple of G so that a group never straddles a block, which makes the result independent of
the block size (the reference code computes them from not-yet-corrected columns when G does not
divide B). With act-order and groups, the groups are fixed beforehand on the original columns
("static groups"), so every column keeps the group it is stored in.

When H is a multiple of the identity, U is diagonal, no column is corrected and GPTQ is exactly
round-to-nearest (a property test).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .quantize import (
    QTensor,
    QuantSpec,
    _scale_dtype,
    check_finite,
    compute_qparams,
    dequantize_grouped,
    quantize_grouped,
)


def hessian(x) -> np.ndarray:
    """H = (2/N) X^T X for inputs x (..., K), in float64."""
    x2 = np.asarray(x, np.float64).reshape(-1, np.shape(x)[-1])
    return 2.0 / x2.shape[0] * (x2.T @ x2)


def _quant_column(w, scale, zero, spec):
    """Quantize one column w (R,) with per-row params scale, zero (R,): (codes (R,), values (R,))."""
    q = quantize_grouped(w[:, None, None], scale[:, None], zero[:, None], spec, "nearest")
    return q[:, 0, 0], dequantize_grouped(q, scale[:, None], zero[:, None], np.float64)[:, 0, 0]


def gptq_quantize(w, H, spec: QuantSpec, blocksize: int = 128, percdamp: float = 0.01, act_order: bool = False):
    """GPTQ on w (R, K) with Hessian H (K, K). Returns (codes (R, K) int32, scale, zero, loss) with
    scale/zero shaped as quantize()'s; loss is the accumulated sum of (w_j - q_j)^2 / U_jj^2 / 2."""
    W = np.array(w, np.float64)
    if W.ndim != 2:
        raise InputError(f"GPTQ expects a 2-D weight (out, in), got shape {W.shape}")
    check_finite(W)
    R, K = W.shape
    H = np.array(H, np.float64)
    if H.shape != (K, K):
        raise InputError(f"calibration data has width {H.shape[0]}, the layer's input dimension is {K}")
    if not np.all(np.isfinite(H)):
        raise InputError("calibration data contains NaN or inf")
    if spec.granularity == "tensor":
        raise InputError("GPTQ quantizes per channel or per group, not per tensor")
    if spec.granularity == "group" and K % spec.group_size:
        raise InputError(f"group size {spec.group_size} does not divide the input dimension {K}")
    gs = spec.group_size if spec.granularity == "group" else K
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    # channel params come from the whole (dead-zeroed) weight; static groups from the original columns
    scale = np.zeros((R, K // gs), dtype=_scale_dtype(spec, np.asarray(w).dtype))  # as quantize() stores them
    zero = np.zeros((R, K // gs), np.int32)
    static = spec.granularity == "channel" or act_order
    if static:
        scale[:], zero[:] = compute_qparams(W, spec)
    perm = np.argsort(-np.diag(H), kind="stable") if act_order else np.arange(K)
    W, H = W[:, perm], H[np.ix_(perm, perm)]
    group_of = perm // gs  # the stored group of each (permuted) column
    H[np.diag_indices(K)] += percdamp * np.mean(np.diag(H))
    try:
        U = np.linalg.cholesky(np.linalg.inv(H)).T  # upper: H^-1 = U^T U
    except np.linalg.LinAlgError:
        raise InputError("the calibration Hessian is not positive definite; use more calibration "
                         "data or a larger damping") from None
    blocksize = max(gs, -(-blocksize // gs) * gs) if spec.granularity == "group" else blocksize
    codes = np.zeros((R, K), np.int32)
    loss = 0.0
    for i1 in range(0, K, blocksize):
        i2 = min(i1 + blocksize, K)
        W1 = W[:, i1:i2].copy()  # (R, B) the block, corrected column by column
        Err1 = np.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        for i in range(i2 - i1):
            j = i1 + i
            if not static and j % gs == 0:  # a new group: its params from the corrected columns
                g = j // gs
                s, z = compute_qparams(W1[:, i : i + gs], spec)  # (R, 1): one group per row
                scale[:, g], zero[:, g] = s[:, 0], z[:, 0]
            g = group_of[j]
            col = W1[:, i]
            codes[:, j], qcol = _quant_column(col, scale[:, g], zero[:, g], spec)
            d = U1[i, i]
            loss += float(((col - qcol) ** 2).sum() / d**2 / 2)
            err = (col - qcol) / d
            W1[:, i:] -= np.outer(err, U1[i, i:])
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    inverse = np.argsort(perm)
    return codes[:, inverse], scale, zero, loss


def gptq_weight(w, H, spec: QuantSpec, **options) -> QTensor:
    """GPTQ on a minigpt weight w (in, out) with the Hessian of its inputs (in, in)."""
    w = np.asarray(w)
    codes, scale, zero, _ = gptq_quantize(np.ascontiguousarray(w.T), H, spec, **options)
    return QTensor(codes, scale, zero, spec, w.dtype.name)


def layer_error(w, H, qtensor: QTensor) -> float:
    """The layer objective tr((W - Q) H (W - Q)^T) / 2 for a weight (in, out) and its quantized version:
    the quantity GPTQ reduces (with H = (2/N) X^T X it is ||(W - Q) X^T||^2 / N)."""
    D = np.asarray(w, np.float64).T - qtensor.dequantize().astype(np.float64).T
    return float(np.einsum("rk,kl,rl->", D, H, D) / 2)
