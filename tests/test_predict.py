"""``snep predict`` and :meth:`Posterior.predict`: the model average's probabilities,
classes, predictive entropy and mutual information against an independent float64
Monte Carlo computation with the same draws; the input formats; clear errors."""

from __future__ import annotations

import numpy as np
import pytest

import predictive_reference as ref
from snep.cli import main
from snep.data.loaders import load_digits, save_idx
from snep.errors import DataError
from snep.model.spec import ParamSpec
from snep.posterior import Posterior
from snep.predict import load_inputs

S, SEED = 12, 3


@pytest.fixture(scope="module")
def posterior() -> Posterior:
    data = load_digits()
    spec = ParamSpec((data.n_features, 16, data.n_classes))
    rng = np.random.default_rng(7)
    prec = rng.uniform(4, 40, spec.size)
    return Posterior(spec, prec, prec * rng.normal(0, 0.3, spec.size))


def entropy(p: np.ndarray) -> np.ndarray:
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)


def test_predict_equals_a_float64_monte_carlo_average_of_the_same_draws(posterior):
    x = load_digits().x_test[:100]
    thetas = ref.draws(posterior.precision, posterior.precision_mean, S, SEED)
    per_draw = np.stack([ref.forward(posterior.spec.layer_sizes, t, x)[0] for t in thetas])
    want_p = per_draw.mean(0)
    want_h = entropy(want_p)
    want_mi = want_h - entropy(per_draw).mean(0)
    got = posterior.predict(x, n_samples=S, seed=SEED, backend="numpy")  # float64
    np.testing.assert_allclose(got["probs"], want_p, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got["entropy"], want_h, rtol=0, atol=1e-10)
    np.testing.assert_allclose(got["mutual_information"], want_mi, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(got["classes"], want_p.argmax(1))
    assert (want_mi > 1e-3).mean() > 0.5  # the draws disagree: a test that can fail
    # float32 (cpu): the same up to float32 rounding of probabilities in [0, 1]
    got32 = posterior.predict(x, n_samples=S, seed=SEED, backend="cpu")
    np.testing.assert_allclose(got32["probs"], want_p, atol=1e-5)


def test_snep_predict_reads_npz_idx_and_idx_directories(posterior, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    posterior.save(run / "posterior.npz")
    (run / "config.toml").write_text("[train]\nbma_samples = 12\nseed = 3\n")
    x = load_digits().x_test[:30]
    np.savez(tmp_path / "in.npz", x=x)
    pixels = np.round(x * 255).astype(np.uint8)
    idx_dir = tmp_path / "idx"
    idx_dir.mkdir()
    save_idx(idx_dir / "a-images-idx3-ubyte", pixels[:20].reshape(20, 8, 8))
    save_idx(idx_dir / "b-images-idx3-ubyte", pixels[20:].reshape(10, 8, 8))
    save_idx(idx_dir / "a-labels-idx1-ubyte", np.zeros(20, np.uint8))  # skipped
    for inputs, prefix in [("in.npz", "p1"), ("idx", "p2"), ("idx/a-images-idx3-ubyte", "p3")]:
        argv = ["predict", str(run), str(tmp_path / inputs), "--out", str(tmp_path / prefix)]
        assert main([*argv, "--seed", str(SEED)]) == 0
    want = posterior.predict(x, n_samples=12, seed=SEED, backend="cpu")
    with np.load(tmp_path / "p1.npz") as f:
        for key in ("probs", "classes", "entropy", "mutual_information"):
            np.testing.assert_array_equal(f[key], want[key])
    with np.load(tmp_path / "p2.npz") as f:  # pixels rounded to 1/255: nearly the same
        np.testing.assert_allclose(f["probs"], want["probs"], atol=0.05)
        assert f["probs"].shape == (30, 10)
    with np.load(tmp_path / "p3.npz") as f:
        assert f["probs"].shape == (20, 10)
    rows = (tmp_path / "p1.csv").read_text().splitlines()
    assert rows[0].startswith("index,class,entropy,mutual_information,p0") and len(rows) == 31
    assert int(rows[1].split(",")[1]) == want["classes"][0]
    assert "wrote" in capsys.readouterr().out


def test_bad_inputs_are_clear_errors(posterior, tmp_path, capsys):
    with pytest.raises(DataError, match=r"shape \(3, 5\).*\(N, 64\)"):
        posterior.predict(np.zeros((3, 5)))
    bad = np.zeros((3, 64))
    bad[1, 2] = np.nan
    with pytest.raises(DataError, match="non-finite values"):
        posterior.predict(bad)
    np.savez(tmp_path / "nan.npz", x=bad)
    with pytest.raises(DataError, match="NaN"):
        load_inputs(tmp_path / "nan.npz")
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 64)), b=np.zeros((2, 64)))
    with pytest.raises(DataError, match="name the inputs 'x'"):
        load_inputs(tmp_path / "two.npz")
    with pytest.raises(DataError, match="do not exist"):
        load_inputs(tmp_path / "missing.npz")
    assert main(["predict", str(tmp_path / "no-run"), str(tmp_path / "two.npz")]) == 2
    assert "snep: error:" in capsys.readouterr().err
