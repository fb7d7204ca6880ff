"""Benchmarks of the default pooled site step over P = 545,810 (issue 14).

With the defaults (8 chains, ``site_update = "local"``, the score control variate) every
iteration ends with the pooled site step.  Group ``pooled site step c8``, one thread:

* ``one_pass``: :func:`snep.algorithm.pooled_host.score_site_step`, what the host worker
  runs (the sums, the cross-fitted moments and the local step in one blocked pass);
* ``three_passes``: what it replaced and a device backend still runs, on the host:
  :func:`~snep.algorithm.score.accumulate_score` (numba), then
  :func:`~snep.algorithm.score.score_moments` (numba) and
  :func:`~snep.maths.oracles.local_step_reference` (float64 numpy expressions), then the
  accumulators zeroed.

Both compute the same site bitwise (``tests/algorithm/test_pooled_host.py``); the
summary's ``ratio_three_over_one`` is the speed-up.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchutil import LAYERS, bench_call
from snep.algorithm.pooled_host import score_site_step
from snep.algorithm.score import accumulate_score, score_moments
from snep.maths.oracles import local_step_reference
from snep.model.spec import ParamSpec
from snep.state import ChainArrays, PassScalars

P = ParamSpec(LAYERS).size  # 545,810
CHAINS = 8
RATE = 0.05
PREC_MIN = 1e-3


def _state(seed: int = 0) -> tuple[ChainArrays, np.ndarray, np.ndarray, PassScalars]:
    """A worker-like state (one site for all chains) after a few site steps."""
    rng = np.random.default_rng(seed)
    a = ChainArrays.zeros(CHAINS, P)
    a.x[...] = rng.normal(0.0, 0.05, (CHAINS, P))
    a.site_prec[...] = 1.0
    a.site_pm[...] = a.x[0]
    a.cavity_prec[...] = 2.0
    a.anchor_prec[...] = 3.0
    a.anchor_pm[...] = a.x[0]
    grad = rng.normal(0.0, 0.1, (CHAINS, P)).astype(np.float32)
    stats = np.abs(rng.normal(size=(2, 3, P)))
    return a, grad, stats, PassScalars(lik_scale=100.0, site_step=0.02)


@pytest.mark.parametrize("impl", ["one_pass", "three_passes"])
def test_pooled_site_step(benchmark, impl):
    a, grad, stats, p = _state()
    out = np.empty(P, np.float32), np.empty(P, np.float32)
    accs = [np.zeros((CHAINS, P), np.float32) for _ in range(3)]
    f64 = np.float64

    def one_pass() -> None:
        score_site_step(a, grad, None, stats, CHAINS // 2, 1, RATE, p, PREC_MIN, *out)

    def three_passes() -> None:
        accumulate_score(a, grad, *accs, p)
        mean, var = score_moments(a, *accs, stats, CHAINS // 2, 1, RATE)
        prec, pm = local_step_reference(
            a.site_prec[0].astype(f64), a.site_pm[0].astype(f64),
            a.cavity_prec[0].astype(f64), a.cavity_pm[0].astype(f64), mean, None, p,
            PREC_MIN, n_chains=CHAINS, anchor_prec=a.anchor_prec[0].astype(f64), var_hat=var,
        )  # fmt: skip
        out[0][...] = prec
        out[1][...] = pm
        a.acc_x[...] = 0.0
        a.acc_x2[...] = 0.0

    bench_call(
        benchmark,
        one_pass if impl == "one_pass" else three_passes,
        group=f"pooled site step c{CHAINS} t1",
        P=P,
        threads=1,
        chains=CHAINS,
        bench="pooled_site_step",
        impl=impl,
    )
    assert np.isfinite(out[0]).all() and np.isfinite(out[1]).all()
