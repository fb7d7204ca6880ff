"""Cross-chain convergence diagnostics: rank-normalised split R-hat and bulk ESS.

Each SNEP worker runs several SG-MCMC chains and records, at every iteration,
a few scalar statistics per chain (the minibatch log-likelihood, a handful of
fixed parameter coordinates).  At every evaluation interval the worst values
over the statistics (largest R-hat, smallest effective sample size) go into
the metrics stream, with a warning when R-hat exceeds :data:`RHAT_WARN`.

Everything here is written from the definitions in

* Gelman, A. & Rubin, D. B. (1992). "Inference from iterative simulation
  using multiple sequences". *Statistical Science* 7(4), 457-472 (the
  potential scale reduction factor);
* Vehtari, A., Gelman, A., Simpson, D., Carpenter, B. & Bürkner, P.-C.
  (2021). "Rank-normalization, folding, and localization: an improved
  R-hat for assessing convergence of MCMC". *Bayesian Analysis* 16(2),
  667-718 (split chains, rank normalisation, folding, and the multi-chain
  effective sample size with Geyer's initial monotone sequence);

in pure NumPy (the inverse normal CDF is Wichura's algorithm AS 241,
*Applied Statistics* 37(3), 1988).

Draw arrays are shaped ``(n_draws, n_chains, ...)``: the trailing dimensions
index independent statistics and every result has their shape.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["RHAT_WARN", "ChainTrace", "effective_sample_size", "split_rhat"]

#: R-hat above this value signals chains that have not mixed (Vehtari et al. 2021, §4).
RHAT_WARN = 1.1

#: fewest draws per chain for which the diagnostics are computed (two per split half)
_MIN_DRAWS = 4


# --------------------------------------------------------------------------- helpers


def _polyval(coeffs: tuple[float, ...], x: np.ndarray) -> np.ndarray:
    """Horner evaluation of ``sum(coeffs[i] * x**i)`` (lowest degree first)."""
    out = np.full_like(x, coeffs[-1])
    for c in coeffs[-2::-1]:
        out = out * x + c
    return out


# Wichura (1988), AS 241 PPND16: rational approximations of the normal quantile,
# relative accuracy about 1e-16.
_AS241_A = (
    3.387132872796366608,
    133.14166789178437745,
    1971.5909503065514427,
    13731.693765509461125,
    45921.953931549871457,
    67265.770927008700853,
    33430.575583588128105,
    2509.0809287301226727,
)
_AS241_B = (
    1.0,
    42.313330701600911252,
    687.1870074920579083,
    5394.1960214247511077,
    21213.794301586595867,
    39307.89580009271061,
    28729.085735721942674,
    5226.495278852545925,
)
_AS241_C = (
    1.42343711074968357734,
    4.6303378461565452959,
    5.7694972214606914055,
    3.64784832476320460504,
    1.27045825245236838258,
    0.24178072517745061177,
    0.0227238449892691845833,
    7.7454501427834140764e-4,
)
_AS241_D = (
    1.0,
    2.05319162663775882187,
    1.6763848301838038494,
    0.68976733498510000455,
    0.14810397642748007459,
    0.0151986665636164571966,
    5.475938084995344946e-4,
    1.05075007164441684324e-9,
)
_AS241_E = (
    6.6579046435011037772,
    5.4637849111641143699,
    1.7848265399172913358,
    0.29656057182850489123,
    0.026532189526576123093,
    0.0012426609473880784386,
    2.71155556874348757815e-5,
    2.01033439929228813265e-7,
)
_AS241_F = (
    1.0,
    0.59983220655588793769,
    0.13692988092273580531,
    0.0148753612908506148525,
    7.868691311456132591e-4,
    1.8463183175100546818e-5,
    1.4215117583164458887e-7,
    2.04426310338993978564e-15,
)


def _normal_quantile(p: np.ndarray) -> np.ndarray:
    """Inverse standard normal CDF for ``0 < p < 1`` (Wichura 1988, AS 241)."""
    p = np.asarray(p, dtype=np.float64)
    q = p - 0.5
    out = np.empty_like(p)
    central = np.abs(q) <= 0.425
    if central.any():
        qc = q[central]
        r = 0.180625 - qc * qc
        out[central] = qc * _polyval(_AS241_A, r) / _polyval(_AS241_B, r)
    tail = ~central
    if tail.any():
        qt = q[tail]
        r = np.sqrt(-np.log(np.minimum(p[tail], 1.0 - p[tail])))
        near = r <= 5.0
        val = np.empty_like(r)
        rn = r[near] - 1.6
        val[near] = _polyval(_AS241_C, rn) / _polyval(_AS241_D, rn)
        rf = r[~near] - 5.0
        val[~near] = _polyval(_AS241_E, rf) / _polyval(_AS241_F, rf)
        out[tail] = np.where(qt < 0.0, -val, val)
    return out


def _as_draws(draws: np.ndarray) -> np.ndarray:
    """``draws`` as float64 ``(n_draws, n_chains, ...)``, or a ValueError saying why not."""
    if np.iscomplexobj(draws):
        raise ValueError("draws must be a real numeric array, got complex values")
    try:
        arr = np.asarray(draws, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"draws must be a real numeric array, got {type(draws).__name__}") from exc
    if arr.ndim < 2:
        raise ValueError(
            f"draws has shape {arr.shape}; expected (n_draws, n_chains, ...) with at least 2 "
            "dimensions"
        )
    if arr.shape[1] < 1:
        raise ValueError(f"draws has shape {arr.shape}; expected at least one chain (axis 1)")
    return arr


def _split_chains(arr: np.ndarray) -> np.ndarray:
    """``(n, C, K)`` -> ``(n // 2, 2C, K)``: first and second halves (odd n drops the middle)."""
    half = arr.shape[0] // 2
    return np.concatenate([arr[:half], arr[arr.shape[0] - half :]], axis=1)


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..S along axis 0 of ``x`` (S, K), ties given their average rank."""
    s = x.shape[0]
    order = np.argsort(x, axis=0, kind="stable")
    xs = np.take_along_axis(x, order, axis=0)
    pos = np.arange(s, dtype=np.float64)[:, None] * np.ones((1, x.shape[1]))
    differs = xs[1:] != xs[:-1]
    ones = np.ones((1, x.shape[1]), dtype=bool)
    starts = np.concatenate([ones, differs], axis=0)  # first of a run of equal values
    ends = np.concatenate([differs, ones], axis=0)  # last of a run of equal values
    first = np.maximum.accumulate(np.where(starts, pos, 0.0), axis=0)
    last = np.minimum.accumulate(np.where(ends, pos, s - 1.0)[::-1], axis=0)[::-1]
    ranks = np.empty_like(pos)
    np.put_along_axis(ranks, order, 0.5 * (first + last) + 1.0, axis=0)
    return ranks


def _rank_normalise(x: np.ndarray) -> np.ndarray:
    """Vehtari et al. (2021) eq. (14): ``Phi^-1((r - 3/8) / (S + 1/4))`` over the pooled draws."""
    n, m, k = x.shape
    s = n * m
    ranks = _average_ranks(x.reshape(s, k))
    return _normal_quantile((ranks - 0.375) / (s + 0.25)).reshape(n, m, k)


def _rhat_of_split(x: np.ndarray) -> np.ndarray:
    """Potential scale reduction of split chains ``x`` (n, M, K), after rank normalisation.

    ``sqrt(var_plus / W)`` with ``var_plus = (n-1)/n W + B/n`` (Gelman & Rubin
    1992; Vehtari et al. 2021 eqs. 3-4).  When every split chain is constant
    (``W = 0``) it is 1 if all draws are equal and inf otherwise.
    """
    n = x.shape[0]
    z = _rank_normalise(x)
    w = np.mean(np.var(z, axis=0, ddof=1), axis=0)
    b_over_n = np.var(np.mean(z, axis=0), axis=0, ddof=1)  # split: always >= 2 chains
    var_plus = (n - 1.0) / n * w + b_over_n
    with np.errstate(divide="ignore", invalid="ignore"):
        rhat = np.sqrt(var_plus / w)
    # constancy decided on the raw values: tied raw draws get exactly tied ranks, but
    # floating-point variances of equal values need not be exactly zero
    within_constant = np.all(np.ptp(x, axis=0) == 0.0, axis=0)
    all_equal = np.ptp(x.reshape(-1, x.shape[2]), axis=0) == 0.0
    return np.where(within_constant, np.where(all_equal, 1.0, np.inf), rhat)


def _finite_columns(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``arr`` reshaped to ``(n, C, K)`` with non-finite columns zeroed, and the bad-column mask."""
    x = arr.reshape(arr.shape[0], arr.shape[1], -1)
    bad = ~np.all(np.isfinite(x), axis=(0, 1))
    if bad.any():
        x = np.where(bad, 0.0, x)
    return x, bad


# --------------------------------------------------------------------------- public API


def split_rhat(draws: np.ndarray) -> np.ndarray:
    """Rank-normalised split R-hat per statistic (Vehtari et al. 2021).

    Each chain is split into its first and second halves (the middle draw is
    dropped when ``n_draws`` is odd), the pooled draws are rank-normalised,
    and the potential scale reduction factor of Gelman & Rubin (1992) is
    computed from the within- and between-split-chain variances.  The value
    returned is the **maximum of the bulk R-hat** (rank-normalised draws) and
    the **tail R-hat** (rank-normalised draws folded about their pooled
    median, ``|theta - median|``), as recommended in Vehtari et al. (2021,
    §4.2): the bulk version catches chains with different locations, the
    folded one chains with different scales.

    Parameters
    ----------
    draws : np.ndarray
        Draws shaped ``(n_draws, n_chains, ...)``; the trailing dimensions
        index the statistics.  One chain is accepted (its two halves are
        then compared), but the diagnostic is meant for several.

    Returns
    -------
    np.ndarray
        Float64 array shaped ``draws.shape[2:]`` (0-d for 2-d input).  NaN
        when ``n_draws < 4`` and for statistics with a non-finite draw.  When
        every split chain of a statistic is constant the R-hat is 1.0 if all
        its draws are the same value and ``inf`` if the chains (or halves)
        are stuck at different values.

    Raises
    ------
    ValueError
        If ``draws`` is not a real array with at least two dimensions and one chain.

    References
    ----------
    Vehtari, Gelman, Simpson, Carpenter & Bürkner (2021), "Rank-normalization,
    folding, and localization: an improved R-hat for assessing convergence of
    MCMC", *Bayesian Analysis* 16(2), 667-718.  Gelman & Rubin (1992),
    "Inference from iterative simulation using multiple sequences",
    *Statistical Science* 7(4), 457-472.
    """
    arr = _as_draws(draws)
    out_shape = arr.shape[2:]
    if arr.shape[0] < _MIN_DRAWS:
        return np.full(out_shape, np.nan)
    x, bad = _finite_columns(arr)
    if x.shape[2] == 0:
        return np.empty(out_shape)
    xs = _split_chains(x)
    bulk = _rhat_of_split(xs)
    folded = np.abs(xs - np.median(xs.reshape(-1, xs.shape[2]), axis=0))
    tail = _rhat_of_split(folded)
    rhat = np.where(bad, np.nan, np.maximum(bulk, tail))
    return rhat.reshape(out_shape)


def _autocovariance(z: np.ndarray) -> np.ndarray:
    """Biased autocovariances ``(1/n) sum_i (z_i - mean)(z_{i+t} - mean)`` along axis 0, by FFT."""
    n = z.shape[0]
    centred = z - z.mean(axis=0)
    nfft = 1 << (2 * n - 1).bit_length()  # zero padding >= 2n - 1: no circular wrap-around
    f = np.fft.rfft(centred, n=nfft, axis=0)
    return np.fft.irfft(f * np.conj(f), n=nfft, axis=0)[:n] / n


def effective_sample_size(draws: np.ndarray) -> np.ndarray:
    """Bulk effective sample size per statistic (Vehtari et al. 2021, §3.2).

    The chains are split in halves and rank-normalised as in
    :func:`split_rhat`.  With ``M`` split chains of ``n`` draws, ``W`` the
    mean within-chain variance, ``var_plus = (n-1)/n W + B/n`` and
    ``acov_{t,m}`` the (biased, FFT) autocovariance of split chain ``m`` at
    lag ``t``, the combined autocorrelation is
    ``rho_t = 1 - (W - mean_m acov_{t,m}) / var_plus`` (``rho_0 = 1``).  The
    sums of adjacent pairs ``P_k = rho_{2k} + rho_{2k+1}`` are truncated at
    the first non-positive one and made non-increasing (Geyer's initial
    monotone sequence), ``tau = -1 + 2 sum_k P_k`` and ``ESS = M n / tau``.
    As a guard against antithetic chains, ``tau`` is floored at
    ``1 / log10(M n)`` (ESS at most ``M n log10(M n)``).

    Parameters
    ----------
    draws : np.ndarray
        Draws shaped ``(n_draws, n_chains, ...)``; the trailing dimensions
        index the statistics.

    Returns
    -------
    np.ndarray
        Float64 array shaped ``draws.shape[2:]``.  NaN when ``n_draws < 4``
        and for statistics with a non-finite draw.  A statistic whose draws
        are all equal gets ``M n`` (the number of draws used; nothing is
        lost to autocorrelation); chains stuck at different constants get
        about ``M / 2`` (long chains).

    Raises
    ------
    ValueError
        If ``draws`` is not a real array with at least two dimensions and one chain.

    References
    ----------
    Vehtari, Gelman, Simpson, Carpenter & Bürkner (2021), "Rank-normalization,
    folding, and localization: an improved R-hat for assessing convergence of
    MCMC", *Bayesian Analysis* 16(2), 667-718.  Geyer (1992), "Practical
    Markov chain Monte Carlo", *Statistical Science* 7(4), 473-483.
    """
    arr = _as_draws(draws)
    out_shape = arr.shape[2:]
    if arr.shape[0] < _MIN_DRAWS:
        return np.full(out_shape, np.nan)
    x, bad = _finite_columns(arr)
    if x.shape[2] == 0:
        return np.empty(out_shape)
    xs = _split_chains(x)
    n, m, _ = xs.shape
    total = float(n * m)
    z = _rank_normalise(xs)

    acov = _autocovariance(z)  # (n, M, K)
    w = np.mean(acov[0], axis=0) * n / (n - 1.0)  # mean of the unbiased chain variances
    b_over_n = np.var(np.mean(z, axis=0), axis=0, ddof=1)
    var_plus = (n - 1.0) / n * w + b_over_n
    all_equal = np.ptp(xs.reshape(-1, xs.shape[2]), axis=0) == 0.0
    safe_var = np.where(all_equal, 1.0, var_plus)
    rho = 1.0 - (w - np.mean(acov, axis=1)) / safe_var  # (n, K)
    rho[0] = 1.0

    n_pairs = n // 2
    pairs = rho[0 : 2 * n_pairs : 2] + rho[1 : 2 * n_pairs : 2]  # (n_pairs, K)
    # initial positive sequence: P_0 and the following pairs up to the first P_k <= 0
    positive = np.concatenate([np.ones((1, pairs.shape[1]), bool), pairs[1:] > 0.0], axis=0)
    keep = np.logical_and.accumulate(positive, axis=0)
    monotone = np.minimum.accumulate(pairs, axis=0)  # initial monotone sequence
    tau = -1.0 + 2.0 * np.sum(np.where(keep, monotone, 0.0), axis=0)
    tau = np.maximum(tau, 1.0 / math.log10(total))
    ess = np.where(all_equal, total, total / tau)
    return np.where(bad, np.nan, ess).reshape(out_shape)


class ChainTrace:
    """Per-interval record of scalar statistics from several chains, thinned to a bound.

    ``append`` is called once per iteration with one value per chain and
    statistic.  When the buffer is full and another draw is due, every
    other stored draw is dropped and the stride (appends per stored draw)
    doubles, so at most ``capacity`` draws are held and the stored draws are
    always evenly spaced: they are appends ``0, stride, 2 stride, ...`` of
    the interval.  :meth:`summary` gives the worst split R-hat and bulk ESS
    over the statistics (Vehtari et al. 2021); :meth:`reset` starts the next
    interval.

    Parameters
    ----------
    n_chains : int
        Number of chains (``>= 1``; the diagnostics are meant for ``>= 2``).
    n_stats : int
        Number of statistics per chain (``>= 1``).
    capacity : int, default 4096
        Most draws stored (``>= 4``, the fewest the diagnostics need).
    xp : module, default numpy
        Array module of the buffer and of the appended values (CuPy for a worker on a
        GPU: appending is a device copy, nothing is read back until :meth:`summary`).
    to_host : callable, default numpy.asarray
        Turns an ``xp`` array into a NumPy array (e.g. ``cupy.asnumpy``).

    Raises
    ------
    ValueError
        If an argument is not an integer in its range.
    """

    def __init__(
        self,
        n_chains: int,
        n_stats: int,
        capacity: int = 4096,
        xp: Any = np,
        to_host: Callable[[Any], np.ndarray] = np.asarray,
    ) -> None:
        for name, value, low in (
            ("n_chains", n_chains, 1),
            ("n_stats", n_stats, 1),
            ("capacity", capacity, _MIN_DRAWS),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        self.n_chains = int(n_chains)
        self.n_stats = int(n_stats)
        self.capacity = int(capacity)
        self._xp = xp
        self._to_host = to_host
        self._buf = xp.zeros((self.capacity, self.n_chains, self.n_stats), np.float64)
        self.reset()

    def reset(self) -> None:
        """Forget every draw and return to stride 1 (start of an interval)."""
        self._len = 0
        self._stride = 1
        self._appended = 0

    def __len__(self) -> int:
        """Number of draws stored (at most ``capacity``)."""
        return self._len

    @property
    def stride(self) -> int:
        """Appends per stored draw: 1, doubled at every thinning."""
        return self._stride

    @property
    def n_appended(self) -> int:
        """Appends since construction or the last :meth:`reset`."""
        return self._appended

    def draws(self) -> np.ndarray:
        """A host copy of the stored draws, ``(len(self), n_chains, n_stats)``."""
        return np.array(self._to_host(self._buf[: self._len]), np.float64)

    def counters(self) -> tuple[int, int, int]:
        """``(len, stride, appended)``: with :meth:`draws`, the whole state."""
        return self._len, self._stride, self._appended

    def restore(self, draws: Any, stride: int, appended: int) -> None:
        """Restore a state saved as :meth:`draws` and :meth:`counters` (a checkpoint);
        ``draws`` is an array of ``xp`` (copied to the device first on a GPU)."""
        n = int(draws.shape[0])
        if n > self.capacity or tuple(draws.shape[1:]) != (self.n_chains, self.n_stats):
            raise ValueError(
                f"saved draws have shape {tuple(draws.shape)}; expected at most "
                f"({self.capacity}, {self.n_chains}, {self.n_stats})"
            )
        self._buf[:n] = draws
        self._len, self._stride, self._appended = n, int(stride), int(appended)

    def append(self, values: np.ndarray) -> None:
        """Record one iteration: ``values`` shaped ``(n_chains, n_stats)``, copied in.

        Raises
        ------
        ValueError
            If ``values`` is not a real array of shape ``(n_chains, n_stats)``.
        """
        if self._xp is np:
            if np.iscomplexobj(values):
                raise ValueError("values must be real, got complex values")
            try:
                v = np.asarray(values, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"values must be a real host (NumPy) array of shape "
                    f"({self.n_chains}, {self.n_stats}), got {type(values).__name__}"
                ) from exc
        else:  # a device array: copied on the device, never read here
            v = values
        if v.shape != (self.n_chains, self.n_stats):
            raise ValueError(
                f"values has shape {v.shape}; expected (n_chains, n_stats) = "
                f"({self.n_chains}, {self.n_stats})"
            )
        index = self._appended
        self._appended += 1
        if index % self._stride:
            return
        if self._len == self.capacity:
            # thin: keep stored draws 0, 2, 4, ... (appends that are multiples of 2 stride)
            kept = (self._len + 1) // 2
            self._buf[:kept] = self._buf[0 : self._len : 2].copy()  # no overlapping copy
            self._len = kept
            self._stride *= 2
            if index % self._stride:
                return
        self._buf[self._len] = v
        self._len += 1

    def summary(self) -> dict[str, float]:
        """Worst diagnostics over the statistics of the stored draws.

        Returns
        -------
        dict[str, float]
            ``rhat_max`` (largest split R-hat, :func:`split_rhat`), ``ess_min``
            (smallest bulk ESS, :func:`effective_sample_size`) and
            ``ess_per_chain_min`` (``ess_min / n_chains``).  The keys are always
            present; the values are NaN with fewer than 4 stored draws, or when a
            statistic had a non-finite value in the interval.
        """
        if self._len < _MIN_DRAWS:
            return {"rhat_max": math.nan, "ess_min": math.nan, "ess_per_chain_min": math.nan}
        draws = self.draws()
        rhat_max = float(np.max(split_rhat(draws)))
        ess_min = float(np.min(effective_sample_size(draws)))
        return {
            "rhat_max": rhat_max,
            "ess_min": ess_min,
            "ess_per_chain_min": ess_min / self.n_chains,
        }
