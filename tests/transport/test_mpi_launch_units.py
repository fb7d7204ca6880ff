"""Rank -> GPU selection under MPI (snep.transport.launch), without MPI or a GPU."""

from __future__ import annotations

import pytest

from snep.config import Config
from snep.transport.launch import device_for_rank, rank_backend


@pytest.mark.parametrize(
    "rank, node_rank, n_devices, expected",
    [
        (0, 0, 8, None),  # the server merges and evaluates on the host
        (1, 1, 8, 1),
        (8, 8, 8, 0),  # 8 workers + the server on a node of 8 GPUs: one GPU each
        (3, 1, 4, 1),  # second node: node-local rank decides
        (5, 5, 2, 1),  # more workers than GPUs: shared round-robin
        (2, 2, 0, None),  # no GPU visible
    ],
)
def test_device_for_rank(rank, node_rank, n_devices, expected):
    assert device_for_rank(rank, node_rank, n_devices) == expected


def test_rank_backend_of_host_backends_ignores_the_rank():
    class Comm:  # rank_backend must not query MPI for host backends
        def Get_rank(self):
            raise AssertionError("not needed")

    backend = rank_backend(Config().replace(train={"backend": "cpu"}), Comm())
    assert backend.name == "cpu"
