"""Regression check: a short 4-worker SNEP run on MNIST, timed and scored.

The reference configuration of DESIGN §1.8 (the ``paper`` method preset:
784-500-300-10, prior variance 0.5, ε = 0.02, Adam-SGLD h = 1e-3, N_sync = N_inner
= 10, one chain per worker, batch 100; ``snep train --preset paper``) with 4
in-process workers for 300 iterations each, seed 0, on the real MNIST (skipped when
``mnist.npz`` is absent).  Two checks:

* **time**: pytest-benchmark times the whole run (one round: it is ~10 s of
  work); compare against the saved baseline in ``bench/baselines/`` with
  ``--benchmark-compare`` (see bench/README.md, "Regression");
* **accuracy**: the final test error, NLL and ECE of the posterior mean and of the
  model average must not be worse than ``bench/baselines/regression_mnist.json``
  by more than a tolerance derived from the test-set size: 3 binomial standard
  errors for an error rate (``3 sqrt(p (1 - p) / n)``, n = 10,000), and for the NLL
  and ECE 3 standard errors of a mean over n examples (their per-example spread
  measured on the baseline run, stored with it).  The run is deterministic for a
  seed, so an unchanged engine reproduces the baseline exactly; the tolerance
  admits changes that move the arithmetic, not ones that make the method worse.

Refresh the accuracy baseline after an intended change with
``SNEP_UPDATE_REGRESSION=1 python -m pytest bench/test_regression_mnist.py``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from snep.algorithm.runner import fit
from snep.backends import get_backend
from snep.config import Config, with_preset
from snep.data.loaders import find_shared_data, load_dataset

BASELINE = Path(__file__).resolve().parent / "baselines" / "regression_mnist.json"

#: the paper preset under the run's own settings, as ``snep train --preset paper``
PAPER = {"train": {"preset": "paper"}}
CONFIG = Config.from_dict(
    with_preset(
        PAPER,
        {
            "train": {
                "data": "mnist",
                "workers": 4,
                "iterations": 300,
                "eval_every": 300,
                "seed": 0,
                "average_from": 0,
            },
            "model": {"hidden": (500, 300)},
            "sampler": {"kind": "adam_sgld", "step_size": 1e-3},
            "snep": {"prior_var": 0.5, "site_step": {"value": 0.02}},
        },
        data_preset=False,
    )
)

#: estimates and metrics checked against the baseline
CHECKED = ("mean_error", "mean_nll", "mean_ece", "bma_error", "bma_nll", "bma_ece")


def _per_example_sd(posterior, dataset) -> dict[str, float]:
    """Per-example standard deviation of the NLL and of |confidence - correct| (ECE's
    summand) of the posterior mean: the scale of their standard errors."""
    probs = posterior.predict_proba(dataset.x_test, method="mean")
    y = np.asarray(dataset.y_test)
    p_true = np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0)
    correct = (probs.argmax(1) == y).astype(np.float64)
    return {
        "nll": float(np.std(-np.log(p_true), ddof=1)),
        "ece": float(np.std(np.abs(probs.max(1) - correct), ddof=1)),
    }


@pytest.fixture(scope="module")
def mnist():
    if find_shared_data("mnist.npz") is None:
        pytest.skip(
            "MNIST not found: put mnist.npz in ../shared/data/ or set SNEP_DATA_DIR "
            "(the regression run needs the real data set)"
        )
    return load_dataset("mnist")


def test_regression_mnist_4_workers(benchmark, mnist):
    backend = get_backend("cpu")
    result = benchmark.pedantic(fit, args=(CONFIG, mnist, backend), rounds=1, iterations=1)
    final = {k: float(result.final[k]) for k in CHECKED}
    benchmark.extra_info.update(final)
    n = mnist.n_test

    if os.environ.get("SNEP_UPDATE_REGRESSION") == "1" or not BASELINE.exists():
        BASELINE.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "config": CONFIG.to_dict(),
            "n_test": n,
            "final": final,
            "per_example_sd": _per_example_sd(result.posterior, mnist),
        }
        BASELINE.write_text(json.dumps(record, indent=2) + "\n")
        if os.environ.get("SNEP_UPDATE_REGRESSION") != "1":
            pytest.fail(f"no accuracy baseline: wrote {BASELINE}; commit it and run again")
        return

    base = json.loads(BASELINE.read_text())
    # through the paper preset: a key added since the baseline was taken has its value
    # there (or its default), as the run that made the baseline had
    saved = Config.from_dict(with_preset(PAPER, base["config"], data_preset=False))
    assert saved == CONFIG, "baseline of another configuration"
    assert base["n_test"] == n
    worse = []
    for key in CHECKED:
        ref = base["final"][key]
        if key.endswith("_error"):
            tol = 3.0 * math.sqrt(ref * (1.0 - ref) / n)
        else:
            tol = 3.0 * base["per_example_sd"][key.rsplit("_", 1)[1]] / math.sqrt(n)
        if final[key] > ref + tol:
            worse.append(f"{key} {final[key]:.4f} > baseline {ref:.4f} + {tol:.4f}")
    assert not worse, "accuracy regression: " + "; ".join(worse)
