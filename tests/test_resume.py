"""``snep train`` interrupted, then continued with ``--resume``, ends bitwise where the
uninterrupted run ends: every array of ``posterior.npz`` and every record of
``metrics.jsonl`` (except its wall-clock fields), through the command line.

How the in-process runner checkpoints (``snep.transport.inprocess.simulate``):
``RUN_DIR/checkpoint.npz`` is rewritten atomically after every evaluation record
(every ``train.checkpoint_every`` = 1 records), *after* the record went to the
callback (``metrics.jsonl``, then the progress line), and once more after the final
record, which follows the final pushes of every worker's last site.  So:

* the interruption is a ``KeyboardInterrupt`` (Ctrl-C: ``snep train`` exits 130),
  raised in a worker's step between two evaluations; the run resumes from the
  checkpoint of its last evaluation;
* a *finished* shorter run extended with ``--resume --iterations N`` is not the
  straight run of N: its final pushes are part of it (see
  tests/algorithm/test_checkpoint.py), so it is not used here; the interrupted run
  may still be given a larger ``--iterations`` on resume.

The MPI counterpart is in tests/transport/test_mpi_e2e.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from snep.algorithm.worker import SnepWorker
from snep.cli import main
from snep.progress import ProgressReporter

ITERATIONS, EVAL_EVERY = 60, 10
COMMON = ["--data", "digits", "--hidden", "16", "--workers", "3", "--eval-every",
          str(EVAL_EVERY), "--no-progress", "-q", "--no-plot", "--backend", "cpu"]  # fmt: skip
#: fields of a metrics record that measure time, not the computation
WALL_CLOCK = ("wall_seconds", "comm_seconds")


def train(out: Path, name: str, iterations: int, *extra: str) -> int:
    argv = ["train", *COMMON, "--iterations", str(iterations), "--out", str(out)]
    return main([*argv, "--name", name, *extra])


def resume(run: Path, *extra: str) -> int:
    return main(["train", "--resume", str(run), "--no-progress", "-q", "--no-plot", *extra])


def records(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def without_wall_clock(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in WALL_CLOCK}


def assert_same_run(run: Path, reference: Path, records_after: float = -1) -> None:
    """Bitwise the same posterior.npz, and the same metrics records after iteration
    ``records_after`` but for wall-clock fields (JSON holds a float's shortest repr, so
    equal floats are bitwise equal)."""
    with np.load(run / "posterior.npz") as a, np.load(reference / "posterior.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for key in b.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    got, want = records(run), records(reference)
    assert [r["iteration"] for r in got] == [r["iteration"] for r in want]
    pairs = [(r, s) for r, s in zip(got, want, strict=True) if s["iteration"] > records_after]
    for r, s in pairs:
        assert r.keys() == s.keys()
        assert without_wall_clock(r) == without_wall_clock(s), f"iteration {s['iteration']}"


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The uninterrupted run of ITERATIONS iterations."""
    out = tmp_path_factory.mktemp("straight")
    assert train(out, "run", ITERATIONS) == 0
    return out / "run"


def interrupt_worker_step(monkeypatch, worker: int, at: int) -> None:
    """Ctrl-C as worker ``worker`` starts iteration ``at + 1``."""
    step = SnepWorker.step

    def interrupted(self):
        if self.worker == worker and self.iteration == at:
            raise KeyboardInterrupt
        return step(self)

    monkeypatch.setattr(SnepWorker, "step", interrupted)


def interrupted_run(tmp_path: Path, monkeypatch, iterations: int, *extra: str) -> Path:
    """A run of ``iterations`` stopped by Ctrl-C at worker 1's iteration 36, after the
    evaluation (and checkpoint) at iteration 30."""
    interrupt_worker_step(monkeypatch, worker=1, at=35)
    assert train(tmp_path, "run", iterations, *extra) == 130
    monkeypatch.undo()
    run = tmp_path / "run"
    assert (run / "checkpoint.npz").is_file()
    assert not (run / "posterior.npz").exists()
    assert [r["iteration"] for r in records(run)] == [10, 20, 30]
    return run


def test_a_run_interrupted_between_evaluations_resumes_bitwise(straight, tmp_path, monkeypatch):
    run = interrupted_run(tmp_path, monkeypatch, ITERATIONS)
    assert resume(run) == 0
    assert_same_run(run, straight)


def test_an_interrupted_run_extended_on_resume_equals_the_longer_run(
    straight, tmp_path, monkeypatch
):
    # started for 40 iterations, resumed with --iterations 60: the straight 60-iteration
    # run.  The running average starts at a fixed iteration here, 45 = 3/4 of 60 as the
    # straight run's default: by default it is 3/4 of train.iterations (see the next test)
    run = interrupted_run(tmp_path, monkeypatch, 40, "--set", "train.average_from=45")
    assert resume(run, "--iterations", str(ITERATIONS)) == 0
    assert_same_run(run, straight)


def test_an_interrupted_run_extended_on_resume_averages_from_the_new_length(
    straight, tmp_path, monkeypatch
):
    # the server averages from 3/4 of the new length (set_average_from); the records up
    # to the checkpoint are the 40-iteration run's (its average began at 30), the rest
    # and the posterior are the straight run's
    run = interrupted_run(tmp_path, monkeypatch, 40)
    assert resume(run, "--iterations", str(ITERATIONS)) == 0
    assert_same_run(run, straight, records_after=30)
    assert "avg_error" in records(run)[2] and "avg_error" not in records(straight)[2]


def test_a_run_interrupted_while_its_checkpoint_is_written_resumes_bitwise(
    straight, tmp_path, monkeypatch
):
    # Ctrl-C after the record at iteration 30 went to metrics.jsonl, before its
    # checkpoint replaced the one of iteration 20 (while the progress line is drawn,
    # or while checkpoint.npz is written: the window grows with the model's size)
    report = ProgressReporter.__call__

    def interrupted(self, record):
        report(self, record)
        if record["iteration"] == 30:
            raise KeyboardInterrupt

    monkeypatch.setattr(ProgressReporter, "__call__", interrupted)
    assert train(tmp_path, "run", ITERATIONS) == 130
    monkeypatch.undo()
    run = tmp_path / "run"
    assert [r["iteration"] for r in records(run)] == [10, 20, 30]
    assert resume(run) == 0
    assert_same_run(run, straight)
