"""MPI exchange benchmark (docs/architecture.md "The exchange"; issue 14): a worker's push
and the server's reply for the paper's network (P = 545,810) through snep's real MPI
transport, against a raw mpi4py ``Sendrecv`` of 2P float64 each way, in the same run.

    mpiexec -n 2 python bench/mpi_exchange.py [--rounds 100] [--repeats 3] [--average]

Rank 0 runs the real :class:`snep.transport.mpi.ServerLoop` (non-blocking receives polled
with ``Testany``, the fused server pass writing the reply into its ``Isend`` buffer);
rank 1 a real :class:`SnepWorker` (784-500-300-10 on a synthetic shard) driven through
:class:`WorkerLoop`'s registration and ``exchange``.  Per round, on rank 1:

* ``exchange``: send the push, wait for the reply: the wire both ways, the server's
  unpacking, its pass (``theta``, the site, the cavity; with ``--average`` the running
  moments of the run's last part too) and its polling latency;
* ``sync``: the worker's whole sync, ``make_push`` + ``exchange`` + ``receive`` (the reply
  update of the chain);
* ``raw_sendrecv``: one ``Sendrecv`` of 8 + 2P float64 each way between the same ranks,
  back to back: its buffers stay in the shared L3;
* ``raw_sendrecv_in_situ``: the same ``Sendrecv``, each after rank 1 has run what precedes
  a timed ``exchange`` (an iteration of the same worker and its push), so that the raw
  messages meet the caches the exchange meets (the ``*_over_raw_in_situ`` ratios; the
  issue's ratio stays the one over the back-to-back ``Sendrecv``);
* ``server_pass_warm`` (rank 0, after each session): the server's push of a zero delta,
  back to back, its state in cache and nothing on the wire: the floor of any exchange
  with this server state, against which ``*_server_pass_warm_over_raw`` sets the target;
* ``server_pass_cold``: the same push after a sweep that evicts the caches, as the
  worker's iteration does between two syncs: what the pass costs inside an exchange.

For each variant (``VARIANTS``: the float64 and float32 wires with the payloads in the
transport's shared window, which it uses when the ranks share a node, and the float32 wire
with the payloads as messages, ``SNEP_MPI_SHARED_WINDOW=0``) and each of ``--repeats``
repeats, these are timed in turn over ``--rounds`` rounds, so the ratios come from the
same minutes of this shared machine; the JSON gives each repeat's medians and ratios and
their spread.  ``ratio_snep_over_raw`` (the key other tools read) is the float32 wire's median
``exchange`` over the raw ``Sendrecv``, the median over repeats
(``ratio_snep_over_raw_in_situ``: the same over the in-situ one).  Writes
``bench/results/mpi_exchange-<timestamp>.json`` from rank 0.
"""

# ruff: noqa: E402  (the imports below wait for the thread settings)
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from snep.threads import apply_threads

# what `snep train` sets when its ranks fill the cores (cli/train.py): one BLAS, OpenMP and
# Numba thread per rank, and pools that stop spinning when idle; with the libraries'
# defaults the worker's idle OpenBLAS thread spun against the server on the 2 cores (every
# run before mpi_exchange-20261201-031101.json)
apply_threads(1)

import numpy as np
from mpi4py import MPI

sys.path.insert(0, str(Path(__file__).parent))

from benchutil import HIDDEN, make_config, make_shard, make_worker
from server_bytes import EVICT_VALUES, time_pass, zero_push
from snep.algorithm.server import PosteriorServer
from snep.algorithm.worker import SnepWorker
from snep.backends import get_backend
from snep.maths.family import DiagGaussian
from snep.model.spec import ParamSpec, init_params
from snep.transport.mpi import ServerLoop, WorkerLoop
from snep.transport.shared_window import ENV_VAR as SHARED_ENV

WARMUP = 5
#: what is timed: name -> (train.wire, SNEP_MPI_SHARED_WINDOW); on one node the transport
#: moves the payloads through a shared window ("1"), or as messages with "0"
VARIANTS = {
    "float64": ("float64", "1"),
    "float32": ("float32", "1"),
    "float32_messages": ("float32", "0"),
}
POLL: float | None = None  # --poll: the server's poll interval (default: ServerLoop's)


