"""The named experiments of snep: which runs make up each one.

The experiments reproduce and extend section 6 of Hasenclever et al.,
"Distributed Bayesian Learning with Stochastic Natural Gradient Expectation
Propagation and the Posterior Server", JMLR 18 (2017), with docs/method.md §1.8's
reference configuration.  An experiment is a list of *arms* (one method and
setting each) run over seeds.  Arms live in one pool of run directories keyed
by :attr:`Arm.key`, so an arm shared by two experiments (8-worker SNEP on MNIST
is in both ``mnist-workers`` and ``mnist-distributed``) is run once.

Every arm is a plain ``snep train`` command line (:meth:`Arm.command`), so any
run of any experiment can be reproduced by hand.  Every arm runs with ``--preset
paper`` (:data:`PAPER`), except those of the experiments that say they track the
defaults (``Experiment.tracks_defaults``, the ``nn-*`` ones): the SNEP and EP
arms with the paper's sampler and SNEP settings, and the baselines (Adam, A-SGD,
EASGD), which read the sampler's step size, Adam moments, temperature, prior
variance and ``n_sync`` from the same config sections, with the settings they were
run with; the defaults of
:class:`~snep.config.SamplerConfig` and :class:`~snep.config.SNEPConfig` can then
change without changing any experiment (``docs/results.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

from snep.errors import ConfigError

__all__ = ["EXPERIMENTS", "PAPER", "Arm", "Experiment", "get_experiment"]


@dataclass(frozen=True)
class Arm:
    """One method/setting of an experiment, run once per seed.

    Parameters
    ----------
    key : str
        Where its runs live in the pool: ``<group>/<name>``; run ``s`` of the arm is
        ``<pool>/<key>-s<s>``.
    label : str
        Legend and table label.
    args : tuple of str
        ``snep train`` flags (without ``--seed``, ``--out``, ``--name``).
    """

    key: str
    label: str
    args: tuple[str, ...]

    def run_key(self, seed: int) -> str:
        """Pool path of this arm's run with ``seed``."""
        return f"{self.key}-s{seed}"

    def command(self, seed: int) -> list[str]:
        """The ``snep train`` arguments of its run with ``seed`` (no output flags)."""
        return ["train", *self.args, "--seed", str(seed)]


