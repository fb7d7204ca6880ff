"""Running SNEP under ``mpiexec``: k server ranks (one by default) and n worker ranks.

``mpiexec -n N+K snep train --workers N --server-ranks K ...`` runs the same
configuration as the in-process runner: rank 0 builds the config and broadcasts it (as
JSON bytes), every rank builds the same model and initial position, each worker keeps
only its own shard, ranks 0..K-1 serve the posterior (each a slice of the parameters,
:mod:`snep.transport.shards`) and rank 0 evaluates it.
An exception on any rank aborts the whole job (``MPI.COMM_WORLD.Abort``) with
a message naming the rank, so a failure never leaves the others hanging.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from snep.algorithm.server import PosteriorServer
from snep.backends import Backend, get_backend
from snep.config import METHODS, Config
from snep.data.dataset import Dataset
from snep.errors import ConfigError, DataError
from snep.io import save_npz
from snep.maths.family import DiagGaussian
from snep.run.fit import blas_threads, check_backend
from snep.run.setup import FitResult, RunSetup, make_server
from snep.transport.env import mpi_world_size
from snep.transport.inprocess import Callback

__all__ = ["broadcast_config", "mpi_world_size", "run_mpi"]

#: seconds a failing rank waits, after writing its error, before aborting the job
ABORT_GRACE_SECONDS = 0.5


def broadcast_config(comm: Any, config: Config | None) -> Config:
    """Rank 0's config on every rank (JSON bytes, no pickle)."""
    payload = json.dumps(config.to_dict()).encode() if comm.Get_rank() == 0 else b""
    n = np.array([len(payload)], np.int64)
    comm.Bcast(n, root=0)
    buf = np.frombuffer(payload, np.uint8).copy() if payload else np.empty(int(n[0]), np.uint8)
    comm.Bcast(buf, root=0)
    return Config.from_dict(json.loads(buf.tobytes().decode()))


def local_rank(comm: Any) -> int:
    """This rank's index among the ranks of its node (``MPI.COMM_TYPE_SHARED``)."""
    from mpi4py import MPI

    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return int(node.Get_rank())
    finally:
        node.Free()


def device_for_rank(rank: int, node_rank: int, n_devices: int, server_ranks: int = 1) -> int | None:
    """The GPU of a rank: none for a server rank (ranks below ``server_ranks``, which only
    merge and evaluate on the host), else ``node_rank mod n_devices`` so the worker ranks
    of a node spread over its GPUs (with as many GPUs as worker ranks per node, one GPU
    each)."""
    if rank < server_ranks or n_devices <= 0:
        return None
    return node_rank % n_devices


def rank_backend(config: Config, comm: Any) -> Backend:
    """The backend of this rank under MPI: ``train.backend``, except that with ``cuda``
    the server rank uses the ``cpu`` backend and each worker rank the GPU
    :func:`device_for_rank` gives it.  Messages are always staged through host memory
    (float64 natural parameters; docs/method.md §1.3), so no CUDA-aware MPI is needed."""
    train = config.train
    if train.backend != "cuda":
        return get_backend(train.backend, train.threads)
    rank, k = comm.Get_rank(), train.server_ranks
    if rank < k:
        return get_backend("cpu", train.threads)
    import cupy

    n_devices = cupy.cuda.runtime.getDeviceCount()
    device = device_for_rank(rank, local_rank(comm), n_devices, k)
    return get_backend("cuda", train.threads, device)


