"""Progress reporting of a training run, as the ``callback`` of :func:`snep.run.fit.fit`.

Records arrive once per evaluation (docs/method.md §1.6; ``iteration`` is the mean
iteration over the workers).  On a terminal a :mod:`rich.progress` bar over the
iterations shows the latest iteration, epochs per worker, test error (%) of the
model average (BMA) or else of the posterior mean, its NLL and ECE, and the
count of guard firings of the tilted distributions (docs/method.md §1.3).  When the
output is not a terminal (CI logs, pipes), or the bar is turned off, one plain
line is printed per evaluation instead; ``quiet`` prints nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from types import TracebackType
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["ProgressReporter", "format_record", "headline_metrics"]


def headline_metrics(record: Mapping[str, Any]) -> tuple[str, dict[str, float]]:
    """The estimate to show (``"BMA"`` if the record has ``bma_error``, else ``"mean"``)
    and its ``error``, ``nll`` and ``ece`` (those present and numeric)."""
    prefix, label = ("bma", "BMA") if "bma_error" in record else ("mean", "mean")
    out = {}
    for metric in ("error", "nll", "ece"):
        value = record.get(f"{prefix}_{metric}")
        if isinstance(value, (int, float)):
            out[metric] = float(value)
    return label, out


def format_record(record: Mapping[str, Any], total: int | None = None) -> str:
    """One line summarising an evaluation record (the non-terminal output)."""
    parts = []
    it = record.get("iteration")
    if isinstance(it, (int, float)):
        width = len(str(total)) if total else 0
        parts.append(f"iter {it:>{width}.0f}" + (f"/{total}" if total else ""))
    ep = record.get("epochs_per_worker")
    if isinstance(ep, (int, float)):
        parts.append(f"ep/w {ep:.2f}")
    label, m = headline_metrics(record)
    if "error" in m:
        parts.append(f"{label} err {100 * m['error']:.2f}%")
    if "nll" in m:
        parts.append(f"NLL {m['nll']:.4f}")
    if "ece" in m:
        parts.append(f"ECE {m['ece']:.4f}")
    guard = record.get("guard_fired")
    if isinstance(guard, (int, float)):
        parts.append(f"guard {guard:.0f}")
    wall = record.get("wall_seconds")
    if isinstance(wall, (int, float)):
        parts.append(f"{wall:.1f}s")
    return "  ".join(parts)


class ProgressReporter:
    """Shows training progress; call it with each evaluation record.

    Parameters
    ----------
    total : int
        Iterations per worker of the run (``config.train.iterations``).
    bar : bool
        Use a live :mod:`rich` bar when the output is a terminal (``False``:
        always plain lines, as ``--no-progress``).
    quiet : bool
        Print nothing.
    stream : file, optional
        Where to write (default ``sys.stdout``).
    console : rich.console.Console, optional
        Console of the bar (default: one on ``stream``); pass one with
        ``force_terminal=True`` to force the bar.
    description : str
        Label of the bar.

    Attributes
    ----------
    mode : {"bar", "lines", "quiet"}
        What this reporter does.
    records : int
        Records seen so far.

    Examples
    --------
    >>> with ProgressReporter(config.train.iterations) as progress:  # doctest: +SKIP
    ...     fit(config, dataset, callback=progress)
    """

    def __init__(
        self,
        total: int,
        *,
        bar: bool = True,
        quiet: bool = False,
        stream: TextIO | None = None,
        console: Console | None = None,
        description: str = "training",
    ) -> None:
        self.total = int(total)
        self.stream = stream
        self.records = 0
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._console = console
        if quiet:
            self.mode = "quiet"
        else:
            if bar and self._console is None:
                self._console = Console(file=stream if stream is not None else sys.stdout)
            terminal = bar and self._console is not None and self._console.is_terminal
            self.mode = "bar" if terminal else "lines"
        self.description = description

    def __enter__(self) -> ProgressReporter:
        if self.mode == "bar" and self._progress is None:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(bar_width=24),
                TextColumn("it {task.completed:.0f}/{task.total:.0f}"),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self._console,
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                self.description, total=self.total, status="waiting for the first evaluation"
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __call__(self, record: Mapping[str, Any]) -> None:
        """Report one evaluation record."""
        self.records += 1
        if self.mode == "quiet":
            return
        if self.mode == "bar" and self._progress is not None and self._task is not None:
            it = record.get("iteration")
            shown = {k: v for k, v in record.items() if k not in ("iteration", "wall_seconds")}
            status = format_record(shown)  # the bar has its own iteration and time columns
            if isinstance(it, (int, float)):
                self._progress.update(self._task, completed=float(it), status=status)
            else:
                self._progress.update(self._task, status=status)
            return
        out = self.stream if self.stream is not None else sys.stdout
        print(format_record(record, self.total), file=out, flush=True)

    def close(self) -> None:
        """Stop the live bar, leaving its last state on screen (idempotent)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._task = None
