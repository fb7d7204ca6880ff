"""The wine known-answer checks (tests/algorithm/test_known_answers.py) over several seeds,
with every figure: variance ratios and mean offsets against the gold posterior or the EP
fixed point, the unreached weight's variance, guard firings, R-hat, wall time.

    python bench/known_answers.py --seeds 0,1,2 [--out bench/results/known_answers_wine.json]

Reads the fixtures of tests/fixtures/wine/ (computed without snep); writes one JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.algorithm.test_known_answers import REF, run_snep  # noqa: E402

_IMPROPER = {"improper_sites": True, "score_cv": False}

#: (label, workers, p_snep, extra snep settings, reference key)
CASES = (
    ("SNEP", 1, False, {}, "gold"),
    ("SNEP", 2, False, {}, "ep2"),
    ("SNEP", 4, False, {}, "ep4"),
    ("EP/SMS", 1, False, {"method": "ep"}, "gold"),
    ("EP/SMS", 2, False, {"method": "ep"}, "ep2"),
    ("EP/SMS", 4, False, {"method": "ep"}, "ep4"),
    ("p-SNEP", 2, True, {}, "gold"),
    ("p-SNEP", 4, True, {}, "gold"),
    ("p-SNEP", 8, True, {}, "gold"),
    ("SNEP, no control variate", 4, False, {"score_cv": False}, "ep4"),
    ("SNEP, improper sites, no control variate", 4, False, _IMPROPER, "ep4"),
)


def reference(key: str) -> dict:
    return REF["gold"] if key == "gold" else REF["ep"][key[2:]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "known_answers_wine.json"))
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    warnings.simplefilter("ignore", RuntimeWarning)
    for label, workers, p_snep, extra, key in CASES:
        ref = reference(key)
        rm, rv = np.asarray(ref["mean"]), np.asarray(ref["var"])
        for seed in seeds:
            t0 = time.perf_counter()
            mean, var, history = run_snep(workers, p_snep, seed, **extra)
            ratio = var[:14] / rv
            off = np.abs(mean[:14] - rm) / np.sqrt(rv)
            tenth = next(r for r in history if r["iteration"] >= history[-1]["iteration"] / 10)
            row = {
                "method": label, "workers": workers, "seed": seed, "reference": key,
                "var_ratio_min": float(ratio.min()), "var_ratio_median": float(np.median(ratio)),
                "var_ratio_max": float(ratio.max()), "mean_offset_max_sd": float(off.max()),
                "unreached_weight_var": float(var[14]),
                "guard_fired": int(history[-1]["guard_fired"]),
                "guard_fired_after_first_tenth": int(
                    history[-1]["guard_fired"] - tenth["guard_fired"]
                ),
                "rhat_max_last_interval": float(history[-1]["rhat_max"]),
                "seconds": time.perf_counter() - t0,
            }  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = {
        "what": "wine logistic regression, snep defaults, q averaged over the second half",
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
