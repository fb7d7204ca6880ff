"""Design study for the MPI exchange (issue 14): push and reply through an MPI-3
shared-memory window, against snep's transport and a raw ``Sendrecv``, in the same run.

    mpiexec -n 2 python bench/mpi_shared_window.py [--rounds 100] [--repeats 3]

Not snep's transport: what an exchange without payload copies would take on one node.
Rank 1 runs a real :class:`SnepWorker` (784-500-300-10, Adam-SGLD, float32 wire) whose
pushes are computed straight into its segment of a window (``MPI.Win.Allocate_shared``,
through ``bind_push_arrays``); rank 0 a real :class:`PosteriorServer`, whose pass reads the
delta from that segment and writes the reply (the cavity) into it; only an 8-word header
travels each way as a message, and ``Win.Sync`` orders the memory around it (a
passive-target epoch, ``Lock_all``).  The server polls as ``ServerLoop`` does (``Test``,
then a 0.1 ms sleep).  Per repeat, on the worker's clock:

* ``shared_exchange``: header sent to reply header in hand (the server's pass inside);
* ``transport_exchange``: ``WorkerLoop.exchange`` through the real ``ServerLoop``
  (:func:`mpi_exchange.snep_rounds`, float32 wire);
* ``raw_sendrecv``: one ``Sendrecv`` of 8 + 2P float64 each way.

A worker iteration runs between two exchanges, so the server's state is as cold as in a
run.  Threads as ``snep train`` sets them when its ranks fill the cores (one per rank).
Writes ``bench/results/mpi_shared_window-<stamp>.json``.
"""

# ruff: noqa: E402  (the imports below wait for the thread settings)
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from snep.threads import apply_threads

apply_threads(1)  # as mpi_exchange.py: what `snep train` sets when its ranks fill the cores

import numpy as np
from mpi4py import MPI

sys.path.insert(0, str(Path(__file__).parent))

from benchutil import HIDDEN, make_shard
from mpi_exchange import WARMUP, median_ms, raw_rounds, snep_rounds, worker_config
from snep.algorithm.messages import Push, Reply, wire_dtype
from snep.algorithm.server import PosteriorServer
from snep.algorithm.worker import SnepWorker
from snep.backends import get_backend
from snep.maths.family import DiagGaussian
from snep.model.spec import ParamSpec, init_params

POLL_SECONDS = 1e-4  # ServerLoop.poll_interval


def shared_rounds(comm: MPI.Comm, rounds: int) -> dict[str, list[float]]:
    """One session of exchanges through a shared window (rank 0 serves, rank 1 works)."""
    cfg = worker_config("float32", average=False)
    spec = ParamSpec((784, *HIDDEN, 10))
    p, wire = spec.size, wire_dtype("float32")
    x0 = init_params(spec, np.random.default_rng(1))
    rank = comm.Get_rank()
    # rank 1's segment: its push (2P) and its reply (2P), in the wire's dtype
    win = MPI.Win.Allocate_shared(4 * p * wire.itemsize if rank == 1 else 0, 1, comm=comm)
    try:
        buf, _ = win.Shared_query(1)
        seg = np.frombuffer(buf, wire, 4 * p)
        push_prec, push_pm, reply_prec, reply_pm = (seg[k * p : (k + 1) * p] for k in range(4))
        win.Lock_all(MPI.MODE_NOCHECK)
        header = np.zeros(8, np.int64)
        push, reply = (push_prec, push_pm), (reply_prec, reply_pm)
        if rank == 0:
            times = _serve(comm, win, cfg, x0, header, push, reply)
        else:
            times = _work(comm, win, cfg, spec, x0, header, push, reply, rounds)
        win.Unlock_all()
    finally:
        win.Free()
    return times


