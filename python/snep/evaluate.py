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
from snep.maths.metrics import classification_metrics
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

    def __init__(
        self, spec: Any, dataset: Any, backend: Backend, config: Config, model: Any = None
    ):
        if not is_host(backend):  # the posterior is on the host: score it there
            backend = get_backend("cpu", config.train.threads)
        self.spec = spec
        self.model = model
        # a user's model is scored when it predicts classes and the data have a test
        # part of class labels; else its records hold no test metrics
        self.scores = model is None or (
            callable(getattr(model, "predict_proba", None))
            and getattr(dataset, "y_test", None) is not None
            and np.asarray(dataset.y_test).dtype.kind in "biu"
        )
        if self.scores:
            self.x = np.ascontiguousarray(dataset.x_test, dtype=backend.dtype)
            self.y = np.asarray(dataset.y_test)
        self.backend = backend
        self.n_samples = config.train.bma_samples
        self.seed = config.train.seed

    def _probs(self, params: np.ndarray) -> np.ndarray:
        """Mean predictive probabilities (N, K) over the rows of ``params`` (S, P)."""
        return predict_proba_params(self.spec, params, self.x, self.backend, model=self.model)

    def point(self, params: np.ndarray, prefix: str = "mean_") -> dict[str, float]:
        """Metrics of the point estimate ``params`` (P,)."""
        if not self.scores:
            return {}
        return classification_metrics(self._probs(params[None]), self.y, prefix)

    def __call__(self, state: _HasPosterior) -> dict[str, Any]:
        """Metrics of a server (or anything with natural parameters and an average)."""
        if not self.scores:
            return {}
        post = Posterior(self.spec, state.precision, state.precision_mean)
        out = self.point(post.mean, "mean_")
        if not getattr(state, "point_estimate", False):  # the baselines hold a point
            draws = post.sample(self.n_samples, self.seed)
            out.update(classification_metrics(self._probs(draws), self.y, "bma_"))
        if state.average_mean is not None:
            out.update(self.point(state.average_mean, "avg_"))
        return out
