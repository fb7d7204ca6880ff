"""``snep train``: train a posterior (or a baseline) and write a run directory.

In this process, or under ``mpiexec -n N+K`` as ``K`` server ranks (one by default,
``--server-ranks``) and ``N`` worker ranks (:mod:`snep.transport.launch`).  The
configuration is layered by :func:`snep.config.resolve` (defaults < method preset < the
data set's preset < the ``--config`` file < flags < ``--set``); the run length
(``--epochs``) is resolved once the data are loaded, before ``config.toml`` is written.
``--threads`` is applied before NumPy and Numba are imported (docs/method.md §3,
Threads).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from snep import rundir
from snep.cli.flags import TRAIN_FLAGS, add_flags, flag_for_key, flags_to_config
from snep.cli.output import format_metrics_table
from snep.config import METHODS
from snep.errors import ConfigError
from snep.threads import apply_threads

if TYPE_CHECKING:
    from snep.config import Config

__all__ = ["add_parser", "load_run_data", "resolve_config"]


def add_parser(sub: Any) -> None:
    """Add the ``train`` command to the subparsers ``sub``."""
    p = sub.add_parser(
        "train",
        help="train a posterior and write a run directory",
        description=(
            "Train with SNEP + the posterior server (or EP, or a baseline) in this process, "
            "or under mpiexec, and write a run directory (config.toml, metrics.jsonl, "
            "posterior.npz, summary.json, plot.png). Flags override the --config file, which "
            "overrides the data set's preset, which overrides the method preset (--preset), "
            "which overrides the defaults."
        ),
    )
    add_flags(p, TRAIN_FLAGS)
    p.set_defaults(command=run)


def resolve_config(args: argparse.Namespace) -> Config:
    """The run's :class:`~snep.config.Config` from parsed ``snep train`` flags
    (:func:`snep.config.resolve`); an invalid key's message names the flag or the file
    that set it."""
    from snep.config import resolve

    if getattr(args, "epochs", None) is not None and getattr(args, "iterations", None) is not None:
        raise ConfigError(
            f"--epochs {args.epochs:g} and --iterations {args.iterations} both set the run "
            "length; pass one of them"
        )
    sets = tuple(getattr(args, "set_keys", None) or ())
    try:
        return resolve(
            args.config, flags_to_config(args, TRAIN_FLAGS), sets, data_preset=not args.no_preset
        )
    except ConfigError as exc:
        flag = flag_for_key(str(exc), args, TRAIN_FLAGS)
        where = f" (set by {flag})" if flag else ""
        if not flag and args.config:
            where = f" (in config file {str(args.config)!r})"
        raise ConfigError(f"{exc}{where}") from None


def load_run_data(config: Any) -> Any:
    """The run's data set: ``config.train.data``, or with ``train.validation > 0`` its
    training data split into train and a held-out validation part (fixed split seed 0,
    so runs with different seeds are scored on the same examples)."""
    from snep.data import holdout_validation
    from snep.data.loaders import load_dataset

    dataset = load_dataset(config.train.data)
    if config.train.validation > 0:
        dataset = holdout_validation(dataset, config.train.validation, seed=0)
    return dataset


def _config_for(args: argparse.Namespace, ranks: int) -> Config:
    if args.resume is not None:
        if args.config is None:
            args.config = str(args.resume / rundir.CONFIG_FILE)
        if not Path(args.config).is_file():
            raise ConfigError(
                f"--resume {str(args.resume)!r}: no config.toml there; pass a run directory "
                "written by snep train"
            )
    config = resolve_config(args)
    if ranks > 1 and config.train.threads == 0 and ranks >= (os.cpu_count() or 1):
        # ranks share the cores: one BLAS/OpenMP/Numba thread each (docs/method.md §3)
        config = config.replace(train={"threads": 1})
    return config


def run(args: argparse.Namespace) -> int:
    """``snep train``; returns the exit status (130 when interrupted)."""
    from snep.transport.env import mpi_world_size

    ranks = mpi_world_size()
    config = _config_for(args, ranks)
    apply_threads(config.train.threads)
    if ranks > 1:
        return _run_mpi(args, config)

    # heavy imports only now, after the thread variables are set
    from snep.backends import get_backend
    from snep.run.fit import check_backend, fit

    dataset = load_run_data(config)
    config = config.with_data_size(dataset.n_train)  # config.toml records the iterations
    backend = get_backend(config.train.backend, config.train.threads)
    check_backend(config, backend)  # before the run directory exists
    t = config.train
    banner = (
        f"snep: {t.method} with {t.workers} worker(s), {t.iterations} iterations, "
        f"data {dataset.name!r} ({dataset.n_train} train / {dataset.n_test} test), "
        f"backend {backend.name}"
    )
    resume = None if args.resume is None else args.resume / rundir.CHECKPOINT_FILE
    if resume is not None and METHODS[t.method].checkpointed:
        from snep.transport.inprocess import checkpoint_history, load_checkpoint

        # evaluations written after the checkpoint are made again: drop them
        rundir.keep_metrics(args.resume, len(checkpoint_history(load_checkpoint(resume))))

    def train(callback: Callable, run_dir: Path) -> Any:
        if not METHODS[t.method].checkpointed:  # fit refuses a resume
            return fit(config, dataset, backend, callback, resume=resume)
        checkpoint = run_dir / rundir.CHECKPOINT_FILE
        return fit(config, dataset, backend, callback, checkpoint=checkpoint, resume=resume)

    return _train_into_run_dir(args, config, dataset, backend, banner, train)


def _run_mpi(args: argparse.Namespace, config: Any) -> int:
    """``mpiexec -n N+1 snep train --workers N``: rank 0 serves and writes the run directory."""
    from mpi4py import MPI

    from snep.transport.launch import broadcast_config, rank_backend, run_mpi

    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    config = broadcast_config(comm, config if rank == 0 else None)
    dataset = load_run_data(config)
    # every rank loads the same training set, so every rank resolves the same run length
    config = config.with_data_size(dataset.n_train)
    backend = rank_backend(config, comm)  # with cuda: one GPU per worker rank
    resume = args.resume is not None
    run_dir = None
    if rank == 0:  # every rank checkpoints into the run directory rank 0 chose
        try:
            run_dir = (
                args.resume if resume else rundir.create_run_dir(args.out, args.name, config=config)
            )
        except Exception as exc:  # the other ranks wait in the broadcast: end the job
            print(f"snep: error: rank 0: {exc}", file=sys.stderr, flush=True)
            comm.Abort(2)
    run_dir = Path(comm.bcast(str(run_dir) if run_dir else "", root=0))
    checkpoints = run_dir / rundir.CHECKPOINTS_DIR
    if resume and rank == 0:  # records made after the server's checkpoint are made again
        from snep.transport.mpi import checkpoint_records

        kept = checkpoint_records(checkpoints / "server.npz")
        if kept is not None:
            rundir.keep_metrics(run_dir, kept)
    if rank != 0:
        run_mpi(config, dataset, backend, checkpoint_dir=checkpoints, resume=resume)
        return 0
    t = config.train
    banner = (
        f"snep: {t.method} over MPI: {t.server_ranks} server + {t.workers} worker rank(s), "
        f"{t.iterations} iterations, data {dataset.name!r}"
    )

    def train(callback: Callable, run_dir: Path) -> Any:
        return run_mpi(
            config, dataset, backend, callback, checkpoint_dir=checkpoints, resume=resume
        )

    return _train_into_run_dir(args, config, dataset, backend, banner, train, run_dir)


def _train_into_run_dir(
    args: argparse.Namespace,
    config: Any,
    dataset: Any,
    backend: Any,
    banner: str,
    train: Callable[[Callable, Path], Any],
    run_dir: Path | None = None,
) -> int:
    """Create (or, with --resume, reuse) the run directory, run ``train(callback,
    run_dir)`` with metrics and progress, then write the outputs."""
    from snep.progress import ProgressReporter

    resuming = getattr(args, "resume", None) is not None
    if resuming:  # config.toml is rewritten only once the checkpoint has accepted the config
        run_dir = Path(args.resume)
    else:
        run_dir = run_dir or rundir.create_run_dir(args.out, args.name, config=config)
        rundir.write_config(run_dir, config)
    if not args.quiet:
        print(f"{banner}; run directory {run_dir}", flush=True)
    bar = not args.no_progress
    with (
        rundir.MetricsWriter(run_dir) as metrics,
        ProgressReporter(config.train.iterations, bar=bar, quiet=args.quiet) as progress,
    ):

        def callback(record: dict[str, Any]) -> None:
            metrics.write(record)
            progress(record)

        t0 = time.perf_counter()
        try:
            result = train(callback, run_dir)
        except KeyboardInterrupt:
            progress.close()
            print(
                f"snep: interrupted; the evaluations so far are in {run_dir / rundir.METRICS_FILE}"
                f"; continue with: snep train --resume {run_dir}",
                file=sys.stderr,
            )
            return 130
        wall = time.perf_counter() - t0
    if resuming:
        rundir.write_config(run_dir, config)
    _finish_run(args, config, dataset, backend, run_dir, result, wall)
    return 0


def _finish_run(args, config, dataset, backend, run_dir, result, wall) -> None:
    """Write posterior.npz, summary.json and plot.png; print the final table."""
    t = config.train
    result.posterior.save(run_dir / rundir.POSTERIOR_FILE)
    summary = rundir.make_summary(result, config, dataset, backend=backend.name, wall_seconds=wall)
    rundir.write_summary(run_dir, summary)
    if not args.no_plot:
        from snep.plot import plot_history

        hidden = list(config.model.hidden)
        title = f"{t.method}, {t.workers} worker(s), {dataset.name}, hidden {hidden}"
        plot_history(result.history, run_dir / rundir.PLOT_FILE, title)
    bma = t.bma_samples if METHODS[t.method].posterior else None
    if not args.quiet:
        print()
    split = "validation" if t.validation > 0 else "test"
    print(format_metrics_table(result.final, bma, title=f"final {split} metrics ({dataset.name})"))
    print(f"\ntrained in {wall:.1f} s; run directory: {run_dir}")
