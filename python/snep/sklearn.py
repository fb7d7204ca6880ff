"""A scikit-learn estimator: SNEP's Bayesian MLP as a classifier.

:class:`SnepClassifier` trains a posterior over an MLP's weights with SNEP and the
posterior server (Hasenclever et al., JMLR 18 (2017); docs/method.md §1) in this
process, and predicts with the Bayesian model average over draws from it.  It follows
scikit-learn's estimator conventions (``fit``/``predict``/``predict_proba``/``score``,
parameters set in ``__init__`` only, fitted attributes ending in ``_``), so it works in
a ``Pipeline``, ``cross_val_score`` and ``GridSearchCV``::

    from sklearn.datasets import load_digits
    from sklearn.model_selection import cross_val_score
    from snep.sklearn import SnepClassifier

    x, y = load_digits(return_X_y=True)
    print(cross_val_score(SnepClassifier(), x, y, cv=5).mean())

Features are scaled to [0, 1] with the training data's per-feature minimum and range
(the MLP's input convention; new inputs are clipped to that range); any labels are
accepted and mapped to ``classes_``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["SnepClassifier"]


class SnepClassifier(ClassifierMixin, BaseEstimator):
    """Bayesian MLP classifier trained with SNEP, predicting by model averaging.

    Parameters
    ----------
    hidden : tuple of int, default ()
        Hidden layer widths; ``()`` is multinomial logistic regression.
    workers : int, default 2
        SNEP workers (simulated in this process), each with a shard of the data.
    epochs : float, default 100
        Passes of each worker over its shard ...
    min_iterations : int, default 500
        ... but at least this many iterations per worker (small data sets need more
        passes: on 300 points of ``make_blobs`` 150 iterations left a logistic
        regression at 53% training accuracy, 450 at 90%).
    n_chains : int, default 8
        Sampling chains per worker.
    prior_var : float, default 0.5
        Prior variance of every weight.
    n_samples : int, default 20
        Posterior draws of the model average in ``predict_proba``.
    random_state : int, default 0
        Seed of the run and of the model average's draws.
    config : dict, optional
        Further settings, ``{section: {key: value}}`` as in a config file (e.g.
        ``{"sampler": {"step_size": 0.5}}``); the parameters above win.
    """

    def __init__(
        self,
        hidden: tuple[int, ...] = (),
        workers: int = 2,
        epochs: float = 100.0,
        min_iterations: int = 500,
        n_chains: int = 8,
        prior_var: float = 0.5,
        n_samples: int = 20,
        random_state: int = 0,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.hidden = hidden
        self.workers = workers
        self.epochs = epochs
        self.min_iterations = min_iterations
        self.n_chains = n_chains
        self.prior_var = prior_var
        self.n_samples = n_samples
        self.random_state = random_state
        self.config = config

    def _config(self, n_train: int) -> Any:
        from snep.config import Config, with_preset

        layers = dict(self.config or {})
        config = Config.from_dict(with_preset(layers, data_preset=False))
        epochs = {"workers": int(self.workers), "epochs": float(self.epochs), "iterations": 0}
        derived = config.replace(train=epochs).with_data_size(n_train).train.iterations
        mine = {
            "train": {
                "workers": int(self.workers),
                "iterations": max(derived, int(self.min_iterations)),
                "seed": int(self.random_state),
                "backend": "cpu",
                "eval_every": 10**9,  # one evaluation, at the end
            },
            "model": {"hidden": list(self.hidden)},
            "snep": {"n_chains": int(self.n_chains), "prior_var": float(self.prior_var)},
        }
        return Config.from_dict(with_preset(layers, mine, data_preset=False))

    def _scaled(self, x: np.ndarray) -> np.ndarray:
        return np.clip((x - self.lower_) / self.scale_, 0.0, 1.0).astype(np.float32)

    def fit(self, X: Any, y: Any) -> SnepClassifier:
        """Learn the posterior on ``X`` (n_samples, n_features) and labels ``y``."""
        import snep
        from snep.data.dataset import Dataset

        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                f"SnepClassifier needs at least two classes in y; got 1 class "
                f"({self.classes_[0]!r}): pass examples of every class to be predicted"
            )
        self.lower_ = X.min(axis=0)
        span = X.max(axis=0) - self.lower_
        self.scale_ = np.where(span > 0, span, 1.0)
        x = np.ascontiguousarray(self._scaled(X))
        codes = codes.astype(np.int32)
        # the training set doubles as the (unused) evaluation split of the run
        data = Dataset(
            x_train=x, y_train=codes, x_test=x[:1], y_test=codes[:1],
            n_classes=len(self.classes_), name="sklearn", image_shape=(x.shape[1],),
        )  # fmt: skip
        result = snep.fit(self._config(len(codes)), data)
        self.posterior_ = result.posterior
        self.history_ = result.history
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Model-average class probabilities (n_samples, n_classes), in ``classes_``
        order."""
        check_is_fitted(self, "posterior_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return self.posterior_.predict_proba(
            self._scaled(X), method="bma", n_samples=self.n_samples,
            seed=self.random_state, backend="cpu",
        )  # fmt: skip

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each row under the model average."""
        check_is_fitted(self, "posterior_")
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
