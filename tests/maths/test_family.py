"""Property tests of the diagonal-Gaussian algebra (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from snep.maths import family as fam

N = 7
prec_st = arrays(np.float64, N, elements=st.floats(1e-3, 1e3))
mean_st = arrays(np.float64, N, elements=st.floats(-50, 50))


def gaussian(prec, mean):
    return fam.DiagGaussian(prec, prec * mean)


@given(prec_st, mean_st)
def test_moments_round_trip(prec, mean):
    g = gaussian(prec, mean)
    m, v = fam.moments(g)
    back = fam.from_moments(m, v)
    np.testing.assert_allclose(back.precision, prec, rtol=1e-12)
    np.testing.assert_allclose(back.precision_mean, g.precision_mean, rtol=1e-9, atol=1e-9)


@given(prec_st, mean_st)
def test_mean_params_round_trip(prec, mean):
    g = gaussian(prec, mean)
    mu1, mu2 = fam.mean_params(g)
    back = fam.from_mean_params(mu1, mu2)
    m, v = fam.moments(back)
    np.testing.assert_allclose(m, mean, rtol=1e-6, atol=1e-6)
    # mu2 - mu1^2 loses digits when m^2 >> v: allow that cancellation
    np.testing.assert_allclose(v, 1 / prec, rtol=1e-6, atol=1e-12 * (1 + mean**2).max())


@given(prec_st, mean_st, prec_st, mean_st)
def test_product_then_divide_is_identity(p1, m1, p2, m2):
    a, b = gaussian(p1, m1), gaussian(p2, m2)
    back = fam.divide(fam.product(a, b), b)
    np.testing.assert_allclose(back.precision, a.precision, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(back.precision_mean, a.precision_mean, rtol=1e-9, atol=1e-6)


@given(st.lists(st.tuples(prec_st, mean_st), min_size=2, max_size=6), st.randoms())
def test_sum_of_sites_is_order_independent(sites, rnd):
    fs = [gaussian(p, m) for p, m in sites]
    shuffled = fs[:]
    rnd.shuffle(shuffled)
    a, b = fam.product(*fs), fam.product(*shuffled)
    np.testing.assert_allclose(a.precision, b.precision, rtol=1e-12)
    np.testing.assert_allclose(a.precision_mean, b.precision_mean, rtol=1e-12, atol=1e-9)


@given(
    arrays(np.float64, N, elements=st.floats(-1e3, 1e3)),
    arrays(np.float64, N, elements=st.floats(-1e3, 1e6)),
)
def test_projection_is_always_proper_and_inside_the_box(mu1, mu2):
    g = fam.project(mu1, mu2, -10, 10, 1e-2, 1e2)
    assert fam.is_proper(g)
    m, v = fam.moments(g)
    assert np.all((m >= -10 - 1e-9) & (m <= 10 + 1e-9))
    assert np.all((v >= 1e-2 * (1 - 1e-12)) & (v <= 1e2 * (1 + 1e-12)))


@settings(max_examples=50)
@given(prec_st, mean_st, arrays(np.float64, N, elements=st.floats(-20, 20)))
def test_log_density_gradient_matches_finite_differences(prec, mean, x):
    g = gaussian(prec, mean)
    grad = fam.grad_log_density(g, x)
    h = 1e-6
    # log p is quadratic in x, so the central difference is exact but for rounding: each
    # log p is a sum of N + 2 terms of total magnitude S, off by at most (N + 2) eps S
    # (a recursive sum), and the difference divides two such errors by 2h
    big = np.abs(x) + 2 * h
    terms = 0.5 * prec * (big + np.abs(mean)) ** 2 + 0.5 * np.abs(np.log(prec)) + 1.0
    rounding = (N + 2) * np.finfo(float).eps * float(terms.sum()) / h
    for j in range(N):
        e = np.zeros(N)
        e[j] = h
        fd = (fam.log_density(g, x + e) - fam.log_density(g, x - e)) / (2 * h)
        assert abs(fd - grad[j]) <= 1e-6 * (1 + abs(grad[j])) + rounding


def test_log_density_is_normalised_in_one_dimension():
    g = gaussian(np.array([4.0]), np.array([0.3]))
    xs = np.linspace(-5, 5, 200_001)[:, None]
    dens = np.exp(fam.log_density(g, xs))
    assert abs(np.trapezoid(dens, xs[:, 0]) - 1.0) < 1e-9


def test_improper_is_detected():
    assert not fam.is_proper(fam.DiagGaussian(np.array([1.0, -1.0]), np.zeros(2)))
    assert not fam.is_proper(fam.DiagGaussian(np.array([1.0, 0.0]), np.zeros(2)))
