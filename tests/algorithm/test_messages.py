"""The worker protocol of snep.algorithm.messages: the worker class of every distributed
method of the METHODS registry provides what the transports call (the MPI loop no longer
probes with hasattr; the one-worker Adam baseline runs no transport)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from tests.algorithm.models import GaussianMeans

from snep.algorithm.messages import Worker
from snep.backends import get_backend
from snep.config import METHODS, Config

#: the protocol's members: data attributes and methods/properties
MEMBERS = [
    name
    for name in (*Worker.__annotations__, *vars(Worker))
    if not name.startswith("_") and name not in ("__init__",)
]


def _worker_class(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("method", sorted(m for m, info in METHODS.items() if info.distributed))
def test_every_registered_worker_provides_the_protocol(method):
    cls = _worker_class(METHODS[method].worker)
    config = Config().replace(train={"method": method, "workers": 2})
    data = np.random.default_rng(0).normal(size=(20, 3))
    worker = cls(0, 2, GaussianMeans(1.0), data, np.zeros(20, np.int32), config,
                 get_backend("numpy"), np.zeros(3))  # fmt: skip
    missing = [name for name in MEMBERS if not hasattr(worker, name)]
    assert not missing, f"{cls.__name__} lacks {missing}"
    assert worker.n_params == 3 and worker.iteration == 0 and not worker.in_flight
