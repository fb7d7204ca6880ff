"""entropy_auroc (snep.uncertainty) on a posterior whose answer is known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from snep.model.spec import ParamSpec
from snep.posterior import Posterior
from snep.uncertainty import entropy_auroc


def _logistic_posterior(var: float) -> Posterior:
    # logistic regression on 2 features, 2 classes: the logit difference is 4 x_0
    spec = ParamSpec((2, 2))
    mean = np.zeros(spec.size)
    w = mean[spec.layers[0].w_slice].reshape(2, 2)
    w[0] = [2.0, -2.0]
    return Posterior(spec, np.full(spec.size, 1.0 / var), mean / var)


def test_confident_inputs_against_uncertain_ones():
    rng = np.random.default_rng(0)
    x_in = np.c_[rng.choice([-3.0, 3.0], 200), rng.normal(size=200)]  # far from the boundary
    x_out = np.c_[rng.normal(0, 0.05, 200), rng.normal(size=200)]  # on it: entropy ~ log 2
    got = entropy_auroc(_logistic_posterior(1e-6), x_in, x_out, backend="numpy")
    assert got["mean_entropy_auroc"] == 1.0 and got["bma_entropy_auroc"] == 1.0
    assert got["mean_entropy_out"] == pytest.approx(np.log(2), abs=0.01)
    assert got["mean_entropy_in"] < 1e-3
    swapped = entropy_auroc(_logistic_posterior(1e-6), x_out, x_in, backend="numpy")
    assert swapped["mean_entropy_auroc"] == 0.0


def test_weight_uncertainty_raises_the_model_average_entropy_only():
    # the second feature's weights are uncertain: the point estimate ignores them, the
    # model average is less certain where the second feature is large
    spec = ParamSpec((2, 2))
    prec = np.full(spec.size, 1e6)
    w_prec = prec[spec.layers[0].w_slice].reshape(2, 2)
    w_prec[1] = 0.25  # variance 4
    mean = np.zeros(spec.size)
    mean[spec.layers[0].w_slice] = [2.0, -2.0, 0.0, 0.0]
    post = Posterior(spec, prec, prec * mean)
    rng = np.random.default_rng(1)
    x_in = np.c_[rng.choice([-1.0, 1.0], 300), np.zeros(300)]
    x_out = np.c_[rng.choice([-1.0, 1.0], 300), np.full(300, 3.0)]
    got = entropy_auroc(post, x_in, x_out, n_samples=64, backend="numpy")
    assert got["mean_entropy_auroc"] == 0.5  # identical entropies: ties
    assert got["bma_entropy_auroc"] > 0.95


def test_bad_shapes():
    post = _logistic_posterior(1.0)
    with pytest.raises(ValueError, match="same number of features"):
        entropy_auroc(post, np.zeros((3, 2)), np.zeros((3, 5)))
