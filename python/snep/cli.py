"""Command-line interface: ``snep train``, ``snep evaluate``, ``snep info``.

``snep train`` runs SNEP with a posterior server (Hasenclever et al.,
"Distributed Bayesian Learning with Stochastic Natural Gradient Expectation
Propagation and the Posterior Server", JMLR 18 (2017)), its EP variant or the
Adam baseline in this process, and writes a run directory
(:mod:`snep.rundir`).  The configuration is layered as defaults < method preset
(``--preset``) < the data set's preset for it (not with ``--no-preset``) < ``--config``
TOML file < flags (:func:`snep.config.with_preset`), validated by
:class:`snep.config.Config`, and its run length (``--epochs``) resolved once the data
are loaded, before ``config.toml`` is written.

Only light modules are imported at module level: ``--threads`` sets
``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS`` and ``NUMBA_NUM_THREADS`` before
NumPy and Numba are imported (DESIGN §3, Threads).

Errors of snep (:class:`~snep.errors.SnepError`: bad configuration, missing
data, unavailable backend) are printed as one line ``snep: error: ...`` and
give exit status 2; any other exception propagates with its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import snep
from snep.errors import ConfigError, SnepError

if TYPE_CHECKING:
    from snep.config import Config

__all__ = ["build_parser", "format_metrics_table", "main", "resolve_config"]

PROG = "snep"
THREAD_ENV_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS")

# flag destination -> (config section, key)
_FLAG_KEYS: dict[str, tuple[str, str]] = {
    "preset": ("train", "preset"),
    "workers": ("train", "workers"),
    "iterations": ("train", "iterations"),
    "epochs": ("train", "epochs"),
    "batch_size": ("train", "batch_size"),
    "method": ("train", "method"),
    "data": ("train", "data"),
    "seed": ("train", "seed"),
    "eval_every": ("train", "eval_every"),
    "backend": ("train", "backend"),
    "threads": ("train", "threads"),
    "cuda_graph": ("train", "cuda_graph"),
    "gemm": ("train", "gemm"),
    "cuda_aware_mpi": ("train", "cuda_aware_mpi"),
    "sharding": ("train", "sharding"),
    "dirichlet_alpha": ("train", "dirichlet_alpha"),
    "validation": ("train", "validation"),
    "hidden": ("model", "hidden"),
    "sampler": ("sampler", "kind"),
    "step_size": ("sampler", "step_size"),
    "step_unit": ("sampler", "step_unit"),
    "temperature": ("sampler", "temperature"),
    "n_chains": ("snep", "n_chains"),
    "beta": ("snep", "beta"),
    "p_snep": ("snep", "p_snep"),
    "n_sync": ("snep", "n_sync"),
    "n_inner": ("snep", "n_inner"),
    "prior_var": ("snep", "prior_var"),
    "v_lo": ("snep", "v_lo"),
}

_ROWS = (("mean", "posterior mean"), ("avg", "running average"), ("bma", "model average (BMA)"))


# --------------------------------------------------------------------------- parser


def _hidden(text: str) -> tuple[int, ...]:
    """Parse ``--hidden``: comma-separated layer widths; ``""``/``none`` for none."""
    text = text.strip()
    if text.lower() in ("", "none"):
        return ()
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"config key 'model.hidden' = {text!r} is invalid: expected comma-separated "
            "integer layer widths such as 100,50 (or 'none' for logistic regression)"
        ) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not an integer >= 1")
    return value


def _add_train(sub: Any) -> None:
    from snep.config import METHOD_PRESETS, Config

    d = Config()  # the defaults, for the help text
    p = sub.add_parser(
        "train",
        help="train a posterior and write a run directory",
        description=(
            "Train with SNEP + the posterior server (or EP, or the Adam baseline) in this "
            "process and write a run directory (config.toml, metrics.jsonl, posterior.npz, "
            "summary.json, plot.png). Flags override the --config file, which overrides the "
            "data set's preset, which overrides the method preset (--preset), which overrides "
            "the defaults."
        ),
    )
    p.add_argument("--config", metavar="FILE.toml", help="TOML configuration file")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        type=Path,
        help="continue an interrupted run from RUN_DIR/checkpoint.npz with RUN_DIR/config.toml "
        "(--iterations or --epochs may extend it); metrics are appended to its metrics.jsonl",
    )
    p.add_argument(
        "--preset",
        metavar="{" + ",".join(METHOD_PRESETS) + "}",
        help="method preset under the data set's preset, the config file and the flags "
        "(config key train.preset; snep.config.METHOD_PRESETS): 'paper' is the paper's "
        "reference configuration (cold, noise-clipped Adam-SGLD: a MAP-like point with the "
        f"variance at the floor v_lo), to replicate it (default {d.train.preset!r}: the "
        "dataclass defaults)",
    )
    p.add_argument(
        "--no-preset",
        action="store_true",
        help="ignore the data set's tuned preset (snep.config.DATA_PRESETS); the method "
        "preset still applies",
    )
    g = p.add_argument_group("run (config table [train])")
    g.add_argument(
        "--method",
        metavar="{snep,ep,adam,asgd,easgd}",
        help=f"algorithm (default {d.train.method}); asgd and easgd are the distributed baselines",
    )
    g.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help=f"number of workers (default {d.train.workers}; 1 for --method adam)",
    )
    g.add_argument(
        "--iterations",
        type=int,
        metavar="N",
        help="iterations per worker; wins over the epochs of the layers below "
        "(default: derived from --epochs)",
    )
    g.add_argument(
        "--epochs",
        type=float,
        metavar="E",
        help="passes of each worker over its own shard: iterations = ceil(E * "
        "ceil(n_train / workers) / batch size), set once the data are loaded; wins over "
        f"the iterations of the config file and presets (default {d.train.epochs:g}; "
        "not with --iterations)",
    )
    g.add_argument(
        "--batch-size", type=int, metavar="N", help=f"minibatch size (default {d.train.batch_size})"
    )
    g.add_argument(
        "--data",
        metavar="NAME_OR_PATH",
        help="data set name (digits, mnist, omniglot, omniglot-alphabet) or path "
        f"(default {d.train.data})",
    )
    g.add_argument("--seed", type=int, metavar="S", help=f"random seed (default {d.train.seed})")
    g.add_argument(
        "--eval-every",
        type=int,
        metavar="N",
        help=f"iterations per worker between evaluations (default {d.train.eval_every})",
    )
    g.add_argument(
        "--backend", metavar="NAME", help=f"auto, numpy, cpu or cuda (default {d.train.backend})"
    )
    g.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="BLAS/OpenMP/Numba threads (sets OPENBLAS/OMP/NUMBA_NUM_THREADS; "
        "default: library defaults)",
    )
    g.add_argument(
        "--sharding",
        metavar="{iid,dirichlet}",
        help=f"how the training data are split over workers (default {d.train.sharding})",
    )
    g.add_argument(
        "--gemm",
        metavar="NAME",
        help="GEMMs of the cuda backend's MLP: matmul (cuBLAS, default), tiled (numba.cuda), "
        "tiled-cpp (CUDA C++) or tiled-tf32 (C++ on TF32 tensor cores)",
    )
    g.add_argument(
        "--cuda-graph",
        action="store_true",
        default=None,
        help="capture each worker iteration in a CUDA graph and replay it (backend cuda)",
    )
    g.add_argument(
        "--cuda-aware-mpi",
        action="store_true",
        default=None,
        help="under mpiexec with backend cuda: the MPI library is CUDA-aware, so workers hand "
        "it device buffers instead of staging messages through host memory",
    )
    g.add_argument(
        "--dirichlet-alpha",
        type=float,
        metavar="A",
        help=f"concentration of dirichlet sharding (default {d.train.dirichlet_alpha})",
    )
    g.add_argument(
        "--validation",
        type=float,
        metavar="FRACTION",
        help="hold out this stratified fraction of the training data (split seed 0) and "
        "evaluate on it instead of the test set: for choosing settings (default 0: off)",
    )
    g = p.add_argument_group("model and sampler (tables [model], [sampler])")
    g.add_argument(
        "--hidden",
        type=_hidden,
        metavar="100,50",
        help="hidden layer widths ('none': logistic regression; default "
        + ",".join(map(str, d.model.hidden))
        + ")",
    )
    g.add_argument(
        "--sampler",
        metavar="KIND",
        help=f"adam_sgld, sgld, psgld or sghmc (default {d.sampler.kind})",
    )
    g.add_argument(
        "--step-size",
        type=float,
        metavar="H",
        help=f"sampler step size (default {d.sampler.step_size}, per datum for SGLD/SGHMC: "
        "see --step-unit); the baselines' Adam learning rate (with --step-unit absolute)",
    )
    g.add_argument(
        "--step-unit",
        choices=("data", "absolute"),
        help=f"'data': SGLD/SGHMC's step is per datum, divided by the data size "
        f"(default {d.sampler.step_unit}); 'absolute': used as it is",
    )
    g.add_argument(
        "--temperature",
        type=float,
        metavar="T",
        help=f"the likelihood is divided by T, the prior is not (default "
        f"{d.sampler.temperature}: the posterior; T < 1 sharpens it)",
    )
    g = p.add_argument_group("SNEP (table [snep])")
    g.add_argument(
        "--chains",
        dest="n_chains",
        type=int,
        metavar="C",
        help=f"chains per worker, batched (default {d.snep.n_chains})",
    )
    g.add_argument(
        "--site-step",
        type=float,
        metavar="EPS",
        help=f"site step size, snep.site_step.value (default {d.snep.site_step.value})",
    )
    g.add_argument(
        "--beta",
        type=float,
        metavar="B",
        help=f"power of the tilted distributions, in (0, 1] (default {d.snep.beta})",
    )
    g.add_argument(
        "--p-snep",
        action="store_true",
        default=None,
        help="p-SNEP: beta = 1/workers",
    )
    g.add_argument(
        "--n-sync",
        type=int,
        metavar="N",
        help=f"iterations between pushes to the server (default {d.snep.n_sync})",
    )
    g.add_argument(
        "--n-inner",
        type=int,
        metavar="N",
        help=f"iterations between outer (anchor) steps (default {d.snep.n_inner})",
    )
    g.add_argument(
        "--prior-var",
        type=float,
        metavar="V",
        help=f"prior variance sigma0^2 (default {d.snep.prior_var})",
    )
    g.add_argument(
        "--v-lo",
        type=float,
        metavar="V",
        help=f"site variance floor; caps the precision at 1/prior_var + workers/v_lo "
        f"(default {d.snep.v_lo})",
    )
    g.add_argument(
        "--set",
        dest="set_keys",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="set any config key, VALUE in TOML syntax (repeatable; wins over the other "
        "flags), e.g. --set sampler.kind=sgld --set snep.v_init=0.003",
    )
    g = p.add_argument_group("output")
    g.add_argument("--out", metavar="DIR", type=Path, help="parent of the run directory (runs/)")
    g.add_argument(
        "--name", metavar="NAME", help="run directory name (YYYYmmdd-HHMMSS-<method>-<N>w)"
    )
    g.add_argument(
        "--no-progress",
        action="store_true",
        help="no live progress bar: one line per evaluation",
    )
    g.add_argument("-q", "--quiet", action="store_true", help="no per-evaluation output")
    g.add_argument("--no-plot", action="store_true", help="do not write plot.png")
    p.set_defaults(command=_cmd_train)


def _add_evaluate(sub: Any) -> None:
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
        type=_positive_int,
        metavar="S",
        help="posterior draws of the model average (default: the run's train.bma_samples)",
    )
    p.add_argument("--backend", metavar="NAME", help="auto, numpy, cpu or cuda (default: run's)")
    p.set_defaults(command=_cmd_evaluate)


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


def _add_experiment(sub: Any) -> None:
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
    p.add_argument("--jobs", type=_positive_int, default=1, metavar="N", help="runs at once")
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
    p.set_defaults(command=_cmd_experiment)


def _cmd_experiment(args: argparse.Namespace) -> int:
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


def _add_info(sub: Any) -> None:
    p = sub.add_parser(
        "info",
        help="versions, backends and thread settings",
        description="Print snep's version, available backends, library versions and threads.",
    )
    p.set_defaults(command=_cmd_info)


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
    _add_train(sub)
    _add_evaluate(sub)
    _add_experiment(sub)
    _add_info(sub)
    return parser


# --------------------------------------------------------------------------- config


def _read_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(
            f"config file {str(path)!r} does not exist; pass an existing TOML file to --config"
        ) from None
    except IsADirectoryError:
        raise ConfigError(
            f"config file {str(path)!r} is a directory; pass a TOML file to --config"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None


def resolve_config(args: argparse.Namespace) -> Config:
    """The run's :class:`~snep.config.Config`, layered (lowest first): defaults < method
    preset (``--preset`` / ``train.preset``) < the data set's preset for it (skipped with
    ``--no-preset``) < ``--config`` file < flags (``--set`` last); see
    :func:`snep.config.with_preset`.

    ``--method adam`` implies ``--workers 1`` unless ``--workers`` is given (a
    config file with ``method = "adam"`` and no ``workers`` key likewise).
    ``--epochs`` and ``--iterations`` together are an error.  With ``train.iterations
    = 0`` the run length is still to be derived from the data set's size
    (:meth:`~snep.config.Config.with_data_size`, which ``snep train`` calls once the
    data are loaded).
    """
    from snep.config import Config, with_preset

    if getattr(args, "epochs", None) is not None and getattr(args, "iterations", None) is not None:
        raise ConfigError(
            f"--epochs {args.epochs:g} and --iterations {args.iterations} both set the run "
            "length; pass one of them"
        )
    raw: dict[str, Any] = {}
    if args.config:
        raw = _read_toml(Path(args.config))
    flags: dict[str, Any] = {}
    for dest, (section, key) in _FLAG_KEYS.items():
        value = getattr(args, dest, None)
        if value is not None:
            flags.setdefault(section, {})[key] = value
    if args.site_step is not None:
        flags.setdefault("snep", {})["site_step"] = {"value": args.site_step}
    for assignment in getattr(args, "set_keys", None) or ():  # --set wins over every flag
        _apply_set(flags, assignment)
    flag_train = flags.get("train", {})
    file_train = raw.get("train", {})
    file_train = file_train if isinstance(file_train, Mapping) else {}
    method = flag_train.get("method", file_train.get("method"))
    if method == "adam" and "workers" not in flag_train:
        if args.method == "adam" or "workers" not in file_train:
            flags.setdefault("train", {})["workers"] = 1
    try:
        return Config.from_dict(with_preset(raw, flags, data_preset=not args.no_preset))
    except ConfigError as exc:
        raise ConfigError(f"{exc}{_where(exc, args)}") from None


def _apply_set(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``--set section.key[.sub]=VALUE`` (VALUE in TOML syntax; a bare word is a
    string) to the nested config mapping ``data``."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    key, sep, text = assignment.partition("=")
    parts = [k.strip() for k in key.split(".")]
    if not sep or len(parts) < 2 or not all(parts):
        raise ConfigError(
            f"--set {assignment!r}: expected SECTION.KEY=VALUE, e.g. --set snep.v_lo=0.003"
        )
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()  # a bare word: a string such as sgld
    table = data
    for part in parts[:-1]:
        nxt = table.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {assignment!r}: {part!r} is not a table")
        table = nxt
    table[parts[-1]] = value


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


def _where(exc: ConfigError, args: argparse.Namespace) -> str:
    """Which flag or file set the offending key (a hint appended to the message)."""
    message = str(exc)
    pairs = [*_FLAG_KEYS.items(), ("site_step", ("snep", "site_step.value"))]
    for dest, (section, key) in pairs:
        if getattr(args, dest, None) is not None and f"'{section}.{key}'" in message:
            flag = "--" + dest.replace("_", "-")
            return f" (set by {flag})"
    if args.config:
        return f" (in config file {str(args.config)!r})"
    return ""


#: Thread pools that stop spinning when idle.  OpenBLAS's threads busy-wait after
#: each GEMM and OpenMP's after each fused pass; on shared cores each pool then
#: waits for the other: a 2-thread worker iteration took 8.0 ms with the
#: defaults and 2.7-3.1 ms with these (784-500-300-10, batch 100; bench/).
#: Values already in the environment win.
QUIET_POOL_ENV = {"OPENBLAS_THREAD_TIMEOUT": "4", "OMP_WAIT_POLICY": "passive"}


def _apply_threads(threads: int) -> None:
    """Set the thread environment variables before NumPy/Numba/OpenMP load."""
    for var, value in QUIET_POOL_ENV.items():
        os.environ.setdefault(var, value)
    if threads > 0:
        for var in THREAD_ENV_VARS:
            os.environ[var] = str(threads)


# --------------------------------------------------------------------------- output


def format_metrics_table(
    metrics: Mapping[str, Any], bma_samples: int | None = None, title: str | None = None
) -> str:
    """Plain-text table of test error (%), NLL and ECE per estimate present in ``metrics``."""
    rows = []
    for prefix, label in _ROWS:
        if f"{prefix}_error" not in metrics:
            continue
        if prefix == "bma" and bma_samples:
            label = f"{label[:-1]}, S={bma_samples})"

        def cell(key: str, fmt: str, scale: float = 1.0) -> str:
            value = metrics.get(key)
            return format(value * scale, fmt) if isinstance(value, (int, float)) else "-"

        rows.append(
            (
                label,
                cell(f"{prefix}_error", ".2f", 100.0),
                cell(f"{prefix}_nll", ".4f"),
                cell(f"{prefix}_ece", ".4f"),
            )
        )
    header = ("estimate", "test error %", "NLL", "ECE")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    lines = [title] if title else []

    def fmt_row(row: Sequence[str]) -> str:
        cells = [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        return "  ".join([row[0].ljust(widths[0]), *cells])

    lines.append(fmt_row(header))
    lines.append("  ".join("-" * w for w in widths))
    lines.extend(fmt_row(r) for r in rows)
    if not rows:
        lines.append("(no metrics)")
    return "\n".join(lines)


# --------------------------------------------------------------------------- commands

CHECKPOINT_FILE = "checkpoint.npz"


def _cmd_train(args: argparse.Namespace) -> int:
    from snep.transport.env import mpi_world_size

    ranks = mpi_world_size()
    if args.resume is not None:
        if args.config is None:
            args.config = str(args.resume / "config.toml")
        if not Path(args.config).is_file():
            raise ConfigError(
                f"--resume {str(args.resume)!r}: no config.toml there; pass a run directory "
                "written by snep train"
            )
    config = resolve_config(args)
    if ranks > 1 and config.train.threads == 0 and ranks >= (os.cpu_count() or 1):
        # ranks share the cores: one BLAS/OpenMP/Numba thread each (DESIGN §3)
        config = config.replace(train={"threads": 1})
    _apply_threads(config.train.threads)
    if ranks > 1:
        return _cmd_train_mpi(args, config)

    # heavy imports only now, after the thread variables are set
    from snep.algorithm.runner import check_backend, fit
    from snep.backends import get_backend

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
    if t.method == "adam":
        return _train_into_run_dir(
            args, config, dataset, backend, banner, lambda cb: fit(config, dataset, backend, cb)
        )

    def run(cb: Callable, run_dir: Path) -> Any:
        resume = None if args.resume is None else args.resume / CHECKPOINT_FILE
        return fit(
            config, dataset, backend, cb, checkpoint=run_dir / CHECKPOINT_FILE, resume=resume
        )

    return _train_into_run_dir(args, config, dataset, backend, banner, run, needs_dir=True)


def _train_into_run_dir(
    args,
    config,
    dataset,
    backend,
    banner: str,
    run: Callable,
    needs_dir: bool = False,
    run_dir: Path | None = None,
) -> int:
    """Create (or, with --resume, reuse) the run directory, run ``run(callback)`` (or
    ``run(callback, run_dir)``) with metrics and progress, then write the outputs."""
    from snep import rundir
    from snep.progress import ProgressReporter

    resuming = getattr(args, "resume", None) is not None
    if resuming:  # config.toml is rewritten only once the checkpoint has accepted the config
        run_dir = Path(args.resume)
    else:
        run_dir = run_dir or rundir.create_run_dir(args.out, args.name, config=config)
        rundir.write_config(run_dir, config)
    if not args.quiet:
        print(f"{banner}; run directory {run_dir}", flush=True)
    with (
        rundir.MetricsWriter(run_dir) as metrics,
        ProgressReporter(
            config.train.iterations, bar=not args.no_progress, quiet=args.quiet
        ) as progress,
    ):

        def callback(record: dict[str, Any]) -> None:
            metrics.write(record)
            progress(record)

        t0 = time.perf_counter()
        try:
            result = run(callback, run_dir) if needs_dir else run(callback)
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


def _cmd_train_mpi(args: argparse.Namespace, config: Any) -> int:
    """``mpiexec -n N+1 snep train --workers N``: rank 0 serves and writes the run directory."""
    from mpi4py import MPI

    from snep import rundir
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
        run_dir = (
            Path(args.resume)
            if resume
            else rundir.create_run_dir(args.out, args.name, config=config)
        )
    run_dir = Path(comm.bcast(str(run_dir) if run_dir else "", root=0))
    checkpoints = run_dir / "checkpoints"
    if rank != 0:
        run_mpi(config, dataset, backend, checkpoint_dir=checkpoints, resume=resume)
        return 0
    t = config.train
    banner = (
        f"snep: {t.method} over MPI: 1 server + {t.workers} worker rank(s), "
        f"{t.iterations} iterations, data {dataset.name!r}"
    )
    return _train_into_run_dir(
        args, config, dataset, backend, banner,
        lambda cb: run_mpi(config, dataset, backend, cb, checkpoint_dir=checkpoints, resume=resume),
        run_dir=run_dir,
    )  # fmt: skip


def _finish_run(args, config, dataset, backend, run_dir, result, wall) -> None:
    from snep import rundir

    t = config.train
    result.posterior.save(run_dir / rundir.POSTERIOR_FILE)
    summary = rundir.make_summary(result, config, dataset, backend=backend.name, wall_seconds=wall)
    rundir.write_summary(run_dir, summary)
    if not args.no_plot:
        from snep.plot import plot_history

        hidden = list(config.model.hidden)
        title = f"{t.method}, {t.workers} worker(s), {dataset.name}, hidden {hidden}"
        plot_history(result.history, run_dir / rundir.PLOT_FILE, title)
    bma = None if t.method == "adam" else t.bma_samples
    if not args.quiet:
        print()
    split = "validation" if t.validation > 0 else "test"
    print(format_metrics_table(result.final, bma, title=f"final {split} metrics ({dataset.name})"))
    print(f"\ntrained in {wall:.1f} s; run directory: {run_dir}")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from snep.config import load_config

    run_dir: Path = args.run_dir
    config_file = run_dir / "config.toml"  # snep.rundir.CONFIG_FILE (rundir imports NumPy)
    if config_file.is_file():
        try:  # the run's thread setting, before NumPy and Numba load
            _apply_threads(load_config(config_file).train.threads)
        except ConfigError:
            pass  # load_run reports it

    from snep import rundir

    config, posterior = rundir.load_run(run_dir)
    overrides: dict[str, Any] = {}
    if args.samples is not None:
        overrides["bma_samples"] = args.samples
    if args.backend is not None:
        overrides["backend"] = args.backend
    if overrides:
        config = config.replace(train=overrides)

    from snep.backends import get_backend
    from snep.data.loaders import load_dataset
    from snep.errors import DataError
    from snep.evaluate import Evaluator
    from snep.io import save_json

    source = args.data if args.data is not None else config.train.data
    dataset = load_dataset(source)
    sizes = posterior.spec.layer_sizes
    if sizes[0] != dataset.n_features or sizes[-1] != dataset.n_classes:
        raise DataError(
            f"data set {source!r} has {dataset.n_features} features and {dataset.n_classes} "
            f"classes, but the posterior in {str(run_dir)!r} has layer sizes {list(sizes)}; "
            "pass the run's data set with --data"
        )
    backend = get_backend(config.train.backend, config.train.threads)
    evaluator = Evaluator(posterior.spec, dataset, backend, config)
    t0 = time.perf_counter()
    if config.train.method == "adam":  # a point estimate: no model average
        metrics = evaluator.point(posterior.mean, "mean_")
        samples = None
    else:
        metrics = evaluator(posterior)
        samples = config.train.bma_samples
    wall = time.perf_counter() - t0
    print(
        format_metrics_table(
            metrics, samples, title=f"test metrics of {run_dir} on {dataset.name!r}"
        )
    )
    out = save_json(
        run_dir / rundir.EVALUATION_FILE,
        rundir.to_jsonable(
            {
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
        ),
    )
    print(f"\nwrote {out}")
    return 0


def _cuda_info() -> list[str]:
    """What the cuda backend would use here: CuPy and its devices, and where the kernels
    come from (the AOT fatbins CMake built with nvcc, or NVRTC at first use)."""
    import importlib.util
    import shutil

    from snep.backends import cuda_fused

    lines = []
    if importlib.util.find_spec("cupy") is None:
        lines.append("cuda: CuPy is not installed (pip install -e '.[cuda]')")
    else:
        try:
            import cupy

            n = cupy.cuda.runtime.getDeviceCount()
            names = []
            for i in range(n):
                props = cupy.cuda.runtime.getDeviceProperties(i)
                name = props["name"]
                name = name.decode() if isinstance(name, bytes) else str(name)
                names.append(f"{i}: {name} (sm_{props['major']}{props['minor']})")
            devices = "; ".join(names) if names else "no device visible"
            lines.append(f"cuda: CuPy {cupy.__version__}, {devices}")
        except Exception as e:  # no driver, or the driver refused
            lines.append(f"cuda: CuPy is installed but no device is usable ({type(e).__name__})")
    try:
        kdir = cuda_fused.kernel_dir()
        fatbins = sorted(f.name for f in kdir.glob("*.fatbin"))
        where = ", ".join(fatbins) if fatbins else "none (NVRTC compiles the .cu at first use)"
        lines.append(f"cuda kernels: {kdir}; AOT fatbins: {where}")
    except Exception as e:
        lines.append(f"cuda kernels: {e}")
    lines.append(f"nvcc: {shutil.which('nvcc') or 'not found'}")
    return lines


def _cmd_info(args: argparse.Namespace) -> int:
    import platform

    import numba
    import numpy as np

    from snep.backends import available_backends

    print(f"snep {snep.__version__}")
    print(f"python {platform.python_version()} ({sys.executable})")
    print(f"platform {platform.platform()}")
    print(f"numpy {np.__version__}")
    print(f"numba {numba.__version__}")
    print(f"backends available: {', '.join(available_backends())}")
    for line in _cuda_info():
        print(line)
    print(f"cpu cores: {os.cpu_count()}")
    print("threads:")
    for var in THREAD_ENV_VARS:
        print(f"  {var}={os.environ.get(var, '(unset)')}")
    print(f"  numba threads in use: {numba.get_num_threads()}")
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return 0
    for pool in threadpool_info():
        api = pool.get("internal_api", pool.get("user_api", "?"))
        print(f"  {api}: {pool.get('num_threads')} threads ({pool.get('filepath', '')})")
    return 0


# --------------------------------------------------------------------------- main


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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