def _serve(comm, win, cfg, x0, header, push, reply) -> dict[str, list[float]]:
    p = x0.size
    prior = DiagGaussian(np.full(p, 1.0 / cfg.snep.prior_var), np.zeros(p))
    server = PosteriorServer.from_config(cfg, prior, x0, 1)
    site = DiagGaussian(np.empty(p), np.empty(p))  # registration: the site in float64
    comm.Recv(site.precision, source=1)
    comm.Recv(site.precision_mean, source=1)
    server.register(0, site)
    server.reply_to(0, out=reply)
    win.Sync()
    comm.Send(header, dest=1)
    serve = []
    while True:
        req = comm.Irecv(header, source=1)
        while not req.Test():
            time.sleep(POLL_SECONDS)
        if header[0] < 0:  # done
            return {"shared_serve": serve}
        t0 = time.perf_counter()
        win.Sync()
        server.push(Push(0, int(header[1]), push[0], push[1], int(header[2])), out=reply)
        win.Sync()
        serve.append(time.perf_counter() - t0)
        header[3] = server.version
        comm.Send(header, dest=1)


def _work(comm, win, cfg, spec, x0, header, push, reply, rounds) -> dict[str, list[float]]:
    x, y = make_shard(2000)
    backend = get_backend("cpu", 1)
    worker = SnepWorker(0, 1, backend.mlp(spec, 1, 100), x, y, cfg, backend, x0)
    site = worker.initial_site()
    comm.Send(np.ascontiguousarray(site.precision, np.float64), dest=0)
    comm.Send(np.ascontiguousarray(site.precision_mean, np.float64), dest=0)
    comm.Recv(header, source=0)
    win.Sync()
    worker.start(Reply(reply[0], reply[1], 0))
    worker.bind_push_arrays(push[0], push[1])  # pushes computed in the segment: no copy
    exchange = []
    for i in range(WARMUP + rounds):
        worker.step()
        worker.in_flight = False
        msg = worker.make_push()
        t0 = time.perf_counter()
        win.Sync()
        header[:3] = (0, msg.iteration, msg.version_seen)
        comm.Send(header, dest=0)
        comm.Recv(header, source=0)
        win.Sync()
        if i >= WARMUP:
            exchange.append(time.perf_counter() - t0)
        worker.receive(Reply(reply[0], reply[1], int(header[3])))
    header[0] = -1
    comm.Send(header, dest=0)
    return {"shared_exchange": exchange}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    comm = MPI.COMM_WORLD.Dup()
    if comm.Get_size() != 2:
        raise SystemExit("run with mpiexec -n 2")
    rank = comm.Get_rank()
    p = ParamSpec((784, *HIDDEN, 10)).size
    repeats = []
    for _ in range(args.repeats):
        raw = median_ms(raw_rounds(comm, p, args.rounds))
        transport = snep_rounds(comm, "float32", args.rounds, False)
        shared = shared_rounds(comm, args.rounds)
        keep = ("exchange", "shared_exchange", "shared_serve")
        both = comm.gather({k: v for k, v in (transport | shared).items() if k in keep}, root=0)
        if rank == 0:
            t = both[0] | both[1]
            rep = {
                "raw_sendrecv_ms": raw,
                "transport_exchange_ms": median_ms(t["exchange"]),
                "shared_exchange_ms": median_ms(t["shared_exchange"]),
                "shared_serve_ms": median_ms(t["shared_serve"]),
            }
            rep["transport_over_raw"] = rep["transport_exchange_ms"] / raw
            rep["shared_over_raw"] = rep["shared_exchange_ms"] / raw
            rep["shared_over_transport"] = rep["shared_exchange_ms"] / rep["transport_exchange_ms"]
            repeats.append(rep)
        comm.Barrier()
    if rank != 0:
        return
    summary = {
        k: {
            "median": float(np.median([r[k] for r in repeats])),
            "min": float(min(r[k] for r in repeats)),
            "max": float(max(r[k] for r in repeats)),
        }
        for k in repeats[0]
    }
    out = {
        "params": p,
        "rounds": args.rounds,
        "repeats": repeats,
        "summary": summary,
        "mpi": MPI.Get_library_version().splitlines()[0],
        "what": "design study, not snep's transport: push and reply in an MPI-3 shared window",
        "command": "mpiexec -n 2 python bench/mpi_shared_window.py " + " ".join(sys.argv[1:]),
    }
    print(json.dumps({k: v["median"] for k, v in summary.items()}, indent=1))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(__file__).parent / "results" / f"mpi_shared_window-{stamp}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
