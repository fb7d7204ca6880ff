"""``snep evaluate RUN_DIR``: re-score a run's posterior on test data."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import snep
from snep import rundir
from snep.cli.flags import positive_int
from snep.cli.output import format_metrics_table
from snep.config import METHODS
from snep.errors import ConfigError, DataError
from snep.threads import apply_threads

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    """Add the ``evaluate`` command to the subparsers ``sub``."""
    p = sub.add_parser(
        "evaluate",
        help="re-score a run's posterior on test data",
        description=(
            "Load config.toml and posterior.npz from a run directory, score the posterior "
            "mean, the running average (if saved) and the model average on the test split, "
            "print the table and write evaluation.json into the run directory."
        ),
    )
    p.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="directory written by snep train")
    p.add_argument(
        "--data", metavar="NAME_OR_PATH", help="data set (default: the run's train.data)"
    )
    p.add_argument(
        "--samples",
        type=positive_int,
        metavar="S",
        help="posterior draws of the model average (default: the run's train.bma_samples)",
    )
    p.add_argument("--backend", metavar="NAME", help="auto, numpy, cpu or cuda (default: run's)")
    p.set_defaults(command=run)


def _run_config(args: argparse.Namespace) -> Any:
    """The run's configuration with the command's overrides, its threads applied before
    NumPy and Numba load, and its posterior."""
    from snep.config import load_config

    config_file = args.run_dir / rundir.CONFIG_FILE
    if config_file.is_file():
        try:  # the run's thread setting, before NumPy and Numba load
            apply_threads(load_config(config_file).train.threads)
        except ConfigError:
            pass  # load_run reports it
    config, posterior = rundir.load_run(args.run_dir)
    overrides: dict[str, Any] = {}
    if args.samples is not None:
        overrides["bma_samples"] = args.samples
    if args.backend is not None:
        overrides["backend"] = args.backend
    if overrides:
        config = config.replace(train=overrides)
    return config, posterior


def run(args: argparse.Namespace) -> int:
    """``snep evaluate``; returns 0."""
    config, posterior = _run_config(args)

    from snep.backends import get_backend
    from snep.data.loaders import load_dataset
    from snep.evaluate import Evaluator
    from snep.io import save_json

    source = args.data if args.data is not None else config.train.data
    dataset = load_dataset(source)
    sizes = posterior.spec.layer_sizes
    if sizes[0] != dataset.n_features or sizes[-1] != dataset.n_classes:
        raise DataError(
            f"data set {source!r} has {dataset.n_features} features and {dataset.n_classes} "
            f"classes, but the posterior in {str(args.run_dir)!r} has layer sizes "
            f"{list(sizes)}; pass the run's data set with --data"
        )
    backend = get_backend(config.train.backend, config.train.threads)
    evaluator = Evaluator(posterior.spec, dataset, backend, config)
    t0 = time.perf_counter()
    if not METHODS[config.train.method].posterior:  # a point estimate: no model average
        metrics = evaluator.point(posterior.mean, "mean_")
        samples = None
    else:
        metrics = evaluator(posterior)
        samples = config.train.bma_samples
    wall = time.perf_counter() - t0
    title = f"test metrics of {args.run_dir} on {dataset.name!r}"
    print(format_metrics_table(metrics, samples, title=title))
    record = {
        "snep_version": snep.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "data": {"name": dataset.name, "source": source, "n_test": dataset.n_test},
        "backend": backend.name,
        "bma_samples": samples,
        "seed": config.train.seed,
        "P": posterior.spec.size,
        "wall_seconds": wall,
        "metrics": metrics,
    }
    out = save_json(args.run_dir / rundir.EVALUATION_FILE, rundir.to_jsonable(record))
    print(f"\nwrote {out}")
    return 0
