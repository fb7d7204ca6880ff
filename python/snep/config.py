"""Run configuration: frozen dataclasses validated on construction.

One :class:`Config` holds everything a run needs.  It maps one to one onto a
TOML file (tables ``[train]``, ``[model]``, ``[sampler]``, ``[snep]``,
``[snep.site_step]``) and onto the CLI flags of ``snep train``.  A bad value
raises :class:`~snep.errors.ConfigError` naming the key, the value and what is
allowed.  Defaults follow the reference configuration of Hasenclever et al.
(2017) (DESIGN.md §1.8) where it applies.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from snep.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "PRESETS",
    "Config",
    "ModelConfig",
    "SNEPConfig",
    "SamplerConfig",
    "Schedule",
    "TrainConfig",
    "load_config",
    "with_preset",
]

SAMPLERS = ("adam_sgld", "sgld", "psgld", "sghmc")
METHODS = ("snep", "ep", "adam", "asgd", "easgd")
SCHEDULES = ("constant", "robbins_monro", "piecewise")
SHARDINGS = ("iid", "dirichlet")
BACKENDS = ("auto", "numpy", "cpu", "cuda")
#: GEMM implementations of the cuda backend's MLP (snep.backends.cuda_epilogues.EpilogueMLP)
GEMMS = ("matmul", "tiled", "tiled-cpp", "tiled-tf32")


def _fail(key: str, value: Any, expected: str) -> None:
    raise ConfigError(f"config key {key!r} = {value!r} is invalid: expected {expected}")


def _positive(key: str, value: float, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        _fail(key, value, "a finite number " + (">= 0" if allow_zero else "> 0"))


def _int_at_least(key: str, value: int, lo: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        _fail(key, value, f"an integer >= {lo}")


def _one_of(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        _fail(key, value, f"one of {list(allowed)}")


def _in_unit(key: str, value: float, *, closed_right: bool = False) -> None:
    ok = isinstance(value, (int, float)) and (0 <= value <= 1 if closed_right else 0 <= value < 1)
    if not ok:
        _fail(key, value, "a number in [0, 1" + ("]" if closed_right else ")"))


@dataclass(frozen=True)
class Schedule:
    """Step-size schedule ``eps_t`` of the SNEP inner step.

    ``constant``: ``value``.  ``robbins_monro``: ``value * (1 + t / offset) ** -power``
    (sums diverge and squares converge for ``power`` in (1/2, 1]).
    ``piecewise``: ``values[k]`` from iteration ``boundaries[k-1]`` on
    (``values[0]`` before ``boundaries[0]``).
    """

    kind: str = "constant"
    value: float = 2e-2
    offset: float = 1000.0
    power: float = 0.51
    boundaries: tuple[int, ...] = ()
    values: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        _one_of("snep.site_step.kind", self.kind, SCHEDULES)
        _positive("snep.site_step.value", self.value)
        _positive("snep.site_step.offset", self.offset)
        if self.kind == "robbins_monro" and not (0.5 < self.power <= 1.0):
            _fail("snep.site_step.power", self.power, "a number in (0.5, 1] (Robbins–Monro)")
        object.__setattr__(self, "boundaries", tuple(int(b) for b in self.boundaries))
        object.__setattr__(self, "values", tuple(float(v) for v in self.values))
        if self.kind == "piecewise":
            if len(self.values) != len(self.boundaries) + 1:
                _fail(
                    "snep.site_step.values",
                    list(self.values),
                    f"{len(self.boundaries) + 1} values for {len(self.boundaries)} boundaries",
                )
            if list(self.boundaries) != sorted(set(self.boundaries)):
                _fail("snep.site_step.boundaries", list(self.boundaries), "increasing integers")
            for v in self.values:
                _positive("snep.site_step.values[]", v)

    def __call__(self, t: int) -> float:
        """Step size at iteration ``t`` (0-based)."""
        if self.kind == "constant":
            return self.value
        if self.kind == "robbins_monro":
            return self.value * (1.0 + t / self.offset) ** (-self.power)
        k = sum(1 for b in self.boundaries if t >= b)
        return self.values[k]


@dataclass(frozen=True)
class ModelConfig:
    """MLP with ReLU hidden layers and a softmax output; ``hidden=()`` is logistic regression."""

    hidden: tuple[int, ...] = (100,)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(self.hidden))
        for h in self.hidden:
            _int_at_least("model.hidden[]", h, 1)


@dataclass(frozen=True)
class SamplerConfig:
    """SG-MCMC sampler of the tilted distributions (DESIGN §1.5).

    ``step_size`` is SGLD/pSGLD's epsilon, SGHMC's learning rate and
    Adam-SGLD's ``h``.  Adam-SGLD clips its noise to ``min(h kappa, sqrt(2 alpha_t))``,
    so its chain is colder than the target: it replicates the reference code,
    it does not sample exactly.
    """

    kind: str = "adam_sgld"
    step_size: float = 1e-3
    temperature: float = 1.0
    kappa: float = 1.0
    beta1: float = 0.0
    beta2: float = 0.999
    adam_eps: float = 1e-8
    rms_decay: float = 0.99
    rms_eps: float = 1e-5
    friction: float = 0.1
    gamma_term: bool = False

    def __post_init__(self) -> None:
        _one_of("sampler.kind", self.kind, SAMPLERS)
        _positive("sampler.step_size", self.step_size)
        _positive("sampler.temperature", self.temperature)
        _positive("sampler.kappa", self.kappa)
        _in_unit("sampler.beta1", self.beta1)
        _in_unit("sampler.beta2", self.beta2)
        _positive("sampler.adam_eps", self.adam_eps)
        _in_unit("sampler.rms_decay", self.rms_decay)
        _positive("sampler.rms_eps", self.rms_eps)
        if not (0 < self.friction <= 1):
            _fail("sampler.friction", self.friction, "a number in (0, 1]")


@dataclass(frozen=True)
class SNEPConfig:
    """SNEP and its variants (DESIGN §1.3).

    The variance floor ``v_lo`` caps the posterior precision at
    ``1 / prior_var + n_workers / v_lo``.
    """

    beta: float = 1.0
    p_snep: bool = False
    site_step: Schedule = field(default_factory=Schedule)
    n_inner: int = 10
    n_sync: int = 10
    n_samples: int = 1
    prior_var: float = 0.5
    v_init: float = 0.01
    m_lo: float = -10.0
    m_hi: float = 10.0
    v_lo: float = 1e-2
    v_hi: float = 1e2
    prec_floor: float = 1e-3
    damping: float = 0.5

    def __post_init__(self) -> None:
        if not (0 < self.beta <= 1):
            _fail("snep.beta", self.beta, "a number in (0, 1]")
        if isinstance(self.site_step, Mapping):
            object.__setattr__(
                self, "site_step", _build(Schedule, self.site_step, "snep.site_step")
            )
        _int_at_least("snep.n_inner", self.n_inner, 1)
        _int_at_least("snep.n_sync", self.n_sync, 1)
        _int_at_least("snep.n_samples", self.n_samples, 1)
        for key in ("prior_var", "v_init", "v_lo", "v_hi", "prec_floor"):
            _positive(f"snep.{key}", getattr(self, key))
        if not self.m_lo < self.m_hi:
            _fail("snep.m_lo", self.m_lo, f"less than snep.m_hi = {self.m_hi}")
        if not self.v_lo < self.v_hi:
            _fail("snep.v_lo", self.v_lo, f"less than snep.v_hi = {self.v_hi}")
        if not (0 < self.damping <= 1):
            _fail("snep.damping", self.damping, "a number in (0, 1]")

    def effective_beta(self, n_workers: int) -> float:
        """``1 / n`` for p-SNEP, else ``beta``."""
        return 1.0 / n_workers if self.p_snep else self.beta


@dataclass(frozen=True)
class TrainConfig:
    """What to run, on which data, for how long, and how to log it.

    ``speeds`` (time per iteration, one per worker) and ``reply_delay`` (in
    the same virtual time units) model asynchrony in the in-process runner;
    under MPI a worker with ``speeds[w] = k * min(speeds)`` sleeps so that its
    iterations take k times as long (a test of a slow worker).
    ``checkpoint_every``: evaluations between checkpoints (0: none).
    ``synchronous`` (MPI): the server takes pushes in worker order each round and
    workers wait for their reply, reproducing the in-process runner bitwise.
    ``validation``: when > 0, hold out this stratified fraction of the *training*
    data (seeded by ``seed``) and evaluate on it instead of the test set, so that
    settings are chosen without looking at the test set.
    ``cuda_graph``: capture each worker iteration in a CUDA graph and replay it (a GPU
    backend only; :mod:`snep.backends.cuda_graph`); the numbers are those of the
    uncaptured iteration.
    ``gemm``: the GEMMs of the cuda backend's MLP: ``"matmul"`` (cuBLAS), or the
    hand-written ``"tiled"`` (numba.cuda), ``"tiled-cpp"`` (CUDA C++) or ``"tiled-tf32"``
    (CUDA C++ on TF32 tensor cores); host backends use BLAS (``"matmul"``).
    ``cuda_aware_mpi`` (runs under mpiexec, backend cuda): the MPI library is CUDA-aware,
    so each worker computes its push in device memory and hands MPI device buffers;
    otherwise messages are staged through host memory.
    """

    method: str = "snep"
    workers: int = 4
    iterations: int = 1500
    batch_size: int = 100
    seed: int = 0
    data: str = "digits"
    sharding: str = "iid"
    dirichlet_alpha: float = 0.5
    eval_every: int = 100
    average_from: int = -1
    bma_samples: int = 20
    backend: str = "auto"
    threads: int = 0
    speeds: tuple[float, ...] = ()
    reply_delay: float = 0.0
    checkpoint_every: int = 1
    synchronous: bool = False
    validation: float = 0.0
    cuda_graph: bool = False
    gemm: str = "matmul"
    cuda_aware_mpi: bool = False

    def __post_init__(self) -> None:
        _one_of("train.method", self.method, METHODS)
        _int_at_least("train.workers", self.workers, 1)
        if self.method == "adam" and self.workers != 1:
            _fail("train.workers", self.workers, "1 for method 'adam' (a single-worker baseline)")
        _int_at_least("train.iterations", self.iterations, 1)
        _int_at_least("train.batch_size", self.batch_size, 1)
        _int_at_least("train.seed", self.seed, 0)
        if not isinstance(self.data, str) or not self.data:
            _fail("train.data", self.data, "a data set name or a path")
        _one_of("train.sharding", self.sharding, SHARDINGS)
        _positive("train.dirichlet_alpha", self.dirichlet_alpha)
        _int_at_least("train.eval_every", self.eval_every, 1)
        if not isinstance(self.average_from, int) or self.average_from < -1:
            _fail(
                "train.average_from",
                self.average_from,
                "an iteration >= 0, or -1 for 3/4 of the run",
            )
        _int_at_least("train.bma_samples", self.bma_samples, 1)
        _one_of("train.backend", self.backend, BACKENDS)
        _int_at_least("train.threads", self.threads, 0)
        object.__setattr__(self, "speeds", tuple(float(s) for s in self.speeds))
        if self.speeds and len(self.speeds) != self.workers:
            _fail("train.speeds", list(self.speeds), f"{self.workers} values (one per worker)")
        for s in self.speeds:
            _positive("train.speeds[]", s)
        _positive("train.reply_delay", self.reply_delay, allow_zero=True)
        _int_at_least("train.checkpoint_every", self.checkpoint_every, 0)
        if not isinstance(self.validation, (int, float)) or not (0 <= self.validation < 1):
            _fail(
                "train.validation",
                self.validation,
                "a fraction in [0, 1) of the training data to hold out (0: off)",
            )
        _one_of("train.gemm", self.gemm, GEMMS)
        if self.gemm != "matmul" and self.backend != "cuda":
            _fail(
                "train.gemm",
                self.gemm,
                f"'matmul' with backend {self.backend!r} (the hand-written GEMMs are the cuda "
                "backend's, and 'auto' picks cpu; use --backend cuda)",
            )
        # flags of the GPU workers, each with why it needs them
        for key, why in (
            ("cuda_aware_mpi", "it hands MPI the GPU workers' device buffers"),
            ("cuda_graph", "CUDA graphs capture a worker iteration on a GPU"),
        ):
            value = getattr(self, key)
            if not isinstance(value, bool):
                _fail(f"train.{key}", value, "true or false")
            if value and (self.method not in ("snep", "ep") or self.backend != "cuda"):
                _fail(
                    f"train.{key}",
                    value,
                    "false unless train.method is 'snep' or 'ep' and train.backend is 'cuda' "
                    f"(got method {self.method!r}, backend {self.backend!r}): {why}",
                )

    @property
    def averaging_start(self) -> int:
        """Iteration from which the server averages the posterior."""
        return self.iterations * 3 // 4 if self.average_from < 0 else self.average_from


_SECTIONS = {
    "train": TrainConfig,
    "model": ModelConfig,
    "sampler": SamplerConfig,
    "snep": SNEPConfig,
}


@dataclass(frozen=True)
class Config:
    """Everything a run needs; see the module docstring for the TOML layout."""

    train: TrainConfig = field(default_factory=TrainConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    snep: SNEPConfig = field(default_factory=SNEPConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists), the inverse of :meth:`from_dict`."""

        def plain(v: Any) -> Any:
            if dataclasses.is_dataclass(v):
                return {f.name: plain(getattr(v, f.name)) for f in fields(v)}
            if isinstance(v, tuple):
                return [plain(x) for x in v]
            return v

        return plain(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Config:
        """Build from a nested mapping; unknown sections or keys are errors."""
        unknown = set(data) - set(_SECTIONS)
        if unknown:
            raise ConfigError(
                f"unknown config section(s) {sorted(unknown)}; expected sections {list(_SECTIONS)}"
            )
        return cls(
            **{name: _build(kind, data.get(name, {}), name) for name, kind in _SECTIONS.items()}
        )

    def replace(self, **sections: Mapping[str, Any]) -> Config:
        """A copy with some keys changed: ``cfg.replace(train={"workers": 8})``."""
        data = self.to_dict()
        for name, values in sections.items():
            if name not in _SECTIONS:
                raise ConfigError(
                    f"unknown config section {name!r}; expected one of {list(_SECTIONS)}"
                )
            _deep_update(data[name], values)
        return Config.from_dict(data)


def _deep_update(target: dict[str, Any], values: Mapping[str, Any]) -> None:
    """Update nested tables key by key (``{"site_step": {"value": x}}`` keeps the kind)."""
    for key, value in values.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = value


#: Settings tuned per data set on a validation split held out of the training
#: data (never the test set), applied below the config file and the flags when
#: the run uses that data set.  Defaults of the dataclasses are the paper's
#: reference configuration (DESIGN §1.8).
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "digits": {
        "train": {"iterations": 40_000, "eval_every": 2_000},
        "model": {"hidden": [200]},
        "sampler": {"step_size": 3e-3},
        "snep": {"site_step": {"value": 0.2}, "v_lo": 3e-3, "prior_var": 1.0},
    },
}


