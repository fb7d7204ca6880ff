"""MPI tests that hold at any communicator size.

Plain ``pytest`` runs them on one rank; ``.ci/run`` also runs this file under
``mpiexec -n 2`` and ``-n 4`` (every rank runs every test, collectively).
"""

from __future__ import annotations

import numpy as np
import pytest

try:
    from mpi4py import MPI
except ImportError:  # skipped, or failed where SNEP_REQUIRE names mpi (see conftest.py)
    MPI = None

from snep.config import Config
from snep.transport.launch import broadcast_config
from snep.transport.mpi import KIND_PUSH, KIND_REPLY, Message, pack, unpack_header

pytestmark = [pytest.mark.mpi, pytest.mark.requires("mpi")]


def test_rank_zero_config_reaches_every_rank():
    comm = MPI.COMM_WORLD.Dup()
    mine = Config().replace(train={"workers": 7, "seed": 11}) if comm.Get_rank() == 0 else None
    got = broadcast_config(comm, mine)
    assert got.train.workers == 7 and got.train.seed == 11
    comm.Free()


def test_push_and_reply_between_rank_zero_and_every_other_rank():
    comm = MPI.COMM_WORLD.Dup()
    rank, size, p = comm.Get_rank(), comm.Get_size(), 1001
    msg = Message(p, np.float32)
    if rank == 0:
        theta = np.zeros(2 * p)
        for _ in range(size - 1):
            status = MPI.Status()
            comm.Recv(msg.mpi(), source=MPI.ANY_SOURCE, tag=5, status=status)
            _, worker, *_ = unpack_header(msg.header, (KIND_PUSH,), p, "server", 4)
            assert worker == status.Get_source() - 1
            theta[:p] += msg.precision
            theta[p:] += msg.precision_mean
            out = pack(Message(p, np.float32), KIND_REPLY, worker, 1, precision=theta[:p],
                       precision_mean=theta[p:])  # fmt: skip
            comm.Send(out.mpi(), dest=status.Get_source(), tag=5)
        # deltas commute: theta is the sum of every worker's delta whatever the order
        expected = sum(float(r) for r in range(1, size))
        np.testing.assert_allclose(theta, expected)
    else:
        delta = np.full(p, float(rank))
        pack(msg, KIND_PUSH, rank - 1, 0, 10, 0, precision=delta, precision_mean=delta)
        comm.Send(msg.mpi(), dest=0, tag=5)
        comm.Recv(msg.mpi(), source=0, tag=5)
        unpack_header(msg.header, (KIND_REPLY,), p, f"worker {rank - 1}", 4)
        assert np.all(msg.precision >= rank) and np.all(msg.precision_mean >= rank)
    comm.Barrier()
    comm.Free()


def test_cuda_aware_messages_give_the_host_staged_run_bitwise():
    """``train.cuda_aware_mpi``: the workers hand MPI device buffers (here the device double's
    arrays, which MPI reads like a CUDA-aware library reads GPU memory) and wait for their
    device work before each send; a synchronous run gives the host-staged run bitwise."""
    comm = MPI.COMM_WORLD
    if comm.Get_size() < 2:
        pytest.skip("needs a server rank and a worker rank (run under mpiexec -n 2 or more)")
    from algorithm.device_double import DeviceBackend
    from snep.data.loaders import load_digits
    from snep.transport.launch import run_mpi

    cfg = Config().replace(
        train={
            "workers": comm.Get_size() - 1,
            "iterations": 30,
            "eval_every": 15,
            "synchronous": True,
            "backend": "cuda",
        },
        model={"hidden": (8,)},
        snep={"site_step": {"value": 0.1}},
    )
    data = load_digits()
    runs = {}
    for aware in (False, True):
        backend = DeviceBackend()
        result = run_mpi(cfg.replace(train={"cuda_aware_mpi": aware}), data, backend=backend)
        runs[aware] = (result, backend)
    if comm.Get_rank() == 0:
        staged, aware = runs[False][0], runs[True][0]
        np.testing.assert_array_equal(aware.posterior.precision, staged.posterior.precision)
        np.testing.assert_array_equal(aware.posterior.mean, staged.posterior.mean)
    else:  # a worker waited for its device before each of its sends, only when aware
        assert runs[False][1].syncs == 0 and runs[True][1].syncs >= 3
    comm.Barrier()


def test_two_server_ranks_without_checkpoints_give_the_in_process_run_bitwise():
    """``train.server_ranks = 2`` and no run directory (``run_mpi`` from a script): every
    server rank skips the start's gather together (only shard 0 would know that nothing
    is checkpointed), and the synchronous run equals the in-process run bitwise."""
    comm = MPI.COMM_WORLD
    if comm.Get_size() < 3:
        pytest.skip("needs two server ranks and a worker rank (run under mpiexec -n 3 or more)")
    from snep.backends import get_backend
    from snep.data.loaders import load_digits
    from snep.transport.inprocess import run_in_process
    from snep.transport.launch import run_mpi

    cfg = Config().replace(
        train={
            "workers": comm.Get_size() - 2,
            "server_ranks": 2,
            "iterations": 30,
            "eval_every": 15,
            "synchronous": True,
            "backend": "cpu",
            "threads": 1,
        },
        model={"hidden": (8,)},
    )
    data = load_digits()
    result = run_mpi(cfg, data)
    if comm.Get_rank() == 0:
        local = run_in_process(cfg, data, get_backend("cpu", 1))
        np.testing.assert_array_equal(result.posterior.precision, local.posterior.precision)
        np.testing.assert_array_equal(result.posterior.mean, local.posterior.mean)
    comm.Barrier()


def test_the_shared_window_holds_each_workers_segment_and_says_no_together(monkeypatch):
    """SharedExchange on one node: every worker's segment is the one the server sees
    (written by the worker, read back by the server after the header and the syncs); and
    when one rank cannot use it, or SNEP_MPI_SHARED_WINDOW=0, no rank gets one."""
    from snep.transport.shared_window import ENV_VAR, SharedExchange

    comm = MPI.COMM_WORLD.Dup()
    rank, size, p = comm.Get_rank(), comm.Get_size(), 257
    shared = SharedExchange.open(comm, 1, p, np.float32, usable=True)
    if size > 1:
        assert shared is not None  # CI's ranks share one node
        if rank == 0:
            for w in range(size - 1):
                comm.Recv(np.zeros(1, np.int64), source=w + 1, tag=6)
                shared.sync()
                push = shared.push(w)
                assert np.all(push[0] == w + 1) and np.all(push[1] == -(w + 1))
                shared.reply(w)[0][...] = 10 * (w + 1)
                shared.sync()
                comm.Send(np.zeros(1, np.int64), dest=w + 1, tag=6)
        else:
            mine = shared.push(rank - 1)
            mine[0][...], mine[1][...] = rank, -rank
            shared.sync()
            comm.Send(np.zeros(1, np.int64), dest=0, tag=6)
            comm.Recv(np.zeros(1, np.int64), source=0, tag=6)
            shared.sync()
            assert np.all(shared.reply(rank - 1)[0] == 10 * rank)
    if shared is not None:
        shared.close()
    assert SharedExchange.open(comm, 1, p, np.float32, usable=rank != size - 1) is None
    monkeypatch.setenv(ENV_VAR, "0")
    assert SharedExchange.open(comm, 1, p, np.float32, usable=True) is None
    comm.Barrier()
    comm.Free()
