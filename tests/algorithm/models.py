"""Small likelihoods with the MLP kernels' interface, for exact-posterior tests."""

from __future__ import annotations

import numpy as np


class GaussianMeans:
    """Observations ``x_c ~ N(theta, noise_var I)``: the posterior is a diagonal Gaussian.

    ``loglik_and_grad(params (1, P), x (1, B, P), y, grad_out)``: the sum over
    the batch of log N(x_b; params, noise_var) and its gradient.
    """

    def __init__(self, noise_var: float) -> None:
        self.noise_var = noise_var

    def loglik_and_grad(self, params, x, y, grad_out):
        r = x - params[:, None, :]
        grad_out[...] = r.sum(axis=1) / self.noise_var
        return -0.5 * (r * r).sum(axis=(1, 2)) / self.noise_var

    @staticmethod
    def exact_posterior(data: np.ndarray, noise_var: float, prior_var: float):
        """Mean and variance of the exact posterior (float64)."""
        prec = 1.0 / prior_var + len(data) / noise_var
        return data.sum(axis=0) / noise_var / prec, np.full(data.shape[1], 1.0 / prec)