def raw_rounds(
    comm: MPI.Comm, p: int, rounds: int, before: Callable[[], object] | None = None
) -> list[float]:
    """Seconds per ``Sendrecv`` of 8 + 2P float64 each way (both ranks take part); with
    ``before``, rank 1 calls it (untimed) before each round."""
    rank = comm.Get_rank()
    send, recv = np.ones(8 + 2 * p), np.empty(8 + 2 * p)
    times = []
    for i in range(WARMUP + rounds):
        if before is not None and rank == 1:
            before()
        comm.Barrier()
        t0 = time.perf_counter()
        comm.Sendrecv([send, MPI.DOUBLE], 1 - rank, recvbuf=[recv, MPI.DOUBLE], source=1 - rank)
        if i >= WARMUP:
            times.append(time.perf_counter() - t0)
    return times


def raw_rounds_in_situ(comm: MPI.Comm, p: int, rounds: int) -> list[float]:
    """:func:`raw_rounds` with rank 1 running what precedes each timed exchange of
    :func:`snep_rounds` before each ``Sendrecv`` (the worker's iteration and its push, with
    an in-process server to start it): the raw messages meet the caches the exchange
    meets, the worker's working set having pushed the other buffers out of the shared L3."""
    before = None
    if comm.Get_rank() == 1:
        spec = ParamSpec((784, *HIDDEN, 10))
        worker = make_worker(spec, make_shard(2000), "adam_sgld", 100, 1).worker

        def before() -> None:
            worker.step()
            worker.in_flight = False
            worker.make_push()
            worker.in_flight = False

    return raw_rounds(comm, p, rounds, before)


def server_pass(server: PosteriorServer, wire: str, rounds: int, cold: bool = False) -> list[float]:
    """Seconds per :meth:`PosteriorServer.push` (the finiteness check and the fused pass
    over theta, the site and the reply, as ``ServerLoop`` calls it) of a zero delta, on
    this rank with nothing else running and no byte on the wire.  Back to back
    (``cold`` False) its state stays in cache: a lower bound of any exchange whose server
    keeps this state (issue 14).  With ``cold``, a sweep over twice the L3 (64 MB, untimed)
    before each push evicts it, as a worker's iteration does between two syncs: the pass
    then streams its ~80 bytes per parameter (theta and the site read and written in
    float64, the delta read, the reply written) from memory."""
    evict = np.zeros(EVICT_VALUES) if cold else None
    return time_pass(zero_push(server, wire), rounds, evict)


def worker_config(wire: str, average: bool):
    cfg = make_config("adam_sgld", 100, 1)
    return cfg.replace(train={"wire": wire, "average_from": 0 if average else 10**9})


def snep_rounds(comm: MPI.Comm, wire: str, rounds: int, average: bool) -> dict[str, list[float]]:
    """One server session: rank 0 serves; rank 1 registers, syncs ``rounds`` times, is done."""
    cfg = worker_config(wire, average)
    backend = get_backend("cpu", 1)
    spec = ParamSpec((784, *HIDDEN, 10))
    x0 = init_params(spec, np.random.default_rng(1))
    p = spec.size
    if comm.Get_rank() == 0:
        prior = DiagGaussian(np.full(p, 1.0 / cfg.snep.prior_var), np.zeros(p))
        server = PosteriorServer.from_config(cfg, prior, x0, 1)
        loop = ServerLoop(comm, server)
        if POLL is not None:
            loop.poll_interval = POLL
        loop.run()
        return {
            "server_serve": [loop.comm_seconds / max(int(server.pushes.sum()), 1)],
            "server_pass_warm": server_pass(server, wire, rounds),
            "server_pass_cold": server_pass(server, wire, rounds, cold=True),
        }
    x, y = make_shard(2000)
    worker = SnepWorker(0, 1, backend.mlp(spec, 1, 100), x, y, cfg, backend, x0)
    loop = WorkerLoop(comm, worker, iterations=0)
    loop.register()
    out: dict[str, list[float]] = {"push": [], "exchange": [], "receive": []}
    for i in range(WARMUP + rounds):
        worker.step()  # the site moves, so every delta is a real one
        worker.in_flight = False
        t0 = time.perf_counter()
        push = worker.make_push()
        t1 = time.perf_counter()
        reply = loop.exchange(push)
        t2 = time.perf_counter()
        worker.receive(reply)
        t3 = time.perf_counter()
        if i >= WARMUP:
            out["push"].append(t1 - t0)
            out["exchange"].append(t2 - t1)
            out["receive"].append(t3 - t2)
    loop.done()
    loop.close()
    return out