@dataclass(frozen=True)
class Experiment:
    """A named set of arms run over ``seeds``; ``split`` is what the runs score on.

    ``tracks_defaults``: its arms run ``--preset default``, the current defaults, so
    its results are rerun when the defaults change (every other experiment runs the
    paper preset and stays reproducible as it is)."""

    name: str
    title: str
    description: str
    arms: tuple[Arm, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    split: str = "test"
    tracks_defaults: bool = False


# --------------------------------------------------------------------------- settings

#: The paper's reference sampler and SNEP settings (snep.config.METHOD_PRESETS["paper"]),
#: first in every arm's command.
PAPER = ("--preset", "paper")

#: docs/method.md §1.8: MNIST, 784-500-300-10, prior variance 0.5, Adam-SGLD h = 1e-3,
#: 12,000 iterations per worker (ε = 0.02 for SNEP, below).
MNIST_REF = (
    *PAPER, "--data", "mnist", "--hidden", "500,300", "--iterations", "12000",
    "--prior-var", "0.5", "--step-size", "1e-3", "--eval-every", "1000",
)  # fmt: skip
SITE_REF = ("--site-step", "0.02")

#: docs/method.md §1.8's deep MLP: 20 hidden layers of 50 ReLU units, prior variance
#: 0.025, ε = 0.04, h = 6.5e-4, 30,000 iterations.
DEEP_ITERATIONS = 30_000
MNIST_DEEP = (
    *PAPER, "--data", "mnist", "--hidden", ",".join(["50"] * 20), "--iterations",
    str(DEEP_ITERATIONS), "--prior-var", "0.025", "--step-size", "6.5e-4",
    "--eval-every", "2000",
)  # fmt: skip

#: Omniglot character classification (the background set, ``--data omniglot``): 964
#: classes, drawers 0-14 train (14,460 images), drawers 15-19 test (4,820); 784-400-964
#: MLP; the reference
#: SNEP/sampler settings, untuned.
OMNIGLOT = (
    *PAPER, "--data", "omniglot", "--hidden", "400", "--iterations", "3000",
    "--prior-var", "0.5", "--step-size", "1e-3", "--eval-every", "300",
)  # fmt: skip

#: Short 4-worker MNIST runs scored on a validation split (10% of the training
#: data): sensitivity sweeps and the choice of settings never see the test set.
MNIST_SHORT_VAL = (
    *PAPER, "--data", "mnist", "--hidden", "500,300", "--iterations", "3000",
    "--prior-var", "0.5", "--step-size", "1e-3", "--eval-every", "500",
    "--validation", "0.1", "--workers", "4",
)  # fmt: skip


#: The defaults (SGHMC with the step per datum, 8 chains per worker, the score control
#: variate), not the paper preset: MNIST 784-500-300-10, 20 passes over each shard.
MNIST_DEFAULTS = (
    "--preset", "default", "--data", "mnist", "--hidden", "500,300", "--eval-every", "250",
)  # fmt: skip

#: Omniglot with the defaults (the data flag is added per arm).
NN_OMNIGLOT = ("--preset", "default", "--hidden", "400", "--eval-every", "200")

#: Omniglot alphabets with the defaults, scored on a validation split (10% of the
#: training drawings).
NN_OMNIGLOT_VAL = (
    *NN_OMNIGLOT, "--data", "omniglot-alphabet", "--validation", "0.1",
)  # fmt: skip

#: Choosing the temperature on a validation split (10% of the training data), with a
#: 784-100-10 network and 4 workers (a network that fits the session's CPU budget).
MNIST_T_VAL = (
    "--preset", "default", "--data", "mnist", "--hidden", "100", "--workers", "4",
    "--eval-every", "500", "--validation", "0.1",
)  # fmt: skip

#: The same network and split, for run lengths and baselines (the workers per arm).
MNIST_LENGTH_VAL = (
    "--preset", "default", "--data", "mnist", "--hidden", "100", "--eval-every", "500",
    "--validation", "0.1",
)  # fmt: skip


def _snep(group: str, base: tuple[str, ...], n: int, *extra: str, tag: str = "snep") -> Arm:
    label = {"snep": "SNEP", "psnep": "p-SNEP", "snep-T0.5": "SNEP, T = 0.5"}.get(tag, tag)
    return Arm(
        f"{group}/{tag}-{n}w",
        f"{label}, {n} worker{'s' if n > 1 else ''}",
        (*base, "--workers", str(n), *extra),
    )


def _baseline(group: str, base: tuple[str, ...], method: str, n: int) -> Arm:
    label = {"adam": "Adam", "asgd": "A-SGD", "easgd": "EASGD"}[method]
    return Arm(
        f"{group}/{method}-{n}w",
        f"{label}, {n} worker{'s' if n > 1 else ''}",
        (*base, "--method", method, "--workers", str(n)),
    )


def _omniglot_arms(data: str) -> tuple[Arm, ...]:
    """Adam, SNEP (8 workers) and EASGD (8 workers) on Omniglot with ``data``'s labels."""
    base = tuple(data if a == "omniglot" else a for a in OMNIGLOT)
    arms = (
        _baseline(data, base, "adam", 1),
        _snep(data, (*base, *SITE_REF), 8),
        _baseline(data, base, "easgd", 8),
    )
    if data == "omniglot":
        return arms
    return tuple(Arm(a.key, a.label + ", alphabets", a.args) for a in arms)


_MNIST_SNEP = {n: _snep("mnist", (*MNIST_REF, *SITE_REF), n) for n in (1, 2, 4, 8)}
_MNIST_ADAM = _baseline("mnist", MNIST_REF, "adam", 1)


_VAL_REF = Arm(
    "mnist-val/snep-4w-ref",
    "reference (β = 1, N_sync = N_inner = 10, v_lo = 1e-2)",
    (*MNIST_SHORT_VAL, *SITE_REF),
)
_REF_VALUES = {
    "--beta": "1",
    "--n-sync": "10",
    "--n-inner": "10",
    "--v-lo": "1e-2",
    "--prior-var": "0.5",
    "--site-step": "0.02",
    "--step-size": "1e-3",
}


def _sweep(name: str, flag: str, values: tuple[str, ...]) -> tuple[Arm, ...]:
    """Arms varying one flag around the 4-worker reference point :data:`_VAL_REF`."""
    return tuple(
        _VAL_REF
        if _REF_VALUES[flag] == v
        else Arm(f"mnist-val/snep-4w-{name}{v}", f"{name} = {v}", (*_VAL_REF.args, flag, v))
        for v in values
    )


EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment(
            "mnist-workers",
            "MNIST 784-500-300-10: SNEP with 1, 2, 4, 8 workers against Adam",
            "docs/method.md §1.8's reference configuration; the paper's claim that more "
            "workers reach a better solution.",
            (_MNIST_ADAM, *_MNIST_SNEP.values()),
        ),
        Experiment(
            "mnist-distributed",
            "MNIST 784-500-300-10, 8 workers: SNEP, p-SNEP, A-SGD, EASGD, Adam",
            "Every method on the same kernels, data and iterations per worker.",
            (
                _MNIST_ADAM,
                _MNIST_SNEP[8],
                _snep("mnist", (*MNIST_REF, *SITE_REF), 8, "--p-snep", tag="psnep"),
                _baseline("mnist", MNIST_REF, "asgd", 8),
                _baseline("mnist", MNIST_REF, "easgd", 8),
            ),
        ),
        Experiment(
            "mnist-deep",
            "MNIST, 20 hidden layers of 50 ReLU units: p-SNEP with 2, 4, 8 workers "
            "against A-SGD and EASGD",
            f"docs/method.md §1.8's deep MLP, {DEEP_ITERATIONS} iterations per worker.",
            (
                *(
                    _snep(
                        "mnist-deep", MNIST_DEEP, n, "--p-snep", "--site-step", "0.04", tag="psnep"
                    )
                    for n in (2, 4, 8)
                ),
                _baseline("mnist-deep", MNIST_DEEP, "asgd", 8),
                _baseline("mnist-deep", MNIST_DEEP, "easgd", 8),
            ),
            seeds=(0,),
        ),
        Experiment(
            "omniglot",
            "Omniglot (drawers 0-14 train / 15-19 test): character classification "
            "(964 classes of the background set, 784-400-964) and alphabet classification "
            "(30 classes, 784-400-30); SNEP with 8 workers against Adam and EASGD",
            "Characters: 15 training images per class, where a posterior should help "
            "most; alphabets: 50 classes of very different sizes.",
            (*_omniglot_arms("omniglot"), *_omniglot_arms("omniglot-alphabet")),
            seeds=(0,),
        ),
        Experiment(
            "mnist-noniid",
            "MNIST, 8 workers, label-skewed shards (Dirichlet α = 0.5): SNEP against EASGD",
            "Each worker sees a skewed mix of the classes.",
            tuple(
                Arm(
                    f"mnist-noniid/{a.key.split('/')[1]}",
                    a.label + ", Dirichlet 0.5",
                    (*a.args, "--sharding", "dirichlet", "--dirichlet-alpha", "0.5"),
                )
                for a in (_MNIST_SNEP[8], _baseline("mnist", MNIST_REF, "easgd", 8))
            ),
            seeds=(0,),
        ),
        Experiment(
            "mnist-chosen",
            "MNIST 784-500-300-10, 8 workers, with the setting chosen on the validation "
            "split (temperature T = 0.5) against the reference",
            "The only change that helped on the validation split (mnist-tuning): the "
            "likelihood divided by T = 0.5 (a colder posterior).",
            (
                _MNIST_SNEP[8],
                _snep(
                    "mnist",
                    (*MNIST_REF, *SITE_REF),
                    8,
                    "--set",
                    "sampler.temperature=0.5",
                    tag="snep-T0.5",
                ),
            ),
            seeds=(0,),
        ),
        Experiment(
            "mnist-sensitivity",
            "Sensitivity of 4-worker SNEP to β, N_sync and N_inner (MNIST, 3,000 "
            "iterations, validation split)",
            "One setting changed at a time from β = 1, N_sync = N_inner = 10.",
            (
                *_sweep("beta", "--beta", ("0.25", "0.5", "1")),
                *_sweep("n_sync", "--n-sync", ("1", "50")),
                *_sweep("n_inner", "--n-inner", ("1", "50")),
            ),
            seeds=(0,),
            split="validation",
        ),
        Experiment(
            "mnist-vlo",
            "Site variance floor v_lo (MNIST, 4 workers, 3,000 iterations, validation split)",
            "v_lo caps the posterior precision at 1/σ0² + n/v_lo (docs/method.md §1.3).",
            _sweep("v_lo", "--v-lo", ("1e-2", "1e-3", "1e-4", "3e-2")),
            seeds=(0,),
            split="validation",
        ),
        Experiment(
            "mnist-tuning",
            "Prior variance, site step ε, sampler step h, noise clip κ and temperature "
            "(MNIST, 4 workers, 3,000 iterations, validation split)",
            "One setting changed at a time from the reference point; for choosing "
            "settings without the test set.",
            (
                *_sweep("prior_var", "--prior-var", ("0.5", "0.1")),
                *_sweep("eps", "--site-step", ("0.05",)),
                *_sweep("h", "--step-size", ("3e-4",)),
                *(
                    Arm(
                        f"mnist-val/snep-4w-kappa{k}",
                        f"κ = {k} (Adam-SGLD noise clip h·κ)",
                        (*_VAL_REF.args, "--set", f"sampler.kappa={k}"),
                    )
                    for k in ("10", "30")
                ),
                *(
                    Arm(
                        f"mnist-val/snep-4w-T{t}",
                        f"temperature T = {t} (likelihood / T)",
                        (*_VAL_REF.args, "--set", f"sampler.temperature={t}"),
                    )
                    for t in ("0.5", "2")
                ),
            ),
            seeds=(0,),
            split="validation",
        ),
        Experiment(
            "nn-mnist",
            "MNIST 784-500-300-10 with the defaults (SGHMC, 8 chains per worker, the "
            "score control variate): SNEP with 8 and 1 workers against Adam, A-SGD and "
            "EASGD",
            "The issue 'Neural networks, honestly': a posterior that beats the baselines "
            "where a posterior should (NLL, ECE, BMA, uncertainty on Omniglot images).",
            (
                _snep("nn-mnist", MNIST_DEFAULTS, 8),
                # one worker at the default step (per datum, 1 / (n_workers n_local))
                # diverged in 10 iterations (step 0.3 in 30, 0.1 was stable): its tilted
                # distribution holds all 60,000 examples, 8 times the curvature of an
                # 8-worker shard; 0.125 takes the 8-worker run's step relative to its
                # tilted distribution.  With 8 chains its chains part into different
                # modes (the prior cavity does not hold them; docs/results.md §0b),
                # so one chain
                _snep("nn-mnist", MNIST_DEFAULTS, 1, "--step-size", "0.125", "--chains", "1"),
                _baseline("nn-mnist", MNIST_DEFAULTS, "adam", 1),
                _baseline("nn-mnist", MNIST_DEFAULTS, "asgd", 8),
                _baseline("nn-mnist", MNIST_DEFAULTS, "easgd", 8),
            ),
            tracks_defaults=True,
        ),
        Experiment(
            "nn-omniglot",
            "Omniglot with the defaults (SGHMC, 8 chains per worker, the score control "
            "variate): characters (784-400-964) and alphabets (784-400-30), SNEP with 8 "
            "workers against Adam and EASGD",
            "The poster's second data set; 20 passes over each shard.",
            tuple(
                Arm(arm.key, arm.label + suffix, arm.args)
                for data, suffix in (("omniglot", ""), ("omniglot-alphabet", ", alphabets"))
                for arm in (
                    _snep(f"nn-{data}", (*NN_OMNIGLOT, "--data", data), 8),
                    _baseline(f"nn-{data}", (*NN_OMNIGLOT, "--data", data), "adam", 1),
                    _baseline(f"nn-{data}", (*NN_OMNIGLOT, "--data", data), "easgd", 8),
                )
            ),
            tracks_defaults=True,
        ),
        Experiment(
            "nn-mnist-temperature",
            "Temperature T for the MNIST preset (784-100-10, 4 workers, the defaults, "
            "validation split)",
            "The likelihood divided by T (the prior is not); chosen on held-out "
            "training data, never the test set.",
            tuple(
                Arm(
                    f"nn-mnist-val/snep-4w-T{t}",
                    f"T = {t}",
                    (*MNIST_T_VAL, "--temperature", t),
                )
                for t in ("1", "0.5", "0.25")
            ),
            seeds=(0,),
            split="validation",
            tracks_defaults=True,
        ),
        Experiment(
            "nn-mnist-length",
            "Run length and chains per worker for the MNIST defaults (784-100-10, 4 "
            "workers, validation split): 20 and 80 passes over each shard, 8, 6, 4 and 1 "
            "chains, with and without the score control variate, against Adam with the "
            "same passes",
            "Whether SNEP's gap to Adam (docs/results.md §0b) closes with a longer run, "
            "and what the chains per worker cost or buy; chosen on held-out training "
            "data, never the test set.",
            (
                # the temperature experiment's T = 1 arm (the same run)
                Arm(
                    "nn-mnist-val/snep-4w-T1",
                    "SNEP, 20 passes, 8 chains",
                    (*MNIST_T_VAL, "--temperature", "1"),
                ),
                *(
                    Arm(
                        f"nn-mnist-val/snep-4w-e80-c{c}",
                        f"SNEP, 80 passes, {c} chain{'s' if c > 1 else ''}"
                        + (", no control variate" if c < 6 else ""),
                        (*MNIST_LENGTH_VAL, "--workers", "4", "--epochs", "80", "--chains", str(c)),
                    )
                    for c in (8, 6, 4, 1)
                ),
                Arm(
                    "nn-mnist-val/snep-4w-c6",
                    "SNEP, 20 passes, 6 chains",
                    (*MNIST_LENGTH_VAL, "--workers", "4", "--chains", "6"),
                ),
                *(
                    Arm(
                        f"nn-mnist-val/snep-4w-c{c}-nocv",
                        f"SNEP, 20 passes, {c} chains, no control variate",
                        (
                            *MNIST_LENGTH_VAL,
                            "--workers",
                            "4",
                            "--chains",
                            str(c),
                            "--set",
                            "snep.score_cv=false",
                        ),
                    )
                    for c in (8, 4)
                ),
                *(
                    Arm(
                        f"nn-mnist-val/adam-1w-e{e}",
                        f"Adam, {e} passes",
                        (*MNIST_LENGTH_VAL, "--method", "adam", "--workers", "1", "--epochs", e),
                    )
                    for e in ("20", "80")
                ),
            ),
            seeds=(0, 1, 2),
            split="validation",
            tracks_defaults=True,
        ),
        Experiment(
            "nn-omniglot-length",
            "Run length for Omniglot alphabets with the defaults (784-400-30, 8 workers, "
            "validation split): SNEP for 160 passes over each shard, evaluated along the "
            "way, against Adam and EASGD for 20 and 160 passes",
            "docs/results.md §0c: 20 passes leave SNEP's sites near their start; this "
            "chooses the run length on held-out training data, never the test set.",
            (
                Arm(
                    "nn-omniglot-val/snep-8w-e160",
                    "SNEP, 8 workers, 160 passes",
                    (*NN_OMNIGLOT_VAL, "--workers", "8", "--epochs", "160"),
                ),
                *(
                    Arm(
                        f"nn-omniglot-val/{m}-{n}w-e{e}",
                        f"{label}, {e} passes",
                        (*NN_OMNIGLOT_VAL, "--method", m, "--workers", str(n), "--epochs", e),
                    )
                    for m, n, label in (("adam", 1, "Adam"), ("easgd", 8, "EASGD, 8 workers"))
                    for e in ("20", "160")
                ),
            ),
            seeds=(0,),
            split="validation",
            tracks_defaults=True,
        ),
    )
}


def get_experiment(name: str) -> Experiment:
    """The experiment called ``name``; a :class:`~snep.errors.ConfigError` lists the names."""
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise ConfigError(
            f"unknown experiment {name!r}; expected one of {sorted(EXPERIMENTS)} "
            "(snep experiment --list describes them)"
        ) from None
