"""MPI transport of the posterior server (Hasenclever et al. 2017, §"The
posterior server"; docs/method.md §1.4, §3).

Rank 0 is the server, ranks 1..n the workers; the same worker objects
(:class:`~snep.algorithm.messages.Worker`) and :class:`PosteriorServer` objects as
the in-process runner do the maths, this module only moves their messages.

Messages are typed byte buffers on a duplicated communicator (never pickle): an
8-slot int64 header ``[kind, worker, version, n_params, iteration, version_seen,
accepted, itemsize]`` followed by ``2 P`` payload values (precision, then
precision-mean) in the wire's dtype (``train.wire``; float64 for registration, whose
sites a resumed server rebuilds theta from).  A push's delta is read by the server
where it arrived and the reply, the worker's cavity, is written by the server's pass
straight into the send buffer; a worker computes its push in its send buffer and
reads its reply where it arrived: no copy that a view can replace.  When every rank is on
one node (and the server is one rank, the messages host memory) the payloads do not travel
at all: they are read and written in an MPI-3 shared-memory window and only the headers
are messages (:mod:`snep.transport.shared_window`; ``SNEP_MPI_SHARED_WINDOW=0`` turns it
off), bitwise the same run.  A header whose
kind, parameter count or value size does not match raises :class:`ProtocolError`
naming both sides' values.  The server polls with non-blocking receives
(MPICH's one-sided operations only progress while the target calls MPI, so
two-sided messages it is); each worker has at most one request in flight.

Evaluation scores a snapshot of the posterior on a second thread of the
server rank, so the server keeps serving while it runs (at most one
evaluation in flight; one due while another runs is taken at the next push).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from snep.algorithm.messages import Push, Reply, Worker, wire_dtype
from snep.algorithm.server import PosteriorServer
from snep.errors import SnepError
from snep.transport.shared_window import SharedExchange

__all__ = [
    "HEADER",
    "KIND_DONE",
    "KIND_PUSH",
    "KIND_REGISTER",
    "KIND_REPLY",
    "Message",
    "ProtocolError",
    "ServerLoop",
    "WorkerLoop",
    "checkpoint_records",
    "pack",
    "pack_header",
    "unpack_header",
]

#: the keys of a server checkpoint that count the evaluation records made before it and
#: the bytes the server had moved (a resumed run goes on counting from there)
RECORDS_KEY = "records"
BYTES_KEY = "bytes_moved"
HEADER = 8  # int64 slots
HEADER_BYTES = 8 * HEADER
KIND_REGISTER, KIND_PUSH, KIND_REPLY, KIND_DONE = 1, 2, 3, 4
KIND_NAMES = {KIND_REGISTER: "register", KIND_PUSH: "push", KIND_REPLY: "reply", KIND_DONE: "done"}
TAG = 77


class ProtocolError(SnepError, RuntimeError):
    """A message does not match what the receiver expects."""


class Message:
    """One message buffer: ``HEADER`` int64 slots, then ``2 P`` payload values of ``dtype``
    (precision, then precision-mean), as views on one byte buffer that MPI sends whole.

    ``xp`` makes the buffer where it lives (numpy; the backend's array module for the
    device buffers of a CUDA-aware MPI).  :meth:`mpi` is the buffer argument of a send
    or a receive.
    """

    def __init__(self, n_params: int, dtype: Any, xp: Any = np) -> None:
        self.n_params = n = int(n_params)
        self.dtype = np.dtype(dtype)
        self.raw = xp.zeros(HEADER_BYTES + 2 * n * self.dtype.itemsize, np.uint8)
        self.header = self.raw[:HEADER_BYTES].view(np.int64)
        payload = self.raw[HEADER_BYTES:].view(self.dtype)
        self.precision, self.precision_mean = payload[:n], payload[n:]

    @property
    def nbytes(self) -> int:
        return int(self.raw.nbytes)

    def mpi(self) -> list[Any]:
        from mpi4py import MPI

        return [self.raw, MPI.BYTE]

    def header_mpi(self) -> list[Any]:
        """The header alone, as a send's buffer argument (the payload travels in a shared
        window: :mod:`snep.transport.shared_window`)."""
        from mpi4py import MPI

        return [self.raw[:HEADER_BYTES], MPI.BYTE]


def pack_header(
    kind: int,
    worker: int,
    version: int,
    n_params: int,
    itemsize: int,
    iteration: int = 0,
    version_seen: int = 0,
    accepted: bool = True,
) -> np.ndarray:
    """A host header: ``[kind, worker, version, n_params, iteration, version_seen,
    accepted, itemsize]`` (``itemsize``: the payload's bytes per value)."""
    return np.array(
        (kind, worker, version, n_params, iteration, version_seen, int(accepted), itemsize),
        np.int64,
    )


def _copy_host(dst: np.ndarray, src: np.ndarray) -> None:
    np.copyto(dst, src, casting="same_kind")


def _put_payload(
    dst: tuple[Any, Any], src: tuple[Any, Any], put: Callable[[Any, Any], None] = _copy_host
) -> None:
    """Write a payload (precision, precision-mean) into ``dst``'s arrays, skipping an
    array that already is its destination (computed in place: nothing to copy)."""
    for d, s in zip(dst, src, strict=True):
        if s is not d:
            put(d, s)


def pack(
    msg: Message,
    kind: int,
    worker: int,
    version: int,
    iteration: int = 0,
    version_seen: int = 0,
    accepted: bool = True,
    precision: np.ndarray | None = None,
    precision_mean: np.ndarray | None = None,
    put: Callable[[Any, Any], None] = _copy_host,
) -> Message:
    """Write a message (header, and the payload unless it is already there) and return
    it.  A payload array that is the message's own view is not copied.  ``put(dst, src)``
    writes a host array into one of the message's (a device message: a copy to the
    device)."""
    header = pack_header(
        kind, worker, version, msg.n_params, msg.dtype.itemsize, iteration, version_seen,
        accepted,
    )  # fmt: skip
    put(msg.header, header)
    if precision is not None:
        _put_payload((msg.precision, msg.precision_mean), (precision, precision_mean), put)
    return msg


def unpack_header(
    header: np.ndarray,
    expect_kinds: tuple[int, ...],
    n_params: int,
    where: str,
    itemsize: int | None = None,
):
    """Validated ``(kind, worker, version, iteration, version_seen, accepted)`` of a host
    header; ``itemsize``: the payload's bytes per value this side expects (the same
    ``train.wire`` on both sides), checked on messages that carry a payload."""
    kind, worker, version, n, iteration, seen, accepted, size = (int(v) for v in header)
    if kind not in expect_kinds:
        raise ProtocolError(
            f"{where}: got a message of kind {KIND_NAMES.get(kind, kind)!r} from worker "
            f"{worker}, expected one of {[KIND_NAMES[k] for k in expect_kinds]}"
        )
    if n != n_params:
        raise ProtocolError(
            f"{where}: worker {worker} sent {n} parameters, this side has {n_params} "
            "(both sides must build the same model from the same config)"
        )
    if itemsize is not None and kind != KIND_DONE and size != itemsize:
        raise ProtocolError(
            f"{where}: worker {worker} sent {size}-byte values, this side expects "
            f"{itemsize}-byte ones (both sides must use the same train.wire)"
        )
    return kind, worker, version, iteration, seen, bool(accepted)


class ServerLoop:
    """The server rank: registration, then apply pushes and reply until every worker is done.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
        A duplicated communicator; rank 0 is this server.
    server : PosteriorServer
        The posterior server's state.
    evaluate : callable, optional
        ``evaluate(server, mean_iteration) -> dict`` run every ``eval_every``
        mean worker iterations; its records go to ``callback``.
    first_worker : int
        The rank of worker 0 (the number of server ranks before it).
    servers : mpi4py.MPI.Comm, optional
        With the server split over several ranks (:mod:`snep.transport.shards`): the
        communicator of the server ranks, over which every shard sends its state to
        shard 0 at each evaluation and at the end (``server`` then holds this shard's
        slice; shard 0 evaluates, checkpoints and, after :meth:`run`, holds the whole
        server in :attr:`server`).
    checkpointing : bool, optional
        Whether the run is checkpointed (default: whether ``checkpoint`` is given).  With
        several server ranks every rank passes the same value (only shard 0 gets
        ``checkpoint``), so that they all take part in the start's gather, or all skip it.
    """

    def __init__(
        self,
        comm: Any,
        server: PosteriorServer,
        evaluate: Callable[[PosteriorServer, float], dict[str, Any]] | None = None,
        eval_every: int = 0,
        callback: Callable[[dict[str, Any]], None] | None = None,
        synchronous: bool = False,
        checkpoint: Callable[[dict[str, np.ndarray]], None] | None = None,
        resumed: bool = False,
        first_worker: int = 1,
        servers: Any = None,
        records_before: int = 0,
        bytes_before: int = 0,
        checkpointing: bool | None = None,
    ) -> None:
        self.comm = comm
        self.checkpointing = checkpoint is not None if checkpointing is None else checkpointing
        self.first_worker = first_worker
        self.servers = servers
        self.records_before = records_before  # records a resumed run's directory keeps
        self.synchronous = synchronous
        self.checkpoint = checkpoint  # receives the server's state at each evaluation
        self.resumed = resumed
        self.server = server
        self.n_workers = comm.Get_size() - first_worker
        self.n_params = server.precision.size
        self.evaluate = evaluate
        self.eval_every = eval_every
        self.callback = callback
        self.history: list[dict[str, Any]] = []
        self._pool: Any = None
        self._evaluation: Future | None = None
        self.poll_interval = 1e-4  # seconds between polls when nothing has arrived
        self.bytes_moved = bytes_before
        self.comm_seconds = 0.0
        self.wire = wire_dtype(server.wire)
        n = self.n_workers
        #: per worker: where its pushes arrive, where its replies leave from, and the
        #: reply sends in flight (the receives are posted in :meth:`run`, after
        #: registration, whose messages share the tag)
        self._bufs = [self._message() for _ in range(n)]
        self._out = [self._message() for _ in range(n)]
        self._sends: list[list[Any]] = [[] for _ in range(n)]
        self._recvs: list[Any] = []
        #: the pushes' and replies' payloads in a shared window (opened in register())
        self._shared: SharedExchange | None = None
        #: how the payloads travelled: "shared window" or "messages" (set in register())
        self.payloads = "messages"

    def _message(self) -> Message:
        return Message(self.n_params, self.wire)

    def register(self) -> None:
        """Receive every worker's site, then send theta to all.

        A fresh run registers initial sites; a resumed one receives each worker's
        last pushed site and rebuilds ``theta = theta_0 + sum_i site_i`` from them.
        """
        from mpi4py import MPI

        self._shared = SharedExchange.open(
            self.comm, self.first_worker, self.n_params, self.wire, usable=self.servers is None
        )
        self.payloads = "shared window" if self._shared is not None else "messages"
        received = {}
        buf = Message(self.n_params, np.float64)  # sites are registered exactly
        for _ in range(self.n_workers):
            status = MPI.Status()
            self.comm.Recv(buf.mpi(), source=MPI.ANY_SOURCE, tag=TAG, status=status)
            _, worker, *_ = unpack_header(buf.header, (KIND_REGISTER,), self.n_params, "server", 8)
            if worker != status.Get_source() - self.first_worker:
                raise ProtocolError(
                    f"server: rank {status.Get_source()} registered as worker {worker}, "
                    f"expected worker {status.Get_source() - self.first_worker}"
                )
            received[worker] = _gaussian(buf.precision.copy(), buf.precision_mean.copy())
            if not self.resumed:
                self.server.register(worker, received[worker])
        if self.resumed:
            self.server.reset_sites(received)
        out = self._message()
        for worker in range(self.n_workers):  # each worker's own cavity
            reply = self.server.reply_to(worker, out=(out.precision, out.precision_mean))
            self._send_reply(out, worker, reply.version, True).Wait()

    def _send_reply(
        self, out: Message, worker: int, version: int, accepted: bool, header_only: bool = False
    ) -> Any:
        """Send the reply in ``out`` (one message, header packed here; with ``header_only``
        its payload is in the shared window); the request."""
        pack(out, KIND_REPLY, worker, version, accepted=accepted)
        buf = out.header_mpi() if header_only else out.mpi()
        return self.comm.Isend(buf, dest=worker + self.first_worker, tag=TAG)

    def run(self) -> None:
        """Serve pushes until every worker has sent ``done``."""
        from mpi4py import MPI

        self.register()
        self._checkpoint_start()
        n = self.n_workers
        first = self.first_worker
        self._recvs = [
            self.comm.Irecv(self._bufs[w].mpi(), source=w + first, tag=TAG) for w in range(n)
        ]
        done = [False] * n
        # each worker's iteration at its last push, accepted or not: the evaluation grid
        # is crossed at the same pushes on every server rank, whichever slices they reject
        pushed_at = np.array(self.server.last_iteration, np.float64)
        # the next evaluation on the eval_every grid (a resumed run starts mid-way)
        start_iter = int(pushed_at.mean())
        next_eval = (start_iter // self.eval_every + 1) * self.eval_every if self.eval_every else 0
        t_start = time.perf_counter()
        turn = 0  # synchronous mode: the worker whose message is taken next
        while not all(done):
            if self.synchronous:  # worker order within each round, as the in-process runner
                while done[turn]:
                    turn = (turn + 1) % n
                self._recvs[turn].Wait()
                idx, turn = turn, (turn + 1) % n
            else:
                idx, ready = MPI.Request.Testany(self._recvs)
                if not ready:  # poll, but yield the core: ranks may share cores with workers
                    time.sleep(self.poll_interval)
                    continue
            t0 = time.perf_counter()
            if not self._serve(idx, pushed_at):
                done[idx] = True
                continue
            self.comm_seconds += time.perf_counter() - t0
            next_eval = self._maybe_evaluate(float(pushed_at.mean()), next_eval, t_start)
        self._finish(t_start)

    def _checkpoint_start(self) -> None:
        """A checkpoint from the start: a job ended before its first evaluation resumes too
        (with several server ranks a collective: each sends its state to shard 0; skipped
        by all of them when the run is not checkpointed)."""
        if not self.checkpointing:
            return
        whole = self._gather_server() if self.servers is not None else self.server
        if self.checkpoint is not None and whole is not None:
            state = {k: np.array(v) for k, v in whole.state_dict().items()}
            self._save({**state, BYTES_KEY: np.array(self.bytes_moved, np.int64)})

    def _serve(self, idx: int, pushed_at: np.ndarray) -> bool:
        """Take worker ``idx``'s message: a push is applied (the server's pass writes the
        reply straight into its send buffer), answered and its next receive posted;
        returns False for the worker's ``done``."""
        from mpi4py import MPI

        msg, out = self._bufs[idx], self._out[idx]
        first = self.first_worker
        kind, worker, _, iteration, seen, _ = unpack_header(
            msg.header, (KIND_PUSH, KIND_DONE), self.n_params, "server", self.wire.itemsize
        )
        if worker != idx:
            raise ProtocolError(f"server: rank {idx + first} sent a message as worker {worker}")
        if kind == KIND_DONE:
            self._recvs[idx] = MPI.REQUEST_NULL
            return False
        # the previous reply to this worker has left its buffer (the worker received it
        # before it pushed again)
        MPI.Request.Waitall(self._sends[idx])
        pushed_at[idx] = iteration
        shared = self._shared
        if shared is not None:  # the delta is in the worker's segment, the reply goes there
            shared.sync()
            delta, answer = shared.push(idx), shared.reply(idx)
        else:
            delta, answer = (msg.precision, msg.precision_mean), (out.precision, out.precision_mean)
        reply = self.server.push(Push(idx, iteration, *delta, seen), out=answer)
        if shared is not None:
            shared.sync()
        self._sends[idx] = [
            self._send_reply(out, idx, reply.version, reply.accepted, shared is not None)
        ]
        if not reply.accepted:
            sys.stderr.write(
                f"snep: server rejected a push from worker {worker} at iteration "
                f"{iteration}: non-finite values in its delta ({self.server.rejected} "
                "rejected so far); the run goes on\n"
            )
        self._recvs[idx] = self.comm.Irecv(msg.mpi(), source=idx + first, tag=TAG)
        self.bytes_moved += msg.nbytes + out.nbytes
        return True

    def _maybe_evaluate(self, mean_iter: float, next_eval: int, t_start: float) -> int:
        """Start an evaluation when the workers' mean iteration crosses ``next_eval``;
        returns the next point of the grid."""
        if not self.eval_every or mean_iter < next_eval:
            return next_eval
        if self.servers is not None:
            # every shard crosses each point of the grid once (they serve the same
            # pushes), so each sends its state to shard 0 there
            whole = self._gather_server()
            if whole is not None and self.evaluate is not None:
                if self._evaluation is not None:  # one evaluation at a time
                    self._evaluation.result()
                self._evaluate_async(mean_iter, t_start, whole)
            return next_eval + self.eval_every
        if self.evaluate is not None and (self._evaluation is None or self._evaluation.done()):
            # a snapshot is scored on a second thread while this one keeps serving (NumPy
            # and BLAS release the GIL); at most one in flight
            self._evaluate_async(mean_iter, t_start)
            return next_eval + self.eval_every
        return next_eval

    def _finish(self, t_start: float) -> None:
        """The last replies out, the evaluation in flight, the whole server on shard 0,
        and a final evaluation unless the last one saw this version."""
        from mpi4py import MPI

        MPI.Request.Waitall([r for per_worker in self._sends for r in per_worker])
        if self._shared is not None:  # collective: every worker has said done
            self._shared.close()
            self._shared = None
        if self._evaluation is not None:
            self._evaluation.result()
        if self.servers is not None:  # shard 0 holds the whole server from here on
            whole = self._gather_server()
            if whole is not None:
                self.server = whole
        if self.evaluate is not None and (
            not self.history or self.history[-1]["version"] != self.server.version
        ):
            self._evaluate_async(float(self.server.last_iteration.mean()), t_start).result()
        if self._pool is not None:
            self._pool.shutdown()

    def _gather_server(self) -> PosteriorServer | None:
        """Every shard's state to shard 0, which gets the whole server (others: None).
        Collective over the server ranks; mpi4py's pickled ``gather``, at evaluations and
        at the end only (never on a push's path)."""
        from snep.transport.shards import merge_states

        states = self.servers.gather(self.server.state_dict(), root=0)
        if states is None:
            return None
        merged = merge_states(states)
        return type(self.server).from_state_dict(merged, self.server.wire)

    def _evaluate_async(self, mean_iter: float, t_start: float, server: Any = None) -> Future:
        from concurrent.futures import ThreadPoolExecutor

        snapshot = _Snapshot(server or self.server, with_state=self.checkpoint is not None)
        if snapshot.state is not None:  # the count as of the snapshot, for a resume
            snapshot.state[BYTES_KEY] = np.array(self.bytes_moved, np.int64)
        stats = {
            "iteration": mean_iter,
            "wall_seconds": time.perf_counter() - t_start,
            "server_comm_seconds": self.comm_seconds,
            "bytes_moved": self.bytes_moved,
        }
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snep-eval")
        self._evaluation = self._pool.submit(self._record, snapshot, mean_iter, stats)
        return self._evaluation

    def _record(self, snapshot: _Snapshot, mean_iter: float, stats: dict[str, Any]) -> None:
        """Score a snapshot, hand the record on, then checkpoint the snapshot's state with
        the number of records made so far: a job ended between the record and its
        checkpoint resumes from the checkpoint before, and the record is made again (the
        run directory drops it first: :func:`checkpoint_records`), so none is lost."""
        rec = {**stats, **self.evaluate(snapshot, mean_iter), **snapshot.stats}
        self.history.append(rec)
        if self.callback is not None:
            self.callback(rec)
        if snapshot.state is not None:
            self._save(snapshot.state)

    def _save(self, state: dict[str, np.ndarray]) -> None:
        records = self.records_before + len(self.history)
        self.checkpoint({**state, RECORDS_KEY: np.array(records, np.int64)})


class _Snapshot:
    """A copy of what the evaluator reads from a server, taken in the serving thread."""

    def __init__(self, server: Any, with_state: bool = False) -> None:
        self.state = None
        if with_state and hasattr(server, "state_dict"):
            self.state = {k: np.array(v) for k, v in server.state_dict().items()}
        self.precision = np.array(server.precision)
        self.precision_mean = np.array(server.precision_mean)
        avg = server.average_mean
        self.average_mean = None if avg is None else np.array(avg)
        self.point_estimate = getattr(server, "point_estimate", False)
        self.stats = server.stats()


@dataclass
class _Link:
    """One server rank as a worker sees it: the slice it serves and the two messages."""

    rank: int
    lo: int
    hi: int
    send: Message
    recv: Message


class WorkerLoop:
    """A worker rank: register, then iterate, pushing every N_sync with one request in flight.

    With the server split over ``server_ranks`` ranks (:mod:`snep.transport.shards`) each
    push goes out as one message per server rank (its slice) and the reply is put
    together from theirs; with one server rank the push is computed in the send buffer
    and the reply read where it arrived.
    """

    def __init__(
        self,
        comm: Any,
        worker: Worker,
        iterations: int,
        slowdown: float = 1.0,
        synchronous: bool = False,
        checkpoint: Callable[[dict[str, np.ndarray]], None] | None = None,
        checkpoint_every: int = 0,
        resumed: bool = False,
        server_ranks: int = 1,
    ) -> None:
        from snep.transport.shards import shard_bounds

        self.comm = comm
        self.synchronous = synchronous  # wait for each reply before the next iteration
        self.checkpoint = checkpoint  # receives the worker's state every checkpoint_every its
        self.checkpoint_every = checkpoint_every
        self.resumed = resumed  # the worker's state was loaded from a checkpoint
        self.worker = worker
        self.iterations = iterations
        self.slowdown = slowdown  # > 1: sleep (slowdown - 1) x each iteration's compute time
        self.n_params = worker.n_params
        self.comm_seconds = 0.0
        self._last_checkpoint = 0  # the worker's iteration at its last checkpoint
        # CUDA-aware MPI (train.cuda_aware_mpi): the message buffers live on the device
        self.device = bool(getattr(worker, "device_messages", False))
        self.wire = wire_dtype(worker.config.train.wire)
        self.bounds = shard_bounds(self.n_params, server_ranks)
        self.links: list[_Link] = []
        #: the pushes' and replies' payloads in a shared window (opened in register())
        self._shared: SharedExchange | None = None

    def _message(self, dtype: Any = None, n_params: int | None = None) -> Message:
        """A message buffer (the wire's dtype unless ``dtype``; ``n_params`` values of
        each kind, all by default), on the device for a CUDA-aware MPI."""
        xp = self.worker.xp if self.device else np
        n = self.n_params if n_params is None else n_params
        return Message(n, self.wire if dtype is None else dtype, xp)

    def _pack(
        self,
        msg: Message,
        kind: int,
        worker: int,
        version: int,
        iteration: int = 0,
        version_seen: int = 0,
        precision: Any = None,
        precision_mean: Any = None,
    ) -> Message:
        """:func:`pack` into a host message, or into a device message (header copied from
        the host, payload copied on the device unless it is the message's own), ready to
        send: the device's queued work is waited for, since MPI does not follow CUDA
        streams.  Every receive into the reply buffer is posted after such a send, so
        this wait also lets the kernels that read the previous reply in that buffer finish
        before MPI overwrites it."""
        put = _copy_host
        if self.device:
            from snep.backends.base import to_device

            backend = self.worker.backend

            def put(dst: Any, src: Any) -> None:
                dst[...] = to_device(backend, src, dst.dtype)

        pack(
            msg, kind, worker, version, iteration, version_seen,
            precision=precision, precision_mean=precision_mean, put=put,
        )  # fmt: skip
        if self.device:
            self.worker.backend.synchronize()
        return msg

    def _header(self, msg: Message) -> tuple[int, bool]:
        """A reply's (version, accepted), validated."""
        header = msg.header
        if self.device:  # the header to the host (a few bytes); the payload stays
            from snep.backends.base import to_host

            header = to_host(self.worker.backend, header)
        _, _, version, _, _, accepted = unpack_header(
            header, (KIND_REPLY,), msg.n_params, f"worker {self.worker.worker}",
            self.wire.itemsize,
        )  # fmt: skip
        return version, accepted

    def _reply(self, in_message: bool = False) -> Reply:
        """The reply in the receive buffers: read where it arrived (one server rank; in the
        shared window unless ``in_message``, as registration's reply is), or put together
        from every server rank's slice.  A slice whose server rank rejected the push
        (non-finite values there) has the worker's record of it rolled back."""
        if len(self.links) == 1:
            msg = self.links[0].recv
            if self._shared is not None and not in_message:
                self._shared.sync()
                return Reply(*self._shared.reply(self.worker.worker), *self._header(msg))
            return Reply(msg.precision, msg.precision_mean, *self._header(msg))
        prec, pm = self._cavity
        version, accepted = 0, []
        for s, link in enumerate(self.links):
            v, ok = self._header(link.recv)
            version = v if s == 0 else version
            accepted.append(ok)
            prec[link.lo : link.hi] = link.recv.precision
            pm[link.lo : link.hi] = link.recv.precision_mean
        if not any(accepted):
            return Reply(prec, pm, version, False)
        for link, ok in zip(self.links, accepted, strict=True):
            if not ok:
                self.worker.reject_range(link.lo, link.hi)
        return Reply(prec, pm, version, True)

    def _post_replies(self) -> list[Any]:
        return [self.comm.Irecv(link.recv.mpi(), source=link.rank, tag=TAG) for link in self.links]

    def register(self) -> None:
        """Send this worker's site (each server rank its slice), take the registration
        reply (start the worker from it, unless resumed)."""
        from mpi4py import MPI

        w = self.worker
        self._shared = SharedExchange.open(
            self.comm, len(self.bounds), self.n_params, self.wire,
            usable=len(self.bounds) == 1 and not self.device,
        )  # fmt: skip
        self.links = [
            _Link(s, lo, hi, self._message(None, hi - lo), self._message(None, hi - lo))
            for s, (lo, hi) in enumerate(self.bounds)
        ]
        if len(self.links) > 1:  # the reply put together from the slices
            xp = self.worker.xp if self.device else np
            self._cavity = (xp.zeros(self.n_params, self.wire), xp.zeros(self.n_params, self.wire))
        site = w.sent if self.resumed else w.initial_site()
        for link in self.links:  # the site exactly (a resume rebuilds theta from it)
            register = self._message(np.float64, link.hi - link.lo)
            self._pack(
                register,
                KIND_REGISTER,
                w.worker,
                -1,
                precision=site.precision[link.lo : link.hi],
                precision_mean=site.precision_mean[link.lo : link.hi],
            )
            self.comm.Send(register.mpi(), dest=link.rank, tag=TAG)
        MPI.Request.Waitall(self._post_replies())
        if self._shared is not None:  # pushes computed in the shared window: no message
            w.bind_push_arrays(*self._shared.push(w.worker))
        elif len(self.links) == 1:
            send = self.links[0].send  # pushes computed in the send buffer: no copy
            w.bind_push_arrays(send.precision, send.precision_mean)
        if self.resumed:
            # the worker goes on from its checkpoint, with the cavity of its last reply as
            # in the run that was not interrupted; the theta the server rebuilt from every
            # worker's last site is newer, and reaches it with its next reply
            w.in_flight = False
        else:
            w.start(self._reply(in_message=True))

    def exchange(self, push: Push) -> Reply:
        """Send ``push`` and wait for the server's reply (not yet applied to the worker)."""
        from mpi4py import MPI

        sent = self._send_push(push)
        MPI.Request.Waitall(self._post_replies())
        MPI.Request.Waitall(sent)
        return self._reply()

    def run(self) -> dict[str, Any]:
        """Run all iterations; returns the worker's counters."""
        w = self.worker
        self.register()
        if self.checkpoint is not None:  # a resumable state exists from the start
            self.checkpoint(w.state_dict())
        self._last_checkpoint = w.iteration
        pending: list[Any] | None = None  # the reply's receives
        sent: list[Any] = []  # the push's sends
        t_start = time.perf_counter()
        fail_at = _injected_failure(w.worker)
        nan_at = _injected_failure(w.worker, "NAN")
        while w.iteration < self.iterations:
            t_step = time.perf_counter()
            push = w.step()
            if w.iteration == fail_at:
                raise RuntimeError(f"injected failure at iteration {fail_at} (SNEP_TEST_FAIL_*)")
            if w.iteration == nan_at:  # fault test: a worker whose site turns non-finite
                w.arrays.site_pm[0, 0] = np.nan
            if self.slowdown > 1.0:
                time.sleep((self.slowdown - 1.0) * (time.perf_counter() - t_step))
            if pending is None and push is None:  # between syncs: nothing in flight
                self._maybe_checkpoint()
            t0 = time.perf_counter()
            pending, sent = self._progress(push, pending, sent)
            self.comm_seconds += time.perf_counter() - t0
        self._finish(pending, sent)
        stats = {
            **w.stats(),
            "comm_seconds": self.comm_seconds,
            "wall_seconds": time.perf_counter() - t_start,
        }
        self.close()  # waits for the other workers: after this worker's clock has stopped
        return stats

    def _maybe_checkpoint(self) -> None:
        """Checkpoint the worker if ``checkpoint_every`` iterations have passed since the
        last one (call only between syncs, with nothing in flight)."""
        w = self.worker
        every = self.checkpoint_every
        if self.checkpoint is not None and every and w.iteration - self._last_checkpoint >= every:
            self.checkpoint(w.state_dict())
            self._last_checkpoint = w.iteration

    def _progress(
        self, push: Push | None, pending: list[Any] | None, sent: list[Any]
    ) -> tuple[list[Any] | None, list[Any]]:
        """Apply the reply in flight if it has arrived, then send ``push`` (if any) without
        blocking (the server takes it when it polls; its reply is drained while the worker
        goes on), or wait for its reply in a synchronous run.  Returns the new
        ``(pending receives, sends)``."""
        from mpi4py import MPI

        w = self.worker
        if pending is not None and _drain(pending):
            pending = None
            MPI.Request.Waitall(sent)  # the server has the push: its buffers are free
            w.receive(self._reply())
        if push is not None:
            sent = self._send_push(push)
            pending = self._post_replies()
            if self.synchronous:
                MPI.Request.Waitall(pending)
                pending = None
                MPI.Request.Waitall(sent)
                w.receive(self._reply())
        return pending, sent

    def _finish(self, pending: list[Any] | None, sent: list[Any]) -> None:
        """The reply in flight, a last push (so that the server holds the worker's last
        site), the final checkpoint, the done messages and the last diagnostics."""
        from mpi4py import MPI

        w = self.worker
        t0 = time.perf_counter()
        if pending is not None:
            MPI.Request.Waitall(pending)
            MPI.Request.Waitall(sent)
            w.receive(self._reply())
        w.receive(self.exchange(w.make_push()))
        self.comm_seconds += time.perf_counter() - t0
        if self.checkpoint is not None:  # a write to disk, not communication
            self.checkpoint(w.state_dict())
        self.done()
        w.diagnostics()  # the cross-chain R-hat/ESS since the last checkpoint

    def done(self) -> None:
        """Tell every server rank this worker has finished (header-only messages)."""
        for link in self.links:
            self._pack(link.send, KIND_DONE, self.worker.worker, self.worker.version)
            self.comm.Send(link.send.mpi(), dest=link.rank, tag=TAG)

    def close(self) -> None:
        """Free the shared window, if any: collective, so it returns once the server has
        served every worker (:meth:`run` calls it after its counters are taken; a caller
        driving :meth:`register`, :meth:`exchange` and :meth:`done` itself calls it last)."""
        if self._shared is not None:
            # the worker's push arrays leave the window before it is freed: nothing of the
            # worker may point into freed memory
            send = self.links[0].send
            self.worker.bind_push_arrays(send.precision, send.precision_mean)
            self._shared.close()
            self._shared = None

    def _send_push(self, push: Push) -> list[Any]:
        """Send ``push`` (each server rank its slice) without blocking; the requests (wait
        on them before the send buffers are written again)."""
        whole = len(self.links) == 1
        if self._shared is not None:  # the delta is in the window: the header tells the server
            link = self.links[0]
            # a no-op when the worker computed the delta in the window (bind_push_arrays)
            _put_payload(
                self._shared.push(self.worker.worker),
                (push.delta_precision, push.delta_precision_mean),
            )
            self._pack(
                link.send, KIND_PUSH, push.worker, self.worker.version, push.iteration,
                push.version_seen,
            )  # fmt: skip
            self._shared.sync()
            return [self.comm.Isend(link.send.header_mpi(), dest=link.rank, tag=TAG)]
        sends = []
        for link in self.links:
            part = slice(None) if whole else slice(link.lo, link.hi)
            self._pack(
                link.send,
                KIND_PUSH,
                push.worker,
                self.worker.version,
                push.iteration,
                push.version_seen,
                precision=push.delta_precision[part] if not whole else push.delta_precision,
                precision_mean=(
                    push.delta_precision_mean[part] if not whole else push.delta_precision_mean
                ),
            )
            sends.append(self.comm.Isend(link.send.mpi(), dest=link.rank, tag=TAG))
        return sends


def checkpoint_records(path: Any) -> int | None:
    """How many evaluation records the run had made when the server checkpoint ``path``
    was written (None: no such file, or one written before the count was kept)."""
    from pathlib import Path

    if not Path(path).is_file():
        return None
    with np.load(path, allow_pickle=False) as f:
        return int(f[RECORDS_KEY]) if RECORDS_KEY in f.files else None


def _drain(requests: list[Any]) -> bool:
    """Complete what has arrived of a reply (one message per server rank) without waiting
    for the rest; True once every request is complete.  One test call completes about one
    large message (each needs a round of the MPI library's progress), so the requests are
    tested again while the last call completed something."""
    from mpi4py import MPI

    while True:
        completed = MPI.Request.Testsome(requests)
        if completed is None:  # no active request left
            return True
        if not completed:
            return False


def _injected_failure(worker: int, what: str = "FAIL") -> int:
    """Iteration at which this worker raises (``FAIL``) or poisons its site (``NAN``), for
    fault tests: SNEP_TEST_<what>_WORKER and SNEP_TEST_<what>_AT (-1: never)."""
    if os.environ.get(f"SNEP_TEST_{what}_WORKER", "") == str(worker):
        return int(os.environ.get(f"SNEP_TEST_{what}_AT", "1"))
    return -1


def _gaussian(prec: np.ndarray, pm: np.ndarray):
    from snep.maths.family import DiagGaussian

    return DiagGaussian(prec, pm)
