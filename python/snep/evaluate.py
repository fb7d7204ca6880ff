"""Evaluation of the current posterior on held-out data (docs/method.md §1.6).

Point estimate at the posterior mean (``mean_*``, the paper's figures), at the
server's running average (``avg_*``), and the Bayesian model average over S
draws from q (``bma_*``): test error, NLL (nats) and ECE (15 bins).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from snep.backends import Backend, get_backend
from snep.backends.base import is_host
from snep.config import Config
from snep.data.dataset import Dataset
from snep.metrics import classification_metrics
from snep.model.spec import ParamSpec
from snep.posterior import Posterior, predict_proba_params

__all__ = ["Evaluator"]


class _HasPosterior(Protocol):
    precision: np.ndarray
    precision_mean: np.ndarray
    average_mean: np.ndarray | None


class Evaluator:
    """Scores posteriors on ``dataset``'s test split.

    The model-average draws use the same seed at every evaluation (common
    random numbers), so successive scores differ only through the posterior.
    """

    def __init__(self, spec: ParamSpec, dataset: Dataset, backend: Backend, config: Config):
        if not is_host(backend):  # the posterior is on the host: score it there
            backend = get_backend("cpu", config.train.threads)
        self.spec = spec
        self.x = np.ascontiguousarray(dataset.x_test, dtype=backend.dtype)
        self.y = dataset.y_test
        self.backend = backend
        self.n_samples = config.train.bma_samples
        self.seed = config.train.seed

    def point(self, params: np.ndarray, prefix: str = "mean_") -> dict[str, float]:
        """Metrics of the point estimate ``params`` (P,)."""
        probs = predict_proba_params(self.spec, params[None], self.x, self.backend)
        return classification_metrics(probs, self.y, prefix)

    def __call__(self, state: _HasPosterior) -> dict[str, Any]:
        """Metrics of a server (or anything with natural parameters and an average)."""
        post = Posterior(self.spec, state.precision, state.precision_mean)
        out = self.point(post.mean, "mean_")
        if not getattr(state, "point_estimate", False):  # the baselines hold a point
            draws = post.sample(self.n_samples, self.seed)
            probs = predict_proba_params(self.spec, draws, self.x, self.backend)
            out.update(classification_metrics(probs, self.y, "bma_"))
        if state.average_mean is not None:
            out.update(self.point(state.average_mean, "avg_"))
        return out
