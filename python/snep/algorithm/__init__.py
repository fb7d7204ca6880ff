"""SNEP workers, the posterior server and the baselines (docs/method.md §1.3–§1.4, §1.7).

Transports drive them: :mod:`snep.transport.inprocess` and :mod:`snep.transport.launch`;
:func:`snep.run.fit.fit` trains in this process."""

from __future__ import annotations

from snep.algorithm.messages import Push, Reply
from snep.algorithm.server import PosteriorServer
from snep.algorithm.worker import SnepWorker, worker_seed

__all__ = [
    "PosteriorServer",
    "Push",
    "Reply",
    "SnepWorker",
    "worker_seed",
]
