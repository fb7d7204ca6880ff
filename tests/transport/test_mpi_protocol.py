"""Message packing and header validation of the MPI transport (no MPI needed)."""

from __future__ import annotations

import numpy as np
import pytest

from snep.transport.mpi import (
    HEADER_BYTES,
    KIND_DONE,
    KIND_PUSH,
    KIND_REPLY,
    Message,
    ProtocolError,
    pack,
    unpack_header,
)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip(dtype):
    p = 5
    msg = Message(p, dtype)
    assert msg.nbytes == HEADER_BYTES + 2 * p * np.dtype(dtype).itemsize
    prec, pm = np.arange(p, dtype=float), -np.arange(p, dtype=float)
    pack(msg, KIND_PUSH, 3, 17, iteration=2**40, version_seen=16, precision=prec, precision_mean=pm)
    got = unpack_header(msg.header, (KIND_PUSH,), p, "t", np.dtype(dtype).itemsize)
    assert got == (KIND_PUSH, 3, 17, 2**40, 16, True)
    np.testing.assert_array_equal(msg.precision, prec)
    np.testing.assert_array_equal(msg.precision_mean, pm)
    # the payload is a view of the bytes MPI sends
    raw = msg.raw[HEADER_BYTES:].view(dtype)
    np.testing.assert_array_equal(raw, np.concatenate([prec, pm]))


def test_a_payload_that_is_the_message_view_is_not_copied():
    msg = Message(4, np.float32)
    msg.precision[...] = 1.5
    msg.precision_mean[...] = 2.5
    pack(msg, KIND_PUSH, 0, 0, precision=msg.precision, precision_mean=msg.precision_mean)
    assert msg.precision.tolist() == [1.5] * 4 and msg.precision_mean.tolist() == [2.5] * 4


def test_parameter_count_mismatch_names_both_sides():
    msg = pack(Message(4, np.float32), KIND_PUSH, 1, 0)
    with pytest.raises(ProtocolError, match="worker 1 sent 4 parameters, this side has 6"):
        unpack_header(msg.header, (KIND_PUSH,), 6, "server")


def test_wire_dtype_mismatch_names_both_sides():
    msg = pack(Message(4, np.float64), KIND_PUSH, 1, 0)
    with pytest.raises(
        ProtocolError, match=r"8-byte values, this side expects 4-byte.*train\.wire"
    ):
        unpack_header(msg.header, (KIND_PUSH,), 4, "server", 4)


def test_unexpected_kind_is_named():
    msg = pack(Message(1, np.float32), KIND_DONE, 2, 0)
    with pytest.raises(
        ProtocolError, match="kind 'done' from worker 2, expected one of \\['reply'\\]"
    ):
        unpack_header(msg.header, (KIND_REPLY,), 1, "worker 2")
