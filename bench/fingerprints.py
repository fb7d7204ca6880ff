"""Fingerprints of short runs: proof that a refactoring changed no number.

Runs ``snep train`` briefly (digits, 784 → 16 → 10 is too big for a fingerprint, so the
digits' 64 → 16 → 10, 120 iterations, cpu backend, one thread) for every method in this
process and, for the methods that support it, under synchronous MPI (``mpiexec``,
``train.synchronous = true``, which reproduces the in-process order of messages), and
hashes every array of the run's ``posterior.npz`` (SHA-256 of the bytes with dtype and
shape; the zip container's time stamps are left out).

The numbers depend on the CPU's instruction set (the CPU kernels are compiled with
``target_clones``), so a fingerprint file is only comparable on the machine kind that
wrote it; the file records the machine.

Usage::

    python bench/fingerprints.py --write bench/results/fingerprints.json
    python bench/fingerprints.py --check bench/results/fingerprints.json
    python bench/fingerprints.py --check FILE --set train.wire=float64

``--set KEY=VALUE`` (repeatable) is passed to every run: a change meant to alter the
numbers under a new default can be checked to leave them alone under the old setting.
``--check`` exits with status 1 and names each run whose posterior changed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

#: (name, extra flags, transport); transport "inprocess" or "mpi"
CASES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("snep", ("--method", "snep", "--workers", "3"), "inprocess"),
    ("snep-paper", ("--method", "snep", "--workers", "3", "--preset", "paper"), "inprocess"),
    ("snep-1chain", ("--method", "snep", "--workers", "2", "--chains", "1"), "inprocess"),
    ("ep", ("--method", "ep", "--workers", "3"), "inprocess"),
    ("adam", ("--method", "adam", "--workers", "1"), "inprocess"),
    ("asgd", ("--method", "asgd", "--workers", "3"), "inprocess"),
    ("easgd", ("--method", "easgd", "--workers", "3"), "inprocess"),
    ("snep", ("--method", "snep", "--workers", "3"), "mpi"),
    ("ep", ("--method", "ep", "--workers", "3"), "mpi"),
)
COMMON = (
    "--data", "digits", "--hidden", "16", "--iterations", "120", "--eval-every", "60",
    "--backend", "cpu", "--threads", "1", "--no-progress", "-q", "--no-plot",
)  # fmt: skip


#: ``--set`` assignments passed to every run
EXTRA_SETS: list[str] = []


def hash_npz(path: Path) -> dict[str, str]:
    """SHA-256 of each array (name, dtype, shape and bytes) in an ``.npz`` file."""
    out = {}
    with np.load(path) as f:
        for name in sorted(f.files):
            a = np.ascontiguousarray(f[name])
            h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
            out[name] = h.hexdigest()[:16]
    return out


def run_case(name: str, flags: tuple[str, ...], transport: str, root: Path) -> dict[str, str]:
    out = root / f"{name}-{transport}"
    sync = root / "sync.toml"
    sync.write_text("[train]\nsynchronous = true\n")
    cmd = [sys.executable, "-m", "snep", "train", *COMMON, *flags, "--config", str(sync)]
    for assignment in EXTRA_SETS:
        cmd += ["--set", assignment]
    cmd += ["--out", str(root), "--name", out.name]
    if transport == "mpi":
        mpiexec = shutil.which("mpiexec")
        if mpiexec is None:
            raise SystemExit("fingerprints: mpiexec not found (pip install -e '.[mpi]')")
        workers = int(flags[flags.index("--workers") + 1])
        cmd = [mpiexec, "-n", str(workers + 1), *cmd]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    if res.returncode != 0:
        raise SystemExit(f"fingerprints: {name} ({transport}) failed:\n{res.stderr}")
    return hash_npz(out / "posterior.npz")


def machine() -> dict[str, str]:
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                flags = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": flags, "platform": platform.platform(), "numpy": np.__version__}


def fingerprints() -> dict[str, dict[str, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        return {
            f"{name}/{transport}": run_case(name, flags, transport, Path(tmp))
            for name, flags, transport in CASES
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--write", type=Path, metavar="FILE", help="write the fingerprints here")
    g.add_argument("--check", type=Path, metavar="FILE", help="compare with this file")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="a config assignment passed to every run (repeatable)",
    )  # fmt: skip
    args = p.parse_args(argv)
    EXTRA_SETS[:] = args.set
    prints = fingerprints()
    if args.write:
        doc = {"machine": machine(), "common_flags": list(COMMON), "runs": prints}
        args.write.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        print(f"wrote {len(prints)} fingerprints to {args.write}")
        return 0
    ref = json.loads(args.check.read_text())
    if ref["machine"]["cpu"] != machine()["cpu"]:
        print(f"note: written on {ref['machine']['cpu']!r}, checked on {machine()['cpu']!r}")
    keys = sorted(set(ref["runs"]) | set(prints))
    changed = [k for k in keys if ref["runs"].get(k) != prints.get(k)]
    for key in changed:
        old, new = ref["runs"].get(key, {}), prints.get(key, {})
        arrays = sorted(n for n in set(old) | set(new) if old.get(n) != new.get(n))
        print(f"CHANGED {key}: {', '.join(arrays)}")
    print(f"{len(prints) - len(changed)} of {len(prints)} fingerprints unchanged")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
