"""Tests of the float64 oracle (snep.model.mlp_numpy)."""

from __future__ import annotations

import numpy as np
import pytest

from snep.errors import ConfigError
from snep.model import ParamSpec, mlp_numpy

# logistic regression, 1, 2 and 3 hidden layers
ARCHS = [(6, 4), (6, 5, 4), (6, 5, 7, 4), (6, 5, 4, 6, 3)]


def _problem(
    sizes: tuple[int, ...], n_chains: int = 2, batch: int = 5, seed: int = 0
) -> tuple[ParamSpec, np.ndarray, np.ndarray, np.ndarray]:
    """Random parameters (different per chain, nonzero biases) and per-chain minibatches."""
    spec = ParamSpec(sizes)
    rng = np.random.default_rng(seed)
    params = rng.standard_normal((n_chains, spec.size)) * 0.7
    x = rng.standard_normal((n_chains, batch, spec.n_inputs))
    y = rng.integers(0, spec.n_outputs, (n_chains, batch))
    return spec, params, x, y


@pytest.mark.parametrize("sizes", ARCHS)
def test_gradient_matches_central_differences(sizes: tuple[int, ...]) -> None:
    spec, params, x, y = _problem(sizes)
    loglik, grad = mlp_numpy.loglik_and_grad(spec, params, x, y)
    assert loglik.shape == (2,) and grad.shape == params.shape
    assert np.all(loglik < 0)
    rng = np.random.default_rng(1)
    eps = 1e-5
    for c in range(params.shape[0]):
        coords = rng.choice(spec.size, size=min(40, spec.size), replace=False)
        for j in coords:
            p_hi, p_lo = params.copy(), params.copy()
            p_hi[c, j] += eps
            p_lo[c, j] -= eps
            l_hi, _ = mlp_numpy.loglik_and_grad(spec, p_hi, x, y)
            l_lo, _ = mlp_numpy.loglik_and_grad(spec, p_lo, x, y)
            fd = (l_hi[c] - l_lo[c]) / (2 * eps)
            # perturbing chain c's parameters leaves the other chains alone
            other = np.arange(params.shape[0]) != c
            np.testing.assert_array_equal(l_hi[other], loglik[other])
            rel = abs(fd - grad[c, j]) / max(abs(fd), abs(grad[c, j]), 1e-3)
            assert rel < 1e-6, (c, j, fd, grad[c, j])


def test_logistic_regression_closed_form() -> None:
    spec, params, x, y = _problem((6, 4), n_chains=3, batch=9)
    loglik, grad = mlp_numpy.loglik_and_grad(spec, params, x, y)
    for c in range(3):
        w = params[c, : 6 * 4].reshape(6, 4)
        b = params[c, 6 * 4 :]
        z = x[c] @ w + b
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        onehot = np.eye(4)[y[c]]
        np.testing.assert_allclose(loglik[c], np.log(p[np.arange(9), y[c]]).sum(), rtol=1e-12)
        np.testing.assert_allclose(grad[c, :24].reshape(6, 4), x[c].T @ (onehot - p), atol=1e-12)
        np.testing.assert_allclose(grad[c, 24:], (onehot - p).sum(axis=0), atol=1e-12)


@pytest.mark.parametrize("sizes", ARCHS)
def test_predict_proba_rows_sum_to_one_and_match_loglik(sizes: tuple[int, ...]) -> None:
    spec, params, _, _ = _problem(sizes, n_chains=3)
    rng = np.random.default_rng(2)
    n = 11
    x = rng.standard_normal((n, spec.n_inputs))
    y = rng.integers(0, spec.n_outputs, (3, n))
    proba = mlp_numpy.predict_proba(spec, params, x)
    assert proba.shape == (3, n, spec.n_outputs)
    assert np.all(proba >= 0)
    np.testing.assert_allclose(proba.sum(axis=-1), 1.0, rtol=1e-12)
    loglik, _ = mlp_numpy.loglik_and_grad(spec, params, np.broadcast_to(x, (3, n, x.shape[1])), y)
    picked = np.take_along_axis(proba, y[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(loglik, np.log(picked).sum(axis=1), rtol=1e-12)
    z = mlp_numpy.logits(spec, params, x)
    np.testing.assert_allclose(np.exp(mlp_numpy.log_softmax(z)), proba, rtol=1e-12)


def test_log_softmax_is_stable() -> None:
    z = np.array([[1e4, 0.0, -1e4], [-1e4, -1e4 + 1.0, -1e4]])
    out = mlp_numpy.log_softmax(z)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out[0], [0.0, -1e4, -2e4])
    np.testing.assert_allclose(np.exp(out[1]).sum(), 1.0)


def test_huge_logits_give_finite_loglik_and_grad() -> None:
    spec, params, x, y = _problem((6, 4))
    params *= 1e3
    loglik, grad = mlp_numpy.loglik_and_grad(spec, params, x, y)
    assert np.all(np.isfinite(loglik)) and np.all(np.isfinite(grad))


def test_shape_errors() -> None:
    spec, params, x, y = _problem((6, 5, 4))
    with pytest.raises(ConfigError, match="params"):
        mlp_numpy.loglik_and_grad(spec, params[0], x, y)
    with pytest.raises(ConfigError, match="x has shape"):
        mlp_numpy.loglik_and_grad(spec, params, x[0], y)
    with pytest.raises(ConfigError, match="x has shape"):
        mlp_numpy.loglik_and_grad(spec, params, x[:, :, :3], y)
    with pytest.raises(ConfigError, match="y has shape"):
        mlp_numpy.loglik_and_grad(spec, params, x, y[:, :2])
    with pytest.raises(ConfigError, match="y has shape"):
        mlp_numpy.loglik_and_grad(spec, params, x, y.astype(float))
    with pytest.raises(ConfigError, match="labels"):
        mlp_numpy.loglik_and_grad(spec, params, x, y + 10)
    with pytest.raises(ConfigError, match="x has shape"):
        mlp_numpy.predict_proba(spec, params, x)
