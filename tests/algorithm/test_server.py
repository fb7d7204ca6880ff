"""The posterior server: registration, commuting deltas, rejection, averages."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from snep.algorithm.messages import Push
from snep.algorithm.server import PosteriorServer
from snep.maths.family import DiagGaussian

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


def test_a_rejected_nan_push_rolls_the_worker_back_to_the_servers_record():
    # two SNEP workers against the server, synchronously (as the in-process transport);
    # worker 1's third push is corrupted once (NaN in its message, its site is fine).
    # The server rejects it and keeps theta; the worker restores the site it had sent
    # before, so that its record on the server and its `sent` agree bitwise (the sites
    # are float32 values held in float64: every delta and sum of them is exact), and its
    # next push carries the whole change since then.  The same holds after every reply.
    from snep.algorithm.worker import SnepWorker
    from snep.backends import get_backend
    from snep.config import Config
    from snep.data.loaders import load_digits
    from snep.model.spec import ParamSpec, init_params

    data, backend, n = load_digits(), get_backend("cpu"), 2
    iterations, n_sync = 60, 10
    cfg = Config().replace(train={"workers": n, "iterations": iterations}, model={"hidden": (8,)})
    cfg = cfg.with_data_size(data.n_train)
    assert cfg.snep.n_sync == n_sync
    spec = ParamSpec((data.n_features, 8, data.n_classes))
    x0 = init_params(spec, np.random.default_rng(0))
    theta0 = DiagGaussian(np.full(spec.size, 1.0 / cfg.snep.prior_var), np.zeros(spec.size))
    server = PosteriorServer(theta0, n, cfg.train.averaging_start)
    shards = [(data.x_train[w::n], data.y_train[w::n]) for w in range(n)]
    model = lambda: backend.mlp(spec, cfg.snep.n_chains, 100)  # noqa: E731
    workers = [SnepWorker(w, n, model(), x, y, cfg, backend, x0) for w, (x, y) in enumerate(shards)]
    for w in workers:
        server.register(w.worker, w.initial_site())
    for w in workers:
        w.start(server.reply_to(w.worker))

    def agree(w) -> None:
        np.testing.assert_array_equal(server.sites[w.worker].precision, w.sent.precision)
        np.testing.assert_array_equal(server.sites[w.worker].precision_mean, w.sent.precision_mean)

    rejected_at = None
    for _ in range(iterations):
        for w in workers:
            push = w.step()
            if push is None:
                continue
            if w.worker == 1 and w.pushes == 3:
                push.delta_precision_mean[7] = np.nan
                record = server.sites[1]
                before = [a.copy() for a in (server.precision, server.precision_mean, *record)]
                version = server.version
            reply = server.push(push)
            w.receive(reply)
            agree(w)
            if not reply.accepted:
                rejected_at = w.iteration
                assert server.rejected == 1 and server.version == version
                now = (server.precision, server.precision_mean, *server.sites[1])
                for a, b in zip(now, before, strict=True):  # theta and the record unchanged
                    np.testing.assert_array_equal(a, b)
    for w in workers:  # the final pushes, as a run ends
        w.receive(server.push(w.make_push()))
        agree(w)
    assert rejected_at == 3 * n_sync and server.rejected == 1
    # it ran on: every iteration done, every later push of worker 1 accepted
    assert [w.iteration for w in workers] == [iterations] * n
    assert list(server.pushes) == [iterations // n_sync + 1, iterations // n_sync]
    assert np.all(np.isfinite(server.precision_mean)) and np.all(server.precision > 0)
    total = theta0.precision + sum(s.precision for s in server.sites.values())
    np.testing.assert_allclose(server.precision, total, rtol=1e-12)
