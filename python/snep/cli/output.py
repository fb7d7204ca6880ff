"""What the commands print: the table of final metrics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["format_metrics_table"]

_ROWS = (("mean", "posterior mean"), ("avg", "running average"), ("bma", "model average (BMA)"))


def _cell(metrics: Mapping[str, Any], key: str, fmt: str, scale: float = 1.0) -> str:
    value = metrics.get(key)
    return format(value * scale, fmt) if isinstance(value, (int, float)) else "-"


def format_metrics_table(
    metrics: Mapping[str, Any], bma_samples: int | None = None, title: str | None = None
) -> str:
    """Plain-text table of test error (%), NLL and ECE per estimate present in ``metrics``.

    Parameters
    ----------
    metrics : mapping
        Keys ``{mean,avg,bma}_{error,nll,ece}`` (error a fraction); rows whose
        ``*_error`` is absent are left out.
    bma_samples : int, optional
        Number of posterior draws of the model average, shown in its row.
    title : str, optional
        A first line.
    """
    rows = []
    for prefix, label in _ROWS:
        if f"{prefix}_error" not in metrics:
            continue
        if prefix == "bma" and bma_samples:
            label = f"{label[:-1]}, S={bma_samples})"
        rows.append(
            (
                label,
                _cell(metrics, f"{prefix}_error", ".2f", 100.0),
                _cell(metrics, f"{prefix}_nll", ".4f"),
                _cell(metrics, f"{prefix}_ece", ".4f"),
            )
        )
    header = ("estimate", "test error %", "NLL", "ECE")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    lines = [title] if title else []

    def fmt_row(row: Sequence[str]) -> str:
        cells = [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        return "  ".join([row[0].ljust(widths[0]), *cells])

    lines.append(fmt_row(header))
    lines.append("  ".join("-" * w for w in widths))
    lines.extend(fmt_row(r) for r in rows)
    if not rows:
        lines.append("(no metrics)")
    return "\n".join(lines)
