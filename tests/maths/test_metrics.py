"""Metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from snep.maths.metrics import classification_metrics, expected_calibration_error, nll, test_error


def test_error_and_nll_by_hand():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1]])
    y = np.array([0, 1, 0])
    assert test_error(probs, y) == pytest.approx(1 / 3)
    assert nll(probs, y) == pytest.approx(-(np.log(0.7) + np.log(0.3) + np.log(0.5)) / 3)


def test_ece_by_hand():
    # confidences 0.9 (correct), 0.9 (wrong), 0.6 (correct): bins (13/15, 14/15] and (8/15, 9/15]
    probs = np.array([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4]])
    y = np.array([0, 0, 0])
    want = (2 / 3) * abs(0.5 - 0.9) + (1 / 3) * abs(1.0 - 0.6)
    assert expected_calibration_error(probs, y) == pytest.approx(want)


def test_perfectly_calibrated_predictions_have_small_ece():
    rng = np.random.default_rng(0)
    n = 200_000
    conf = rng.uniform(0.5, 1.0, n)
    correct = rng.random(n) < conf
    y = np.zeros(n, int)
    probs = np.stack([np.where(correct, conf, 1 - conf), np.where(correct, 1 - conf, conf)], 1)
    # each of the ~8 occupied bins has >= n/8 examples: ECE ~ sqrt(p(1-p)/(n/8)) per bin
    assert expected_calibration_error(probs, y) < 5 * np.sqrt(0.25 / (n / 8))


def test_classification_metrics_prefix():
    out = classification_metrics(np.eye(3), np.arange(3), "bma_")
    assert out == {"bma_error": 0.0, "bma_nll": pytest.approx(0.0, abs=1e-9), "bma_ece": 0.0}


def test_auroc_against_the_pairwise_definition():
    from snep.maths.metrics import auroc

    rng = np.random.default_rng(0)
    pos = np.round(rng.normal(1.0, 1.0, 60), 1)  # rounded: ties between and within
    neg = np.round(rng.normal(0.0, 1.0, 80), 1)
    pairs = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    assert auroc(pos, neg) == pytest.approx(pairs.mean(), abs=1e-12)
    assert auroc([2.0, 3.0], [0.0, 1.0]) == 1.0 and auroc([0.0], [1.0]) == 0.0
    assert auroc([1.0, 1.0], [1.0]) == 0.5
    with pytest.raises(ValueError, match="both kinds"):
        auroc([], [1.0])


def test_predictive_entropy():
    from snep.maths.metrics import predictive_entropy

    probs = np.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0]])
    np.testing.assert_allclose(predictive_entropy(probs), [0.0, np.log(3), np.log(2)], atol=1e-9)
