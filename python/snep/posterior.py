"""The learned approximate posterior: a diagonal Gaussian over the flat
parameters of an MLP, with point-estimate and Bayesian-model-average
predictions (docs/method.md §1.6) and a stable ``posterior.npz`` file format.

``posterior.npz`` holds float64 arrays ``precision``, ``precision_mean``,
``mean``, ``var`` (all of length P), the layout ``layer_sizes`` (int64), and,
when the server averaged the posterior, ``average_mean`` and ``average_var``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from snep.backends import Backend, get_backend
from snep.errors import DataError
from snep.io import save_npz
from snep.maths.family import DiagGaussian, moments
from snep.model.protocol import FlatSpec
from snep.model.spec import ParamSpec

__all__ = ["Posterior", "draw_probabilities", "predict_proba_params"]

METHODS = ("mean", "average", "bma")


def draw_probabilities(
    spec: ParamSpec | FlatSpec,
    params: np.ndarray,
    x: np.ndarray,
    backend: Backend,
    model: Any = None,
    chunk: int = 2048,
) -> Iterator[tuple[slice, np.ndarray]]:
    """The predictive probabilities of each row of ``params`` (S, P), by chunks of the
    inputs ``x`` (N, ...): yields ``(rows, probs)`` with ``probs`` (S, n, K) in the
    backend's dtype.  They come from ``model.predict_proba`` (a user's model,
    :mod:`snep.model.protocol`) or, without one, from the backend's MLP of ``spec``."""
    if model is not None:
        if not callable(getattr(model, "predict_proba", None)):
            raise ValueError(f"model {type(model).__name__} has no predict_proba(params, x)")
        predictor = model
    elif not spec.layer_sizes:
        raise ValueError(
            "this posterior is over a user's model's parameters (no MLP layout): pass "
            "model=, an object with predict_proba(params, x)"
        )
    else:
        predictor = backend.mlp(spec, params.shape[0], 1)
    params = np.ascontiguousarray(params, dtype=backend.dtype)
    x = np.ascontiguousarray(x, dtype=backend.dtype)
    for lo in range(0, x.shape[0], chunk):
        rows = slice(lo, lo + chunk)
        yield rows, np.asarray(predictor.predict_proba(params, x[rows]))


def predict_proba_params(
    spec: ParamSpec | FlatSpec,
    params: np.ndarray,
    x: np.ndarray,
    backend: Backend,
    chunk: int = 2048,
    model: Any = None,
) -> np.ndarray:
    """Mean over the rows of ``params`` (S, P) of the predictive probabilities (N, K)
    (:func:`draw_probabilities`)."""
    out = None
    for rows, probs in draw_probabilities(spec, params, x, backend, model, chunk):
        if out is None:
            out = np.empty((x.shape[0], probs.shape[-1]), np.float64)
        out[rows] = probs.mean(axis=0, dtype=np.float64)
    if out is None:  # no inputs
        return np.empty((0, spec.layer_sizes[-1] if spec.layer_sizes else 0), np.float64)
    return out


