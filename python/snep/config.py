"""Run configuration: frozen dataclasses validated on construction.

One :class:`Config` holds everything a run needs.  It maps one to one onto a
TOML file (tables ``[train]``, ``[model]``, ``[sampler]``, ``[snep]``,
``[snep.site_step]``) and onto the CLI flags of ``snep train``.  A bad value
raises :class:`~snep.errors.ConfigError` naming the key, the value and what is
allowed.

Layers
------
A run's configuration is built from layers, each overriding the ones below it
(:func:`with_preset`, which ``snep train`` and :func:`load_config` use):

1. the dataclass defaults;
2. the *method preset* ``METHOD_PRESETS[train.preset]`` (``--preset NAME``, or
   ``preset = "NAME"`` in the ``[train]`` table of a TOML file):
   ``"default"`` adds nothing, ``"paper"`` is the reference configuration of
   Hasenclever et al. (2017) (docs/method.md §1.8: the cold, noise-clipped Adam-SGLD
   of the reference code, one chain per worker), kept to replicate the paper;
3. the *data-set preset* of that method preset, ``DATA_PRESETS[train.preset][train.data]``
   (settings tuned on a validation split held out of the training data;
   ``--no-preset`` skips this layer, not the method preset);
4. the TOML config file (``--config``);
5. the command-line flags (``--set`` last).

``train.preset`` and ``train.data`` are read from layers 4-5 (the presets do not
choose them).  A :class:`Config` built directly (``Config()``, :meth:`Config.replace`,
:meth:`Config.from_dict`) applies no preset: ``train.preset`` only records the name.

Run length
----------
``train.epochs`` (default 20) is the number of passes each worker makes over its
own shard; ``train.iterations = 0`` (the default) means "derive from epochs" and
an explicit ``train.iterations > 0`` wins over epochs.  A layer that sets
``epochs`` but not ``iterations`` overrides the iterations of the layers below it
(``--epochs 5`` beats a preset's iterations).  Once the training set is known,
:meth:`Config.with_data_size` fixes ``iterations = ceil(epochs * shard / batch)``
with ``shard = ceil(n_train / workers)`` and ``batch = min(batch_size, shard)``;
``snep.fit``, ``snep train`` (before it writes ``config.toml``) and the MPI launch
call it, so everything that reads ``train.iterations`` sees a resolved config.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import numbers
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
    "DATA_PRESETS",
    "METHODS",
    "METHOD_PRESETS",
    "Config",
    "Method",
    "ModelConfig",
    "SNEPConfig",
    "SamplerConfig",
    "Schedule",
    "TrainConfig",
    "apply_assignment",
    "load_config",
    "read_toml",
    "resolve",
    "with_preset",
]

SAMPLERS = ("adam_sgld", "sgld", "psgld", "sghmc")


@dataclass(frozen=True)
class Method:
    """What differs per ``train.method``: the one place that says it (no other module
    compares method names).

    Attributes
    ----------
    name : str
        The ``train.method`` value.
    description : str
        One line for the help text and reports.
    posterior : bool
        Learns a Gaussian posterior through sites and sampling chains (SNEP, EP): a
        model average, the posterior checks, several chains, device backends.  False
        for the point-estimate baselines (Adam optimisers: no sampler, no site).
    moment_matching : bool
        EP/SMS: each site is set from the tilted moments of a window of samples
        (docs/method.md §1.3); false for SNEP's stochastic natural-gradient site step.
    distributed : bool
        Runs several workers against a server; false for the one-worker Adam baseline
        (``train.workers`` must be 1).
    checkpointed : bool
        Writes checkpoints and resumes (``snep train --resume``).
    worker, server : str
        ``"module:attribute"`` of the worker class and of the server class (with a
        ``from_config(config, prior, x0, n_workers)`` constructor), loaded on use by
        :meth:`load`; empty for the one-worker baseline.
    """

    name: str
    description: str
    posterior: bool
    moment_matching: bool = False
    distributed: bool = True
    checkpointed: bool = True
    worker: str = ""
    server: str = ""

    def load(self, role: str) -> Any:
        """The worker (``role="worker"``) or server (``"server"``) class."""
        import importlib

        module, _, attr = getattr(self, role).partition(":")
        if not module:
            raise ConfigError(f"train.method = {self.name!r} has no {role} class")
        return getattr(importlib.import_module(module), attr)


_WORKER = "snep.algorithm.worker:SnepWorker"
_POSTERIOR_SERVER = "snep.algorithm.server:PosteriorServer"
#: every ``train.method``, by name
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "snep",
            "SNEP with the posterior server",
            posterior=True,
            worker=_WORKER,
            server=_POSTERIOR_SERVER,
        ),
        Method(
            "ep",
            "EP/SMS: sites from windows of tilted moments, with the posterior server",
            posterior=True,
            moment_matching=True,
            worker=_WORKER,
            server=_POSTERIOR_SERVER,
        ),
        Method(
            "adam",
            "Adam on the log posterior, one worker (the MAP baseline)",
            posterior=False,
            distributed=False,
            checkpointed=False,
        ),
        Method(
            "asgd",
            "asynchronous SGD (Adam) with a parameter server",
            posterior=False,
            checkpointed=False,
            worker="snep.algorithm.baselines:AsgdWorker",
            server="snep.algorithm.baselines:AsgdServer",
        ),
        Method(
            "easgd",
            "elastic-averaging SGD (Adam) with a centre server",
            posterior=False,
            checkpointed=False,
            worker="snep.algorithm.baselines:EasgdWorker",
            server="snep.algorithm.baselines:EasgdServer",
        ),
    )
}
SCHEDULES = ("constant", "robbins_monro", "piecewise")
STEP_UNITS = ("data", "absolute")
#: the SNEP inner step on the local posterior's or on the site's mean parameters
SITE_UPDATES = ("local", "site")
#: the baselines' learning rate when the sampler's step is given per datum
ADAM_LEARNING_RATE = 1e-3
SHARDINGS = ("iid", "dirichlet")
BACKENDS = ("auto", "numpy", "cpu", "cuda")
#: GEMM implementations of the cuda backend's MLP (snep.backends.cuda.epilogues.EpilogueMLP)
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
    value: float = 5e-3
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
    """SG-MCMC sampler of the tilted distributions (docs/method.md §1.5).

    The default is SGHMC (Chen, Fox & Guestrin 2014), which samples its target
    (tilted at temperature ``temperature``: the likelihood is divided by T, the
    prior is not) up to an O(step) discretisation error.  ``step_size`` is
    SGLD/pSGLD's epsilon, SGHMC's learning rate and Adam-SGLD's ``h``.
    ``step_unit = "data"`` (SGLD and SGHMC): the step is given per datum and divided
    by the data size the tilted distribution sees over the temperature,
    ``n_workers * shard size / T`` (its curvature grows with it, as the posterior's
    does: the tilted distribution ``cavity x local likelihood^(1/beta)`` has about the
    posterior's shape), so one value fits data sets of any size; ``"absolute"``: used
    as it is.  pSGLD and
    Adam-SGLD precondition their steps and always use them as they are.
    Adam-SGLD clips its noise to ``min(h kappa, sqrt(2 alpha_t))``, so its chain is
    colder than the target: it replicates the reference code (``--preset paper``),
    it does not sample.  The point-estimate baselines (Adam, A-SGD, EASGD) take
    :attr:`learning_rate`.
    """

    kind: str = "sghmc"
    step_size: float = 1.0
    step_unit: str = "data"
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
        _one_of("sampler.step_unit", self.step_unit, STEP_UNITS)
        _positive("sampler.temperature", self.temperature)
        _positive("sampler.kappa", self.kappa)
        _in_unit("sampler.beta1", self.beta1)
        _in_unit("sampler.beta2", self.beta2)
        _positive("sampler.adam_eps", self.adam_eps)
        _in_unit("sampler.rms_decay", self.rms_decay)
        _positive("sampler.rms_eps", self.rms_eps)
        if not (0 < self.friction <= 1):
            _fail("sampler.friction", self.friction, "a number in (0, 1]")

    @property
    def learning_rate(self) -> float:
        """The baselines' Adam learning rate: ``step_size`` in ``"absolute"`` units; with
        a step given per datum (``step_unit = "data"``, which has no meaning for an
        optimiser) Adam's usual 1e-3."""
        return self.step_size if self.step_unit == "absolute" else ADAM_LEARNING_RATE


@dataclass(frozen=True)
class SNEPConfig:
    """SNEP and its variants (docs/method.md §1.3).

    The variance floor ``v_lo`` caps the posterior precision at
    ``1 / prior_var + n_workers / v_lo``.

    ``n_chains``: chains per worker, batched (leading chain axis); they start
    dispersed (drawn from the local posterior) and the site step uses their moments
    pooled over chains and samples; their cross-chain R-hat and ESS are reported.
    ``site_update``: ``"local"`` steps the local posterior's mean parameters and sets
    the site by subtraction (the damped EP update in mean parameters; a site that
    should flatten does so geometrically), ``"site"`` steps the site's own mean
    parameters (Hasenclever et al. 2017; the paper preset).  ``improper_sites``
    (``"local"``, beta = 1; off by default): a site's precision may fall below zero,
    down to ``-0.9 / (prior_var n)``, so that a site that should be flat is not biased
    sharp by the clip at ``1 / v_hi`` (q and every cavity stay proper); it made an
    MLP's chains diverge on MNIST (``snep.algorithm.worker.site_precision_floor``).
    ``score_cv`` (``"local"``, and each half of the chains gives at least three samples
    per site step: six chains with ``n_samples = 1``; on by default, off in the paper
    preset): the tilted moments are corrected with the score as a control variate,
    cross-fitted over two halves of the chains
    (:func:`snep.maths.oracles.score_corrected_moments`): exact for a weight no
    datum reaches, so its site flattens and q keeps the prior (measured on the wine
    regression: 0.96-0.99 of the prior variance, was 0.66-0.92; SNEP's variances
    within x0.98-1.03 of the gold and EP fixed points, q's precision noise 4-5%, was 19%).
    ``ep_window``: iterations of samples (of every chain) per EP/SMS site update
    (``train.method = "ep"``; the paper preset: 10): measured on the wine regression
    with 4 workers, 10 left the EP fixed point's variances at x0.69-0.93, 50 at
    x0.94-1.06.  Defaults: measured on the wine logistic regression against a gold
    posterior and EP fixed points (``tests/algorithm/test_known_answers.py``,
    ``docs/results.md``).
    """

    beta: float = 1.0
    p_snep: bool = False
    site_step: Schedule = field(default_factory=Schedule)
    n_inner: int = 10
    ep_window: int = 50
    n_sync: int = 10
    n_samples: int = 1
    n_chains: int = 8
    site_update: str = "local"
    improper_sites: bool = False
    score_cv: bool = True
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
        _int_at_least("snep.ep_window", self.ep_window, 1)
        _int_at_least("snep.n_sync", self.n_sync, 1)
        _int_at_least("snep.n_samples", self.n_samples, 1)
        _int_at_least("snep.n_chains", self.n_chains, 1)
        _one_of("snep.site_update", self.site_update, SITE_UPDATES)
        for key in ("improper_sites", "score_cv"):
            if not isinstance(getattr(self, key), bool):
                _fail(f"snep.{key}", getattr(self, key), "true or false")
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

    ``preset``: the method preset (:data:`METHOD_PRESETS`) this configuration was
    layered on by :func:`with_preset` (``--preset``); set on a :class:`Config`
    directly it records the name and changes nothing else.
    ``epochs``: passes of each worker over its own shard; ``iterations`` (per
    worker): 0 derives it from ``epochs`` once the data are known
    (:meth:`Config.with_data_size`), a value > 0 wins over ``epochs``.
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
    backend only; :mod:`snep.backends.cuda.graph`); the numbers are those of the
    uncaptured iteration.
    ``gemm``: the GEMMs of the cuda backend's MLP: ``"matmul"`` (cuBLAS), or the
    hand-written ``"tiled"`` (numba.cuda), ``"tiled-cpp"`` (CUDA C++) or ``"tiled-tf32"``
    (CUDA C++ on TF32 tensor cores); host backends use BLAS (``"matmul"``).
    ``cuda_aware_mpi`` (runs under mpiexec, backend cuda): the MPI library is CUDA-aware,
    so each worker computes its push in device memory and hands MPI device buffers;
    otherwise messages are staged through host memory.
    ``wire``: the dtype of the arrays in pushes and replies, ``"float32"`` (half the
    bytes; a delta's rounding error is carried into the worker's next push) or
    ``"float64"``; the server's state is float64 either way (docs/architecture.md,
    "The exchange").
    ``server_ranks`` (MPI): the posterior server's parameter vector split over this many
    ranks (0..k-1), each serving its slice of every push; the workers are the ranks
    after them (``mpiexec -n workers + server_ranks``).
    """

    method: str = "snep"
    preset: str = "default"
    workers: int = 4
    iterations: int = 0
    epochs: float = 20.0
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
    wire: str = "float32"
    server_ranks: int = 1

    def __post_init__(self) -> None:
        _one_of("train.method", self.method, tuple(METHODS))
        _one_of("train.wire", self.wire, ("float32", "float64"))
        _int_at_least("train.server_ranks", self.server_ranks, 1)
        _one_of("train.preset", self.preset, tuple(METHOD_PRESETS))
        _int_at_least("train.workers", self.workers, 1)
        if not METHODS[self.method].distributed and self.workers != 1:
            _fail(
                "train.workers",
                self.workers,
                f"1 for method {self.method!r} (a single-worker baseline)",
            )
        if (
            not isinstance(self.iterations, int)
            or isinstance(self.iterations, bool)
            or self.iterations < 0
        ):
            _fail(
                "train.iterations",
                self.iterations,
                "an integer >= 1 (iterations per worker), or 0 to derive it from train.epochs",
            )
        if isinstance(self.epochs, bool):
            _fail("train.epochs", self.epochs, "a finite number > 0 (passes over each shard)")
        _positive("train.epochs", self.epochs)
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
            if value and (not METHODS[self.method].posterior or self.backend != "cuda"):
                _fail(
                    f"train.{key}",
                    value,
                    "false unless train.method is 'snep' or 'ep' and train.backend is 'cuda' "
                    f"(got method {self.method!r}, backend {self.backend!r}): {why}",
                )

    @property
    def averaging_start(self) -> int:
        """Iteration from which the server averages the posterior."""
        if self.average_from >= 0:
            return self.average_from
        self.check_resolved("train.averaging_start (3/4 of the run)")
        return self.iterations * 3 // 4

    def check_resolved(self, what: str) -> None:
        """Raise a :class:`ConfigError` if the run length is still to be derived from
        ``epochs`` (``iterations == 0``): ``what`` needs the number of iterations."""
        if self.iterations < 1:
            raise ConfigError(
                f"{what} needs the run length, but train.iterations = 0 (derive it from "
                f"train.epochs = {self.epochs}) has not been resolved: call "
                "config.with_data_size(n_train) first (snep.fit and snep train do), or set "
                "train.iterations > 0"
            )

    def iterations_for(self, n_train: int) -> int:
        """Iterations per worker for ``n_train`` training examples: ``iterations`` if > 0,
        else ``ceil(epochs * shard / batch)`` with ``shard = ceil(n_train / workers)`` (the
        mean shard size) and ``batch = min(batch_size, shard)``."""
        if self.iterations > 0:
            return self.iterations
        if not isinstance(n_train, numbers.Integral) or isinstance(n_train, bool) or n_train < 1:
            raise ConfigError(
                f"cannot derive train.iterations from train.epochs = {self.epochs}: the "
                f"training set has {n_train!r} examples; expected an integer >= 1"
            )
        shard = -(-int(n_train) // self.workers)
        batch = min(self.batch_size, shard)
        # rounded first, so that e.g. 0.1 * 1000 / 100 is 1 iteration, not 2
        return max(1, math.ceil(round(self.epochs * shard / batch, 9)))


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

    def __post_init__(self) -> None:
        sampler, snep = self.sampler, self.snep
        pooled = snep.n_chains > 1 or snep.site_update == "local"
        if self.train.cuda_graph and pooled and snep.site_step.kind != "constant":
            _fail(
                "snep.site_step.kind",
                snep.site_step.kind,
                "'constant' with train.cuda_graph: the site step after the pass (several "
                "chains, or snep.site_update = 'local') takes eps as a launch argument, which "
                "a CUDA graph replays unchanged; use a constant site step, or no graph",
            )
        if (
            not METHODS[self.train.method].posterior
            and sampler.step_unit == "data"
            and sampler.step_size != SamplerConfig.step_size
        ):
            _fail(
                "sampler.step_size",
                sampler.step_size,
                f"a learning rate in absolute units for the baseline {self.train.method!r}: "
                "the baselines take sampler.step_size as Adam's learning rate, so set "
                "sampler.step_unit = 'absolute' too (--step-unit absolute, or --preset paper); "
                f"with the per-datum default it is {ADAM_LEARNING_RATE}",
            )

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

    def with_data_size(self, n_train: int) -> Config:
        """This config with its run length fixed for ``n_train`` training examples.

        ``train.iterations`` of the result is > 0: the given value if it was > 0, else
        derived from ``train.epochs`` (:meth:`TrainConfig.iterations_for`).  Idempotent.
        """
        iterations = self.train.iterations_for(n_train)
        if iterations == self.train.iterations:
            return self
        return dataclasses.replace(
            self, train=dataclasses.replace(self.train, iterations=iterations)
        )


def _deep_update(target: dict[str, Any], values: Mapping[str, Any]) -> None:
    """Update nested tables key by key (``{"site_step": {"value": x}}`` keeps the kind)."""
    for key, value in values.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = value


#: Method presets (layer 2 of the module docstring's layers): named sets of
#: sampler/SNEP settings applied above the dataclass defaults.  ``"paper"`` is the
#: reference configuration of Hasenclever et al. (2017) and of its code (docs/method.md §1.8):
#: Adam-SGLD with its noise clipped at ``h * kappa``, so the chain is colder than its
#: target and SNEP returns a MAP-like point whose variance sits at the floor
#: ``v_lo`` (docs/method.md §1.5).  It is kept, value for value, to replicate the paper.
METHOD_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "default": {},
    "paper": {
        "sampler": {
            "kind": "adam_sgld",
            "step_size": 1e-3,
            "step_unit": "absolute",
            "temperature": 1.0,
            "kappa": 1.0,
            "beta1": 0.0,
            "beta2": 0.999,
            "adam_eps": 1e-8,
            "rms_decay": 0.99,
            "rms_eps": 1e-5,
            "friction": 0.1,
            "gamma_term": False,
        },
        "snep": {
            "beta": 1.0,
            "p_snep": False,
            "site_step": {
                "kind": "constant",
                "value": 0.02,
                "offset": 1000.0,
                "power": 0.51,
                "boundaries": [],
                "values": [],
            },
            "n_inner": 10,
            "ep_window": 10,
            "n_sync": 10,
            "n_samples": 1,
            "n_chains": 1,
            "site_update": "site",
            "improper_sites": False,
            "score_cv": False,
            "prior_var": 0.5,
            "v_init": 0.01,
            "m_lo": -10.0,
            "m_hi": 10.0,
            "v_lo": 1e-2,
            "v_hi": 1e2,
            "prec_floor": 1e-3,
            "damping": 0.5,
        },
    },
}

#: Data-set presets (layer 3): ``DATA_PRESETS[method_preset][data_name]``, settings
#: tuned per data set for one method preset on a validation split held out of the
#: training data (never the test set), applied above that method preset and below
#: the config file and the flags when the run uses that data set (``--no-preset``
#: skips them).  Every method preset has an entry (possibly empty).
DATA_PRESETS: dict[str, dict[str, dict[str, dict[str, Any]]]] = {
    "default": {
        # 600 passes over each shard (2,160 iterations with 4 workers, ~20 s): the
        # sites of weights no datum reaches flatten at the site step's rate and need
        # ~1,600 iterations (300 passes left them at 0.81-0.89 of the prior variance on
        # the validation split's training rows, 600 at 0.98, the proper-site floor);
        # on the validation split (10%, seed 0) 300 / 600 / 1000 passes gave posterior
        # mean 6.25 / 6.25 / 5.56% error, NLL 0.178 / 0.197 / 0.163, model average
        # 6.94 / 5.56 / 6.25%, NLL 0.744 / 0.622 / 0.569 (earlier, without the score
        # control variate: 100 passes 6.9% error, 300 the same with a lower NLL)
        "digits": {"train": {"epochs": 600.0}},
    },
    "paper": {
        "digits": {
            "train": {"iterations": 40_000, "eval_every": 2_000},
            "model": {"hidden": [200]},
            "sampler": {"step_size": 3e-3},
            "snep": {"site_step": {"value": 0.2}, "v_lo": 3e-3, "prior_var": 1.0},
        },
    },
}


def _merge_layer(merged: dict[str, Any], layer: Mapping[str, Any]) -> None:
    """Put ``layer`` (a nested config mapping) on top of ``merged``, in place.

    Tables merge key by key; a layer that sets ``train.epochs`` without
    ``train.iterations`` resets the iterations of the layers below to 0 (derive from
    epochs).  A malformed section is kept for :meth:`Config.from_dict` to report.
    """
    for section, values in layer.items():
        if not isinstance(values, Mapping):
            merged[section] = copy.deepcopy(values)
            continue
        current = merged.setdefault(section, {})
        if not isinstance(current, dict):
            continue  # a lower layer's malformed section: Config.from_dict reports it
        if section == "train" and "epochs" in values and "iterations" not in values:
            current["iterations"] = 0
        _deep_update(current, copy.deepcopy(dict(values)))


def with_preset(*layers: Mapping[str, Any], data_preset: bool = True) -> dict[str, Any]:
    """The nested config mapping of ``layers`` (lowest first) on top of their presets.

    The method preset ``METHOD_PRESETS[train.preset]`` and, with ``data_preset``, the
    data set's ``DATA_PRESETS[train.preset][train.data]`` go below the layers, with
    ``train.preset`` and ``train.data`` as the layers set them (else the defaults).
    Pass the result to :meth:`Config.from_dict`, e.g. the paper's configuration on
    MNIST: ``Config.from_dict(with_preset({"train": {"preset": "paper", "data": "mnist"}}))``.
    An unknown preset name is a :class:`ConfigError` listing the known ones.
    """
    user: dict[str, Any] = {}
    for layer in layers:
        _merge_layer(user, layer)
    train = user.get("train")
    train = train if isinstance(train, Mapping) else {}
    name = train.get("preset", TrainConfig.preset)
    if not isinstance(name, str) or name not in METHOD_PRESETS:
        _fail("train.preset", name, f"one of the method presets {list(METHOD_PRESETS)}")
    merged: dict[str, Any] = {}
    _merge_layer(merged, METHOD_PRESETS[name])
    if data_preset:
        data = str(train.get("data", TrainConfig.data)).lower()
        _merge_layer(merged, DATA_PRESETS.get(name, {}).get(data, {}))
    _merge_layer(merged, user)
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


def read_toml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """The tables of a TOML file; a missing, unreadable or malformed file is a
    :class:`ConfigError` naming it and saying what to pass instead."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(
            f"{what} {str(path)!r} does not exist; pass an existing TOML file"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {str(path)!r} is a directory; pass a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {str(path)!r} is not valid TOML: {exc}") from None


