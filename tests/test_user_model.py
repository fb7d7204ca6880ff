"""A user's own model through ``snep.fit(config, data, model=...)``: the README's example
as printed, the linear regression of docs/models.md against its closed-form posterior
(in process and under ``mpiexec``), and clear errors for a model or data that break
the contract (:mod:`snep.model.protocol`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import snep
from snep.config import Config
from snep.errors import ConfigError, DataError
from snep.posterior import Posterior

ROOT = Path(__file__).resolve().parents[1]


def example(doc: str, name: str) -> str:
    """The ```python block after ``<!-- example:NAME -->`` in ``doc``."""
    text = (ROOT / doc).read_text()
    match = re.search(rf"<!-- example:{name} -->\n```python\n(.*?)```", text, re.S)
    assert match, f"no example {name!r} in {doc}"
    return match.group(1)


def run_script(code: str, tmp_path: Path, *launcher: str) -> str:
    script = tmp_path / "example.py"
    script.write_text(code)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [*launcher, sys.executable, str(script)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def numbers(line: str) -> np.ndarray:
    return np.array([float(v) for v in re.findall(r"-?\d+\.\d*", line.split(":", 1)[1])])


def test_the_readme_example_runs_as_printed(tmp_path):
    out = run_script(example("README.md", "user-model"), tmp_path).splitlines()
    error, nll = numbers(out[0])
    # logistic regression on 143 test patients: the README quotes 0.028 / 0.095; a
    # model that learned nothing has error ~0.37 (the minority class) and NLL ln 2
    assert error < 0.06 and nll < 0.15
    probs = np.array([numbers("x:" + line) for line in out[1:4]])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=2e-3)
    assert 0.01 < float(out[4]) < 1.0  # variances learned: below the prior, above zero


LINREG = "docs/models.md"


def check_linear_regression(out: str) -> None:
    offsets, ratios = (numbers(line) for line in out.splitlines()[:2])
    # against the closed form: means within 0.2 exact sd, variances within [0.8, 1.25]
    # (docs/method.md §1.9's tolerance for SG-MCMC moments; measured 0.07 and 0.89-1.04)
    assert np.abs(offsets).max() <= 0.2, offsets
    assert ratios.min() >= 0.8 and ratios.max() <= 1.25, ratios


def test_linear_regression_recovers_its_closed_form_posterior(tmp_path):
    check_linear_regression(run_script(example(LINREG, "linear-regression"), tmp_path))


@pytest.mark.requires("mpi")
@pytest.mark.mpi
def test_linear_regression_under_mpiexec_equals_the_in_process_run(tmp_path):
    code = example(LINREG, "linear-regression")
    in_process = run_script(code, tmp_path)
    under_mpi = run_script(code, tmp_path, shutil.which("mpiexec") or "mpiexec", "-n", "5")
    assert under_mpi == in_process  # synchronous: the same posterior, bitwise
    check_linear_regression(under_mpi)


class Mean:
    """y ~ N(mu, 1): one parameter, for the error cases and the round trip."""

    n_params = 1

    def loglik_and_grad(self, params, x, y, grad_out):
        r = y - params[:, :1]
        grad_out[:, 0] = r.sum(1)
        return -0.5 * (r * r).sum(1)


CFG = Config().replace(train={"workers": 2, "iterations": 40, "eval_every": 20})


def test_a_model_without_predict_proba_runs_and_its_posterior_round_trips(tmp_path):
    rng = np.random.default_rng(1)
    y = rng.normal(2.0, 1.0, 400)
    res = snep.fit(CFG, (np.zeros((400, 1)), y), model=Mean())
    assert "mean_error" not in res.final  # no test metrics without predict_proba
    q = res.posterior
    assert q.spec.size == 1 and q.spec.layer_sizes == ()
    path = q.save(tmp_path / "posterior.npz")
    back = Posterior.load(path)
    np.testing.assert_array_equal(back.precision, q.precision)
    with pytest.raises(ValueError, match="model="):
        back.predict_proba(np.zeros((2, 1)))


@pytest.mark.parametrize(
    ("model", "fragment"),
    [
        (object(), "has no method loglik_and_grad"),
        (type("M", (Mean,), {"n_params": 0})(), "n_params = 0"),
        (type("M", (Mean,), {"n_params": 2.5})(), "n_params = 2.5"),
    ],
)
def test_a_model_that_breaks_the_contract_is_a_clear_error(model, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        snep.fit(CFG, (np.zeros((10, 1)), np.zeros(10)), model=model)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ((np.zeros((10, 1)), np.zeros(9)), "10 rows but y_train 9"),
        ((np.full((10, 1), np.nan), np.zeros(10)), "non-finite values"),
        ((np.zeros((10, 1)), np.zeros(10), np.zeros((5, 2)), np.zeros(5)), "must match"),
        (np.zeros(3), "expected a snep Dataset"),
    ],
)
def test_bad_data_for_a_model_is_a_clear_error(data, fragment):
    with pytest.raises(DataError, match=re.escape(fragment)):
        snep.fit(CFG, data, model=Mean())
