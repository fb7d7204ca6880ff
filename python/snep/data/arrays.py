"""Training (and test) arrays for a user's own model (:mod:`snep.model.protocol`).

:class:`~snep.data.dataset.Dataset` is the classification data of snep's MLP (features
in [0, 1], int labels).  A model of your own takes any finite arrays: regression
targets, unscaled features, inputs of any shape.  :func:`as_model_data` accepts a
``Dataset``, a tuple ``(x, y)`` or ``(x, y, x_test, y_test)``, or a mapping with those
keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from snep.errors import DataError

__all__ = ["ArrayData", "as_model_data"]


def _checked(name: str, a: Any) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 0 or a.shape[0] == 0:
        raise DataError(f"data {name} has shape {a.shape}; expected at least one row (N, ...)")
    if a.dtype.kind not in "biuf":
        raise DataError(f"data {name} has dtype {a.dtype}; expected numbers")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        row = int(np.argwhere(~np.isfinite(a))[0][0])
        raise DataError(f"data {name} has non-finite values (first in row {row}); remove them")
    return a


@dataclass
class ArrayData:
    """Arrays for a user's model: ``x_train`` (N, ...), ``y_train`` (N,), and optionally
    a test part scored at each evaluation (with the model's ``predict_proba``)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    name: str = "arrays"

    def __post_init__(self) -> None:
        self.x_train = _checked("x_train", self.x_train)
        self.y_train = _checked("y_train", self.y_train)
        if len(self.y_train) != len(self.x_train):
            raise DataError(
                f"data x_train has {len(self.x_train)} rows but y_train {len(self.y_train)}; "
                "pass one target per example"
            )
        if (self.x_test is None) != (self.y_test is None):
            raise DataError("pass both x_test and y_test, or neither")
        if self.x_test is not None:
            self.x_test = _checked("x_test", self.x_test)
            self.y_test = _checked("y_test", self.y_test)
            if self.x_test.shape[1:] != self.x_train.shape[1:]:
                raise DataError(
                    f"data x_test has rows of shape {self.x_test.shape[1:]}, x_train "
                    f"{self.x_train.shape[1:]}; they must match"
                )

    @property
    def n_train(self) -> int:
        return len(self.y_train)

    @property
    def n_test(self) -> int:
        return 0 if self.y_test is None else len(self.y_test)


def as_model_data(data: Any) -> Any:
    """``data`` as something a run of a user's model reads (``x_train``, ``y_train``,
    ``x_test``, ``y_test``, ``n_train``): a ``Dataset`` or :class:`ArrayData` as it is,
    a tuple ``(x, y[, x_test, y_test])`` or a mapping with those keys as ArrayData."""
    if hasattr(data, "x_train") and hasattr(data, "y_train"):
        return data
    if isinstance(data, Mapping):
        return ArrayData(**dict(data))
    if isinstance(data, (tuple, list)) and len(data) in (2, 4):
        return ArrayData(*data)
    raise DataError(
        f"data is a {type(data).__name__}; expected a snep Dataset, (x, y), "
        "(x, y, x_test, y_test) or a mapping with keys x_train, y_train[, x_test, y_test]"
    )