def median_ms(xs: list[float]) -> float:
    return 1e3 * float(np.median(xs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--average", action="store_true",
        help="the server also updates the running moments (a run's last part)",
    )  # fmt: skip
    ap.add_argument("--poll", type=float, default=None, help="server poll interval (s)")
    args = ap.parse_args()
    global POLL
    POLL = args.poll
    comm = MPI.COMM_WORLD.Dup()
    if comm.Get_size() != 2:
        raise SystemExit("run with mpiexec -n 2")
    rank = comm.Get_rank()
    p = 545_810
    repeats = []
    for _ in range(args.repeats):
        rep: dict[str, float] = {
            "raw_sendrecv_ms": median_ms(raw_rounds(comm, p, args.rounds)),
            "raw_sendrecv_in_situ_ms": median_ms(raw_rounds_in_situ(comm, p, args.rounds)),
        }
        for name, (wire, shared) in VARIANTS.items():
            os.environ[SHARED_ENV] = shared  # read when the loops register (both ranks)
            t = snep_rounds(comm, wire, args.rounds, args.average)
            t = comm.bcast(t if rank == 1 else None, root=1) | (t if rank == 0 else {})
            comm.Barrier()
            sync = [
                a + b + c for a, b, c in zip(t["push"], t["exchange"], t["receive"], strict=True)
            ]
            rep |= {
                f"{name}_push_ms": median_ms(t["push"]),
                f"{name}_exchange_ms": median_ms(t["exchange"]),
                f"{name}_receive_ms": median_ms(t["receive"]),
                f"{name}_sync_ms": median_ms(sync),
            }
            if rank == 0:
                rep[f"{name}_server_serve_ms"] = 1e3 * t["server_serve"][0]
                rep[f"{name}_server_pass_warm_ms"] = median_ms(t["server_pass_warm"])
                rep[f"{name}_server_pass_cold_ms"] = median_ms(t["server_pass_cold"])
        for name in VARIANTS:
            rep[f"{name}_exchange_over_raw"] = rep[f"{name}_exchange_ms"] / rep["raw_sendrecv_ms"]
            rep[f"{name}_sync_over_raw"] = rep[f"{name}_sync_ms"] / rep["raw_sendrecv_ms"]
            rep[f"{name}_exchange_over_raw_in_situ"] = (
                rep[f"{name}_exchange_ms"] / rep["raw_sendrecv_in_situ_ms"]
            )
            if rank == 0:  # the exchange's floor: the server's pass alone, warm, no wire
                warm = rep[f"{name}_server_pass_warm_ms"]
                rep[f"{name}_server_pass_warm_over_raw"] = warm / rep["raw_sendrecv_ms"]
        repeats.append(rep)
    if rank != 0:
        return

    def spread(key: str) -> dict[str, float]:
        xs = [r[key] for r in repeats]
        return {"median": float(np.median(xs)), "min": float(min(xs)), "max": float(max(xs))}

    keys = sorted(repeats[0])
    out = {
        "params": p,
        "raw_bytes_each_way": 8 * (8 + 2 * p),
        "wire_bytes_each_way": {"float64": 64 + 16 * p, "float32": 64 + 8 * p},
        "rounds": args.rounds,
        "repeats": repeats,
        "summary": {k: spread(k) for k in keys},
        "server_averages": args.average,
        "mpi": MPI.Get_library_version().splitlines()[0],
        "ratio_snep_over_raw": spread("float32_exchange_over_raw")["median"],
        "ratio_snep_over_raw_in_situ": spread("float32_exchange_over_raw_in_situ")["median"],
        "target": "exchange <= 1.5x raw Sendrecv of 2P float64 (issue 14)",
        "command": "mpiexec -n 2 python bench/mpi_exchange.py " + " ".join(sys.argv[1:]),
    }
    print(json.dumps(out["summary"], indent=1))
    print(f"ratio_snep_over_raw = {out['ratio_snep_over_raw']:.2f}")
    print(f"ratio_snep_over_raw_in_situ = {out['ratio_snep_over_raw_in_situ']:.2f}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(__file__).parent / "results" / f"mpi_exchange-{stamp}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
