"""An independent float64 reference of snep's predictions and metrics, with a bound on how
far snep's float32 arithmetic may be from it: for the tests of the Bayesian model average
(``Posterior.predict_proba``, ``Evaluator``) and of the metrics a run records.

Nothing here calls snep's model, backends or metrics: the forward pass unpacks the flat
parameters by the layout documented in :mod:`snep.model.spec` (per layer ``W`` row-major
``(n_in, n_out)``, then ``b``), in float64, and the metrics are recomputed from their
definitions (:mod:`snep.maths.metrics`).  Only the draws are reproduced from snep's documented
generator (``Posterior.sample``: ``mean + sd * default_rng(seed).standard_normal((S, P))``),
so that snep and the reference average the same networks.

The bound (Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed., §3.1): with
``u = 2**-24`` the unit roundoff of float32 and ``gamma(n) = n u / (1 - n u)``, a float32
dot product of ``n`` terms plus a bias, with the weights, bias and inputs rounded to
float32 first, is within ``gamma(n + 3) * (sum |w_i h_i| + |b|)`` of the exact one, in any
summation order (BLAS blocking, FMA); an error ``E`` of the inputs adds at most
``(1 + u) |W|^T E``, and ReLU does not increase it.  Through the softmax an error ``D`` of
every logit moves each probability by a factor within ``exp(+-2 D)``; the float32 softmax
itself (max shift, ``exp`` within ``EXP_ULPS`` ulps, a sum of ``K`` terms, a division)
adds ``4 u max|z| + (2 EXP_ULPS + K + 2) u`` to that log-ratio.  The average over draws is
taken in float64 (its rounding, about ``S * 2**-53``, is far below the rest).
"""

from __future__ import annotations

import itertools

import numpy as np

U32 = 2.0**-24  # unit roundoff of float32
EXP_ULPS = 8  # generous: libm/SVML float32 exp is within 1-4 ulps
TINY = 1e-12  # the NLL's floor on a probability (snep.maths.metrics)
N_BINS = 15  # ECE bins (snep.maths.metrics)


def gamma(n: int) -> float:
    return n * U32 / (1.0 - n * U32)


def draws(precision: np.ndarray, precision_mean: np.ndarray, n: int, seed: int) -> np.ndarray:
    """The ``n`` draws of ``Posterior.sample(n, seed)``, from its documented generator."""
    var = 1.0 / precision
    z = np.random.default_rng(seed).standard_normal((n, precision.size))
    return precision_mean * var + np.sqrt(var) * z


def forward(
    layer_sizes: tuple[int, ...], theta: np.ndarray, x: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Float64 softmax probabilities (N, K) of one network, and for each example the bound
    ``r`` (N,) on ``|log p_float32 - log p|`` of any of its probabilities."""
    h = np.asarray(x, np.float64)
    err = U32 * np.abs(h)  # x rounded to float32
    off = 0
    n_layers = len(layer_sizes) - 1
    for i, (n_in, n_out) in enumerate(itertools.pairwise(layer_sizes)):
        w = theta[off : off + n_in * n_out].reshape(n_in, n_out)
        off += n_in * n_out
        b = theta[off : off + n_out]
        off += n_out
        z = h @ w + b
        carried = err @ np.abs(w)
        err = gamma(n_in + 3) * (np.abs(h) @ np.abs(w) + np.abs(b) + carried) + (1 + U32) * carried
        h = np.maximum(z, 0.0) if i < n_layers - 1 else z
    assert off == theta.size, "layer sizes do not match the parameters"
    k = h.shape[1]
    shifted = h - h.max(axis=1, keepdims=True)
    p = np.exp(shifted)
    p /= p.sum(axis=1, keepdims=True)
    zmax = np.abs(h).max(axis=1) + err.max(axis=1)
    r = 2 * err.max(axis=1) + 4 * U32 * zmax + (2 * EXP_ULPS + k + 2) * U32
    return p, r


def average(
    layer_sizes: tuple[int, ...], thetas: np.ndarray, x: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Model average over the rows of ``thetas`` (S, P): probabilities ``P`` (N, K), the
    elementwise bound ``B`` on ``|P_float32 - P|`` (N, K), and ``R`` (N,), the bound on
    ``|log P_float32 - log P|`` of every probability of an example."""
    probs = np.zeros((x.shape[0], layer_sizes[-1]))
    bound = np.zeros_like(probs)
    ratio = np.zeros(x.shape[0])
    for theta in thetas:
        p, r = forward(layer_sizes, theta, x)
        probs += p
        bound += p * np.expm1(r)[:, None]
        ratio = np.maximum(ratio, r)
    s = len(thetas)
    return probs / s, bound / s + 1e-15, ratio + 1e-15


def metrics(probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Test error, NLL (nats) and ECE (``N_BINS`` bins ``(k/N_BINS, (k+1)/N_BINS]`` of the
    top probability), from their definitions."""
    top = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    correct = top == y
    ece = 0.0
    for k in range(N_BINS):
        lo, hi = k / N_BINS, (k + 1) / N_BINS
        members = (conf > lo) & (conf <= hi) if k else conf <= hi
        if members.any():
            ece += abs(np.sum(correct[members]) - np.sum(conf[members]))
    return {
        "error": float(np.mean(~correct)),
        "nll": float(-np.mean(np.log(np.maximum(probs[np.arange(len(y)), y], TINY)))),
        "ece": ece / len(y),
    }


def allowed(probs: np.ndarray, bound: np.ndarray, ratio: np.ndarray) -> dict[str, float]:
    """How far each of :func:`metrics` of float32 probabilities within ``bound`` (and
    ``ratio`` in log) of ``probs`` may be from the reference's.

    An example whose top class could change within the bound may flip its error (1/N
    each); the NLL moves by at most the mean log-ratio; the ECE by the mean change of the
    top probability, plus 2/N for each example that could change bin or correctness.
    """
    n = len(probs)
    top = probs.argmax(axis=1)
    rows = np.arange(n)
    low = probs[rows, top] - bound[rows, top]
    others = (probs + bound).copy()
    others[rows, top] = -np.inf
    flips = low <= others.max(axis=1)
    conf = probs.max(axis=1)
    conf_bound = bound.max(axis=1)
    edge = np.ceil((conf - conf_bound - 1e-12) * N_BINS) != np.ceil(
        (conf + conf_bound + 1e-12) * N_BINS
    )
    return {
        "error": np.sum(flips) / n,
        "nll": float(np.mean(ratio)),
        "ece": float(np.mean(conf_bound)) + 2 * np.sum(flips | edge) / n,
    }


def check_metrics(got: dict[str, float], prefix: str, want: dict, slack: dict) -> None:
    """``got[prefix + name]`` within ``slack[name]`` of ``want[name]`` for every metric."""
    for name, value in want.items():
        key = prefix + name
        assert abs(got[key] - value) <= slack[name], (
            f"{key} = {got[key]!r}, the float64 reference {value!r} (allowed {slack[name]:.3g})"
        )
