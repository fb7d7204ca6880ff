"""Plots of training histories: test error and NLL against epochs per worker.

The curves are those of Hasenclever et al., "Distributed Bayesian Learning with
Stochastic Natural Gradient Expectation Propagation and the Posterior Server",
JMLR 18 (2017), section 6: test error of the posterior mean (and of the running
average and the Bayesian model average) against "epochs per worker"
(iterations per worker x batch size / training-set size, docs/method.md §1.6).

matplotlib is imported inside the functions only, with the non-interactive
``Agg`` backend, so importing this module (or :mod:`snep.cli`) stays cheap and
works without a display.
"""

from __future__ import annotations

import io
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from snep.io import atomic_write

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["ESTIMATES", "plot_histories", "plot_history"]

#: Metric-key prefixes of the estimates and their legend labels, in plotting order.
ESTIMATES: tuple[tuple[str, str], ...] = (
    ("mean", "posterior mean"),
    ("bma", "model average (BMA)"),
    ("avg", "running average"),
)

_PANELS = (("error", "test error (%)", 100.0), ("nll", "test NLL (nats)", 1.0))

_X_LABELS = {
    "epochs_per_worker": "epochs per worker",
    "iteration": "iterations per worker",
    "wall_seconds": "wall-clock time (s)",
}


def _new_figure(n_panels: int) -> tuple[Figure, list[Axes]]:
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        # Headless default for anything that later imports pyplot in this process;
        # an interactive session that already chose a backend keeps it.
        matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # A bare Figure with an Agg canvas: no pyplot figure registry, no global state.
    fig = Figure(figsize=(5.0 * n_panels, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, n_panels, i + 1) for i in range(n_panels)]
    return fig, axes


def _save(fig: Figure, path: str | Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    data = buf.getvalue()
    return atomic_write(path, lambda fh: fh.write(data))


def _series(
    records: Sequence[Mapping[str, Any]], x: str, key: str, scale: float
) -> tuple[list[float], list[float]]:
    """(x, y) of the records holding a finite ``key``; ``x`` falls back to ``iteration``."""
    xs: list[float] = []
    ys: list[float] = []
    for rec in records:
        y = rec.get(key)
        xv = rec.get(x, rec.get("iteration"))
        if not isinstance(y, (int, float)) or not isinstance(xv, (int, float)):
            continue
        if math.isfinite(float(y)) and math.isfinite(float(xv)):
            xs.append(float(xv))
            ys.append(float(y) * scale)
    return xs, ys


def _x_label(records: Sequence[Mapping[str, Any]], x: str) -> str:
    if records and all(x not in r for r in records):
        x = "iteration"
    return _X_LABELS.get(x, x.replace("_", " "))


def _finish_panel(ax: Any, xlabel: str, ylabel: str, drawn: int) -> None:
    """Axis labels, grid, and a legend (or a note that nothing was drawn)."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if drawn:
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no evaluations", ha="center", va="center", transform=ax.transAxes)


def plot_history(
    records: Sequence[Mapping[str, Any]],
    path: str | Path,
    title: str = "",
    x: str = "epochs_per_worker",
) -> Path:
    """Write a PNG of one run's test error (%) and NLL, side by side.

    Parameters
    ----------
    records : sequence of dict
        Evaluation records (``metrics.jsonl`` / ``FitResult.history``).
    path : path
        Output PNG (written atomically).
    title : str
        Figure title.
    x : str
        Key of the x axis (default ``epochs_per_worker``; records without it
        use ``iteration``).

    Returns
    -------
    Path
        ``path``.

    Notes
    -----
    One line per estimate present in the records: ``mean_*`` ("posterior
    mean"), ``bma_*`` ("model average (BMA)"), ``avg_*`` ("running average").
    Absent estimates are skipped (the Adam baseline has only ``mean_*``).
    """
    fig, axes = _new_figure(len(_PANELS))
    for ax, (metric, ylabel, scale) in zip(axes, _PANELS, strict=True):
        drawn = 0
        for prefix, label in ESTIMATES:
            xs, ys = _series(records, x, f"{prefix}_{metric}", scale)
            if xs:
                ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, ms=3, label=label)
                drawn += 1
        _finish_panel(ax, _x_label(records, x), ylabel, drawn)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_histories(
    runs: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | Path,
    x: str = "epochs_per_worker",
    title: str = "",
) -> Path:
    """Write a PNG comparing several runs: test error (%) and NLL, one line per run.

    Parameters
    ----------
    runs : mapping of str to sequence of dict
        Legend label -> evaluation records.
    path : path
        Output PNG (written atomically).
    x : str
        Key of the x axis (``epochs_per_worker``, ``iteration``, ``wall_seconds``).
    title : str
        Figure title.

    Notes
    -----
    Each run is drawn with its model average (``bma_*``) when its records have
    it, else with its posterior mean (``mean_*``); the legend says which.  The y axis
    starts at 0 and ends at the highest point drawn, but at most 4 times the largest
    final value, so that early or diverging points do not flatten the curves.
    """
    fig, axes = _new_figure(len(_PANELS))
    all_records = [r for recs in runs.values() for r in recs]
    for ax, (metric, ylabel, scale) in zip(axes, _PANELS, strict=True):
        drawn = 0
        finals: list[float] = []
        for label, records in runs.items():
            has_bma = any(isinstance(r.get(f"bma_{metric}"), (int, float)) for r in records)
            prefix = "bma" if has_bma else "mean"
            xs, ys = _series(records, x, f"{prefix}_{metric}", scale)
            if xs:
                estimate = "BMA" if has_bma else "mean"
                marker = "o" if len(xs) < 30 else None
                ax.plot(xs, ys, marker=marker, ms=3, label=f"{label} ({estimate})")
                finals.append(ys[-1])
                drawn += 1
        if finals:  # a diverging run's spikes must not flatten the others' curves
            top = max(y for line in ax.get_lines() for y in line.get_ydata())
            ax.set_ylim(0.0, min(top * 1.05, 4.0 * max(finals)))
        _finish_panel(ax, _x_label(all_records, x), ylabel, drawn)
    if title:
        fig.suptitle(title)
    return _save(fig, path)
