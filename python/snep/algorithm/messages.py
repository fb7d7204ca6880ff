"""Messages between SNEP workers and the posterior server (docs/method.md §1.4).

Plain arrays and integers only, so that a transport can send them as typed
buffers (the in-process runner passes them directly; MPI sends the arrays).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Push", "Reply"]


@dataclass
class Push:
    """A worker's change of its site since its last push: ``Delta = lambda_i - lambda_i^sent``."""

    worker: int
    iteration: int
    delta_precision: np.ndarray  # (P,) float64
    delta_precision_mean: np.ndarray  # (P,) float64
    version_seen: int  # the posterior version the worker held when it pushed


@dataclass
class Reply:
    """The server's global natural parameters ``theta`` after applying a push."""

    precision: np.ndarray  # (P,) float64
    precision_mean: np.ndarray  # (P,) float64
    version: int
    accepted: bool = True
