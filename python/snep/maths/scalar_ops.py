"""numpy's ``maximum``, ``minimum`` and ``clip`` of two or three floats, for numba loops
that must agree bitwise with the array expressions they replace.

The three differ from one another, and from Python's ``max``, on ties and NaNs: a NaN
argument propagates; on a tie ``maximum`` and ``minimum`` return their *second* argument
(``maximum(-0.0, 0.0)`` is ``0.0``, ``maximum(0.0, -0.0)`` is ``-0.0``), while ``clip``
returns ``x`` (``clip(-0.0, 0.0, 1.0)`` is ``-0.0``) and, with ``lo > hi``, ``hi``.  Written
as selects, so the loops that call them still vectorise.  ``tests/maths/test_scalar_ops.py``
holds them to numpy on signed zeros, NaNs and infinities.
"""

from __future__ import annotations

import numba

__all__ = ["clip", "maximum", "minimum"]


@numba.njit(cache=True, inline="always", error_model="numpy")
def maximum(x, y):  # pragma: no cover - compiled
    """``numpy.maximum(x, y)``."""
    return x if (x > y) | (x != x) else y


@numba.njit(cache=True, inline="always", error_model="numpy")
def minimum(x, y):  # pragma: no cover - compiled
    """``numpy.minimum(x, y)``."""
    return x if (x < y) | (x != x) else y


@numba.njit(cache=True, inline="always", error_model="numpy")
def clip(x, lo, hi):  # pragma: no cover - compiled
    """``numpy.clip(x, lo, hi)``."""
    t = lo if x < lo else x
    return hi if t > hi else t
