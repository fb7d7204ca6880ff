"""Posterior file round trip, validation and predictions."""

from __future__ import annotations

import os

import numpy as np
import pytest

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


def test_average_mean_without_variance_round_trips(tmp_path):
    # the A-SGD/EASGD servers average a point estimate: no average variance
    post = make()
    post.average_var = None
    back = Posterior.load(post.save(tmp_path / "p.npz"))
    np.testing.assert_array_equal(back.average_mean, post.average_mean)
    assert back.average_var is None
