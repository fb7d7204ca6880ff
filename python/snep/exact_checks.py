"""Exact properties of a learned posterior that need no reference run (docs/method.md §1.9).

Two properties hold for the exact posterior of any MLP of Hasenclever et al. (2017),
so a learned q can be held to them without knowing the answer:

* **nothing sits at a bound.**  The variance floor ``v_lo`` caps q's precision at
  ``1 / prior_var + n_workers / v_lo``; a weight there has the variance the clip
  allows, not a learned one (the paper preset's Adam-SGLD puts 99.9% of the weights
  of a 784-100-10 network there).  Likewise a variance at ``v_hi`` is a clip.
* **a weight no datum reaches keeps its prior.**  An input that is zero in every
  training example (the 67 never-lit border pixels of MNIST) multiplies its
  first-layer weights by zero: the likelihood does not depend on them, their tilted
  distributions are the cavities, and the exact posterior's marginal of such a weight
  is the prior N(0, prior_var).

:func:`posterior_checks` measures both; ``summary.json`` reports them
(:func:`snep.rundir.make_summary`) and CI gates a short default run on them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from snep.posterior import Posterior

__all__ = ["posterior_checks", "precision_cap", "unreached_inputs"]

#: relative tolerance for "at a bound" (float32 sites rounded to float64)
BOUND_RTOL = 1e-3


def precision_cap(prior_var: float, n_workers: int, v_lo: float) -> float:
    """The largest precision q can reach: the prior's plus ``n_workers`` sites at ``1 / v_lo``."""
    return 1.0 / prior_var + n_workers / v_lo


def unreached_inputs(x_train: np.ndarray) -> np.ndarray:
    """Indices of the input features that are zero in every training example."""
    x = np.asarray(x_train)
    if x.ndim != 2:
        raise ValueError(f"x_train has shape {x.shape}; expected (examples, features)")
    return np.flatnonzero(~np.any(x != 0, axis=0))


def posterior_checks(
    posterior: Posterior,
    x_train: np.ndarray,
    *,
    prior_var: float,
    n_workers: int,
    v_lo: float,
    v_hi: float,
) -> dict[str, Any]:
    """The exact-property figures of ``posterior`` (module docstring).

    Returns ``frac_at_precision_cap`` and ``frac_at_v_hi`` (fractions of all weights
    within ``BOUND_RTOL`` of those bounds), ``unreached_inputs`` (how many input
    features are zero in every row of ``x_train``) and, when there are any, the
    first-layer weights they feed: ``unreached_var_ratio`` (min, mean, max of q's
    variance over the prior's) and ``unreached_mean_sd`` (largest ``|mean|`` in prior
    standard deviations).
    """
    var = np.asarray(posterior.var, np.float64)
    prec = 1.0 / var
    cap = precision_cap(prior_var, n_workers, v_lo)
    out: dict[str, Any] = {
        "frac_at_precision_cap": float(np.mean(prec >= cap * (1.0 - BOUND_RTOL))),
        "frac_at_v_hi": float(np.mean(var >= v_hi * (1.0 - BOUND_RTOL))),
    }
    dead = unreached_inputs(x_train)
    out["unreached_inputs"] = int(dead.size)
    first = posterior.spec.layers[0]
    if dead.size and first.n_in == np.asarray(x_train).shape[1]:
        rows = var[first.w_slice].reshape(first.n_in, first.n_out)[dead]
        means = np.asarray(posterior.mean)[first.w_slice].reshape(first.n_in, first.n_out)[dead]
        ratio = rows / prior_var
        out["unreached_var_ratio"] = {
            "min": float(ratio.min()),
            "mean": float(ratio.mean()),
            "max": float(ratio.max()),
        }
        out["unreached_mean_sd"] = float(np.abs(means).max() / np.sqrt(prior_var))
    return out
