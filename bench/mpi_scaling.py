"""The MPI scaling table (issue 14; docs/architecture.md "The exchange"): the paper's
MNIST network trained under ``mpiexec`` with 1, 2, 4 and 8 workers, and per run the
worker's communication fraction, the staleness of its pushes and the server's syncs per
second.

    python bench/mpi_scaling.py [--workers 1,2,4,8] [--iterations 300] [--wire float32]
                                [--server-ranks 1]

Each run is ``mpiexec -n N+K snep train --data mnist --hidden 500,300 --workers N
--iterations I --eval-every I --preset paper --server-ranks K`` (K = 1 unless
``--server-ranks``; the paper's Adam-SGLD, one chain: the
cheapest iteration, so the largest communication fraction; the command is in the JSON),
one BLAS/OpenMP thread per rank.  On a machine with fewer cores than
ranks the ranks share the cores, so more workers means less CPU for each: the table
then shows how the exchange behaves when oversubscribed, and only the runs with ranks
<= cores measure the communication fraction the issue's target speaks of.  Writes
``bench/results/mpi_scaling-<timestamp>.json``.  Needs MNIST (``SNEP_DATA_DIR`` or
``../shared/data``) and an MPI (``pip install -e '.[mpi]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def run(n_workers: int, iterations: int, wire: str, root: Path, server_ranks: int = 1) -> dict:
    mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        raise SystemExit("mpi_scaling: mpiexec not found (pip install -e '.[mpi]')")
    cmd = [
        mpiexec, "-n", str(n_workers + server_ranks), sys.executable, "-m", "snep", "train",
        "--data", "mnist", "--hidden", "500,300", "--workers", str(n_workers),
        "--iterations", str(iterations), "--eval-every", str(iterations),
        "--preset", "paper", "--set", f"train.wire={wire}", "--threads", "1",
        "--server-ranks", str(server_ranks),
        "--out", str(root), "--name", f"n{n_workers}", "--no-progress", "-q", "--no-plot",
    ]  # fmt: skip
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
    if res.returncode != 0:
        raise SystemExit(f"mpi_scaling: {n_workers} workers failed:\n{res.stderr[-3000:]}")
    summary = json.loads((root / f"n{n_workers}" / "summary.json").read_text())
    stats, workers = summary["stats"], summary["stats"]["workers"]
    comm = [w["comm_seconds"] / w["wall_seconds"] for w in workers]
    return {
        "workers": n_workers,
        "server_ranks": server_ranks,
        "ranks": n_workers + server_ranks,
        "ranks_le_cores": n_workers + server_ranks <= (os.cpu_count() or 1),
        "wall_seconds_server": stats["wall_seconds"],
        "worker_wall_seconds": [w["wall_seconds"] for w in workers],
        "worker_comm_fraction": comm,
        "worker_comm_fraction_max": max(comm),
        "pushes_per_worker": [w["pushes"] for w in workers],
        "syncs_per_second": stats["syncs_per_second"],
        "staleness_per_worker": stats["staleness_per_worker"],
        "staleness_mean": stats["staleness_mean"],
        "bytes_moved": stats["bytes_moved"],
        "payloads": stats["payloads"],  # "shared window" on one node, else "messages"
        "server_comm_seconds": stats["server_comm_seconds"],
        "final_mean_error": summary["final"].get("mean_error"),
        "final_bma_error": summary["final"].get("bma_error"),
        "command": " ".join(["mpiexec", "-n", str(n_workers + server_ranks), "snep", *cmd[6:]]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", default="1,2,4,8")
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--wire", default="float32", choices=("float32", "float64"))
    ap.add_argument("--server-ranks", type=int, default=1, help="the server split over K ranks")
    args = ap.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(v) for v in args.workers.split(",")):
            runs.append(run(n, args.iterations, args.wire, Path(tmp), args.server_ranks))
            r = runs[-1]
            print(
                f"{n} workers: comm fraction max {r['worker_comm_fraction_max']:.3f}, "
                f"staleness {r['staleness_mean']:.2f}, syncs/s {r['syncs_per_second']:.1f}, "
                f"wall {r['wall_seconds_server']:.1f} s"
            )
    out = {
        "what": f"MNIST 784-500-300-10 under mpiexec, {args.iterations} iterations per "
        "worker, N_sync = 10, one final evaluation",
        "cores": os.cpu_count(),
        "wire": args.wire,
        "command": "python bench/mpi_scaling.py " + " ".join(sys.argv[1:]),
        "runs": runs,
        "comm_fraction_max_over_runs_with_ranks_le_cores": max(
            (r["worker_comm_fraction_max"] for r in runs if r["ranks_le_cores"]),
            default=float("nan"),
        ),
        "numpy": np.__version__,
    }
    path = Path(__file__).parent / "results" / f"mpi_scaling-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