def with_preset(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` (a nested config mapping) on top of the preset of its data set, if any."""
    name = str(data.get("train", {}).get("data", TrainConfig.data)).lower()
    merged: dict[str, Any] = {
        k: {kk: (dict(vv) if isinstance(vv, Mapping) else vv) for kk, vv in v.items()}
        for k, v in PRESETS.get(name, {}).items()
    }
    for section, values in data.items():
        if isinstance(values, Mapping) and isinstance(merged.get(section), dict):
            _deep_update(merged[section], values)
        else:
            merged[section] = values
    return merged


def _build(kind: type, values: Mapping[str, Any], section: str) -> Any:
    if dataclasses.is_dataclass(values) and isinstance(values, kind):
        return values
    if not isinstance(values, Mapping):
        raise ConfigError(f"config section {section!r} must be a table of keys, got {values!r}")
    allowed = {f.name for f in fields(kind)}
    unknown = set(values) - allowed
    if unknown:
        raise ConfigError(
            f"unknown key(s) {sorted(unknown)} in config section {section!r}; "
            f"allowed keys: {sorted(allowed)}"
        )
    try:
        return kind(**values)
    except TypeError as exc:  # pragma: no cover - guarded by the key check above
        raise ConfigError(f"config section {section!r}: {exc}") from exc


def load_config(
    path: str | Path, overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> Config:
    """Read a TOML config file, apply ``overrides`` (section -> key -> value), validate."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(
            f"config file {str(path)!r} does not exist; pass an existing TOML file"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
    for name, values in (overrides or {}).items():
        _deep_update(data.setdefault(name, {}), values)
    return Config.from_dict(data)
