"""MPI exchange benchmark (docs/method.md §4 "MPI sync"): push Delta + pull theta for
P = 545,810 float64 through snep's transport, against a raw mpi4py Sendrecv of
the same bytes, in the same run.

    mpiexec -n 2 python bench/mpi_exchange.py [--params 545810] [--rounds 200]

Rank 1 plays a worker, rank 0 the server.  "raw": rank 1 Sendrecv's a buffer of
HEADER + 2P doubles with rank 0 (which Sendrecv's back).  "snep": rank 1 packs
and sends a push, rank 0 unpacks it, applies it to a PosteriorServer
(theta += Delta, version, staleness) and replies with theta; rank 1 unpacks the
reply.  Writes bench/results/mpi_exchange-<timestamp>.json from rank 0.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from mpi4py import MPI

from snep.algorithm.messages import Push
from snep.algorithm.server import PosteriorServer
from snep.maths.family import DiagGaussian
from snep.transport.mpi import HEADER, KIND_PUSH, KIND_REPLY, pack, unpack_header


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", type=int, default=545_810)
    ap.add_argument("--rounds", type=int, default=200)
    args = ap.parse_args()
    comm = MPI.COMM_WORLD.Dup()
    rank, p = comm.Get_rank(), args.params
    if comm.Get_size() != 2:
        raise SystemExit("run with mpiexec -n 2")
    send, recv = np.ones(HEADER + 2 * p), np.empty(HEADER + 2 * p)
    server = None
    if rank == 0:
        server = PosteriorServer(DiagGaussian(np.full(p, 2.0), np.zeros(p)), 1, 10**12)
        server.register(0, DiagGaussian(np.ones(p), np.zeros(p)))
    delta = np.full(p, 1e-9)

    def raw() -> None:
        comm.Sendrecv(
            [send, MPI.DOUBLE], dest=1 - rank, recvbuf=[recv, MPI.DOUBLE], source=1 - rank
        )

    def snep_exchange(i: int) -> None:
        if rank == 1:
            pack(send, KIND_PUSH, 0, i, i, i, precision=delta, precision_mean=delta)
            comm.Send([send, MPI.DOUBLE], dest=0)
            comm.Recv([recv, MPI.DOUBLE], source=0)
            unpack_header(recv, (KIND_REPLY,), p, "worker")
        else:
            comm.Recv([recv, MPI.DOUBLE], source=1)
            _, w, _, it, seen, _ = unpack_header(recv, (KIND_PUSH,), p, "server")
            dprec, dpm = recv[HEADER : HEADER + p], recv[HEADER + p :]
            reply = server.push(Push(w, it, dprec, dpm, seen))
            pack(
                send,
                KIND_REPLY,
                w,
                reply.version,
                precision=reply.precision,
                precision_mean=reply.precision_mean,
            )
            comm.Send([send, MPI.DOUBLE], dest=1)

    results = {}
    for name, fn in (("raw_sendrecv", lambda i: raw()), ("snep_push_pull", snep_exchange)):
        for i in range(10):
            fn(i)  # warm up
        comm.Barrier()
        times = []
        for i in range(args.rounds):
            t0 = time.perf_counter()
            fn(i)
            times.append(time.perf_counter() - t0)
        comm.Barrier()
        results[name] = {
            "median_ms": 1e3 * float(np.median(times)),
            "min_ms": 1e3 * float(np.min(times)),
        }
    if rank == 0:
        ratio = results["snep_push_pull"]["median_ms"] / results["raw_sendrecv"]["median_ms"]
        out = {
            "params": p,
            "bytes_each_way": int(send.nbytes),
            "rounds": args.rounds,
            "mpi": MPI.Get_library_version().splitlines()[0],
            **results,
            "ratio_snep_over_raw": ratio,
            "target": "<= 1.5x (docs/method.md §4)",
        }
        print(json.dumps(out, indent=2))
        path = (
            Path(__file__).parent
            / "results"
            / f"mpi_exchange-{time.strftime('%Y%m%d-%H%M%S')}.json"
        )
        path.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
