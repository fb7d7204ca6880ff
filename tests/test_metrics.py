"""Metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from snep.metrics import classification_metrics, expected_calibration_error, nll, test_error


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
