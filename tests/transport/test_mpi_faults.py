"""Faults under mpiexec: a slow worker, an exception on a rank, a killed rank.

Each spawns ``mpiexec`` with a timeout: a hang fails the test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

MPIEXEC = shutil.which("mpiexec")
pytestmark = [pytest.mark.mpi, pytest.mark.requires("mpi")]  # see the repository's conftest.py


def command(n_ranks: int, tmp_path: Path, iterations: int, *extra: str) -> list[str]:
    return [
        MPIEXEC, "-n", str(n_ranks), sys.executable, "-m", "snep", "train",
        "--workers", str(n_ranks - 1), "--iterations", str(iterations), "--hidden", "16",
        "--eval-every", "100", "--out", str(tmp_path), "--name", "run", "--no-progress",
        *extra,
    ]  # fmt: skip


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", **extra}


def test_a_slow_worker_does_not_stop_the_others(tmp_path):
    cfg = tmp_path / "slow.toml"
    cfg.write_text("[train]\nspeeds = [1.0, 1.0, 4.0]\n")
    res = subprocess.run(
        command(4, tmp_path, 300, "--config", str(cfg), "--site-step", "0.1"),
        capture_output=True, text=True, timeout=300, env=env(),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    stats = json.loads((tmp_path / "run" / "summary.json").read_text())["stats"]
    workers = stats["workers"]
    assert [w["iteration"] for w in workers] == [300, 300, 300]
    assert workers[2]["wall_seconds"] > 2 * workers[0]["wall_seconds"]
    assert stats["staleness_max"] >= 1  # the others pushed while the slow one computed
    final = json.loads((tmp_path / "run" / "summary.json").read_text())["final"]
    assert final["mean_error"] < 0.5


def test_an_exception_on_a_worker_ends_the_job_with_its_rank_and_cause(tmp_path):
    t0 = time.monotonic()
    res = subprocess.run(
        command(4, tmp_path, 10_000),
        capture_output=True, text=True, timeout=120,
        env=env(SNEP_TEST_FAIL_WORKER="1", SNEP_TEST_FAIL_AT="50"),
    )  # fmt: skip
    assert res.returncode != 0
    assert "rank 2 failed: RuntimeError: injected failure at iteration 50" in res.stderr
    assert time.monotonic() - t0 < 60


def _rank_pids(parent: int) -> dict[int, int]:
    """PMI_RANK -> pid of the Python processes under this mpiexec."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"snep" not in cmdline or b"mpiexec" in cmdline:
            continue
        for item in environ:
            if item.startswith(b"PMI_RANK="):
                found[int(item.split(b"=")[1])] = int(proc.name)
    return found


def test_kill_9_of_a_worker_ends_the_job_without_hanging(tmp_path):
    proc = subprocess.Popen(
        command(4, tmp_path, 200_000), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env()
    )
    try:
        metrics = tmp_path / "run" / "metrics.jsonl"
        deadline = time.monotonic() + 120
        ckpt = tmp_path / "run" / "checkpoints"
        files = [ckpt / f"worker-{w}.npz" for w in range(3)] + [ckpt / "server.npz"]
        while not (
            metrics.is_file() and metrics.read_text().strip() and all(f.is_file() for f in files)
        ):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never made its first evaluation"
            time.sleep(0.2)
        pids = _rank_pids(proc.pid)
        assert 2 in pids, pids
        os.kill(pids[2], signal.SIGKILL)
        t0 = time.monotonic()
        out, err = proc.communicate(timeout=60)  # a hang fails here
        assert proc.returncode != 0
        assert time.monotonic() - t0 < 30
        # the server reports the broken exchange (rank 0 failed: ...), or mpiexec its
        # BAD TERMINATION of the killed rank, whichever comes first
        said = (out + err).decode().lower()
        assert any(word in said for word in ("failed", "killed", "termination")), said
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # the last checkpoints stay loadable, and the run resumes from them
    import numpy as np

    reached = []
    for w in range(3):
        with np.load(ckpt / f"worker-{w}.npz") as f:
            reached.append(int(f["counters"][0]))
    with np.load(ckpt / "server.npz") as f:
        assert np.all(f["precision"] > 0)
    target = max(reached) + 200
    res = subprocess.run(
        [MPIEXEC, "-n", "4", sys.executable, "-m", "snep", "train", "--resume",
         str(tmp_path / "run"), "--iterations", str(target), "--no-progress"],
        capture_output=True, text=True, timeout=240, env=env(),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    stats = json.loads((tmp_path / "run" / "summary.json").read_text())["stats"]
    assert [w["iteration"] for w in stats["workers"]] == [target] * 3


@pytest.mark.parametrize("server_ranks", [1, 2])
def test_a_non_finite_push_is_rejected_counted_logged_and_the_run_goes_on(tmp_path, server_ranks):
    """With two server ranks the poisoned parameter (index 0) is in shard 0's slice, so
    shard 0 rejects its part of the push and shard 1 applies its own; the worker rolls
    back its record of the rejected slice only, and the run ends finite all the same."""
    split = ("--workers", "2", "--server-ranks", str(server_ranks))
    res = subprocess.run(
        command(2 + server_ranks, tmp_path, 200, "--site-step", "0.1", *split),
        capture_output=True, text=True, timeout=240,
        env=env(SNEP_TEST_NAN_WORKER="1", SNEP_TEST_NAN_AT="55"),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    # the first push after iteration 55 (60, or later when a reply was still in flight)
    assert "server rejected a push from worker 1 at iteration" in res.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stats"]["rejected"] >= 1
    assert [w["iteration"] for w in summary["stats"]["workers"]] == [200, 200]
    import numpy as np

    with np.load(tmp_path / "run" / "posterior.npz") as f:
        assert np.all(np.isfinite(f["precision"])) and np.all(np.isfinite(f["mean"]))
