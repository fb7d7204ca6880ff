"""The posterior server: registration, commuting deltas, rejection, averages."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from snep.algorithm.messages import Push
from snep.algorithm.server import PosteriorServer
from snep.family import DiagGaussian

P = 50


def prior():
    return DiagGaussian(np.full(P, 2.0), np.zeros(P))


def site(rng):
    prec = rng.uniform(1, 5, P)
    return DiagGaussian(prec, prec * rng.normal(0, 1, P))


def test_theta_is_prior_plus_registered_sites():
    rng = np.random.default_rng(0)
    s = PosteriorServer(prior(), 3, 0)
    sites = [site(rng) for _ in range(3)]
    assert not s.register(0, sites[0])
    assert not s.register(2, sites[2])
    assert s.register(1, sites[1])
    np.testing.assert_allclose(s.precision, 2.0 + sum(x.precision for x in sites))
    np.testing.assert_allclose(s.precision_mean, sum(x.precision_mean for x in sites))
    with pytest.raises(ValueError, match="registered twice"):
        s.register(1, sites[1])
    with pytest.raises(ValueError, match="out of range"):
        s.register(3, sites[1])


def test_deltas_commute():
    rng = np.random.default_rng(1)
    pushes = [Push(w, 10, rng.normal(0, 0.1, P), rng.normal(0, 0.1, P), 0) for w in (0, 1, 2, 0)]
    results = []
    for order in itertools.permutations(range(4)):
        s = PosteriorServer(prior(), 3, 10**9)
        for w in range(3):
            s.register(w, DiagGaussian(np.ones(P), np.zeros(P)))
        for i in order:
            s.push(pushes[i])
        results.append((s.precision.copy(), s.precision_mean.copy()))
        assert s.version == 4
    for prec, pm in results[1:]:
        np.testing.assert_allclose(prec, results[0][0], rtol=1e-14)
        np.testing.assert_allclose(pm, results[0][1], rtol=1e-12, atol=1e-15)


def test_non_finite_delta_is_rejected_and_counted():
    s = PosteriorServer(prior(), 1, 0)
    s.register(0, DiagGaussian(np.ones(P), np.zeros(P)))
    before = s.precision.copy()
    bad = np.zeros(P)
    bad[3] = np.nan
    reply = s.push(Push(0, 10, bad, np.zeros(P), 0))
    assert not reply.accepted and s.rejected == 1 and s.version == 0
    np.testing.assert_array_equal(s.precision, before)


def test_running_average_of_moments_from_the_given_iteration():
    s = PosteriorServer(prior(), 1, average_from=20)
    s.register(0, DiagGaussian(np.ones(P), np.zeros(P)))
    means, variances = [], []
    for it, d in [(10, 1.0), (20, 2.0), (30, 3.0)]:
        s.push(Push(0, it, np.full(P, d), np.full(P, d), 0))
        if it >= 20:
            variances.append(1 / s.precision.copy())
            means.append(s.precision_mean / s.precision)
    np.testing.assert_allclose(s.average_mean, np.mean(means, 0))
    np.testing.assert_allclose(s.average_var, np.mean(variances, 0))
    assert s.average_count == 2


def test_staleness_is_versions_behind_at_push():
    s = PosteriorServer(prior(), 2, 0)
    for w in range(2):
        s.register(w, DiagGaussian(np.ones(P), np.zeros(P)))
    z = np.zeros(P)
    s.push(Push(0, 10, z, z, 0))
    s.push(Push(1, 10, z, z, 0))  # worker 1 saw version 0, server is at 1
    s.push(Push(0, 20, z, z, 1))  # worker 0 saw version 1, server at 2
    assert s.staleness == [[0, 1], [1]]
    assert s.stats()["staleness_max"] == 1
