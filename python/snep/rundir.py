"""Run directories: what ``snep train`` writes, and how to read it back.

A run directory is a stable interface between training, evaluation, plotting
and later experiments (Hasenclever et al., "Distributed Bayesian Learning with
Stochastic Natural Gradient Expectation Propagation and the Posterior Server",
JMLR 18 (2017); docs/method.md §1.6 for the metrics).  ``snep train`` creates one
per run, by default ``runs/YYYYmmdd-HHMMSS-<method>-<workers>w`` (an existing
non-empty directory is never overwritten: a suffix ``-2``, ``-3``, ... is
added).  It holds:

``config.toml``
    The resolved configuration (defaults, then the ``--config`` file, then the
    flags), with tables ``[train]``, ``[model]``, ``[sampler]``, ``[snep]`` and
    ``[snep.site_step]``.  :func:`snep.config.load_config` reads it back to an
    equal :class:`~snep.config.Config`.
``metrics.jsonl``
    One JSON object per line, one line per evaluation, in order, appended and
    flushed as each evaluation is made (a crashed or interrupted run keeps the
    evaluations it made).  Keys: ``iteration`` (mean iteration over workers),
    ``epochs_per_worker`` (iteration × batch size / n_train: the passes over the whole
    training set that one worker's minibatches amount to; ``--epochs`` counts passes
    over a worker's own shard, so a run of E epochs with n workers ends at E / n),
    ``wall_seconds``, ``comm_seconds``, the test metrics
    ``{mean,avg,bma}_{error,nll,ece}`` (``error`` is a fraction, ``nll`` in
    nats; ``avg_*`` only once the server averages, ``bma_*`` not for the
    ``adam`` baseline), server counters (``version``, ``pushes``,
    ``rejected``, ``staleness_mean``, ``staleness_max``), ``guard_fired`` and
    ``minibatch_loglik``.  Non-finite numbers are written as ``null``.
``posterior.npz``
    The learned posterior, written by :meth:`snep.posterior.Posterior.save`
    (float64 ``precision``, ``precision_mean``, ``mean``, ``var``, int64
    ``layer_sizes``, and ``average_mean``/``average_var`` when present).
``summary.json``
    ``snep_version``, ``created`` (ISO 8601), ``method``, ``workers``,
    ``backend`` (name of the backend that ran), ``threads`` (the thread
    environment variables), ``data`` (``name``, ``n_train``, ``n_test``,
    ``n_features``, ``n_classes``), ``P`` (number of parameters),
    ``layer_sizes``, ``wall_seconds`` (training time), ``final`` (the last
    evaluation record), ``stats`` (the run's counters, per worker too) and, for
    SNEP and EP, ``posterior_checks`` (:func:`snep.exact_checks.posterior_checks`:
    the fractions of weights at the precision cap and at ``v_hi``, and the variance
    ratio to the prior of the weights fed by inputs no training example lights).
``plot.png``
    Test error and NLL against epochs per worker (:func:`snep.plot.plot_history`);
    absent with ``--no-plot``.
``evaluation.json``
    Written by ``snep evaluate``: the re-scored metrics.

Every file except ``metrics.jsonl`` is written atomically (:mod:`snep.io`).

``checkpoint.npz`` (SNEP/EP runs) holds the whole in-process simulation state,
rewritten atomically at every evaluation; ``snep train --resume RUN_DIR``
continues from it (see :func:`snep.transport.inprocess.simulate`).
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

import snep
from snep.config import METHODS, Config, load_config
from snep.errors import DataError
from snep.io import atomic_write, save_json
from snep.threads import thread_settings

if TYPE_CHECKING:
    from snep.data.dataset import Dataset
    from snep.posterior import Posterior
    from snep.run.setup import FitResult

__all__ = [
    "CHECKPOINTS_DIR",
    "CHECKPOINT_FILE",
    "CONFIG_FILE",
    "EVALUATION_FILE",
    "METRICS_FILE",
    "PLOT_FILE",
    "POSTERIOR_FILE",
    "SUMMARY_FILE",
    "MetricsWriter",
    "create_run_dir",
    "default_run_name",
    "keep_metrics",
    "load_run",
    "make_summary",
    "read_metrics",
    "read_summary",
    "thread_settings",
    "to_jsonable",
    "toml_dumps",
    "write_config",
    "write_summary",
]

CONFIG_FILE = "config.toml"
METRICS_FILE = "metrics.jsonl"
POSTERIOR_FILE = "posterior.npz"
SUMMARY_FILE = "summary.json"
PLOT_FILE = "plot.png"
EVALUATION_FILE = "evaluation.json"

DEFAULT_ROOT = Path("runs")

#: SNEP/EP runs: the in-process run's state, rewritten at every evaluation
CHECKPOINT_FILE = "checkpoint.npz"
#: SNEP/EP runs under MPI: one checkpoint per rank in this subdirectory
CHECKPOINTS_DIR = "checkpoints"

_CONTENTS = (
    f"a run directory (written by `snep train`) contains {CONFIG_FILE}, {METRICS_FILE}, "
    f"{POSTERIOR_FILE}, {SUMMARY_FILE} and {PLOT_FILE}"
)


# --------------------------------------------------------------------------- naming


def default_run_name(config: Config | None = None, when: float | None = None) -> str:
    """``YYYYmmdd-HHMMSS-<method>-<workers>w`` (local time), or ``YYYYmmdd-HHMMSS-run``.

    Parameters
    ----------
    config : Config, optional
        Supplies the method and the number of workers.
    when : float, optional
        Seconds since the epoch (default: now).
    """
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(when))
    if config is None:
        return f"{stamp}-run"
    return f"{stamp}-{config.train.method}-{config.train.workers}w"


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def create_run_dir(
    root: str | Path | None = None,
    name: str | None = None,
    *,
    config: Config | None = None,
) -> Path:
    """Create a fresh run directory and return its path.

    Parameters
    ----------
    root : path, optional
        Parent directory (created if needed); default ``runs/``.
    name : str, optional
        Directory name; default :func:`default_run_name` of ``config``.
    config : Config, optional
        Used for the default name only.

    Returns
    -------
    Path
        ``root / name``, or ``root / name-K`` (smallest ``K >= 2``) when
        ``root / name`` already exists and is not an empty directory: an
        existing run is never overwritten.
    """
    root = DEFAULT_ROOT if root is None else Path(root)
    name = default_run_name(config) if name is None else name
    if not name or name in (".", "..") or "/" in name or os.sep in name:
        raise DataError(
            f"run name {name!r} is invalid: expected a single directory name "
            "(no path separators); use --out for the parent directory"
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"cannot create the run root directory {str(root)!r}: {exc}; "
            "pass a writable directory with --out"
        ) from None
    for k in range(1, 10_000):
        path = root / (name if k == 1 else f"{name}-{k}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            if _is_empty_dir(path):
                return path
    raise DataError(  # pragma: no cover - 10,000 runs of one name
        f"could not find a free run directory name for {name!r} in {str(root)!r}; pass --name"
    )


# --------------------------------------------------------------------------- TOML

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _toml_string(key)


def _toml_string(s: str) -> str:
    out = []
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _numpy() -> Any:
    """NumPy if it is loaded, else ``None`` (a NumPy value implies it is; this module
    imports nothing heavy)."""
    return sys.modules.get("numpy")


def _toml_value(value: Any, where: str) -> str:
    np = _numpy()
    if np is not None and isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # shortest round-tripping form, always with '.' or 'e'
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v, f"{where}[]") for v in value) + "]"
    raise TypeError(
        f"cannot write {where} = {value!r} ({type(value).__name__}) to TOML: expected a "
        "string, bool, int, float, list or table"
    )


def toml_dumps(data: Mapping[str, Any]) -> str:
    """Serialise a nested mapping to TOML.

    Top-level scalars come first, then one ``[table]`` per mapping (nested
    mappings become dotted tables such as ``[snep.site_step]``).  Strings are
    quoted basic strings, bools lowercase, floats written with :func:`repr` (so
    they read back bit for bit), sequences as arrays.  ``None`` has no TOML
    form and raises :class:`TypeError`.
    """
    lines: list[str] = []

    def table(prefix: tuple[str, ...], values: Mapping[str, Any]) -> None:
        scalars = [(k, v) for k, v in values.items() if not isinstance(v, Mapping)]
        tables = [(k, v) for k, v in values.items() if isinstance(v, Mapping)]
        if prefix:
            if lines:
                lines.append("")
            lines.append("[" + ".".join(_toml_key(p) for p in prefix) + "]")
        for k, v in scalars:
            where = ".".join((*prefix, str(k)))
            lines.append(f"{_toml_key(str(k))} = {_toml_value(v, where)}")
        for k, v in tables:
            table((*prefix, str(k)), v)

    table((), data)
    return "\n".join(lines) + "\n"


def write_config(run_dir: str | Path, config: Config) -> Path:
    """Write ``config.toml`` (the resolved ``config``) atomically; returns its path."""
    header = (
        f"# Resolved configuration of a snep run (snep {snep.__version__}).\n"
        "# Re-run it with: snep train --config config.toml\n\n"
    )
    text = header + toml_dumps(config.to_dict())
    return atomic_write(Path(run_dir) / CONFIG_FILE, lambda fh: fh.write(text.encode()))


# --------------------------------------------------------------------------- JSON


def to_jsonable(obj: Any) -> Any:
    """``obj`` with numpy scalars/arrays, tuples and paths made plain JSON.

    Non-finite floats become ``None`` (JSON has no NaN), mapping keys become
    strings; anything else that JSON cannot hold raises :class:`TypeError`.
    """
    np = _numpy()
    if np is not None and isinstance(obj, np.ndarray):
        obj = obj.tolist()
    elif np is not None and isinstance(obj, np.generic):
        obj = obj.item()
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"cannot write {obj!r} ({type(obj).__name__}) to JSON")


def keep_metrics(run_dir: str | Path, n_records: int) -> None:
    """Keep the first ``n_records`` lines of ``metrics.jsonl`` (atomically): a resumed
    run drops the evaluations made after the checkpoint it continues from, which it
    makes again."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    if len(lines) > n_records:
        kept = "".join(lines[:n_records]).encode()
        atomic_write(path, lambda fh: fh.write(kept))


