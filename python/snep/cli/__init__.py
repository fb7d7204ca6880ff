"""Command-line interface: ``snep train``, ``snep evaluate``, ``snep predict``,
``snep experiment``, ``snep info``.

One module per command (:mod:`snep.cli.train`, :mod:`snep.cli.evaluate`,
:mod:`snep.cli.predict`, :mod:`snep.cli.experiment`, :mod:`snep.cli.info`); the
flags of ``snep train`` are listed once, in :mod:`snep.cli.flags`.  ``snep train``
runs SNEP with a posterior server (Hasenclever et al., "Distributed Bayesian Learning
with Stochastic Natural Gradient Expectation Propagation and the Posterior Server",
JMLR 18 (2017)), its EP variant or a baseline, and writes a run directory (:mod:`snep.rundir`).

Only light modules are imported here: ``--threads`` sets the thread variables before
NumPy and Numba are imported (:mod:`snep.threads`).  Errors of snep
(:class:`~snep.errors.SnepError`: bad configuration, missing data, unavailable backend)
are printed as one line ``snep: error: ...`` and give exit status 2; any other exception
propagates with its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import snep
from snep.cli import evaluate, experiment, info, predict, train
from snep.cli.output import format_metrics_table
from snep.cli.train import resolve_config
from snep.errors import SnepError

__all__ = ["build_parser", "format_metrics_table", "main", "resolve_config"]

PROG = "snep"


def build_parser() -> argparse.ArgumentParser:
    """The ``snep`` argument parser (imports nothing heavy)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "snep: distributed Bayesian learning of neural networks with stochastic "
            "natural-gradient EP and the posterior server (Hasenclever et al., JMLR 2017)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {snep.__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    sub.required = True
    for command in (train, evaluate, predict, experiment, info):
        command.add_parser(sub)
    return parser


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split("\n")).strip()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``snep`` command line; returns the exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 2 for a usage error or an error of snep (printed as one
        line ``snep: error: ...``), 130 when interrupted.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors (2), --help and --version (0)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    try:
        return int(args.command(args))
    except SnepError as exc:
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