def apply_assignment(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``section.key[.sub]=VALUE`` (VALUE in TOML syntax; a bare word is a
    string) to the nested config mapping ``data``, in place (``snep train --set``)."""
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


def _single_worker(method: Any) -> bool:
    return isinstance(method, str) and method in METHODS and not METHODS[method].distributed


def resolve(
    file: str | Path | None = None,
    flags: Mapping[str, Any] | None = None,
    sets: tuple[str, ...] | list[str] = (),
    *,
    data_preset: bool = True,
) -> Config:
    """The configuration of a run, layered (lowest first): defaults < method preset
    (``train.preset``) < the data set's preset for it (skipped when ``data_preset`` is
    false) < the TOML ``file`` < ``flags`` (a nested mapping, section -> key -> value)
    < ``sets`` (``section.key=VALUE`` strings, :func:`apply_assignment`).

    A one-worker method (``adam``) implies ``workers = 1`` unless the layer that chose
    it, or one above it, sets ``workers``.  With
    ``train.iterations = 0`` the run length is still to be derived from the data
    set's size (:meth:`Config.with_data_size`).
    """
    raw = read_toml(file) if file is not None else {}
    top: dict[str, Any] = copy.deepcopy(dict(flags or {}))
    for assignment in sets:
        apply_assignment(top, assignment)
    top_train = top.get("train", {})
    file_train = raw.get("train", {})
    file_train = file_train if isinstance(file_train, Mapping) else {}
    if "workers" not in top_train:
        if _single_worker(top_train.get("method")) or (
            "method" not in top_train
            and _single_worker(file_train.get("method"))
            and "workers" not in file_train
        ):
            top.setdefault("train", {})["workers"] = 1
    return Config.from_dict(with_preset(raw, top, data_preset=data_preset))


def load_config(
    path: str | Path, overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> Config:
    """Read a TOML config file, apply ``overrides`` (section -> key -> value), validate.

    The file goes on top of its method preset (``train.preset``), not of a data-set
    preset (``snep train`` adds that layer): a run directory's ``config.toml`` names
    every key and reads back as it was written.
    """
    return Config.from_dict(with_preset(read_toml(path), overrides or {}, data_preset=False))