class MetricsWriter:
    """Appends evaluation records to ``metrics.jsonl``, one flushed line each.

    Parameters
    ----------
    path : path
        A run directory (the file is ``path / metrics.jsonl``) or the file itself.

    Examples
    --------
    >>> with MetricsWriter(run_dir) as metrics:  # doctest: +SKIP
    ...     result = fit(config, dataset, callback=metrics.write)
    """

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        self.path = path / METRICS_FILE if path.is_dir() else path
        self._fh: IO[str] | None = None
        self.count = 0

    def __enter__(self) -> MetricsWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("a", encoding="utf-8")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def write(self, record: Mapping[str, Any]) -> None:
        """Append ``record`` as one JSON line and flush it to the OS."""
        if self._fh is None:
            raise RuntimeError("MetricsWriter.write called outside its `with` block")
        line = json.dumps(to_jsonable(record), allow_nan=False)
        self._fh.write(line + "\n")
        self._fh.flush()
        self.count += 1

    __call__ = write

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _require_dir(run_dir: Path) -> None:
    if not run_dir.is_dir():
        what = "is not a directory" if run_dir.exists() else "does not exist"
        raise DataError(f"run directory {str(run_dir)!r} {what}; {_CONTENTS}")


def _require_file(run_dir: Path, name: str) -> Path:
    _require_dir(run_dir)
    path = run_dir / name
    if not path.is_file():
        raise DataError(
            f"run directory {str(run_dir)!r} has no {name}; {_CONTENTS}. "
            "Pass the directory printed by `snep train`."
        )
    return path


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The evaluation records of ``run_dir/metrics.jsonl``, in order.

    A truncated last line (a run killed while writing it) is skipped with a
    warning; a malformed line elsewhere raises :class:`~snep.errors.DataError`.
    """
    path = _require_file(Path(run_dir), METRICS_FILE)
    lines = path.read_text(encoding="utf-8").splitlines()
    records: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            if i == len(lines) - 1:
                warnings.warn(
                    f"{str(path)!r}: skipping a truncated last line ({exc})", stacklevel=2
                )
                break
            raise DataError(
                f"{str(path)!r} line {i + 1} is not valid JSON ({exc}); expected one JSON "
                "object per line"
            ) from None
        if not isinstance(rec, dict):
            raise DataError(
                f"{str(path)!r} line {i + 1} holds a {type(rec).__name__}; expected a JSON object"
            )
        records.append(rec)
    return records


def make_summary(
    result: FitResult,
    config: Config,
    dataset: Dataset,
    *,
    backend: str,
    wall_seconds: float,
) -> dict[str, Any]:
    """The content of ``summary.json`` for a finished run (format in the module docstring)."""
    spec = result.posterior.spec
    return {
        "snep_version": snep.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "method": config.train.method,
        "workers": config.train.workers,
        "backend": backend,
        "threads": thread_settings(),
        "data": {
            "name": dataset.name,
            "source": config.train.data,
            "n_train": dataset.n_train,
            "n_test": dataset.n_test,
            "n_features": dataset.n_features,
            "n_classes": dataset.n_classes,
        },
        "P": spec.size,
        "layer_sizes": list(spec.layer_sizes),
        "wall_seconds": wall_seconds,
        "evaluations": len(result.history),
        "final": dict(result.final),
        "stats": result.stats,
        **_posterior_checks(result, config, dataset),
    }


def _posterior_checks(result: FitResult, config: Config, dataset: Dataset) -> dict[str, Any]:
    """``{"posterior_checks": ...}`` for SNEP and EP runs (:mod:`snep.exact_checks`)."""
    if not METHODS[config.train.method].posterior:
        return {}
    from snep.exact_checks import posterior_checks

    snep_cfg = config.snep
    checks = posterior_checks(
        result.posterior, dataset.x_train, prior_var=snep_cfg.prior_var,
        n_workers=config.train.workers, v_lo=snep_cfg.v_lo, v_hi=snep_cfg.v_hi,
    )  # fmt: skip
    return {"posterior_checks": checks}


def write_summary(run_dir: str | Path, summary: Mapping[str, Any]) -> Path:
    """Write ``summary.json`` atomically (numpy values made plain); returns its path."""
    return save_json(Path(run_dir) / SUMMARY_FILE, to_jsonable(summary))


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """The parsed ``summary.json`` of ``run_dir``."""
    path = _require_file(Path(run_dir), SUMMARY_FILE)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{str(path)!r} is not valid JSON: {exc}") from None


def load_run(run_dir: str | Path) -> tuple[Config, Posterior]:
    """The configuration and the posterior of a run directory.

    Raises
    ------
    snep.errors.DataError
        If the directory, ``config.toml`` or ``posterior.npz`` is missing (the
        message names the file and the directory).
    snep.errors.ConfigError
        If ``config.toml`` is not a valid configuration.
    """
    from snep.posterior import Posterior

    run_dir = Path(run_dir)
    config = load_config(_require_file(run_dir, CONFIG_FILE))
    posterior = Posterior.load(_require_file(run_dir, POSTERIOR_FILE))
    return config, posterior
