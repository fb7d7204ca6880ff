"""Is the uncertainty useful?  Out-of-distribution detection by predictive entropy.

A posterior's predictions should be less certain on inputs unlike its training data:
the predictive entropy of the Bayesian model average should separate, say, MNIST test
digits from Omniglot characters better than the entropy of the point estimate at the
posterior mean (the issue "Neural networks, honestly", item 3; Lakshminarayanan,
Pritzel & Blundell 2017 use the same test).  :func:`entropy_auroc` measures it as the
area under the ROC curve of the entropy as a score for "out of distribution".
"""

from __future__ import annotations

from typing import Any

import numpy as np

from snep.maths.metrics import auroc, predictive_entropy
from snep.posterior import Posterior

__all__ = ["entropy_auroc"]


def entropy_auroc(
    posterior: Posterior,
    x_in: np.ndarray,
    x_out: np.ndarray,
    *,
    n_samples: int = 20,
    seed: int = 0,
    backend: Any = "auto",
) -> dict[str, float]:
    """AUROC of the predictive entropy for telling ``x_out`` (positives) from ``x_in``.

    Returns ``mean_entropy_auroc`` (the point estimate at the posterior mean) and
    ``bma_entropy_auroc`` (the model average over ``n_samples`` draws from q), with the
    mean entropies of both sets (``*_entropy_in``, ``*_entropy_out``, nats).
    """
    x_in, x_out = np.asarray(x_in), np.asarray(x_out)
    if x_in.ndim != 2 or x_out.ndim != 2 or x_in.shape[1] != x_out.shape[1]:
        raise ValueError(
            f"x_in has shape {x_in.shape} and x_out {x_out.shape}: expected two (N, D) "
            "arrays with the same number of features D (the model's inputs)"
        )
    out: dict[str, float] = {}
    for method in ("mean", "bma"):
        h = [
            predictive_entropy(
                posterior.predict_proba(x, method, n_samples=n_samples, seed=seed, backend=backend)
            )
            for x in (x_in, x_out)
        ]
        out[f"{method}_entropy_auroc"] = auroc(h[1], h[0])
        out[f"{method}_entropy_in"] = float(h[0].mean())
        out[f"{method}_entropy_out"] = float(h[1].mean())
    return out
