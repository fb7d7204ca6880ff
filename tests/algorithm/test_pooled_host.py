"""The default pooled site step in one host pass equals its three passes bitwise.

:func:`snep.algorithm.pooled_host.score_site_step` replaces, on the host, the
accumulation of the score control variate's sums, the cross-fitted moments and the step
on the local posterior (issue 14: they were two thirds of the default iteration); a
device run still takes the three passes, so the two must agree to the bit.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from snep.algorithm.pooled_host import BLOCK, score_site_step
from snep.algorithm.score import accumulate_score, score_moments
from snep.maths.oracles import local_step_reference
from snep.state import ChainArrays, PassScalars

P = BLOCK + 45  # two blocks, the second partial


def _state(C, dtype, inv_beta, first, seed=3):
    rng = np.random.default_rng(seed)
    a = ChainArrays.zeros(C, P, dtype, np)
    for name in ("anchor_prec", "anchor_pm", "site_prec", "site_pm", "cavity_prec", "cavity_pm"):
        row = rng.normal(size=P)
        if name.endswith("prec"):
            row = np.abs(row) + 0.2
        getattr(a, name)[...] = row  # one site for all chains: the rows are the same
    a.site_prec[:, :20] *= 40.0  # the tilted factor's guard binds there
    a.cavity_prec[:, 20:30] = 1e-4  # v_new below v_lo: the precision cap binds
    stats = np.abs(rng.normal(size=(2, 3, P)))
    stats[0, 2, ::2] *= -1  # positive curvature guesses on half of the parameters
    stats[1, 1, 5] = 0.0  # a zero variance: the guard of the slope's division
    if first:
        stats[:, 0] = np.inf
    else:
        stats[1, 0, 7] = np.inf  # one parameter of one half without an estimate yet
    p = PassScalars(lik_scale=30.0, inv_beta=inv_beta, site_step=0.05)
    return a, stats, p


def _samples(C, dtype, n, seed=11):
    rng = np.random.default_rng(seed)
    xs = [rng.normal(size=(C, P)).astype(dtype) for _ in range(n)]
    grads = [rng.normal(scale=3.0, size=(C, P)).astype(dtype) for _ in range(n)]
    grads[-1][2, 40] = np.nan  # a non-finite gradient propagates the same way
    return xs, grads


def _three_passes(a, stats, p, xs, grads, split, prec_min):
    C = a.x.shape[0]
    accs = [np.zeros((C, P), a.x.dtype) for _ in range(3)]
    for x, grad in zip(xs, grads, strict=True):
        a.x[...] = x
        accumulate_score(a, grad, *accs, p)
    mean, var = score_moments(a, *accs, stats, split, len(xs), 0.05)
    f64 = np.float64
    prec, pm = local_step_reference(
        a.site_prec[0].astype(f64), a.site_pm[0].astype(f64), a.cavity_prec[0].astype(f64),
        a.cavity_pm[0].astype(f64), mean, None, p, prec_min, n_chains=C,
        anchor_prec=a.anchor_prec[0].astype(f64), var_hat=var,
    )  # fmt: skip
    return prec.astype(a.x.dtype), pm.astype(a.x.dtype), accs


def _one_pass(a, stats, p, xs, grads, split, prec_min):
    C = a.x.shape[0]
    accs = [np.zeros((C, P), a.x.dtype) for _ in range(3)]
    for x, grad in zip(xs[:-1], grads[:-1], strict=True):
        a.x[...] = x
        accumulate_score(a, grad, *accs, p)
    a.x[...] = xs[-1]
    out = np.empty(P, a.x.dtype), np.empty(P, a.x.dtype)
    score_site_step(
        a, grads[-1], tuple(accs) if len(xs) > 1 else None, stats, split, len(xs), 0.05, p,
        prec_min, *out,
    )  # fmt: skip
    return *out, accs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("first", [True, False])
@pytest.mark.parametrize(("inv_beta", "prec_min"), [(1.0, 1e-3), (8.0, -0.5)])
def test_one_pass_equals_the_three_passes_bitwise(dtype, n, first, inv_beta, prec_min):
    """Accumulate + cross-fitted moments + local step (with the guard's cap; beta = 1/8
    takes its second bound) against the one pass, on 7 chains (halves of 3 and 4), with
    one and with three samples per chain; the new site, the running estimates and the
    accumulators (zeroed) agree to the bit."""
    C, split = 7, 3
    xs, grads = _samples(C, dtype, n)
    results = []
    for step in (_three_passes, _one_pass):
        a, stats, p = _state(C, dtype, inv_beta, first)
        prec, pm, accs = step(a, stats, p, xs, grads, split, prec_min)
        results.append(((prec, pm, stats, *accs), (a.acc_x, a.acc_x2)))
    (one, one_x), (three, _) = results[1], results[0]
    assert np.isnan(one[0]).any()  # the NaN gradient reached the site
    assert np.isfinite(one[0]).sum() > P - 5
    for got, want in zip(one, three, strict=True):
        np.testing.assert_array_equal(got, want)
    # every accumulator is left zero (the worker zeroes a.acc_x, a.acc_x2 after the
    # three passes)
    assert all(np.all(acc == 0) for acc in (*one[3:], *one_x))


def test_threads_split_the_blocks_without_changing_a_bit():
    """Several threads take contiguous runs of blocks; every parameter's arithmetic is
    the same, so the result is too (numba's threads: 2 on CI's two cores)."""
    import numba

    C = 8
    xs, grads = _samples(C, np.float32, 1)
    results = []
    for threads in (1, 2, 0):
        a, stats, p = _state(C, np.float32, 1.0, False)
        prec, pm = np.empty(P, np.float32), np.empty(P, np.float32)
        a.x[...] = xs[0]
        score_site_step(a, grads[0], None, stats, 4, 1, 0.05, p, 1e-3, prec, pm, threads)
        results.append((prec, pm, stats))
    for other in results[1:]:
        for got, want in zip(other, results[0], strict=True):
            np.testing.assert_array_equal(got, want)
    if numba.get_num_threads() < 2:
        pytest.skip("one numba thread here: the parallel variant was not run")


def test_one_pass_refuses_several_samples_without_their_sums():
    a, stats, p = _state(4, np.float32, 1.0, True)
    out = np.empty(P, np.float32), np.empty(P, np.float32)
    with pytest.raises(ValueError, match="n_per_chain=2 without accumulators"):
        score_site_step(a, a.x.copy(), None, stats, 2, 2, 0.05, p, 1e-3, *out)
    with pytest.raises(ValueError, match="split=4 must leave chains in both halves of 4"):
        score_site_step(a, a.x.copy(), None, stats, 4, 1, 0.05, p, 1e-3, *out)


def test_the_worker_takes_the_one_pass_on_the_host_only_for_snep():
    """SNEP's pooled step with the control variate runs the one pass on the host; EP/SMS
    with the control variate accumulates a window and keeps the three passes."""
    from tests.algorithm.models import GaussianMeans

    from snep.algorithm.worker import SnepWorker
    from snep.backends import get_backend
    from snep.config import Config

    data = np.random.default_rng(0).normal(size=(20, 3))
    for method, one_pass in (("snep", True), ("ep", False)):
        config = Config().replace(train={"method": method})
        worker = SnepWorker(0, 2, GaussianMeans(1.0), data, np.zeros(20, np.int32), config,
                            get_backend("numpy"), np.zeros(3))  # fmt: skip
        assert worker._score_cv
        assert (worker._new_site is not None) is one_pass


def test_pass_scalars_are_read_not_kept():
    """The step size and the other scalars are the call's: a changed site step changes
    the result (the one pass does not cache what the three passes recompute)."""
    C = 6
    xs, grads = _samples(C, np.float32, 1)
    outs = []
    for step in (0.05, 0.2):
        a, stats, p = _state(C, np.float32, 1.0, False)
        p = dataclasses.replace(p, site_step=step)
        outs.append(_one_pass(a, stats, p, xs, grads, 3, 1e-3)[0])
    assert not np.array_equal(outs[0], outs[1], equal_nan=True)


@pytest.mark.parametrize(("inv_beta", "prec_min"), [(1.0, 1e-3), (8.0, -0.5)])
def test_damping_to_the_guard_equals_the_array_expressions_bitwise(inv_beta, prec_min):
    """After a reply, the host pass that damps the site to the guard's cap equals the
    worker's array expressions (its device branch) to the bit, and binds somewhere."""
    from snep.algorithm.pooled_host import damp_site_to_guard
    from snep.maths.oracles import guard_cap

    a, _, p = _state(5, np.float32, inv_beta, False)
    a.anchor_prec[:, 100:140] = 0.01  # a lowered cavity: the cap binds there
    f64 = np.float64
    sp, spm = a.site_prec[0].astype(f64), a.site_pm[0].astype(f64)
    cp, cpm = a.cavity_prec[0].astype(f64), a.cavity_pm[0].astype(f64)
    cap = np.maximum(guard_cap(a.anchor_prec[0].astype(f64), cp, p), prec_min)
    over = sp > cap
    m = (cpm + spm) / (cp + sp)
    prec = np.where(over, cap, sp)
    want_prec = prec.astype(np.float32)
    want_pm = np.where(over, m * (cp + prec) - cpm, spm).astype(np.float32)
    assert over.sum() >= 10
    damp_site_to_guard(a, p, prec_min)
    for row in range(5):
        np.testing.assert_array_equal(a.site_prec[row], want_prec)
        np.testing.assert_array_equal(a.site_pm[row], want_pm)
