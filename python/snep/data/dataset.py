"""The in-memory data set type of snep and its validation.

A :class:`Dataset` holds a classification problem as flat float32 feature
matrices in ``[0, 1]`` and int32 labels, which is what the classifiers of snep
(an MLP, or logistic regression over the flattened pixels) consume. The SNEP
workers of Hasenclever et al., "Distributed Bayesian Learning with Stochastic
Natural Gradient Expectation Propagation and the Posterior Server", JMLR 18
(2017), each see a disjoint shard of ``x_train`` (see :mod:`snep.data.sharding`);
the test part is used for evaluation of the posterior only.

Every array is validated on construction, so code downstream can rely on the
dtypes, shapes and value ranges without checking them again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from snep.errors import DataError

__all__ = ["Dataset", "holdout_validation"]


def _describe(arr: object) -> str:
    """Short description of an array-like value for error messages."""
    if isinstance(arr, np.ndarray):
        return f"array of shape {arr.shape} and dtype {arr.dtype}"
    return f"{type(arr).__name__} {arr!r}"[:200]


def _check_features(field: str, x: object, name: str) -> None:
    """Validate one feature matrix (float32, 2-D, C-contiguous, finite, in [0, 1])."""
    where = f"Dataset {name!r}: field {field!r}"
    if not isinstance(x, np.ndarray):
        raise DataError(
            f"{where} is a {type(x).__name__}; expected a numpy.ndarray of dtype float32 "
            "and shape (N, D). Convert it with np.ascontiguousarray(x, dtype=np.float32)."
        )
    if x.dtype != np.float32:
        raise DataError(
            f"{where} has dtype {x.dtype}; expected float32 with values in [0, 1]. "
            "Convert it with x.astype(np.float32) (and scale uint8 pixels by 1/255)."
        )
    if x.ndim != 2:
        raise DataError(
            f"{where} has shape {x.shape} ({x.ndim}-D); expected a 2-D array (N, D) of "
            "flattened examples. Use x.reshape(len(x), -1)."
        )
    if not x.flags.c_contiguous:
        raise DataError(
            f"{where} is not C-contiguous (shape {x.shape}, strides {x.strides}); expected "
            "a C-contiguous array. Use np.ascontiguousarray(x)."
        )
    if x.size == 0:
        return
    lo = float(x.min())
    hi = float(x.max())
    if math.isfinite(lo) and math.isfinite(hi) and lo >= 0.0 and hi <= 1.0:
        return
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise DataError(
            f"{where} has {int(bad.sum())} non-finite values (first: {x[row, col]} at row "
            f"{row}, column {col}); expected finite values in [0, 1]. Remove or repair them."
        )
    raise DataError(
        f"{where} has values in [{lo:g}, {hi:g}]; expected values in [0, 1]. Scale the "
        "features to [0, 1] (e.g. divide 8-bit pixels by 255)."
    )


def _check_labels(field: str, y: object, n: int, n_classes: int, name: str) -> None:
    """Validate one label vector (int32, 1-D, length n, values in [0, n_classes))."""
    where = f"Dataset {name!r}: field {field!r}"
    if not isinstance(y, np.ndarray):
        raise DataError(
            f"{where} is a {type(y).__name__}; expected a numpy.ndarray of dtype int32 "
            "and shape (N,). Convert it with np.asarray(y, dtype=np.int32)."
        )
    if y.dtype != np.int32:
        raise DataError(
            f"{where} has dtype {y.dtype}; expected int32 class labels. "
            "Convert it with y.astype(np.int32)."
        )
    if y.ndim != 1 or y.shape[0] != n:
        raise DataError(
            f"{where} has shape {y.shape}; expected ({n},), one label per row of the "
            "matching feature matrix."
        )
    if y.size == 0:
        return
    lo = int(y.min())
    hi = int(y.max())
    if lo < 0 or hi >= n_classes:
        bad = lo if lo < 0 else hi
        raise DataError(
            f"{where} contains label {bad} (labels span [{lo}, {hi}]); expected labels in "
            f"[0, {n_classes}) because n_classes = {n_classes}. Fix the labels or n_classes."
        )


@dataclass(frozen=True, eq=False)
class Dataset:
    """A classification data set, validated on construction.

    Parameters
    ----------
    x_train : numpy.ndarray
        Training features, float32, shape ``(N, D)``, C-contiguous, finite, values in
        ``[0, 1]``; row ``i`` is example ``i`` flattened in C order from ``image_shape``.
    y_train : numpy.ndarray
        Training labels, int32, shape ``(N,)``, values in ``[0, n_classes)``.
    x_test : numpy.ndarray
        Test features, same constraints as ``x_train`` with the same ``D``.
    y_test : numpy.ndarray
        Test labels, same constraints as ``y_train``.
    n_classes : int
        Number of classes (``>= 1``); the output width of a classifier.
    name : str
        Short human-readable name (``"mnist"``, ``"digits"``, ...), used in logs.
    image_shape : tuple of int
        Shape of one example before flattening, e.g. ``(28, 28)``; its product is ``D``.

    Raises
    ------
    snep.errors.DataError
        If a field has the wrong type, dtype, shape, memory layout or values; the
        message names the field, the value found and what was expected.

    Notes
    -----
    The arrays are not copied; do not modify them after construction. Both the
    training and the test part must hold at least one example.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    name: str
    image_shape: tuple[int, ...]

    def __post_init__(self) -> None:
        name = self.name
        if not isinstance(name, str) or not name:
            raise DataError(
                f"Dataset field 'name' is {name!r}; expected a non-empty string such as 'mnist'."
            )
        n_classes = self.n_classes
        if (
            isinstance(n_classes, bool)
            or not isinstance(n_classes, (int, np.integer))
            or int(n_classes) < 1
        ):
            raise DataError(
                f"Dataset {name!r}: field 'n_classes' is {n_classes!r}; expected an integer >= 1."
            )
        object.__setattr__(self, "n_classes", int(n_classes))
        shape = self.image_shape
        try:
            shape_t = tuple(shape)
        except TypeError:
            shape_t = None
        if (
            shape_t is None
            or len(shape_t) == 0
            or not all(
                isinstance(s, (int, np.integer)) and not isinstance(s, bool) and int(s) >= 1
                for s in shape_t
            )
        ):
            raise DataError(
                f"Dataset {name!r}: field 'image_shape' is {shape!r}; expected a non-empty "
                "tuple of positive integers such as (28, 28)."
            )
        object.__setattr__(self, "image_shape", tuple(int(s) for s in shape_t))

        _check_features("x_train", self.x_train, name)
        _check_features("x_test", self.x_test, name)
        d = int(np.prod(self.image_shape))
        for field in ("x_train", "x_test"):
            x = getattr(self, field)
            if x.shape[1] != d:
                raise DataError(
                    f"Dataset {name!r}: field {field!r} has shape {x.shape} with "
                    f"{x.shape[1]} features; expected {d} features, the product of "
                    f"image_shape {self.image_shape}."
                )
            if x.shape[0] == 0:
                raise DataError(
                    f"Dataset {name!r}: field {field!r} has shape {x.shape} (no examples); "
                    "expected at least one example."
                )
        _check_labels("y_train", self.y_train, self.x_train.shape[0], self.n_classes, name)
        _check_labels("y_test", self.y_test, self.x_test.shape[0], self.n_classes, name)

    @property
    def n_features(self) -> int:
        """Number of features ``D`` of one flattened example."""
        return int(self.x_train.shape[1])

    @property
    def n_train(self) -> int:
        """Number of training examples ``N``."""
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        """Number of test examples."""
        return int(self.x_test.shape[0])

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, n_train={self.n_train}, n_test={self.n_test}, "
            f"n_features={self.n_features}, n_classes={self.n_classes}, "
            f"image_shape={self.image_shape})"
        )


