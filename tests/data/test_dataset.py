"""Tests of snep.data.dataset: validation of Dataset and the stratified holdout split."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from snep.data.dataset import Dataset, holdout_validation
from snep.errors import DataError


def _arrays(n_train: int = 40, n_test: int = 10, d: int = 6, n_classes: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.random((n_train, d), dtype=np.float32),
        "y_train": (np.arange(n_train) % n_classes).astype(np.int32),
        "x_test": rng.random((n_test, d), dtype=np.float32),
        "y_test": (np.arange(n_test) % n_classes).astype(np.int32),
        "n_classes": n_classes,
        "name": "toy",
        "image_shape": (2, 3),
    }


def test_valid_dataset_properties():
    ds = Dataset(**_arrays())
    assert ds.n_features == 6
    assert ds.n_train == 40
    assert ds.n_test == 10
    assert ds.image_shape == (2, 3)
    assert "toy" in repr(ds)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.name = "other"  # type: ignore[misc]


def test_numpy_integer_fields_are_normalised():
    kw = _arrays()
    kw["n_classes"] = np.int64(4)
    kw["image_shape"] = [np.int64(2), 3]
    ds = Dataset(**kw)
    assert type(ds.n_classes) is int
    assert ds.image_shape == (2, 3)
    assert all(type(s) is int for s in ds.image_shape)


@pytest.mark.parametrize(
    ("field", "value", "fragments"),
    [
        ("x_train", np.zeros((40, 6), dtype=np.float64), ["x_train", "float64", "float32"]),
        ("x_train", [[0.0] * 6] * 40, ["x_train", "list", "ndarray"]),
        ("x_train", np.zeros((40, 2, 3), dtype=np.float32), ["x_train", "(40, 2, 3)", "2-D"]),
        ("x_train", np.zeros((6, 40), dtype=np.float32).T, ["x_train", "C-contiguous"]),
        ("x_test", np.zeros((10, 5), dtype=np.float32), ["x_test", "(10, 5)", "6 features"]),
        ("x_test", np.zeros((0, 6), dtype=np.float32), ["x_test", "(0, 6)", "at least one"]),
        ("y_train", np.zeros(40, dtype=np.int64), ["y_train", "int64", "int32"]),
        ("y_train", np.zeros(39, dtype=np.int32), ["y_train", "(39,)", "(40,)"]),
        ("y_test", np.full(10, 4, dtype=np.int32), ["y_test", "label 4", "[0, 4)"]),
        ("y_test", np.full(10, -1, dtype=np.int32), ["y_test", "label -1", "[0, 4)"]),
        ("n_classes", 0, ["n_classes", "0", ">= 1"]),
        ("n_classes", True, ["n_classes", "True"]),
        ("name", "", ["name", "''", "non-empty"]),
        ("image_shape", (2, 0), ["image_shape", "(2, 0)", "positive"]),
        ("image_shape", (4, 3), ["x_train", "12", "(4, 3)"]),
        ("image_shape", 6, ["image_shape", "6", "tuple"]),
    ],
)
def test_invalid_fields_raise_dataerror_naming_field_and_value(field, value, fragments):
    kw = _arrays()
    kw[field] = value
    with pytest.raises(DataError) as info:
        Dataset(**kw)
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("bad", "fragments"),
    [
        (np.nan, ["x_train", "non-finite", "nan", "row 3", "column 2"]),
        (np.inf, ["x_train", "non-finite", "inf"]),
        (1.5, ["x_train", "1.5", "[0, 1]"]),
        (-0.25, ["x_train", "-0.25", "[0, 1]"]),
    ],
)
def test_feature_values_checked(bad, fragments):
    kw = _arrays()
    kw["x_train"][3, 2] = bad
    with pytest.raises(DataError) as info:
        Dataset(**kw)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_dataerror_is_valueerror():
    kw = _arrays()
    kw["n_classes"] = -3
    with pytest.raises(ValueError):
        Dataset(**kw)


def test_holdout_validation_stratified_disjoint_and_deterministic():
    n_classes = 5
    rng = np.random.default_rng(1)
    y = rng.permutation(np.repeat(np.arange(n_classes), [100, 60, 40, 20, 80])).astype(np.int32)
    n = y.size
    # Encode the row number in the features so the split can be traced back.
    x = (np.arange(n, dtype=np.float32) / n)[:, None].repeat(2, axis=1)
    ds = Dataset(x, y, x[:5].copy(), y[:5].copy(), n_classes, "toy", (2,))
    val = holdout_validation(ds, 0.25, seed=3)
    assert val.name == "toy+val"
    assert val.n_train + val.n_test == n
    assert val.n_test == round(0.25 * n)
    rows_tr = np.rint(val.x_train[:, 0] * n).astype(int)
    rows_va = np.rint(val.x_test[:, 0] * n).astype(int)
    assert np.intersect1d(rows_tr, rows_va).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([rows_tr, rows_va])), np.arange(n))
    # Original order kept within each part, labels travel with their rows.
    assert np.all(np.diff(rows_tr) > 0) and np.all(np.diff(rows_va) > 0)
    np.testing.assert_array_equal(val.y_test, y[rows_va])
    # Stratified: each class within one example of its proportional share.
    counts = np.bincount(val.y_test, minlength=n_classes)
    expected = np.bincount(y, minlength=n_classes) * 0.25
    assert np.all(np.abs(counts - expected) < 1.0)
    # Deterministic by seed, different for another seed.
    again = holdout_validation(ds, 0.25, seed=3)
    np.testing.assert_array_equal(again.x_test, val.x_test)
    other = holdout_validation(ds, 0.25, seed=4)
    assert not np.array_equal(other.x_test, val.x_test)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, math.nan, "0.2"])
def test_holdout_validation_rejects_bad_fraction(fraction):
    ds = Dataset(**_arrays())
    with pytest.raises(DataError) as info:
        holdout_validation(ds, fraction, seed=0)
    assert "fraction" in str(info.value)
    assert repr(fraction) in str(info.value) or str(fraction) in str(info.value)


def test_holdout_validation_rejects_empty_side():
    ds = Dataset(**_arrays(n_train=10))
    with pytest.raises(DataError, match=r"holds out 0"):
        holdout_validation(ds, 0.01, seed=0)
    with pytest.raises(DataError, match=r"holds out 10"):
        holdout_validation(ds, 0.99, seed=0)


def test_package_reexports_public_names():
    """snep.data re-exports the public names of its modules.

    The package's ``__init__`` is executed from its file so that the check does not
    depend on how snep was installed (a stale editable install may map ``snep.data``
    to a namespace package).
    """
    import importlib.util
    from pathlib import Path

    import snep.data.dataset as dataset_mod
    import snep.data.loaders as loaders_mod
    import snep.data.minibatch as minibatch_mod
    import snep.data.sharding as sharding_mod

    init = Path(dataset_mod.__file__).with_name("__init__.py")
    spec = importlib.util.spec_from_file_location("_snep_data_init_under_test", init)
    assert spec is not None and spec.loader is not None
    pkg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pkg)
    expected = set()
    for mod in (dataset_mod, loaders_mod, minibatch_mod, sharding_mod):
        expected |= set(mod.__all__)
        for name in mod.__all__:
            assert getattr(pkg, name) is getattr(mod, name)
    assert set(pkg.__all__) == expected
