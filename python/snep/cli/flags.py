"""The flags of ``snep train``, listed once.

Each :class:`Flag` names its config key (``section.key``, or ``section.table.key``),
so one table generates both the argument parser and the mapping of parsed flags onto
the configuration (:func:`flags_to_config`), and tells which flag set a key that turned
out invalid (:func:`flag_for_key`).  Help texts may hold ``{default}``: the dataclass
default of the flag's key (:class:`snep.config.Config`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snep.config import METHOD_PRESETS, METHODS

__all__ = ["TRAIN_FLAGS", "Flag", "add_flags", "flag_for_key", "flags_to_config"]

RUN = "run (config table [train])"
MODEL = "model and sampler (tables [model], [sampler])"
SNEP = "SNEP (table [snep])"
OUTPUT = "output"


def parse_hidden(text: str) -> tuple[int, ...]:
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


def positive_int(text: str) -> int:
    """Parse an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not an integer >= 1")
    return value


@dataclass(frozen=True)
class Flag:
    """One command-line flag.

    Attributes
    ----------
    names : tuple of str
        Option strings, e.g. ``("-q", "--quiet")``.
    help : str
        Help text; ``{default}`` is replaced by the default of ``key``.
    key : str, optional
        The config key the flag sets (``None``: a flag of the command, not of the
        configuration).
    group : str, optional
        Argument group of the help text.
    type, metavar, choices, dest, action, default
        As for :meth:`argparse.ArgumentParser.add_argument`.
    """

    names: tuple[str, ...]
    help: str
    key: str | None = None
    group: str | None = None
    type: Any = None
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    dest: str | None = None
    action: str | None = None
    default: Any = None

    @property
    def attr(self) -> str:
        """The attribute of the parsed namespace."""
        return self.dest or self.names[-1].lstrip("-").replace("-", "_")


def _switch(names: tuple[str, ...], key: str, group: str, help: str) -> Flag:
    """A ``store_true`` flag that sets a boolean config key (absent: not set)."""
    return Flag(names, help, key, group, action="store_true")


