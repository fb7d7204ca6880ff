"""The posterior server split over ``k`` MPI ranks (``train.server_ranks``; issue 14,
docs/architecture.md "The exchange").

Every quantity of the server is elementwise in the parameters (``theta``, each worker's
site, the reply ``theta - lambda_i``, the running moments), so server rank ``s`` can hold
the slice ``[lo_s, hi_s)`` of all of them and serve the same slice of every push: a
worker sends each shard its slice and assembles the reply from theirs.  The numbers are
those of one server (tested bitwise under synchronous MPI); only a non-finite push is
rejected per slice, by the shards whose slice holds a non-finite value.

This module holds the bookkeeping: the slices, and the conversion between one server's
``state_dict`` (as checkpoints and the run's outputs hold it) and its shards' parts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import pairwise

import numpy as np

__all__ = ["PARAMETER_KEYS", "merge_states", "shard_bounds", "slice_state"]

#: keys of :meth:`PosteriorServer.state_dict` whose last axis is the parameter axis
PARAMETER_KEYS = (
    "precision",
    "precision_mean",
    "prior_precision",
    "prior_precision_mean",
    "sites_precision",
    "sites_precision_mean",
    "average_mean",
    "average_var",
)


def shard_bounds(n_params: int, k: int) -> list[tuple[int, int]]:
    """``k`` contiguous slices covering ``[0, n_params)``, sizes differing by at most one."""
    if not 1 <= k <= n_params:
        raise ValueError(
            f"train.server_ranks = {k}: expected between 1 and the number of parameters "
            f"({n_params})"
        )
    edges = [n_params * s // k for s in range(k + 1)]
    return list(pairwise(edges))


def slice_state(state: Mapping[str, np.ndarray], lo: int, hi: int) -> dict[str, np.ndarray]:
    """Shard ``[lo, hi)`` of a whole server's state (the others: shared, kept whole)."""
    return {
        k: np.ascontiguousarray(v[..., lo:hi]) if k in PARAMETER_KEYS else v
        for k, v in state.items()
    }


def merge_states(states: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One server's state from its shards' (in shard order): the parameter arrays joined,
    the counters and staleness record taken from shard 0 (every shard serves the same
    pushes).  The running moments are joined only if every shard has them (asynchronous
    shards can start averaging one push apart); otherwise they are left out."""
    merged = dict(states[0])
    for key in PARAMETER_KEYS:
        parts = [s.get(key) for s in states]
        if any(p is None for p in parts):
            merged.pop(key, None)
            if key == "average_mean":  # no averages: count none (scalars[4])
                merged["scalars"] = np.array(merged["scalars"]).copy()
                merged["scalars"][4] = 0
            continue
        merged[key] = np.concatenate(parts, axis=-1)
    return merged
