"""Checkpoints: a run resumed from any checkpoint ends bitwise where the uninterrupted
run ends, with synchronous and with asynchronous (delayed-reply) schedules."""

from __future__ import annotations

import numpy as np
import pytest

from snep.backends import get_backend
from snep.config import Config
from snep.data.loaders import load_digits
from snep.errors import ConfigError, DataError
from snep.run.fit import fit
from snep.transport.inprocess import load_checkpoint, simulate

from .simulate_args import simulate_args


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def config(**train) -> Config:
    base = {"iterations": 120, "eval_every": 30, "workers": 3, "bma_samples": 4}
    return Config().replace(train={**base, **train}, model={"hidden": (16,)})


@pytest.mark.parametrize("async_", [False, True])
def test_resume_from_any_checkpoint_is_bitwise_identical(digits, async_):
    extra = {"reply_delay": 2.5, "speeds": (1.0, 1.0, 3.0)} if async_ else {}
    cfg = config(**extra)
    args = simulate_args(cfg, digits, get_backend("cpu"))
    states: list[dict[str, np.ndarray]] = []
    full = simulate(
        *args, checkpoint=lambda s: states.append({k: np.array(v) for k, v in s.items()})
    )
    assert len(states) == len(full.history) == 4
    for k in (0, 2):
        resumed = simulate(*args, resume=states[k])
        np.testing.assert_array_equal(resumed.server.precision, full.server.precision)
        np.testing.assert_array_equal(resumed.server.precision_mean, full.server.precision_mean)
        assert [r["iteration"] for r in resumed.history] == [r["iteration"] for r in full.history]
        for a, b in zip(resumed.workers, full.workers, strict=True):
            np.testing.assert_array_equal(a.arrays.x, b.arrays.x)


def test_checkpoint_file_round_trip_and_errors(digits, tmp_path):
    path = tmp_path / "checkpoint.npz"
    first = fit(config(iterations=60), digits, checkpoint=path)
    state = load_checkpoint(path)
    assert int(state["server.scalars"][2]) == first.stats["version"]
    # continuing a finished run for longer works (its final pushes are part of it)
    longer = fit(config(iterations=90), digits, resume=path)
    assert [w["iteration"] for w in longer.stats["workers"]] == [90, 90, 90]
    with pytest.raises(ConfigError, match=r"differs in \['model.hidden'\]"):
        fit(config(iterations=90).replace(model={"hidden": (8,)}), digits, resume=path)
    with pytest.raises(DataError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(2))
    with pytest.raises(DataError, match="not a snep checkpoint"):
        load_checkpoint(tmp_path / "other.npz")


def test_a_checkpoint_from_before_cavity_replies_with_replies_in_flight_is_refused(digits):
    """Replies in flight were theta before 2026-11-30 and are cavities since: a checkpoint
    of that time (no ``train.wire`` in its config) holding such replies cannot resume."""
    import json

    cfg = config(reply_delay=10.0, speeds=(1.0, 1.0, 3.0))  # replies still queued at evals
    args = simulate_args(cfg, digits, get_backend("cpu"))
    states: list[dict[str, np.ndarray]] = []
    simulate(*args, checkpoint=lambda s: states.append({k: np.array(v) for k, v in s.items()}))
    queued = next(s for s in states if np.any(s["runner.events"][:, 2] == 0))  # a reply queued
    state = dict(queued)
    old = json.loads(bytes(state["runner.config"]).decode())
    del old["train"]["wire"]
    state["runner.config"] = np.frombuffer(json.dumps(old).encode(), np.uint8)
    with pytest.raises(ConfigError, match="before replies carried the worker's cavity"):
        simulate(*args, resume=state)
    simulate(*args, resume=queued)  # the same checkpoint as written today resumes
