"""Message packing and header validation of the MPI transport (no MPI needed)."""

from __future__ import annotations

import numpy as np
import pytest

from snep.transport.mpi import (
    HEADER,
    KIND_DONE,
    KIND_PUSH,
    KIND_REPLY,
    ProtocolError,
    pack,
    unpack_header,
)


def test_round_trip():
    p = 5
    buf = np.empty(HEADER + 2 * p)
    prec, pm = np.arange(p, dtype=float), -np.arange(p, dtype=float)
    pack(buf, KIND_PUSH, 3, 17, iteration=2**40, version_seen=16, precision=prec, precision_mean=pm)
    kind, worker, version, iteration, seen, accepted = unpack_header(buf, (KIND_PUSH,), p, "t")
    assert (kind, worker, version, iteration, seen, accepted) == (KIND_PUSH, 3, 17, 2**40, 16, True)
    np.testing.assert_array_equal(buf[HEADER : HEADER + p], prec)
    np.testing.assert_array_equal(buf[HEADER + p :], pm)


def test_parameter_count_mismatch_names_both_sides():
    buf = pack(np.empty(HEADER + 2 * 4), KIND_PUSH, 1, 0)
    with pytest.raises(ProtocolError, match="worker 1 sent 4 parameters, this side has 6"):
        unpack_header(buf, (KIND_PUSH,), 6, "server")


def test_unexpected_kind_is_named():
    buf = pack(np.empty(HEADER + 2), KIND_DONE, 2, 0)
    with pytest.raises(
        ProtocolError, match="kind 'done' from worker 2, expected one of \\['reply'\\]"
    ):
        unpack_header(buf, (KIND_REPLY,), 1, "worker 2")
