"""The fused passes of the exchange (snep.algorithm.exchange_kernels) against plain numpy
statements, and the exact properties of the wire's rounding and of the server's reply."""

from __future__ import annotations

import numpy as np
import pytest

from snep.algorithm.exchange_kernels import (
    apply_push,
    apply_push_average,
    delta_is_finite,
    make_delta,
)
from snep.algorithm.messages import Push
from snep.algorithm.server import PosteriorServer
from snep.maths.family import DiagGaussian


def _sites(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A float32 site and a float64 'sent' near it that is not float32-representable."""
    site = rng.normal(0.0, 50.0, n).astype(np.float32)
    sent = site.astype(np.float64) + rng.normal(0.0, 1.0, n) * rng.choice([1e-3, 1.0, 1e3], n)
    return site, sent


@pytest.mark.parametrize("wire", [np.float32, np.float64])
def test_make_delta_equals_the_numpy_statements(wire):
    rng = np.random.default_rng(0)
    site, sent = _sites(rng, 10_001)
    delta, new_sent = np.empty(site.size, wire), np.empty(site.size)
    make_delta(site, sent, delta, new_sent)
    want = (site.astype(np.float64) - sent).astype(wire)
    np.testing.assert_array_equal(delta, want)
    np.testing.assert_array_equal(new_sent, sent + want.astype(np.float64))


def test_a_float64_wire_sends_the_site_exactly():
    """Float32 site and float32-valued sent: the float64 delta is exact, so the new sent
    is the site bit for bit (the protocol of a float64 wire)."""
    rng = np.random.default_rng(1)
    site = rng.normal(0, 50, 4096).astype(np.float32)
    sent = rng.normal(0, 50, 4096).astype(np.float32).astype(np.float64)
    delta, new_sent = np.empty(4096), np.empty(4096)
    make_delta(site, sent, delta, new_sent)
    np.testing.assert_array_equal(new_sent, site.astype(np.float64))


def test_rounding_error_is_carried_not_accumulated():
    """Over many float32 pushes the server's site is the worker's sent exactly, and the
    part of the site not yet sent stays within one rounding of the last delta: the
    rounding errors do not add up (they travel with the next push)."""
    rng = np.random.default_rng(2)
    n = 5000
    site = rng.normal(0, 100, n).astype(np.float32)
    sent = site.astype(np.float64)
    server_site = sent.copy()
    delta, new_sent = np.empty(n, np.float32), np.empty(n)
    for _ in range(200):
        # the sites drift, sometimes by much more than their size (sign changes included)
        site = site + rng.normal(0, 1, n).astype(np.float32) * rng.choice([1e-4, 1, 1e4], n)
        site = site.astype(np.float32)
        make_delta(site, sent, delta, new_sent)
        server_site += delta.astype(np.float64)  # what the server does with the push
        sent, new_sent = new_sent, sent
        np.testing.assert_array_equal(server_site, sent)
        half_ulp = np.spacing(np.abs(delta)).astype(np.float64) / 2
        assert np.all(np.abs(site.astype(np.float64) - sent) <= half_ulp)


def _state(rng: np.random.Generator, n: int):
    theta = (rng.uniform(1, 1e4, n), rng.normal(0, 1e3, n))
    site = (theta[0] * rng.uniform(0.1, 0.9, n), theta[1] * rng.uniform(0.1, 0.9, n))
    d = (rng.normal(0, 10, n).astype(np.float32), rng.normal(0, 10, n).astype(np.float32))
    return theta, site, d


def test_apply_push_equals_the_numpy_statements():
    rng = np.random.default_rng(3)
    theta, site, d = _state(rng, 20_000)
    want_theta = tuple(t + x.astype(np.float64) for t, x in zip(theta, d, strict=True))
    want_site = tuple(s + x.astype(np.float64) for s, x in zip(site, d, strict=True))
    want_cav = tuple((t - s).astype(np.float32) for t, s in zip(want_theta, want_site, strict=True))
    cav = (np.empty(20_000, np.float32), np.empty(20_000, np.float32))
    apply_push(*theta, *site, *d, *cav)
    for got, want in zip((*theta, *site, *cav), (*want_theta, *want_site, *want_cav), strict=True):
        np.testing.assert_array_equal(got, want)


def test_apply_push_average_equals_the_numpy_statements():
    rng = np.random.default_rng(4)
    theta, site, d = _state(rng, 20_000)
    avg_var, avg_mean = rng.uniform(1e-4, 1, 20_000), rng.normal(0, 1, 20_000)
    tp = theta[0] + d[0].astype(np.float64)
    tm = theta[1] + d[1].astype(np.float64)
    var = 1.0 / tp
    w = 1.0 / 7
    want_var = avg_var + (var - avg_var) * w
    want_mean = avg_mean + (tm * var - avg_mean) * w
    cav = (np.empty(20_000, np.float32), np.empty(20_000, np.float32))
    apply_push_average(*theta, *site, *d, *cav, avg_var, avg_mean, w)
    np.testing.assert_array_equal(theta[0], tp)
    np.testing.assert_array_equal(avg_var, want_var)
    np.testing.assert_array_equal(avg_mean, want_mean)


def test_delta_is_finite():
    a, b = np.zeros(1000, np.float32), np.zeros(1000, np.float32)
    assert delta_is_finite(a, b)
    for bad in (np.nan, np.inf, -np.inf):
        b[-1] = bad
        assert not delta_is_finite(a, b)
        b[-1] = 0.0
    # finite float64 values whose sum overflows are still finite
    big = np.full(10, 1.5e308)
    assert delta_is_finite(big, big)
    big[3] = np.nan
    assert not delta_is_finite(big, np.zeros(10))


def _server(n: int, average_from: int = 10**9) -> PosteriorServer:
    rng = np.random.default_rng(5)
    server = PosteriorServer(DiagGaussian(np.full(n, 2.0), np.zeros(n)), 2, average_from)
    for w in range(2):
        server.register(w, DiagGaussian(rng.uniform(1, 100, n), rng.normal(0, 10, n)))
    return server


def _push(n: int, seed: int, iteration: int = 10) -> Push:
    rng = np.random.default_rng(seed)
    d = rng.normal(0, 1, (2, n)).astype(np.float32)
    return Push(0, iteration, d[0], d[1], 0)


def test_a_rejected_push_leaves_the_state_and_replies_with_the_cavity():
    n = 300
    server = _server(n)
    before = {k: np.array(v) for k, v in server.state_dict().items()}
    bad = _push(n, 0)
    bad.delta_precision_mean[17] = np.nan
    reply = server.push(bad)
    assert not reply.accepted and server.rejected == 1 and server.version == 0
    for name in ("precision", "precision_mean", "sites_precision", "sites_precision_mean"):
        np.testing.assert_array_equal(server.state_dict()[name], before[name], err_msg=name)
    want = (server.precision - server.sites[0].precision).astype(np.float32)
    np.testing.assert_array_equal(reply.precision, want)


def test_a_workers_own_push_does_not_move_its_cavity():
    """``c_i = theta - lambda_i``: the push adds Delta to both, so the reply to a worker's
    push is the cavity it had, up to the rounding of the two float64 sums (an exact
    property of the posterior server: a worker never sees its own site in its cavity)."""
    n = 2000
    server = _server(n)
    before = server.reply_to(0)
    before = (before.precision.copy(), before.precision_mean.copy())
    after = server.push(_push(n, 1))
    np.testing.assert_allclose(after.precision, before[0], rtol=1e-6)
    np.testing.assert_allclose(after.precision_mean, before[1], rtol=1e-6, atol=1e-3)
    other = server.reply_to(1)  # worker 1's cavity holds worker 0's push
    want = server.precision - server.sites[1].precision
    np.testing.assert_array_equal(other.precision, want.astype(np.float32))
