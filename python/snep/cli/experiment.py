"""``snep experiment``: run named experiments (resumable) and write their reports."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from snep.cli.flags import positive_int

__all__ = ["add_parser"]


def _seed_list(text: str) -> tuple[int, ...]:
    """Parse ``--seeds``: comma-separated non-negative integers."""
    try:
        seeds = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        seeds = ()
    if not seeds or min(seeds) < 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a list of seeds; expected comma-separated integers >= 0, e.g. 0,1,2"
        )
    return seeds


def add_parser(sub: Any) -> None:
    """Add the ``experiment`` command to the subparsers ``sub``."""
    p = sub.add_parser(
        "experiment",
        help="run a named experiment (resumable) and write its report",
        description=(
            "Run every run of the named experiments that is not finished yet (one "
            "'snep train' process each; interrupted SNEP runs resume from their checkpoint), "
            "then write POOL/NAME/report.md with the table and plots. --list describes them."
        ),
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="experiment names ('all': every one)")
    p.add_argument("--list", action="store_true", help="list the experiments and their runs")
    p.add_argument("--report", action="store_true", help="only write the reports; run nothing")
    p.add_argument("--dry-run", action="store_true", help="print the commands; run nothing")
    p.add_argument(
        "--seeds", type=_seed_list, metavar="0,1,2", help="seeds (default: each experiment's)"
    )
    p.add_argument("--jobs", type=positive_int, default=1, metavar="N", help="runs at once")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        metavar="N",
        help="threads per run (default: the cores divided among the jobs)",
    )
    p.add_argument(
        "--pool",
        type=Path,
        metavar="DIR",
        help="directory of the runs and reports (default runs/experiments)",
    )
    p.set_defaults(command=run)


def run(args: argparse.Namespace) -> int:
    """``snep experiment``; returns the exit status (1 when a run failed)."""
    from snep.experiments import (
        DEFAULT_POOL,
        EXPERIMENTS,
        get_experiment,
        plan,
        run_experiments,
        write_report,
    )

    if args.list or not args.names:
        for exp in EXPERIMENTS.values():
            print(f"{exp.name}: {exp.title}")
            print(f"    seeds {list(exp.seeds)}; scored on the {exp.split} split")
            for arm in exp.arms:
                print(f"    {arm.key:32s} {arm.label}")
        return 0
    names = list(EXPERIMENTS) if args.names == ["all"] else args.names
    experiments = [get_experiment(n) for n in names]
    pool = args.pool or DEFAULT_POOL
    failed = 0
    if not args.report:
        runs = plan(experiments, pool, args.seeds)
        failed = run_experiments(runs, pool, args.jobs, args.threads, dry_run=args.dry_run)
    if not args.dry_run:
        for exp in experiments:
            print(f"wrote {write_report(exp, pool, args.seeds)}")
    if failed:
        print(f"snep: {failed} run(s) failed; their logs are in {pool / 'logs'}", file=sys.stderr)
        return 1
    return 0
