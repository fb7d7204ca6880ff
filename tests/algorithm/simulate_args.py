"""The positional arguments of :func:`snep.transport.inprocess.simulate` for a data set, as
``fit`` builds them (IID shards, the shared initial position and the prior), for tests
that drive the simulation directly (checkpoints, resumes)."""

from __future__ import annotations

from typing import Any

from snep.config import Config
from snep.data.dataset import Dataset
from snep.data.sharding import make_shards
from snep.run.setup import build_spec, initial_position, model_factory, prior_for


def simulate_args(cfg: Config, data: Dataset, backend: Any) -> tuple:
    """``(config, shards, make_model, x0, prior, backend)`` for ``simulate``."""
    spec = build_spec(cfg, data)
    t = cfg.train
    shards = [
        (data.x_train[i], data.y_train[i])
        for i in make_shards(data.y_train, t.workers, "iid", 0.5, t.seed)
    ]
    return (
        cfg, shards, model_factory(cfg, backend, spec), initial_position(cfg, spec),
        prior_for(cfg, spec), backend,
    )  # fmt: skip
