"""Does the float32 wire move the results?  The same runs with ``train.wire`` float32
and float64, over several seeds, against the spread between seeds (issue 14: a changed
wire format must leave docs/results.md's figures within their seed spread).

    python bench/wire_compare.py [--seeds 0,1,2] [--workers 4] [--epochs 2] [--hidden 100]

In-process runs of ``snep train --data mnist`` (the default method and sampler); for each
seed the final test error, NLL and BMA error of both wires, their difference, and the
spread of each metric over the seeds.  Writes
``bench/results/wire_compare-<timestamp>.json``.  Needs MNIST (``SNEP_DATA_DIR`` or
``../shared/data``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METRICS = ("mean_error", "mean_nll", "bma_error", "bma_nll")


def run(seed: int, wire: str, args: argparse.Namespace, root: Path) -> dict[str, float]:
    name = f"s{seed}-{wire}"
    cmd = [
        sys.executable, "-m", "snep", "train", "--data", "mnist", "--hidden", args.hidden,
        "--workers", str(args.workers), "--epochs", str(args.epochs), "--seed", str(seed),
        "--set", f"train.wire={wire}", "--out", str(root), "--name", name,
        "--no-progress", "-q", "--no-plot",
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, env=os.environ)
    if res.returncode != 0:
        raise SystemExit(f"wire_compare: {name} failed:\n{res.stderr[-3000:]}")
    final = json.loads((root / name / "summary.json").read_text())["final"]
    return {k: final[k] for k in METRICS if k in final}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--hidden", default="100")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            got = {wire: run(seed, wire, args, Path(tmp)) for wire in ("float32", "float64")}
            diff = {k: got["float32"][k] - got["float64"][k] for k in got["float64"]}
            rows.append({"seed": seed, **got, "float32_minus_float64": diff})
            print(f"seed {seed}: {got} diff {diff}")
    spread = {
        k: max(r["float64"][k] for r in rows) - min(r["float64"][k] for r in rows)
        for k in rows[0]["float64"]
    }
    largest = {k: max(abs(r["float32_minus_float64"][k]) for r in rows) for k in spread}
    out = {
        "command": "python bench/wire_compare.py " + " ".join(sys.argv[1:]),
        "runs": rows,
        "seed_spread_float64": spread,
        "largest_wire_difference": largest,
        "wire_difference_within_seed_spread": all(largest[k] <= spread[k] for k in spread),
    }
    path = Path(__file__).parent / "results" / f"wire_compare-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({"seed_spread_float64": spread, "largest_wire_difference": largest}))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