def run_mpi(
    config: Config,
    dataset: Dataset,
    backend: Backend | None = None,
    callback: Callback | None = None,
    comm: Any = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    model: Any = None,
) -> FitResult | None:
    """Run SNEP over MPI; returns the :class:`FitResult` on rank 0, None on workers.

    With ``checkpoint_dir``, the server writes ``server.npz`` at every evaluation and
    each worker ``worker-<i>.npz`` every ``eval_every * checkpoint_every``
    iterations (atomically); ``resume`` continues from them: the workers reload
    their chains and the server rebuilds theta from their last pushed sites.
    """
    from mpi4py import MPI

    world = comm or MPI.COMM_WORLD
    comm = world.Dup()
    # every rank resolves the run length from the same data (idempotent)
    config = config.with_data_size(dataset.n_train)
    try:
        size, rank = comm.Get_size(), comm.Get_rank()
        train = config.train
        k = train.server_ranks
        if size != train.workers + k:
            who = "one server rank" if k == 1 else f"{k} server ranks"
            raise ConfigError(
                f"MPI has {size} ranks but train.workers = {train.workers} and "
                f"train.server_ranks = {k}: launch with mpiexec -n {train.workers + k} "
                f"({who} + {train.workers} workers), or set --workers {size - k}"
            )
        method = METHODS[train.method]
        if not method.distributed:
            raise ConfigError(
                f"train.method = {method.name!r} is a single-process baseline; run it "
                "without mpiexec"
            )
        if k > 1 and not method.posterior:
            raise ConfigError(
                f"train.server_ranks = {k}: the {method.name!r} baseline's server is not "
                "split over ranks; use --server-ranks 1"
            )
        # the server ranks' own communicator (collective over every rank)
        servers = comm.Split(0 if rank < k else 1, rank) if k > 1 else None
        backend = backend or rank_backend(config, comm)
        if rank != 0:
            check_backend(config, backend, mpi=True, model=model)
        setup = RunSetup.create(config, dataset, backend, model)
        if not method.checkpointed:
            checkpoint_dir = None  # the baselines keep no checkpoints
        if k > setup.spec.size:
            raise ConfigError(
                f"train.server_ranks = {k} exceeds the model's {setup.spec.size} parameters"
            )
        with blas_threads(config, setup.spec.size):
            if rank < k:
                return _serve(comm, setup, callback, checkpoint_dir, resume, servers)
            if servers is not None:  # a worker is not in the servers' communicator's work
                servers.Free()
            _work(comm, setup, rank - k, checkpoint_dir, resume)
            return None
    except Exception as exc:  # any failure ends the whole job, never a hang
        sys.stderr.write(
            f"snep: rank {world.Get_rank()} failed: {type(exc).__name__}: {exc}\n"
            + "".join(traceback.format_exc(limit=5))
        )
        sys.stderr.flush()
        # mpiexec forwards each rank's stderr asynchronously: give it a moment to pass the
        # message on before the abort kills this process (under load it was lost)
        time.sleep(ABORT_GRACE_SECONDS)
        world.Abort(1)
        raise
    finally:
        if not MPI.Is_finalized():
            comm.Free()


def _checkpoint_file(directory: Path, name: str, resume: bool) -> Path:
    path = directory / name
    if resume and not path.is_file():
        raise DataError(
            f"cannot resume: {str(path)!r} does not exist (the run was not checkpointed under "
            "MPI, or with another number of workers)"
        )
    return path


