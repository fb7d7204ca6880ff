"""What a server pass costs per byte it moves, warm and out of cache (issue 14, the MPI
exchange; docs/architecture.md "The raw round trip in the same caches").

    python bench/server_bytes.py [--rounds 50] [--repeats 3]

The posterior server's push (Hasenclever et al. 2017, §"The posterior server") applies a
worker's delta to ``theta`` and to that worker's site and replies with the cavity
``theta - site``.  With the state in float64, as issue 14 requires, and the float32 wire,
the pass as built moves 80 bytes per parameter (the delta read, ``theta`` and the site read
and written, the reply written).  Here, on one thread with nothing else running, for
P = 545,810:

* ``as_built``: :meth:`PosteriorServer.push` (the finiteness check and
  :func:`~snep.algorithm.exchange_kernels.apply_push`), 80 B per parameter;
* ``site_read_only``: ``theta += d`` and the reply ``theta - site`` with the site only
  read (a server that left the site's update to the worker's record of it), 64 B;
* ``theta_only``: ``theta += d`` and nothing else, 40 B: what any server that keeps
  ``theta`` in float64 and applies the delta must move, whoever computes the cavity;
* ``copy_2p_float64``: one copy of 2P float64 (the raw ``Sendrecv``'s payload, one way),
  32 B;

each timed back to back (``warm``: the state stays in the 32 MB L3) and after a sweep of
64 MB that evicts it (``cold``: as a worker's iteration between two syncs does).  The
hypothetical passes are checked against numpy in ``bench/test_server_bytes.py``, so the
times are of real work.  Writes ``bench/results/server_bytes-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from snep.threads import apply_threads

if __name__ == "__main__":  # one thread as a script; imported by its test, change nothing
    apply_threads(1)

import numba
import numpy as np

from snep.algorithm.messages import Push, wire_dtype
from snep.algorithm.server import PosteriorServer
from snep.maths.family import DiagGaussian

P = 545_810
WARMUP = 5
#: float64 values of the sweep that evicts the caches before a cold pass: 64 MB, twice the L3
EVICT_VALUES = 8 * 2**20
#: bytes per parameter each pass reads and writes (both arrays of a pair)
BYTES_PER_PARAM = {"as_built": 80, "site_read_only": 64, "theta_only": 40, "copy_2p_float64": 32}


@numba.njit(cache=True, nogil=True)
def site_read_only(theta_prec, theta_pm, site_prec, site_pm, d_prec, d_pm, cav_prec, cav_pm):
    """``theta += d`` and ``cav = theta - site`` (the site only read), in one pass."""
    for i in range(theta_prec.size):
        tp = theta_prec[i] + np.float64(d_prec[i])
        tm = theta_pm[i] + np.float64(d_pm[i])
        theta_prec[i] = tp
        theta_pm[i] = tm
        cav_prec[i] = tp - site_prec[i]
        cav_pm[i] = tm - site_pm[i]


@numba.njit(cache=True, nogil=True)
def theta_only(theta_prec, theta_pm, d_prec, d_pm):
    """``theta += d`` (the delta added in float64), in one pass."""
    for i in range(theta_prec.size):
        theta_prec[i] += np.float64(d_prec[i])
        theta_pm[i] += np.float64(d_pm[i])


def zero_push(server: PosteriorServer, wire: str) -> Callable[[], object]:
    """One :meth:`PosteriorServer.push` of a zero delta from worker 0, as ``ServerLoop``
    calls it (the finiteness check and the fused pass), its reply into a buffer of the
    wire's dtype; repeating it leaves theta and the site as they were."""
    p, dtype = server.precision.size, wire_dtype(wire)
    zero = np.zeros(p, dtype)
    reply = (np.empty(p, dtype), np.empty(p, dtype))

    def push() -> None:
        server.push(Push(0, int(server.last_iteration[0]) + 1, zero, zero, server.version), reply)

    return push


def passes(p: int = P, seed: int = 0) -> dict[str, Callable[[], object]]:
    """The four passes over fresh state of ``p`` parameters (float32 deltas of zero, so
    that repeating a pass leaves the state as it was)."""
    rng = np.random.default_rng(seed)
    prior = DiagGaussian(np.full(p, 1.0), np.zeros(p))
    server = PosteriorServer(prior, 1, 10**9, wire="float32")
    server.register(0, DiagGaussian(rng.random(p), rng.standard_normal(p)))
    zero = np.zeros(p, np.float32)
    reply = (np.empty(p, np.float32), np.empty(p, np.float32))
    theta = (server.precision, server.precision_mean)
    site = (server.sites[0].precision, server.sites[0].precision_mean)
    src, dst = rng.random(2 * p), np.empty(2 * p)
    return {
        "as_built": zero_push(server, "float32"),
        "site_read_only": lambda: site_read_only(*theta, *site, zero, zero, *reply),
        "theta_only": lambda: theta_only(*theta, zero, zero),
        "copy_2p_float64": lambda: np.copyto(dst, src),
    }


def time_pass(run: Callable[[], object], rounds: int, evict: np.ndarray | None) -> list[float]:
    """Seconds per call of ``run``; with ``evict``, a sweep over it (untimed) before each."""
    times = []
    for i in range(WARMUP + rounds):
        if evict is not None:
            evict += 1.0
        t0 = time.perf_counter()
        run()
        if i >= WARMUP:
            times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--params", type=int, default=P, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    evict = np.zeros(EVICT_VALUES)
    runs = passes(args.params)
    repeats = []
    for _ in range(args.repeats):
        rep = {}
        for name, run in runs.items():
            for mode, sweep in (("warm", None), ("cold", evict)):
                rep[f"{name}_{mode}_ms"] = 1e3 * float(
                    np.median(time_pass(run, args.rounds, sweep))
                )
            rep[f"{name}_cold_gb_per_s"] = (
                BYTES_PER_PARAM[name] * args.params / rep[f"{name}_cold_ms"] / 1e6
            )
        repeats.append(rep)
    summary = {
        k: {"min": min(r[k] for r in repeats), "max": max(r[k] for r in repeats)}
        for k in repeats[0]
    }
    out = {
        "params": args.params,
        "bytes_per_param": BYTES_PER_PARAM,
        "rounds": args.rounds,
        "repeats": repeats,
        "summary": summary,
        "command": "python bench/server_bytes.py " + " ".join(sys.argv[1:]),
    }
    for k, v in summary.items():
        print(f"{k:32s} {v['min']:8.3f} {v['max']:8.3f}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = args.out or Path(__file__).parent / "results" / f"server_bytes-{stamp}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
