"""The evaluator's metrics against an independent float64 reference with the same draws."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

import predictive_reference as ref
from snep.backends import get_backend
from snep.config import Config
from snep.data.loaders import load_digits
from snep.evaluate import Evaluator
from snep.model.spec import ParamSpec


def test_bma_point_and_average_metrics_equal_a_float64_monte_carlo_average():
    # the model average over bma_samples draws of the documented generator (seed
    # train.seed), each a plain float64 forward pass, the probabilities averaged; the
    # metrics recomputed from their definitions.  snep computes in float32: each metric
    # may differ by what the float32 bound allows (predictive_reference.allowed: the NLL
    # by ~3e-4, the error by 1/N per example that close to a tie, the ECE by ~1e-4 plus
    # 2/N per example that close to a tie or a bin edge: at most one here, of 360)
    data = load_digits()
    spec = ParamSpec((data.n_features, 16, data.n_classes))
    rng = np.random.default_rng(5)
    prec = rng.uniform(4, 40, spec.size)
    state = SimpleNamespace(
        precision=prec,
        precision_mean=prec * rng.normal(0, 0.3, spec.size),
        average_mean=rng.normal(0, 0.3, spec.size),
    )
    config = Config().replace(train={"bma_samples": 6, "seed": 11})
    got = Evaluator(spec, data, get_backend("cpu"), config)(state)
    y = data.y_test
    thetas = ref.draws(state.precision, state.precision_mean, 6, 11)
    mean = state.precision_mean / state.precision
    for prefix, params in (
        ("bma_", thetas),
        ("mean_", mean[None]),
        ("avg_", state.average_mean[None]),
    ):
        probs, bound, ratio = ref.average(spec.layer_sizes, params, data.x_test)
        slack = ref.allowed(probs, bound, ratio)
        assert slack["error"] <= 1 / len(y) and slack["ece"] <= 3 / len(y), (prefix, slack)
        ref.check_metrics(got, prefix, ref.metrics(probs, y), slack)
    assert set(got) == {
        f"{p}{m}" for p in ("bma_", "mean_", "avg_") for m in ("error", "nll", "ece")
    }
