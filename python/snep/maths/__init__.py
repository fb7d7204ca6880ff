"""Pure maths on arrays, no I/O (docs/method.md §1): the diagonal Gaussian family in
natural parameters (:mod:`~snep.maths.family`), the float64 oracles of the fused worker
pass and the site updates (:mod:`~snep.maths.oracles`), the numpy reference of the
counter-based noise (:mod:`~snep.maths.noise`) and the metrics (:mod:`~snep.maths.metrics`).
Every compiled kernel is tested against these."""

from __future__ import annotations

__all__: list[str] = []
