"""SNEP workers, the posterior server and the in-process runner (docs/method.md §1.3–§1.4)."""

from __future__ import annotations

from snep.algorithm.messages import Push, Reply
from snep.algorithm.runner import FitResult, build_spec, fit, run_adam, run_in_process
from snep.algorithm.server import PosteriorServer
from snep.algorithm.worker import SnepWorker, worker_seed

__all__ = [
    "FitResult",
    "PosteriorServer",
    "Push",
    "Reply",
    "SnepWorker",
    "build_spec",
    "fit",
    "run_adam",
    "run_in_process",
    "worker_seed",
]
