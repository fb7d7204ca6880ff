"""Classification metrics of a predictive distribution (docs/method.md §1.6).

Test error, negative log-likelihood (nats per example) and expected
calibration error with equal-width confidence bins (Guo, Pleiss, Sun &
Weinberger, "On calibration of modern neural networks", ICML 2017).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "auroc",
    "classification_metrics",
    "expected_calibration_error",
    "nll",
    "predictive_entropy",
    "test_error",
]

_TINY = 1e-12


def test_error(probs: np.ndarray, y: np.ndarray) -> float:
    """Fraction of examples whose most probable class is wrong."""
    return float(np.mean(np.argmax(probs, axis=1) != y))


test_error.__test__ = False  # not a pytest test despite its name


def nll(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log predictive probability of the true class (nats)."""
    p = probs[np.arange(len(y)), y].astype(np.float64)
    return float(-np.mean(np.log(np.maximum(p, _TINY))))


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    """ECE: sum over confidence bins of ``|B|/N * |accuracy(B) - confidence(B)|``.

    Bins are ``(k/n_bins, (k+1)/n_bins]`` over the top-class probability.
    """
    conf = probs.max(axis=1).astype(np.float64)
    correct = (np.argmax(probs, axis=1) == y).astype(np.float64)
    bins = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    acc = np.bincount(bins, weights=correct, minlength=n_bins)
    cnf = np.bincount(bins, weights=conf, minlength=n_bins)
    return float(np.sum(np.abs(acc - cnf)) / len(y))


def classification_metrics(probs: np.ndarray, y: np.ndarray, prefix: str = "") -> dict[str, float]:
    """``{prefix}error``, ``{prefix}nll`` and ``{prefix}ece`` of ``probs`` (N, K)."""
    return {
        f"{prefix}error": test_error(probs, y),
        f"{prefix}nll": nll(probs, y),
        f"{prefix}ece": expected_calibration_error(probs, y),
    }


def predictive_entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy (nats) over the last axis of ``probs`` (..., K), e.g. of each row of
    (N, K): the predictive uncertainty."""
    p = np.asarray(probs, np.float64)
    return -np.sum(p * np.log(np.maximum(p, _TINY)), axis=-1)


def auroc(scores_positive: np.ndarray, scores_negative: np.ndarray) -> float:
    """Area under the ROC curve of a score that should be higher for the positives.

    The probability that a random positive outscores a random negative, ties counted
    one half (the Mann-Whitney U statistic over ``n_pos * n_neg``), from mid-ranks.
    """
    pos = np.asarray(scores_positive, np.float64).ravel()
    neg = np.asarray(scores_negative, np.float64).ravel()
    if pos.size == 0 or neg.size == 0:
        raise ValueError(
            f"auroc needs scores of both kinds; got {pos.size} positive and {neg.size} "
            "negative: pass non-empty arrays"
        )
    both = np.concatenate([pos, neg])
    order = np.argsort(both, kind="mergesort")
    ranks = np.empty(both.size)
    sorted_scores = both[order]
    # mid-ranks (1-based) of tied runs
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], both.size]
    mid = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(mid, ends - starts)
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))