TRAIN_FLAGS: tuple[Flag, ...] = (
    Flag(("--config",), "TOML configuration file", metavar="FILE.toml"),
    Flag(
        ("--resume",),
        "continue an interrupted run from RUN_DIR/checkpoint.npz with RUN_DIR/config.toml "
        "(--iterations or --epochs may extend it); metrics are appended to its metrics.jsonl",
        metavar="RUN_DIR",
        type=Path,
    ),
    Flag(
        ("--preset",),
        "method preset under the data set's preset, the config file and the flags "
        "(config key train.preset; snep.config.METHOD_PRESETS): 'paper' is the paper's "
        "reference configuration (cold, noise-clipped Adam-SGLD: a MAP-like point with the "
        "variance at the floor v_lo), to replicate it (default {default!r}: the "
        "dataclass defaults)",
        key="train.preset",
        metavar="{" + ",".join(METHOD_PRESETS) + "}",
    ),
    Flag(
        ("--no-preset",),
        "ignore the data set's tuned preset (snep.config.DATA_PRESETS); the method "
        "preset still applies",
        action="store_true",
    ),
    Flag(
        ("--method",),
        "algorithm (default {default}); asgd and easgd are the distributed baselines",
        "train.method",
        RUN,
        metavar="{" + ",".join(METHODS) + "}",
    ),
    Flag(
        ("--workers",),
        "number of workers (default {default}; 1 for --method adam)",
        "train.workers",
        RUN,
        type=int,
        metavar="N",
    ),
    Flag(
        ("--iterations",),
        "iterations per worker; wins over the epochs of the layers below "
        "(default: derived from --epochs)",
        "train.iterations",
        RUN,
        type=int,
        metavar="N",
    ),
    Flag(
        ("--epochs",),
        "passes of each worker over its own shard: iterations = ceil(E * "
        "ceil(n_train / workers) / batch size), set once the data are loaded; wins over "
        "the iterations of the config file and presets (default {default}; "
        "not with --iterations)",
        "train.epochs",
        RUN,
        type=float,
        metavar="E",
    ),
    Flag(
        ("--batch-size",),
        "minibatch size (default {default})",
        "train.batch_size",
        RUN,
        type=int,
        metavar="N",
    ),
    Flag(
        ("--data",),
        "data set name (digits, mnist, omniglot, omniglot-alphabet) or path (default {default})",
        "train.data",
        RUN,
        metavar="NAME_OR_PATH",
    ),
    Flag(("--seed",), "random seed (default {default})", "train.seed", RUN, int, "S"),
    Flag(
        ("--eval-every",),
        "iterations per worker between evaluations (default {default})",
        "train.eval_every",
        RUN,
        type=int,
        metavar="N",
    ),
    Flag(
        ("--backend",),
        "auto, numpy, cpu or cuda (default {default})",
        "train.backend",
        RUN,
        metavar="NAME",
    ),
    Flag(
        ("--server-ranks",),
        "MPI: split the posterior server over K ranks, each serving a slice of the "
        "parameters (launch with mpiexec -n workers + K; default {default})",
        "train.server_ranks",
        RUN,
        type=int,
        metavar="K",
    ),
    Flag(
        ("--threads",),
        "BLAS/OpenMP/Numba threads (sets OPENBLAS/OMP/NUMBA_NUM_THREADS; "
        "default: library defaults)",
        "train.threads",
        RUN,
        type=int,
        metavar="N",
    ),
    Flag(
        ("--sharding",),
        "how the training data are split over workers (default {default})",
        "train.sharding",
        RUN,
        metavar="{iid,dirichlet}",
    ),
    Flag(
        ("--gemm",),
        "GEMMs of the cuda backend's MLP: matmul (cuBLAS, default), tiled (numba.cuda), "
        "tiled-cpp (CUDA C++) or tiled-tf32 (C++ on TF32 tensor cores)",
        "train.gemm",
        RUN,
        metavar="NAME",
    ),
    _switch(
        ("--cuda-graph",),
        "train.cuda_graph",
        RUN,
        "capture each worker iteration in a CUDA graph and replay it (backend cuda)",
    ),
    _switch(
        ("--cuda-aware-mpi",),
        "train.cuda_aware_mpi",
        RUN,
        "under mpiexec with backend cuda: the MPI library is CUDA-aware, so workers hand "
        "it device buffers instead of staging messages through host memory",
    ),
    Flag(
        ("--dirichlet-alpha",),
        "concentration of dirichlet sharding (default {default})",
        "train.dirichlet_alpha",
        RUN,
        type=float,
        metavar="A",
    ),
    Flag(
        ("--validation",),
        "hold out this stratified fraction of the training data (split seed 0) and "
        "evaluate on it instead of the test set: for choosing settings (default 0: off)",
        "train.validation",
        RUN,
        type=float,
        metavar="FRACTION",
    ),
    Flag(
        ("--hidden",),
        "hidden layer widths ('none': logistic regression; default {default})",
        "model.hidden",
        MODEL,
        type=parse_hidden,
        metavar="100,50",
    ),
    Flag(
        ("--sampler",),
        "adam_sgld, sgld, psgld or sghmc (default {default})",
        "sampler.kind",
        MODEL,
        metavar="KIND",
    ),
    Flag(
        ("--step-size",),
        "sampler step size (default {default}, per datum for SGLD/SGHMC: see --step-unit); "
        "the baselines' Adam learning rate (with --step-unit absolute)",
        "sampler.step_size",
        MODEL,
        type=float,
        metavar="H",
    ),
    Flag(
        ("--step-unit",),
        "'data': SGLD/SGHMC's step is per datum, divided by the data size "
        "(default {default}); 'absolute': used as it is",
        "sampler.step_unit",
        MODEL,
        choices=("data", "absolute"),
    ),
    Flag(
        ("--temperature",),
        "the likelihood is divided by T, the prior is not (default {default}: the "
        "posterior; T < 1 sharpens it)",
        "sampler.temperature",
        MODEL,
        type=float,
        metavar="T",
    ),
    Flag(
        ("--chains",),
        "chains per worker, batched (default {default})",
        "snep.n_chains",
        SNEP,
        type=int,
        metavar="C",
        dest="n_chains",
    ),
    Flag(
        ("--site-step",),
        "site step size, snep.site_step.value (default {default})",
        "snep.site_step.value",
        SNEP,
        type=float,
        metavar="EPS",
    ),
    Flag(
        ("--beta",),
        "power of the tilted distributions, in (0, 1] (default {default})",
        "snep.beta",
        SNEP,
        type=float,
        metavar="B",
    ),
    _switch(("--p-snep",), "snep.p_snep", SNEP, "p-SNEP: beta = 1/workers"),
    Flag(
        ("--n-sync",),
        "iterations between pushes to the server (default {default})",
        "snep.n_sync",
        SNEP,
        type=int,
        metavar="N",
    ),
    Flag(
        ("--n-inner",),
        "iterations between outer (anchor) steps (default {default})",
        "snep.n_inner",
        SNEP,
        type=int,
        metavar="N",
    ),
    Flag(
        ("--prior-var",),
        "prior variance sigma0^2 (default {default})",
        "snep.prior_var",
        SNEP,
        type=float,
        metavar="V",
    ),
    Flag(
        ("--v-lo",),
        "site variance floor; caps the precision at 1/prior_var + workers/v_lo (default {default})",
        "snep.v_lo",
        SNEP,
        type=float,
        metavar="V",
    ),
    Flag(
        ("--set",),
        "set any config key, VALUE in TOML syntax (repeatable; wins over the other "
        "flags), e.g. --set sampler.kind=sgld --set snep.v_init=0.003",
        group=SNEP,
        metavar="SECTION.KEY=VALUE",
        dest="set_keys",
        action="append",
        default=[],
    ),
    Flag(("--out",), "parent of the run directory (runs/)", None, OUTPUT, Path, "DIR"),
    Flag(
        ("--name",),
        "run directory name (YYYYmmdd-HHMMSS-<method>-<N>w)",
        group=OUTPUT,
        metavar="NAME",
    ),
    Flag(
        ("--no-progress",),
        "no live progress bar: one line per evaluation",
        group=OUTPUT,
        action="store_true",
    ),
    Flag(("-q", "--quiet"), "no per-evaluation output", group=OUTPUT, action="store_true"),
    Flag(("--no-plot",), "do not write plot.png", group=OUTPUT, action="store_true"),
)