def _stratified_counts(counts: np.ndarray, n_take: int, rng: np.random.Generator) -> np.ndarray:
    """Split ``n_take`` over classes proportionally to ``counts`` (largest remainder).

    Ties of the remainders are broken at random (through ``rng``) so that no class is
    systematically favoured.
    """
    total = int(counts.sum())
    quota = counts * (n_take / total)
    take = np.floor(quota).astype(np.int64)
    short = n_take - int(take.sum())
    if short > 0:
        remainder = quota - take
        # Only classes that keep at least one example outside the split may get one more.
        remainder = np.where(take + 1 <= counts, remainder, -1.0)
        tiebreak = rng.random(len(counts))
        order = np.lexsort((tiebreak, -remainder))
        take[order[:short]] += 1
    return take


def holdout_validation(ds: Dataset, fraction: float, seed: int) -> Dataset:
    """Hold out a stratified validation split of the training data.

    Parameters
    ----------
    ds : Dataset
        The data set; its test part is discarded.
    fraction : float
        Fraction of the training examples to hold out, in ``(0, 1)``; the number held
        out is ``round(fraction * N)`` and must leave at least one example on each side.
    seed : int
        Seed of ``numpy.random.default_rng``; the same seed gives the same split.

    Returns
    -------
    Dataset
        A data set whose training part is the rest of ``ds``'s training data and whose
        *test* part is the held-out validation split, both in their original order.
        Each class is represented in the validation split in proportion to its share of
        the training data (largest-remainder rounding). Its name is ``ds.name + "+val"``.

    Raises
    ------
    snep.errors.DataError
        If ``fraction`` is outside ``(0, 1)`` or leaves an empty side.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating)):
        raise DataError(
            f"holdout_validation: fraction is {fraction!r}; expected a float in (0, 1)."
        )
    fraction = float(fraction)
    if not (0.0 < fraction < 1.0):
        raise DataError(
            f"holdout_validation: fraction is {fraction!r}; expected a float in (0, 1)."
        )
    n = ds.n_train
    n_val = round(fraction * n)
    if n_val < 1 or n_val > n - 1:
        raise DataError(
            f"holdout_validation: fraction {fraction!r} of {n} training examples of "
            f"{ds.name!r} holds out {n_val}; expected between 1 and {n - 1}. Choose a "
            "fraction further from 0 and 1."
        )
    rng = np.random.default_rng(seed)
    classes, inverse = np.unique(ds.y_train, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(classes))
    take = _stratified_counts(counts, n_val, rng)
    by_class = np.argsort(inverse, kind="stable")
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    val_parts = []
    for k in range(len(classes)):
        members = by_class[starts[k] : starts[k] + counts[k]]
        val_parts.append(rng.permutation(members)[: take[k]])
    is_val = np.zeros(n, dtype=bool)
    is_val[np.concatenate(val_parts)] = True
    return Dataset(
        x_train=np.ascontiguousarray(ds.x_train[~is_val]),
        y_train=np.ascontiguousarray(ds.y_train[~is_val]),
        x_test=np.ascontiguousarray(ds.x_train[is_val]),
        y_test=np.ascontiguousarray(ds.y_train[is_val]),
        n_classes=ds.n_classes,
        name=ds.name + "+val",
        image_shape=ds.image_shape,
    )
