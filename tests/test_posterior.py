"""Posterior file round trip, validation and predictions."""

from __future__ import annotations

import os

import numpy as np
import pytest

import predictive_reference as ref
from snep.errors import DataError
from snep.model.spec import ParamSpec
from snep.posterior import Posterior


def make(avg: bool = True) -> Posterior:
    spec = ParamSpec((4, 3, 2))
    rng = np.random.default_rng(0)
    prec = rng.uniform(1, 10, spec.size)
    mean = rng.normal(0, 1, spec.size)
    extra = (mean + 0.1, 1 / prec) if avg else (None, None)
    return Posterior(spec, prec, prec * mean, *extra)


def test_round_trip_and_file_mode(tmp_path):
    post = make()
    path = post.save(tmp_path / "posterior.npz")
    back = Posterior.load(path)
    np.testing.assert_array_equal(back.precision, post.precision)
    np.testing.assert_array_equal(back.precision_mean, post.precision_mean)
    np.testing.assert_array_equal(back.average_mean, post.average_mean)
    with np.load(path) as f:
        np.testing.assert_allclose(f["mean"], post.mean)
        np.testing.assert_allclose(f["var"], 1 / post.precision)
        assert list(f["layer_sizes"]) == [4, 3, 2]
    umask = os.umask(0)
    os.umask(umask)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~umask)
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary left behind


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        Posterior.load(tmp_path / "nope.npz")
    with pytest.raises(DataError, match="is a directory"):
        Posterior.load(tmp_path)
    bad = tmp_path / "bad.npz"
    np.savez(bad, precision=np.ones(4), precision_mean=np.ones(5), layer_sizes=[1, 2])
    with pytest.raises(DataError, match="precision_mean has shape"):
        Posterior.load(bad)
    np.savez(bad, precision=np.ones(3))
    with pytest.raises(DataError, match="lacks array"):
        Posterior.load(bad)


def test_predictions():
    post = make(avg=False)
    x = np.random.default_rng(1).random((7, 4))
    for method in ("mean", "bma"):
        p = post.predict_proba(x, method=method, n_samples=5)
        assert p.shape == (7, 2)
        np.testing.assert_allclose(p.sum(1), 1, rtol=1e-5)
    with pytest.raises(ValueError, match="running average"):
        post.predict_proba(x, method="average")
    with pytest.raises(ValueError, match="not one of"):
        post.predict_proba(x, method="mode")


@pytest.mark.parametrize("n_samples,seed", [(7, 3), (None, None)])  # None: the defaults
def test_bma_is_the_average_of_float64_softmaxes_over_the_same_draws(n_samples, seed):
    # an independent Monte Carlo average: the draws of the documented generator, a plain
    # float64 forward pass per draw, the mean of the probabilities; snep computes in
    # float32, within the bound derived in predictive_reference (about 40x its actual
    # error here, 1e-3 of the difference another seed makes)
    spec = ParamSpec((6, 5, 3))
    rng = np.random.default_rng(4)
    prec = rng.uniform(1, 10, spec.size)
    post = Posterior(spec, prec, prec * rng.normal(0, 1, spec.size))
    x = rng.random((200, 6))
    if n_samples is None:
        got, n_samples, seed = post.predict_proba(x), 20, 0
    else:
        got = post.predict_proba(x, method="bma", n_samples=n_samples, seed=seed)
    thetas = ref.draws(post.precision, post.precision_mean, n_samples, seed)
    np.testing.assert_array_equal(post.sample(n_samples, seed), thetas)
    want, bound, _ = ref.average(spec.layer_sizes, thetas, x)
    assert got.dtype == np.float64 and got.shape == want.shape
    assert np.all(np.abs(got - want) <= bound), np.max(np.abs(got - want) / bound)
    assert bound.max() < 1e-4  # tight enough to tell the draws apart
    point, bound, _ = ref.average(spec.layer_sizes, post.mean[None], x)
    assert np.all(np.abs(post.predict_proba(x, method="mean") - point) <= bound)


def test_average_mean_without_variance_round_trips(tmp_path):
    # the A-SGD/EASGD servers average a point estimate: no average variance
    post = make()
    post.average_var = None
    back = Posterior.load(post.save(tmp_path / "p.npz"))
    np.testing.assert_array_equal(back.average_mean, post.average_mean)
    assert back.average_var is None
