"""The bookkeeping of a server split over ranks (snep.transport.shards), no MPI needed."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from snep.algorithm.messages import Push
from snep.algorithm.server import PosteriorServer
from snep.maths.family import DiagGaussian
from snep.transport.shards import merge_states, shard_bounds, slice_state


@pytest.mark.parametrize(("n", "k"), [(10, 1), (10, 3), (545_810, 8), (7, 7)])
def test_bounds_cover_every_parameter_once(n, k):
    bounds = shard_bounds(n, k)
    assert len(bounds) == k and bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in pairwise(bounds))
    sizes = [hi - lo for lo, hi in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_more_ranks_than_parameters_is_a_clear_error():
    with pytest.raises(ValueError, match=r"train.server_ranks = 8: expected between 1 and"):
        shard_bounds(5, 8)


def _server(n: int, average_from: int) -> PosteriorServer:
    rng = np.random.default_rng(0)
    server = PosteriorServer(DiagGaussian(np.full(n, 2.0), np.zeros(n)), 2, average_from)
    for w in range(2):
        server.register(w, DiagGaussian(rng.uniform(1, 9, n), rng.normal(0, 1, n)))
    return server


def test_shards_serving_slices_merge_into_the_one_server_bitwise():
    """Each shard serves its slice of the same pushes; their merged state is the state of
    one server that served the pushes whole (the server's maths is elementwise)."""
    n, k = 1001, 3
    whole = _server(n, average_from=2)
    shards = [
        PosteriorServer.from_state_dict(slice_state(whole.state_dict(), lo, hi))
        for lo, hi in shard_bounds(n, k)
    ]
    rng = np.random.default_rng(1)
    for it in range(5):
        d = rng.normal(0, 1, (2, n)).astype(np.float32)
        whole.push(Push(it % 2, it, d[0], d[1], it))
        for shard, (lo, hi) in zip(shards, shard_bounds(n, k), strict=True):
            shard.push(Push(it % 2, it, d[0][lo:hi], d[1][lo:hi], it))
    merged = merge_states([s.state_dict() for s in shards])
    want = whole.state_dict()
    assert set(merged) == set(want)
    for key, value in want.items():
        np.testing.assert_array_equal(merged[key], value, err_msg=key)


def test_merge_leaves_out_averages_not_every_shard_has():
    n = 20
    shards = [_server(n, average_from=0), _server(n, average_from=10**9)]
    for s in shards:
        d = np.ones(n, np.float32)
        s.push(Push(0, 1, d, d, 0))
    merged = merge_states([s.state_dict() for s in shards])
    assert "average_mean" not in merged and "average_var" not in merged
    assert merged["scalars"][4] == 0  # no averaged pushes counted
    assert merged["precision"].shape == (2 * n,)
