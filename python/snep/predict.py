"""Predictions of a learned posterior on new inputs, with their uncertainty.

For each input the Bayesian model average (BMA) over S draws from q: the class
probabilities p̄ = mean_s p(y | x, θ_s), the predicted class argmax p̄, the predictive
entropy H[p̄] (total uncertainty, nats) and the mutual information between the label
and the parameters, H[p̄] − mean_s H[p(· | x, θ_s)] (the epistemic part: how much the
draws disagree; Houlsby et al. 2011, "BALD"; docs/method.md §1.6).  ``snep predict``
writes them for a run directory; :meth:`snep.posterior.Posterior.predict` returns them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from snep.backends import Backend, get_backend
from snep.errors import DataError
from snep.maths.metrics import predictive_entropy
from snep.posterior import draw_probabilities

__all__ = ["load_inputs", "predict", "write_predictions"]

#: inputs scored at once (memory: S x chunk x K probabilities)
CHUNK = 2048


def predict(
    posterior: Any,
    x: np.ndarray,
    n_samples: int = 20,
    seed: int = 0,
    backend: Backend | str = "auto",
) -> dict[str, np.ndarray]:
    """The model average's predictions on ``x`` (N, D) with their uncertainty.

    Returns
    -------
    dict
        ``probs`` (N, K) float64, ``classes`` (N,) int64, ``entropy`` (N,) and
        ``mutual_information`` (N,), both in nats.

    Raises
    ------
    snep.errors.DataError
        If ``x`` has another number of features than the posterior's model, or
        non-finite values.
    """
    backend = get_backend(backend) if isinstance(backend, str) else backend
    x = np.asarray(x)
    sizes = posterior.spec.layer_sizes
    if x.ndim != 2 or (sizes and x.shape[1] != sizes[0]):
        want = f"(N, {sizes[0]})" if sizes else "(N, D)"
        raise DataError(
            f"inputs have shape {x.shape}; the posterior's model takes {want}: pass inputs "
            "with its number of features (the training data's)"
        )
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        row = int(np.argwhere(~np.isfinite(x))[0][0])
        raise DataError(f"inputs have non-finite values (first in row {row}); remove them")
    if posterior.model is None and not sizes:
        raise DataError("the posterior is over a user's model: set posterior.model first")
    draws = posterior.sample(n_samples, seed)
    probs, expected_entropy = [], []
    for _, p in draw_probabilities(posterior.spec, draws, x, backend, posterior.model, CHUNK):
        p = p.astype(np.float64)  # (S, n, K)
        probs.append(p.mean(0))
        expected_entropy.append(predictive_entropy(p).mean(0))
    mean = np.concatenate(probs) if probs else np.zeros((0, 0))
    entropy = predictive_entropy(mean)
    mutual = np.maximum(entropy - np.concatenate(expected_entropy), 0.0)
    return {
        "probs": mean,
        "classes": mean.argmax(1).astype(np.int64),
        "entropy": entropy,
        "mutual_information": mutual,
    }


def load_inputs(path: str | Path) -> np.ndarray:
    """Inputs as float32 (N, D) in [0, 1], from an ``.npz`` file (array ``x``, else
    ``x_test``, else its only array), an IDX file (raw or gzip) or a directory of IDX
    files (their image files, in name order; label files are skipped).  uint8 pixels
    are divided by 255, as the training data are."""
    from snep.data.loaders import flatten_unit, load_idx

    path = Path(path)
    if not path.exists():
        raise DataError(f"inputs {str(path)!r} do not exist; pass an .npz, IDX file or directory")
    if path.is_dir():
        files = sorted(f for f in path.iterdir() if f.is_file() and "idx" in f.name.lower())
        arrays = [a for a in (load_idx(f) for f in files) if a.ndim >= 2]
        if not arrays:
            raise DataError(
                f"directory {str(path)!r} holds no IDX image file (names containing 'idx', "
                "with two or more dimensions)"
            )
        return np.concatenate([flatten_unit(a, str(path)) for a in arrays])
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            names = [k for k in ("x", "x_test") if k in f.files] or list(f.files)
            if len(names) != 1 and not {"x", "x_test"} & set(f.files):
                raise DataError(
                    f"{str(path)!r} holds arrays {f.files}; name the inputs 'x' (or 'x_test')"
                )
            x = f[names[0]]
    else:
        x = load_idx(path)
    if x.ndim < 2:
        raise DataError(f"{str(path)!r} holds an array of shape {x.shape}; expected (N, ...)")
    return flatten_unit(x, str(path))


def write_predictions(prefix: str | Path, out: dict[str, np.ndarray]) -> tuple[Path, Path]:
    """Write ``PREFIX.npz`` (every array) and ``PREFIX.csv`` (one row per input: the
    predicted class, entropy, mutual information and the class probabilities),
    atomically; returns the two paths."""
    from snep.io import atomic_write, save_npz

    prefix = Path(prefix)
    npz = save_npz(prefix.with_suffix(".npz"), **out)
    k = out["probs"].shape[1] if out["probs"].ndim == 2 else 0
    header = "index,class,entropy,mutual_information," + ",".join(f"p{c}" for c in range(k))
    rows = [header]
    for i, (c, h, mi, p) in enumerate(
        zip(out["classes"], out["entropy"], out["mutual_information"], out["probs"], strict=True)
    ):
        rows.append(f"{i},{c},{h:.6g},{mi:.6g}," + ",".join(f"{v:.6g}" for v in p))
    text = ("\n".join(rows) + "\n").encode()
    csv = atomic_write(prefix.with_suffix(".csv"), lambda fh: fh.write(text))
    return npz, csv
