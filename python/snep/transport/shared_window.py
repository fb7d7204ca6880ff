"""Pushes and replies in an MPI-3 shared-memory window when every rank is on one node
(Hasenclever et al. 2017, §"The posterior server"; docs/architecture.md, "The exchange").

On one node a message's payload is still copied on its way from one process to the other,
and the exchange waits for both copies: the push's before the server's pass can start, the
reply's after it ends.  Here each worker rank instead holds a segment of
one window (``MPI.Win.Allocate_shared``): its push (precision, precision-mean) and its
reply, in the wire's dtype.  The worker computes its push straight into the segment, the
server's pass reads the delta from it and writes the reply (the worker's cavity) into it,
and only the 8-word headers travel as messages, which also order the accesses: each side
calls ``Win.Sync`` (a memory barrier of the window's passive-target epoch) after writing
and before sending, and after receiving and before reading.  A segment is not written
again before its message has been answered: the server writes a worker's reply only when
that worker pushes, and a worker pushes only after it has received its last reply.

Measured on this 2-core machine (``bench/mpi_exchange.py``, which times both ways in one
run): a float32 exchange of the paper's network takes 0.90–0.97 ms this way against
1.88–2.25 ms as messages.  The arithmetic is the same, so runs are bitwise the same either
way.

Used when every rank is on one node, the server is one rank, and the messages are host
memory (not a CUDA-aware MPI's device buffers); ``SNEP_MPI_SHARED_WINDOW=0`` turns it off.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

__all__ = ["ENV_VAR", "SharedExchange"]

#: set to 0 to exchange payloads as messages even when every rank is on one node
ENV_VAR = "SNEP_MPI_SHARED_WINDOW"


class SharedExchange:
    """The window's segments, as numpy views: worker ``w``'s push and reply arrays.

    Open with :meth:`open` (collective); :meth:`sync` before sending a header after
    writing a segment and after receiving one before reading; :meth:`close` (collective)
    at the end of the run.
    """

    def __init__(self, win: Any, node: Any, segments: dict[int, tuple[np.ndarray, ...]]):
        self._win = win
        self._node = node
        self._segments = segments

    @classmethod
    def open(
        cls, comm: Any, first_worker: int, n_params: int, wire: Any, usable: bool
    ) -> SharedExchange | None:
        """Collective over ``comm`` (every rank calls it once, before any push): the window,
        or None on every rank when one of them cannot use it (``usable`` False there: the
        server split over ranks, device messages), when ``SNEP_MPI_SHARED_WINDOW=0``, or
        when the ranks span several nodes.

        ``first_worker`` is the rank of worker 0 (the ranks before it serve); each worker
        rank's segment holds ``4 n_params`` values of dtype ``wire``.
        """
        from mpi4py import MPI

        wanted = usable and os.environ.get(ENV_VAR, "1").strip() != "0"
        if not comm.allreduce(bool(wanted), op=MPI.LAND):
            return None
        # ranks in comm's order (key), so that a node rank is the comm rank
        node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
        if node.Get_size() != comm.Get_size():  # the same answer on every rank
            node.Free()
            return None
        dtype = np.dtype(wire)
        rank, size = comm.Get_rank(), comm.Get_size()
        mine = 4 * n_params * dtype.itemsize if rank >= first_worker else 0
        win = MPI.Win.Allocate_shared(mine, dtype.itemsize, comm=node)
        win.Lock_all(MPI.MODE_NOCHECK)
        owners = [rank] if rank >= first_worker else range(first_worker, size)
        segments = {}
        for owner in owners:
            buf, _ = win.Shared_query(owner)
            seg = np.frombuffer(buf, dtype, 4 * n_params).reshape(4, n_params)
            segments[owner - first_worker] = tuple(seg)  # push (2 arrays), reply (2 arrays)
        return cls(win, node, segments)

    def push(self, worker: int) -> tuple[np.ndarray, np.ndarray]:
        """Worker ``worker``'s push arrays (the delta's precision and precision-mean)."""
        seg = self._segments[worker]
        return seg[0], seg[1]

    def reply(self, worker: int) -> tuple[np.ndarray, np.ndarray]:
        """Worker ``worker``'s reply arrays (its cavity's precision and precision-mean)."""
        seg = self._segments[worker]
        return seg[2], seg[3]

    def sync(self) -> None:
        """Order this rank's accesses to the window with the messages around them."""
        self._win.Sync()

    def close(self) -> None:
        """End the epoch and free the window (collective over the ranks that opened it)."""
        self._segments = {}
        self._win.Unlock_all()
        self._win.Free()
        self._node.Free()