def _load_state(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _work(comm, setup: RunSetup, worker_id: int, checkpoint_dir, resume: bool) -> None:
    from snep.transport.mpi import WorkerLoop

    config = setup.config
    worker = setup.make_worker(worker_id, *setup.shard(worker_id))  # keeps only its shard
    if config.train.cuda_aware_mpi:  # pushes and replies in device memory
        worker.enable_device_messages()
    speeds = config.train.speeds
    slowdown = speeds[worker_id] / min(speeds) if speeds else 1.0
    save, every = None, 0
    if checkpoint_dir is not None:
        path = _checkpoint_file(checkpoint_dir, f"worker-{worker_id}.npz", resume)
        if resume:
            worker.load_state_dict(_load_state(path))
        save = lambda state: save_npz(path, **state)  # noqa: E731
        every = config.train.eval_every * config.train.checkpoint_every
    stats = WorkerLoop(
        comm, worker, config.train.iterations, slowdown, config.train.synchronous,
        checkpoint=save, checkpoint_every=every, resumed=resume and checkpoint_dir is not None,
        server_ranks=config.train.server_ranks,
    ).run()  # fmt: skip
    row = np.array(
        [
            stats["iteration"],
            stats["pushes"],
            stats["guard_fired"],
            stats["comm_seconds"],
            stats["wall_seconds"],
            stats.get("rhat_max", np.nan),
            stats.get("ess_min", np.nan),
        ],
        np.float64,
    )
    comm.Gather(row, None, root=0)


_STAT_NAMES = (
    "iteration", "pushes", "guard_fired", "comm_seconds", "wall_seconds", "rhat_max", "ess_min",
)  # fmt: skip


def _serve(
    comm, setup: RunSetup, callback, checkpoint_dir, resume: bool, servers: Any = None
) -> FitResult | None:
    """A server rank: the whole server (one server rank), or shard ``rank`` of
    ``server_ranks`` (:mod:`snep.transport.shards`; shard 0 evaluates and returns the
    result, the others None)."""
    from snep.transport.mpi import BYTES_KEY, RECORDS_KEY, ServerLoop
    from snep.transport.shards import shard_bounds, slice_state

    config, dataset = setup.config, setup.dataset
    t = config.train
    shard, k = comm.Get_rank(), t.server_ranks
    lo, hi = shard_bounds(setup.spec.size, k)[shard]
    prior = setup.prior()  # this server rank's slice of it (all of it with one)
    server = make_server(
        config,
        DiagGaussian(prior.precision[lo:hi], prior.precision_mean[lo:hi]),
        setup.initial_position()[lo:hi],
        t.workers,
    )
    evaluator = setup.evaluator() if shard == 0 else None

    def evaluate(srv: PosteriorServer, mean_iter: float) -> dict[str, Any]:
        return {"epochs_per_worker": mean_iter * t.batch_size / dataset.n_train, **evaluator(srv)}

    t0 = time.perf_counter()
    save, records, moved = None, 0, 0
    if checkpoint_dir is not None:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        path = _checkpoint_file(checkpoint_dir, "server.npz", resume)
        if resume:  # the whole server's file; a shard takes its slice
            state = _load_state(path)
            records = int(state.pop(RECORDS_KEY, 0))
            moved = int(state.pop(BYTES_KEY, 0))
            state = state if k == 1 else slice_state(state, lo, hi)
            server = PosteriorServer.from_state_dict(state, t.wire)
            server.set_average_from(t.averaging_start)  # the run's length may change
        if shard == 0:  # shard 0 writes the whole server's state
            save = lambda state: save_npz(path, **state)  # noqa: E731
    loop = ServerLoop(
        comm, server, evaluate if shard == 0 else None, t.eval_every,
        callback if shard == 0 else None, t.synchronous, checkpoint=save,
        resumed=resume and checkpoint_dir is not None, first_worker=k, servers=servers,
        records_before=records, bytes_before=moved, checkpointing=checkpoint_dir is not None,
    )  # fmt: skip
    loop.run()
    server = loop.server  # with several server ranks: the whole server on shard 0
    rows = np.zeros((comm.Get_size(), len(_STAT_NAMES)))
    comm.Gather(np.zeros(len(_STAT_NAMES)), rows if shard == 0 else None, root=0)
    if servers is not None:
        servers.Free()
    if shard != 0:
        return None
    workers = [dict(zip(_STAT_NAMES, (float(v) for v in r), strict=True)) for r in rows[k:]]
    wall = time.perf_counter() - t0
    stats = {
        **server.stats(),
        **server.staleness_report(wall),
        "wall_seconds": wall,
        "transport": "mpi",
        "ranks": comm.Get_size(),
        "bytes_moved": loop.bytes_moved,
        "payloads": loop.payloads,  # "shared window" (one node) or "messages"
        "server_comm_seconds": loop.comm_seconds,
        "worker_comm_fraction": [
            w["comm_seconds"] / max(w["wall_seconds"], 1e-12) for w in workers
        ],
        "workers": workers,
    }
    return FitResult(setup.to_posterior(server), loop.history, stats)
