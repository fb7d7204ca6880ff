"""Named experiments (Hasenclever et al., JMLR 2017, section 6; docs/method.md §1.8):
what runs make each one (:mod:`~snep.experiments.registry`), a resumable queue that
runs them (:mod:`~snep.experiments.execute`) and their report
(:mod:`~snep.experiments.report`).  Used by ``snep experiment``.
"""

from snep.experiments.execute import DEFAULT_POOL, plan, run_experiments
from snep.experiments.registry import EXPERIMENTS, Arm, Experiment, get_experiment
from snep.experiments.report import write_report

__all__ = [
    "DEFAULT_POOL",
    "EXPERIMENTS",
    "Arm",
    "Experiment",
    "get_experiment",
    "plan",
    "run_experiments",
    "write_report",
]
