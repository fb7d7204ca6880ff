"""Run the runs of experiments: a resumable queue of ``snep train`` processes.

Each run is one ``snep train`` subprocess writing ``<pool>/<arm key>-s<seed>``
(:mod:`snep.rundir`), with its console output in ``<pool>/logs/<group>--<run>.log``.  The queue
is safe to interrupt and restart (Hasenclever et al. 2017's runs take hours on
a small machine):

* a run whose ``summary.json`` exists is done and skipped;
* a SNEP/EP run with a ``checkpoint.npz`` continues with ``snep train --resume``
  (bitwise the uninterrupted run, :func:`snep.transport.inprocess.simulate`);
* any other unfinished run (a baseline, or one killed before its first
  checkpoint) is moved aside to ``<run>.incomplete-K`` and started again, so
  nothing is deleted;
* a run is locked while it runs (``<run>.lock`` holds the process id), so two
  queues over one pool never run the same run twice; a lock whose process has
  gone is taken over.

``jobs`` runs go at once, each with ``threads`` BLAS/OpenMP threads (by
default the cores divided among the jobs).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from snep.experiments.registry import Arm, Experiment
from snep.rundir import CHECKPOINT_FILE

__all__ = [
    "DEFAULT_POOL",
    "PlannedRun",
    "acquire_lock",
    "plan",
    "release_lock",
    "run_experiments",
    "run_state",
]

#: Default pool of run directories.
DEFAULT_POOL = Path("runs") / "experiments"


@dataclass(frozen=True)
class PlannedRun:
    """One run of an arm: where it lives and the command that makes it."""

    arm: Arm
    seed: int
    run_dir: Path

    def argv(self, threads: int) -> list[str]:
        """``snep`` arguments that start (or resume) this run."""
        common = ["--no-progress", "-q", "--threads", str(threads)]
        if run_state(self.run_dir) == "resumable":
            return ["train", "--resume", str(self.run_dir), *common]
        cmd = self.arm.command(self.seed)
        return [*cmd, *common, "--out", str(self.run_dir.parent), "--name", self.run_dir.name]


def run_state(run_dir: Path) -> str:
    """``"done"``, ``"resumable"`` (has a checkpoint), ``"partial"`` or ``"new"``."""
    from snep.rundir import SUMMARY_FILE

    if (run_dir / SUMMARY_FILE).is_file():
        return "done"
    if (run_dir / CHECKPOINT_FILE).is_file():
        return "resumable"
    if run_dir.is_dir() and any(run_dir.iterdir()):
        return "partial"
    return "new"


def plan(
    experiments: Iterable[Experiment], pool: Path, seeds: Sequence[int] | None = None
) -> list[PlannedRun]:
    """The runs of ``experiments``, each arm and seed once, breadth first.

    Runs are ordered by seed first (every arm's first seed before any arm's
    second), then experiment, then arm, so an interrupted queue leaves one
    complete seed rather than many seeds of a few arms.  ``seeds`` replaces each
    experiment's own seeds when given.
    """
    experiments = list(experiments)
    runs: list[tuple[int, int, PlannedRun]] = []
    seen: set[str] = set()
    for e_index, exp in enumerate(experiments):
        for seed_rank, seed in enumerate(seeds if seeds is not None else exp.seeds):
            for arm in exp.arms:
                key = arm.run_key(seed)
                if key not in seen:
                    seen.add(key)
                    runs.append((seed_rank, e_index, PlannedRun(arm, seed, pool / key)))
    runs.sort(key=lambda t: (t[0], t[1]))  # stable: arms keep their order
    return [r for _, _, r in runs]


def _lock_path(run_dir: Path) -> Path:
    return run_dir.with_name(run_dir.name + ".lock")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - another user's process
        return True
    return True


def acquire_lock(run_dir: Path) -> bool:
    """Take ``<run>.lock`` for this process; False if a live process holds it."""
    lock = _lock_path(run_dir)
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or "0")
            except (OSError, ValueError):
                pid = 0
            if pid and _pid_alive(pid):
                return False
            lock.unlink(missing_ok=True)  # stale: its process has gone
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
        return True
    return False


def release_lock(run_dir: Path) -> None:
    """Remove ``<run>.lock``."""
    _lock_path(run_dir).unlink(missing_ok=True)


def _move_aside(run_dir: Path) -> Path:
    for k in range(1, 1000):
        target = run_dir.with_name(f"{run_dir.name}.incomplete-{k}")
        if not target.exists():
            run_dir.rename(target)
            return target
    raise RuntimeError(f"too many incomplete copies of {run_dir}")  # pragma: no cover


def _execute(run: PlannedRun, threads: int, log_dir: Path, echo) -> tuple[PlannedRun, int]:
    if not acquire_lock(run.run_dir):
        echo(f"skip      {run.run_dir} (running in another process: {_lock_path(run.run_dir)})")
        return run, 0
    try:
        return _execute_locked(run, threads, log_dir, echo)
    finally:
        release_lock(run.run_dir)


def _execute_locked(run: PlannedRun, threads: int, log_dir: Path, echo) -> tuple[PlannedRun, int]:
    state = run_state(run.run_dir)
    if state == "done":
        echo(f"done      {run.run_dir}")
        return run, 0
    if state == "partial":
        moved = _move_aside(run.run_dir)
        echo(f"restart   {run.run_dir} (unfinished, no checkpoint: moved to {moved.name})")
    argv = run.argv(threads)
    log = log_dir / f"{run.run_dir.parent.name}--{run.run_dir.name}.log"
    log_dir.mkdir(parents=True, exist_ok=True)
    run.run_dir.parent.mkdir(parents=True, exist_ok=True)
    echo(f"{'resume' if state == 'resumable' else 'start':9s} {run.run_dir}  (log {log})")
    t0 = time.perf_counter()
    with log.open("a") as fh:
        fh.write(f"$ snep {' '.join(argv)}\n")
        fh.flush()
        rc = subprocess.call(
            [sys.executable, "-m", "snep", *argv], stdout=fh, stderr=subprocess.STDOUT
        )
    status = "finished" if rc == 0 else f"FAILED (exit {rc}; see {log})"
    echo(f"{status:9s} {run.run_dir} in {time.perf_counter() - t0:.0f} s")
    return run, rc


def run_experiments(
    runs: Sequence[PlannedRun],
    pool: Path,
    jobs: int = 1,
    threads: int = 0,
    dry_run: bool = False,
    echo=print,
) -> int:
    """Run (or, with ``dry_run``, list) ``runs``; returns how many failed.

    Parameters
    ----------
    runs : sequence of PlannedRun
        From :func:`plan`.
    pool : Path
        The pool directory (logs go to ``pool/logs``).
    jobs : int
        Runs at once.
    threads : int
        Threads per run; 0 divides the cores among the jobs.
    """
    if jobs < 1:
        raise ValueError(f"jobs is {jobs}; expected at least 1")
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    if dry_run:
        for run in runs:
            echo(f"{run_state(run.run_dir):9s} snep {' '.join(run.argv(threads))}")
        return 0
    todo = [r for r in runs if run_state(r.run_dir) != "done"]
    echo(f"{len(runs) - len(todo)} of {len(runs)} runs done; {len(todo)} to go, {jobs} at once")
    with ThreadPoolExecutor(max_workers=jobs) as executor:
        results = list(executor.map(lambda r: _execute(r, threads, pool / "logs", echo), todo))
    return sum(1 for _, rc in results if rc != 0)
