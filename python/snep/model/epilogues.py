"""Fused elementwise epilogues of the MLP, written once as plain scalar Python functions.

These functions are the single source of truth for the MLP's elementwise maths (docs/method.md §2,
"one source of truth per kernel").  They are compiled twice:

* with ``numba.njit`` for the CPU loops in :mod:`snep.model.mlp_cpu`, and
* with ``numba.cuda.jit(device=True)`` for the GPU kernels of the CUDA backend.

So they must stay inside the subset both targets accept: scalars, 1-D array rows indexed
with ``[k]``, ``math.exp``/``math.log``, ``range`` loops; no numpy calls, no allocation,
and no calls between these functions (a plain Python function is not callable from
compiled code; each target compiles each function on its own).
This module deliberately imports neither numba nor numba.cuda (numpy only for type hints).

Dtype: the functions follow the dtype of their inputs (float32 in, float32 arithmetic).
Literal constants such as ``0.0`` are float64 in numba; where they meet a float32 value in
a ``select`` (``relu``) LLVM narrows the comparison back to float32 (checked in the
generated assembly: ``vmaxps``, no conversions), and in the softmax rows the accumulators
are seeded from the data so that they keep the input dtype.

The model is that of Hasenclever et al., JMLR 18 (2017), §6: ReLU hidden layers and a
softmax output with the multinomial log-likelihood.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "bias_relu",
    "relu",
    "relu_grad",
    "softmax_row",
    "softmax_xent_row",
]


def relu(z: float) -> float:
    """``max(z, 0)``."""
    return z if z > 0.0 else 0.0


def bias_relu(z: float, b: float) -> float:
    """``max(z + b, 0)``: the hidden layers' bias + activation epilogue."""
    v = z + b
    return v if v > 0.0 else 0.0


def relu_grad(h: float, g: float) -> float:
    """Back-propagate ``g`` through a ReLU whose *output* is ``h``: ``g * (h > 0)``."""
    return g if h > 0.0 else 0.0


def softmax_xent_row(z: np.ndarray, label: int, dz: np.ndarray) -> float:
    """One row of the softmax log-likelihood, forward and backward in one pass.

    Parameters
    ----------
    z : 1-D array, length K
        Logits of one example.
    label : int
        Its class, in ``[0, K)`` (not checked here: callers validate).
    dz : 1-D array, length K
        Written with ``d log p(label | z) / d z = onehot(label) - softmax(z)``; may not alias
        ``z``.

    Returns
    -------
    scalar (dtype of ``z``)
        ``log p(label | z) = z[label] - logsumexp(z)``, computed stably (max-shifted).
    """
    k_classes = z.shape[0]
    m = z[0]
    for k in range(1, k_classes):
        if z[k] > m:
            m = z[k]
    e = math.exp(z[0] - m)
    dz[0] = e
    s = e
    for k in range(1, k_classes):
        e = math.exp(z[k] - m)
        dz[k] = e
        s += e
    for k in range(k_classes):
        dz[k] = -(dz[k] / s)
    dz[label] += 1.0
    return z[label] - m - math.log(s)


def softmax_row(z: np.ndarray, p: np.ndarray) -> None:
    """Stable softmax of one row of logits ``z`` into ``p`` (``p`` may alias ``z``)."""
    k_classes = z.shape[0]
    m = z[0]
    for k in range(1, k_classes):
        if z[k] > m:
            m = z[k]
    # p may alias z: every z[k] is read before p[k] is written.
    e = math.exp(z[0] - m)
    p[0] = e
    s = e
    for k in range(1, k_classes):
        e = math.exp(z[k] - m)
        p[k] = e
        s += e
    for k in range(k_classes):
        p[k] = p[k] / s