@dataclass
class Posterior:
    """Diagonal Gaussian ``q(x) = N(mean, var)`` over the parameters of ``spec``.

    Attributes
    ----------
    spec : ParamSpec
        Parameter layout.
    precision, precision_mean : ndarray (P,) float64
        Natural parameters (``theta`` of the posterior server).
    average_mean, average_var : ndarray or None
        Running average of the posterior's moments kept by the server.
    """

    spec: ParamSpec | FlatSpec
    precision: np.ndarray
    precision_mean: np.ndarray
    average_mean: np.ndarray | None = None
    average_var: np.ndarray | None = None
    #: a user's model (snep.model.protocol) whose predict_proba serves the predictions;
    #: not saved (``posterior.npz`` holds arrays only: pass it again after a load)
    model: Any = field(default=None, repr=False, compare=False)

    @property
    def mean(self) -> np.ndarray:
        return moments(DiagGaussian(self.precision, self.precision_mean))[0]

    @property
    def var(self) -> np.ndarray:
        return 1.0 / self.precision

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` draws from q, shape (n, P), from ``numpy.random.default_rng(seed)``."""
        rng = np.random.default_rng(seed)
        z = rng.standard_normal((n, self.precision.size))
        return self.mean + np.sqrt(self.var) * z

    def predict_proba(
        self,
        x: np.ndarray,
        method: str = "bma",
        n_samples: int = 20,
        seed: int = 0,
        backend: Backend | str = "auto",
        model: Any = None,
    ) -> np.ndarray:
        """Predictive class probabilities (N, K).

        Parameters
        ----------
        method : {"bma", "mean", "average"}
            ``bma``: mean of the predictive probabilities over ``n_samples`` draws
            from q (Bayesian model average); ``mean``: point estimate at the
            posterior mean; ``average``: point estimate at the server's running
            average of the mean.
        model : object, optional
            A user's model with ``predict_proba(params, x)`` (default: the one this
            posterior was fitted with, else the MLP of ``spec``).
        """
        backend = get_backend(backend) if isinstance(backend, str) else backend
        model = model if model is not None else self.model
        if method == "mean":
            params = self.mean[None]
        elif method == "average":
            if self.average_mean is None:
                raise ValueError(
                    "method='average' needs the server's running average, which this posterior "
                    "does not have (the run ended before train.average_from); use 'mean' or 'bma'"
                )
            params = self.average_mean[None]
        elif method == "bma":
            params = self.sample(n_samples, seed)
        else:
            raise ValueError(f"method={method!r} is not one of {list(METHODS)}")
        return predict_proba_params(self.spec, params, x, backend, model=model)

    def predict(
        self,
        x: np.ndarray,
        n_samples: int = 20,
        seed: int = 0,
        backend: Backend | str = "auto",
    ) -> dict[str, np.ndarray]:
        """The model average's predictions on ``x`` with their uncertainty:
        ``probs`` (N, K), ``classes`` (N,), the predictive ``entropy`` and the
        ``mutual_information`` (its epistemic part), in nats
        (:func:`snep.predict.predict`)."""
        from snep.predict import predict

        return predict(self, x, n_samples, seed, backend)

    def save(self, path: str | Path) -> Path:
        """Write ``posterior.npz`` atomically (format in the module docstring)."""
        extra = {
            key: value
            for key, value in (
                ("average_mean", self.average_mean),
                ("average_var", self.average_var),
            )
            if value is not None  # a point-estimate baseline averages the mean only
        }
        return save_npz(
            path,
            precision=self.precision,
            precision_mean=self.precision_mean,
            mean=self.mean,
            var=self.var,
            layer_sizes=np.asarray(self.spec.layer_sizes, np.int64),
            **extra,
        )

    @classmethod
    def load(cls, path: str | Path) -> Posterior:
        """Read a ``posterior.npz`` written by :meth:`save`."""
        path = Path(path)
        if path.is_dir():
            raise DataError(
                f"{str(path)!r} is a directory; pass the posterior.npz file inside a run "
                "directory (or use snep.rundir.load_run for the whole run)"
            )
        if not path.is_file():
            raise DataError(
                f"posterior file {str(path)!r} does not exist; pass a posterior.npz written by snep"
            )
        with np.load(path, allow_pickle=False) as f:
            missing = {"precision", "precision_mean", "layer_sizes"} - set(f.files)
            if missing:
                raise DataError(f"{str(path)!r} lacks array(s) {sorted(missing)}; found {f.files}")
            sizes = tuple(int(s) for s in f["layer_sizes"])
            # no layer sizes: a user's model's flat parameters
            spec = ParamSpec(sizes) if sizes else FlatSpec(int(f["precision"].size))
            arrays = {}
            for key in ("precision", "precision_mean", "average_mean", "average_var"):
                if key not in f.files:
                    continue
                arr = f[key].astype(np.float64)
                if arr.shape != (spec.size,):
                    raise DataError(
                        f"{str(path)!r}: {key} has shape {arr.shape}, expected ({spec.size},) "
                        f"for layer sizes {list(spec.layer_sizes)}"
                    )
                arrays[key] = arr
            return cls(
                spec,
                arrays["precision"],
                arrays["precision_mean"],
                arrays.get("average_mean"),
                arrays.get("average_var"),
            )