def _default_text(key: str) -> str:
    from snep.config import Config

    value: Any = Config()
    for part in key.split("."):
        value = getattr(value, part)
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, float):
        return format(value, "g")
    return str(value)


def add_flags(parser: argparse.ArgumentParser, flags: Sequence[Flag]) -> None:
    """Add ``flags`` to ``parser``, in argument groups by :attr:`Flag.group`."""
    groups: dict[str | None, Any] = {None: parser}
    for flag in flags:
        if flag.group not in groups:
            groups[flag.group] = parser.add_argument_group(flag.group)
        kwargs: dict[str, Any] = {"help": flag.help}
        if flag.key is not None and "{default" in flag.help:
            kwargs["help"] = flag.help.format(default=_default_text(flag.key))
        if flag.action is not None:
            kwargs["action"] = flag.action
        if flag.action == "store_true" and flag.key is not None:
            kwargs["default"] = None  # absent: the layers below decide
        elif flag.default is not None:
            kwargs["default"] = flag.default
        for name in ("type", "metavar", "choices", "dest"):
            if getattr(flag, name) is not None:
                kwargs[name] = getattr(flag, name)
        groups[flag.group].add_argument(*flag.names, **kwargs)


def flags_to_config(args: argparse.Namespace, flags: Sequence[Flag]) -> dict[str, Any]:
    """The nested config mapping (section -> key -> value) of the flags given."""
    out: dict[str, Any] = {}
    for flag in flags:
        value = getattr(args, flag.attr, None)
        if flag.key is None or value is None:
            continue
        *tables, last = flag.key.split(".")
        table = out
        for name in tables:
            table = table.setdefault(name, {})
        table[last] = value
    return out


def flag_for_key(message: str, args: argparse.Namespace, flags: Sequence[Flag]) -> str | None:
    """The flag given on the command line whose key ``message`` names, if any."""
    for flag in flags:
        if flag.key and getattr(args, flag.attr, None) is not None:
            if f"'{flag.key}'" in message:
                return flag.names[-1]
    return None
