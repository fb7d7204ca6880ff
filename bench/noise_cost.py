"""What the fused pass's Gaussian noise costs, and what a cheaper generator would buy
(issue 14: "a cheaper counter-based generator ... Philox-7 or Threefry, vectorised").

    python bench/noise_cost.py [--repeats 3] [--rounds 50] [--iteration-summary PATH]

Compiles ``bench/noise_cost.cpp`` (``kernels/snep_rng.cuh`` with the CPU extension's
flags and target clones; ``CXX``, default ``c++``) and times, for P = 545,810 normals
(one chain's noise of one step of the paper's network) drawn in tiles of 1024 as the
pass draws them, single-threaded:

* ``philox10_normals``: the pass's noise (Philox4x32-10 and the float32 Box-Muller);
* ``philox7_normals``: the same with Philox4x32-7 (Salmon et al. 2011's smallest
  Crush-resistant round count);
* ``philox10_words``, ``philox7_words``: the generators' words alone;
* ``box_muller``: the transform alone;

and, in the same minutes, the extension's own ``_native.fill_normal`` at one thread
(the same normals as ``philox10_normals``, bitwise: ``bench/test_noise_cost.py``).

With ``--iteration-summary`` (a ``bench/test_worker_iteration.py`` summary, e.g. the one
``bash bench/run_benchmarks.sh`` has just written), the JSON also gives each iteration's
ratio to the bare GEMMs as measured, with Philox-7 noise, and with no noise at all: what
the generator can and cannot buy towards the 1.4x target.  Writes
``bench/results/noise_cost-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "bench" / "noise_cost.cpp"
HEADER = ROOT / "kernels" / "snep_rng.cuh"


def extension_flags(cmake: Path = ROOT / "CMakeLists.txt") -> list[str]:
    """The extension's compile flags, read from ``CMakeLists.txt`` (its
    ``target_compile_options(_native PRIVATE ...)`` and ``cxx_std_17``), so that the
    driver is built as the pass is."""
    text = cmake.read_text()
    m = re.search(r"target_compile_options\(_native PRIVATE ([^)]*)\)", text)
    if m is None or "cxx_std_17" not in text:
        raise RuntimeError(
            f"noise_cost: {cmake} no longer has target_compile_options(_native PRIVATE ...) "
            "and cxx_std_17; update extension_flags() to read the extension's flags"
        )
    return [*m.group(1).split(), "-std=c++17"]


FLAGS = extension_flags()
P = 545_810  # the paper's 784-500-300-10
VARIANTS = ("philox10_normals", "philox7_normals", "philox10_words", "philox7_words", "box_muller")


def build() -> Path:
    """The compiled driver (rebuilt when its source, the generator or the flags change)."""
    cxx = os.environ.get("CXX", "c++")
    key = hashlib.sha256(
        SOURCE.read_bytes() + HEADER.read_bytes() + " ".join([cxx, *FLAGS]).encode()
    ).hexdigest()[:16]
    exe = Path(tempfile.gettempdir()) / f"snep-noise-cost-{key}"
    if not exe.exists():
        tmp = exe.with_suffix(f".{os.getpid()}.tmp")
        cmd = [cxx, *FLAGS, f"-I{HEADER.parent}", str(SOURCE), "-o", str(tmp)]
        try:
            subprocess.run(cmd, check=True, capture_output=True, text=True)
        except FileNotFoundError as e:
            raise SystemExit(f"noise_cost: no C++ compiler {cxx!r} (set CXX to one)") from e
        except subprocess.CalledProcessError as e:
            raise SystemExit(f"noise_cost: {' '.join(cmd)} failed:\n{e.stderr}") from e
        tmp.replace(exe)  # atomic: a concurrent build never runs a half-written file
    return exe


def run_times(exe: Path, n_params: int, rounds: int) -> dict[str, list[float]]:
    """``rounds`` timings (ms) of each variant, interleaved, from one driver run."""
    out = subprocess.run(
        [str(exe), "time", str(n_params), str(rounds)], check=True, capture_output=True, text=True
    ).stdout
    times = {}
    for line in out.splitlines():
        name, *values = line.split()
        times[name] = [float(v) for v in values]
    if set(times) != set(VARIANTS):
        raise RuntimeError(f"noise_cost: the driver printed {sorted(times)}, expected {VARIANTS}")
    return times


def check_output(exe: Path, n_params: int, rounds: int) -> tuple[np.ndarray, np.ndarray]:
    """The driver's words and normals of parameters ``[0, n_params)`` (chain 0, step 3,
    stream 0, seed 2017) with ``rounds`` rounds."""
    raw = subprocess.run(
        [str(exe), "check", str(n_params), str(rounds)], check=True, capture_output=True
    ).stdout
    words = np.frombuffer(raw[: 4 * n_params], np.uint32)
    return words, np.frombuffer(raw[4 * n_params :], np.float32)


def time_fill_normal(n_params: int, rounds: int) -> list[float]:
    """The extension's ``fill_normal`` of one chain's P normals, one thread (ms)."""
    from snep import _native

    out = np.empty((1, n_params), np.float32)
    _native.fill_normal(out, 2017, 0, 0, 0, 1)
    times = []
    for step in range(rounds):
        t0 = time.perf_counter()
        _native.fill_normal(out, 2017, 0, step, 0, 1)
        times.append(1e3 * (time.perf_counter() - t0))
    return times


def iteration_ratios(summary: dict, saved_ms: float, noise_ms: float) -> dict[str, dict]:
    """Each one-thread iteration of a worker_iteration summary against its run's bare GEMMs:
    as measured, with Philox-7 (``saved_ms`` less per chain), with no noise at all."""
    rows = {b["name"]: b for b in summary["benchmarks"]}
    gemms = [b for b in rows.values() if b["name"].startswith("test_numpy_gemms[t1-c1-b100")]
    if not gemms:
        raise SystemExit("noise_cost: the summary has no test_numpy_gemms[t1-c1-b100] row")
    gemm_ms = gemms[0]["median_ms"]
    out = {}
    for b in rows.values():
        info = b.get("extra_info", {})
        if info.get("impl") != "snep" or b.get("group", "").split()[0] != "iteration":
            continue
        if info.get("threads") != 1 or "sync" in b["name"]:
            continue
        chains = int(info.get("chains", 1))
        per_chain = b["median_ms"] / chains
        out[b["name"]] = {
            "chains": chains,
            "iteration_ms": b["median_ms"],
            "gemm_ms": gemm_ms,
            "ratio_per_chain": per_chain / gemm_ms,
            "ratio_with_philox7": (per_chain - saved_ms) / gemm_ms,
            "ratio_without_noise": (per_chain - noise_ms) / gemm_ms,
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="driver runs (the spread)")
    ap.add_argument("--rounds", type=int, default=50, help="timed rounds per variant and run")
    ap.add_argument("--params", type=int, default=P, help="normals per round (one chain's)")
    ap.add_argument("--iteration-summary", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default: bench/results)")
    args = ap.parse_args()
    for name in ("repeats", "rounds", "params"):
        if getattr(args, name) < 1:
            ap.error(f"--{name}={getattr(args, name)} must be at least 1")
    exe = build()
    repeats = []
    for _ in range(args.repeats):
        times = run_times(exe, args.params, args.rounds)
        times["fill_normal_extension"] = time_fill_normal(args.params, args.rounds)
        med = {k: float(np.median(v)) for k, v in times.items()}
        med["philox7_over_philox10"] = med["philox7_normals"] / med["philox10_normals"]
        med["philox7_saves_ms"] = med["philox10_normals"] - med["philox7_normals"]
        repeats.append(med)

    def spread(key: str) -> dict[str, float]:
        xs = [r[key] for r in repeats]
        return {"median": float(np.median(xs)), "min": float(min(xs)), "max": float(max(xs))}

    summary = {k: spread(k) for k in repeats[0]}
    out = {
        "params": args.params,
        "rounds": args.rounds,
        "threads": 1,
        "compiler": [os.environ.get("CXX", "c++"), *FLAGS],
        "repeats": repeats,
        "summary": summary,
        "command": "python bench/noise_cost.py " + " ".join(sys.argv[1:]),
    }
    if args.iteration_summary is not None:
        iteration = json.loads(args.iteration_summary.read_text())
        out["iteration_summary"] = str(args.iteration_summary)
        out["iterations"] = iteration_ratios(
            iteration,
            summary["philox7_saves_ms"]["median"],
            summary["philox10_normals"]["median"],
        )
    print(json.dumps({k: v["median"] for k, v in summary.items()}, indent=1))
    for name, row in out.get("iterations", {}).items():
        print(
            f"{name}: {row['ratio_per_chain']:.2f}x the GEMMs per chain; with Philox-7 "
            f"{row['ratio_with_philox7']:.2f}x; without any noise {row['ratio_without_noise']:.2f}x"
        )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = args.out or ROOT / "bench" / "results" / f"noise_cost-{stamp}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
