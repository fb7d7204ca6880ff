"""Float64 reference implementation (the oracle) of the MLP log-likelihood and its gradient.

Plain and obvious on purpose: a Python loop over chains, float64 throughout, a numerically
stable log-softmax.  Every faster backend is tested against this module.

The model (Hasenclever et al., JMLR 18 (2017), §6) is an MLP with ReLU hidden layers and a
softmax output; with no hidden layer it is multinomial logistic regression.  Parameters are
flat vectors laid out by :class:`~snep.model.spec.ParamSpec`.  Functions are batched over a
leading chain axis ``C``: chain ``c`` has its own parameters ``params[c]`` and, for the
gradient, its own minibatch ``x[c], y[c]``.
"""

from __future__ import annotations

import numpy as np

from snep.errors import ConfigError
from snep.model.spec import ParamSpec

__all__ = ["log_softmax", "logits", "loglik_and_grad", "predict_proba"]


def log_softmax(z: np.ndarray) -> np.ndarray:
    """Stable ``log softmax`` along the last axis: ``z - max(z) - log Σ exp(z - max(z))``."""
    m = np.max(z, axis=-1, keepdims=True)
    s = z - m
    return s - np.log(np.sum(np.exp(s), axis=-1, keepdims=True))


def _check_params(spec: ParamSpec, params: np.ndarray, where: str) -> np.ndarray:
    params = np.asarray(params)
    if params.ndim != 2 or params.shape[1] != spec.size:
        raise ConfigError(
            f"{where}: params has shape {params.shape}, expected (C, {spec.size}) for "
            f"layer_sizes={spec.layer_sizes}; add a leading chain axis (params[None]) for "
            "one chain"
        )
    return params.astype(np.float64, copy=False)


def _forward(spec: ParamSpec, theta: np.ndarray, x: np.ndarray) -> list[np.ndarray]:
    """Return ``[h_0 = x, h_1, ..., h_{L-1}, logits]`` for one chain (float64)."""
    hs = [x]
    layers = spec.views(theta)
    for i, (w, b) in enumerate(layers):
        z = hs[-1] @ w + b
        if i < len(layers) - 1:
            z = np.maximum(z, 0.0)
        hs.append(z)
    return hs


def loglik_and_grad(
    spec: ParamSpec, params: np.ndarray, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Minibatch log-likelihood of each chain and its gradient.

    Parameters
    ----------
    spec : ParamSpec
        Network layout.
    params : ndarray, shape (C, P)
        Flat parameters of each chain.
    x : ndarray, shape (C, B, D)
        Inputs; chain ``c`` uses its own minibatch ``x[c]``.
    y : ndarray of int, shape (C, B)
        Class labels in ``[0, K)``.

    Returns
    -------
    loglik : ndarray, shape (C,), float64
        ``Σ_b log p(y[c, b] | x[c, b], params[c])``.
    grad : ndarray, shape (C, P), float64
        Gradient of ``loglik[c]`` with respect to ``params[c]`` (an ascent direction: the
        gradient of the log-likelihood, not of the loss).
    """
    params = _check_params(spec, params, "mlp_numpy.loglik_and_grad")
    n_chains = params.shape[0]
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    if x.ndim != 3 or x.shape[0] != n_chains or x.shape[2] != spec.n_inputs:
        raise ConfigError(
            f"mlp_numpy.loglik_and_grad: x has shape {x.shape}, expected "
            f"({n_chains}, B, {spec.n_inputs}) (chains, batch, input width)"
        )
    if y.shape != x.shape[:2] or not np.issubdtype(y.dtype, np.integer):
        raise ConfigError(
            f"mlp_numpy.loglik_and_grad: y has shape {y.shape} and dtype {y.dtype}, expected "
            f"integer labels of shape {x.shape[:2]}"
        )
    k = spec.n_outputs
    if y.size and (y.min() < 0 or y.max() >= k):
        raise ConfigError(
            f"mlp_numpy.loglik_and_grad: labels span [{y.min()}, {y.max()}], expected values "
            f"in [0, {k}) for {k} classes"
        )

    loglik = np.zeros(n_chains)
    grad = np.zeros((n_chains, spec.size))
    for c in range(n_chains):
        hs = _forward(spec, params[c], x[c])
        logp = log_softmax(hs[-1])
        rows = np.arange(x.shape[1])
        loglik[c] = np.sum(logp[rows, y[c]])
        # d loglik / d logits = onehot(y) - softmax(logits)
        dz = -np.exp(logp)
        dz[rows, y[c]] += 1.0
        gviews = spec.views(grad[c])
        wviews = spec.views(params[c])
        for i in range(spec.n_layers - 1, -1, -1):
            gw, gb = gviews[i]
            gw[...] = hs[i].T @ dz
            gb[...] = dz.sum(axis=0)
            if i > 0:
                dh = dz @ wviews[i][0].T
                dz = dh * (hs[i] > 0.0)
    return loglik, grad


def logits(spec: ParamSpec, params: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Output-layer pre-activations for inputs shared by all chains.

    Parameters
    ----------
    spec : ParamSpec
    params : ndarray, shape (C, P)
    x : ndarray, shape (N, D)

    Returns
    -------
    ndarray, shape (C, N, K), float64
    """
    params = _check_params(spec, params, "mlp_numpy.logits")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != spec.n_inputs:
        raise ConfigError(
            f"mlp_numpy.logits: x has shape {x.shape}, expected (N, {spec.n_inputs}) "
            "(inputs shared by all chains)"
        )
    return np.stack([_forward(spec, params[c], x)[-1] for c in range(params.shape[0])])


def predict_proba(spec: ParamSpec, params: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Predictive class probabilities ``softmax(logits)`` of each chain, shape (C, N, K)."""
    return np.exp(log_softmax(logits(spec, params, x)))
