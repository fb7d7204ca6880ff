"""A model of one posterior-server rank as the system grows (issue 14; docs/architecture.md
"The exchange"): on paper and in a discrete-event simulation.

    python bench/server_model.py [--serve-ms 1.15] [--iter-ms 4.2] [--out FILE]

On paper: a worker iterating in ``t_iter`` pushes every ``N_sync`` iterations, so ``n``
workers offer ``n / (N_sync t_iter)`` pushes per second; one server rank serving a push in
``t_serve`` absorbs ``1 / t_serve``; it saturates at ``n* = N_sync t_iter / t_serve``
workers.  Splitting the parameter vector over ``k`` server ranks (each serving its
``P / k`` slice of every push) divides ``t_serve`` by ``k`` (plus a fixed per-message
cost), so ``n*`` grows ``k``-fold.

The simulation plays the protocol's rules: each worker iterates (its iteration time
drawn within +-5% of ``t_iter``), pushes when ``N_sync`` iterations have passed since its
last push and no reply is outstanding (otherwise at the first iteration after the reply),
the server serves pushes first come first served, each in ``t_serve``, and a worker's
reply arrives when its push has been served.  It reports the server's utilisation, the
pushes absorbed per second, the iterations between a worker's pushes (``N_sync`` while
the server keeps up) and the staleness (versions the server moved between a worker's
reply and its next push).  ``t_serve`` and ``t_iter`` default to the measured values:
the server's time per push inside the real MPI loop (``bench/mpi_exchange.py``,
float32 wire, no averaging) and the paper preset's iteration at one thread
(``bench/results/README.md``).
"""

from __future__ import annotations

import argparse
import heapq
import json
import sys
import time
from pathlib import Path

import numpy as np


def simulate(
    n_workers: int,
    n_sync: int,
    t_iter: float,
    t_serve: float,
    horizon_iters: int = 400,
    seed: int = 0,
) -> dict[str, float]:
    """One run of ``n_workers`` against one server for ``horizon_iters`` iterations each."""
    rng = np.random.default_rng(seed)
    speeds = t_iter * rng.uniform(0.95, 1.05, n_workers)
    events: list[tuple[float, int, int]] = []  # (time, kind, worker); kind 0 step, 1 reply
    for w in range(n_workers):
        heapq.heappush(events, (speeds[w], 0, w))
    iteration = np.zeros(n_workers, int)
    last_push = np.zeros(n_workers, int)
    in_flight = np.zeros(n_workers, bool)
    seen = np.zeros(n_workers, int)  # server version at the worker's last reply
    version_at_reply = np.zeros(n_workers, int)  # the version its pending reply carries
    server_free, version, busy = 0.0, 0, 0.0
    pushes, stale, gaps = 0, [], []
    end = 0.0
    while events:
        now, kind, w = heapq.heappop(events)
        if kind == 1:  # a reply
            in_flight[w] = False
            seen[w] = version_at_reply[w]
            continue
        iteration[w] += 1
        if not in_flight[w] and iteration[w] - last_push[w] >= n_sync:
            start = max(now, server_free)
            server_free = start + t_serve
            busy += t_serve
            stale.append(version - seen[w])  # versions since the worker's last reply
            version += 1
            version_at_reply[w] = version
            gaps.append(iteration[w] - last_push[w])
            last_push[w] = iteration[w]
            in_flight[w] = True
            pushes += 1
            heapq.heappush(events, (server_free, 1, w))
        if iteration[w] < horizon_iters:
            heapq.heappush(events, (now + speeds[w], 0, w))
        end = max(end, now)
    return {
        "workers": n_workers,
        "n_sync": n_sync,
        "utilisation": busy / max(end, server_free),
        "pushes_per_second": pushes / max(end, server_free),
        "iterations_between_pushes": float(np.mean(gaps)),
        "staleness_mean": float(np.mean(stale)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--serve-ms", type=float, default=1.15, help="server time per push")
    ap.add_argument("--iter-ms", type=float, default=4.2, help="worker iteration time")
    ap.add_argument(
        "--message-ms", type=float, default=0.02,
        help="fixed cost per message and server rank when the vector is split",
    )  # fmt: skip
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    t_iter, t_serve = args.iter_ms / 1e3, args.serve_ms / 1e3
    paper = []
    for k in (1, 2, 4, 8):
        serve_k = t_serve / k + args.message_ms / 1e3 * (k > 1)
        for n_sync in (1, 10, 50):
            paper.append(
                {
                    "server_ranks": k,
                    "n_sync": n_sync,
                    "serve_ms": 1e3 * serve_k,
                    "pushes_per_second_absorbed": 1.0 / serve_k,
                    "saturating_workers": n_sync * t_iter / serve_k,
                }
            )
    sims = [
        simulate(n, n_sync, t_iter, t_serve)
        for n_sync in (1, 10, 50)
        for n in (1, 2, 4, 8, 16, 32, 64, 128, 256)
    ]
    print(f"t_serve {args.serve_ms} ms, t_iter {args.iter_ms} ms")
    print("server ranks  N_sync  pushes/s absorbed  saturates at (workers)")
    for row in paper:
        print(
            f"{row['server_ranks']:12d}  {row['n_sync']:6d}  "
            f"{row['pushes_per_second_absorbed']:17.0f}  {row['saturating_workers']:10.1f}"
        )
    print("simulated, one server rank:")
    print("N_sync  workers  utilisation  pushes/s  its between pushes  staleness")
    for s in sims:
        print(
            f"{s['n_sync']:6d}  {s['workers']:7d}  {s['utilisation']:11.2f}  "
            f"{s['pushes_per_second']:8.0f}  {s['iterations_between_pushes']:18.1f}  "
            f"{s['staleness_mean']:9.1f}"
        )
    out = {
        "serve_ms": args.serve_ms,
        "iter_ms": args.iter_ms,
        "message_ms": args.message_ms,
        "paper": paper,
        "simulated": sims,
        "command": "python bench/server_model.py " + " ".join(sys.argv[1:]),
    }
    path = args.out or (
        Path(__file__).parent / "results" / f"server_model-{time.strftime('%Y%m%d-%H%M%S')}.json"
    )
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
