"""Report an experiment: a markdown table (mean ± sd over seeds) and PNG plots.

What each experiment reports follows docs/method.md §1.6: test error, NLL and ECE
(15 bins) at the end of the run for the point estimate (posterior mean), the
server's running average and the Bayesian model average, as mean ± sample
standard deviation over the seeds that finished; and plots of test error and
NLL against epochs per worker and against wall-clock seconds, one line per arm
(averaged over seeds), the same axes for every arm.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from snep.experiments.execute import run_state
from snep.experiments.registry import Arm, Experiment
from snep.io import atomic_write

__all__ = ["ArmResult", "collect", "format_table", "mean_records", "write_report"]

#: Table columns: (metric key, header, scale).
COLUMNS: tuple[tuple[str, str, float], ...] = (
    ("mean_error", "mean err %", 100.0),
    ("mean_nll", "mean NLL", 1.0),
    ("mean_ece", "mean ECE %", 100.0),
    ("avg_error", "avg err %", 100.0),
    ("bma_error", "BMA err %", 100.0),
    ("bma_nll", "BMA NLL", 1.0),
    ("bma_ece", "BMA ECE %", 100.0),
)


class ArmResult:
    """The finished runs of one arm: final metrics, histories and wall times."""

    def __init__(self, arm: Arm, seeds: list[int], finals: list[dict], histories: list[list]):
        self.arm = arm
        self.seeds = seeds
        self.finals = finals
        self.histories = histories

    def stat(self, key: str, scale: float = 1.0) -> tuple[float, float, int]:
        """(mean, sample sd or nan, count) of ``final[key] * scale`` over seeds."""
        vals = [
            float(f[key]) * scale
            for f in self.finals
            if isinstance(f.get(key), (int, float)) and math.isfinite(float(f[key]))
        ]
        if not vals:
            return math.nan, math.nan, 0
        sd = statistics.stdev(vals) if len(vals) > 1 else math.nan
        return statistics.fmean(vals), sd, len(vals)


def collect(exp: Experiment, pool: Path, seeds: Sequence[int] | None = None) -> list[ArmResult]:
    """The finished runs (``summary.json`` present) of each arm of ``exp``."""
    from snep.rundir import read_metrics, read_summary

    results = []
    for arm in exp.arms:
        done_seeds, finals, histories = [], [], []
        for seed in seeds if seeds is not None else exp.seeds:
            run_dir = pool / arm.run_key(seed)
            if run_state(run_dir) != "done":
                continue
            summary = read_summary(run_dir)
            final = dict(summary.get("final") or {})
            final["wall_seconds"] = summary.get("wall_seconds", final.get("wall_seconds"))
            done_seeds.append(seed)
            finals.append(final)
            histories.append(read_metrics(run_dir))
        results.append(ArmResult(arm, done_seeds, finals, histories))
    return results


def mean_records(histories: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, float]]:
    """Average evaluation records over seeds, iteration by iteration.

    Only the iterations that every run evaluated are kept (runs of one arm made
    with different ``--eval-every`` share a coarser grid), and for each one the
    numeric keys present in all runs are averaged.
    """
    if not histories:
        return []
    by_iteration = [
        {
            round(float(r["iteration"]), 6): r
            for r in h
            if isinstance(r.get("iteration"), (int, float))
        }
        for h in histories
    ]
    common = sorted(set.intersection(*(set(d) for d in by_iteration)))
    out = []
    for it in common:
        recs = [d[it] for d in by_iteration]
        keys = set.intersection(*(set(r) for r in recs))
        row = {}
        for key in keys:
            vals = [r[key] for r in recs]
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
                row[key] = statistics.fmean(float(v) for v in vals)
        out.append(row)
    return out


def _cell(mean: float, sd: float, scale_digits: int) -> str:
    if math.isnan(mean):
        return "–"
    text = f"{mean:.{scale_digits}f}"
    if not math.isnan(sd):
        text += f" ± {sd:.{scale_digits}f}"
    return text


def format_table(results: Sequence[ArmResult]) -> str:
    """Markdown table: one row per arm, mean ± sd over its finished seeds."""
    head = ["run", "seeds", "wall (s)", *(h for _, h, _ in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for res in results:
        wall, _, _ = res.stat("wall_seconds")
        cells = [res.arm.label, str(len(res.seeds)), "–" if math.isnan(wall) else f"{wall:.0f}"]
        for key, _, scale in COLUMNS:
            mean, sd, _ = res.stat(key, scale)
            cells.append(_cell(mean, sd, 2 if scale == 100.0 else 3))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(exp: Experiment, pool: Path, seeds: Sequence[int] | None = None) -> Path:
    """Write ``pool/<experiment>/report.md`` and its plots; return the report's path.

    The plots are ``error-epochs.png`` (test error and NLL against epochs per
    worker) and ``error-wall.png`` (against wall-clock seconds), one line per arm
    averaged over its finished seeds; arms with no finished run are listed as
    missing.
    """
    from snep.plot import plot_histories

    out_dir = pool / exp.name
    out_dir.mkdir(parents=True, exist_ok=True)
    results = collect(exp, pool, seeds)
    curves = {r.arm.label: mean_records(r.histories) for r in results if r.histories}
    split = "validation split" if exp.split == "validation" else "test set"
    title = exp.name
    lines = [
        f"# {exp.title}",
        "",
        exp.description,
        "",
        f"Final metrics on the {split}, mean ± sd over the finished seeds.",
        "",
        format_table(results),
        "",
    ]
    missing = [f"{r.arm.label} (seeds {sorted(set(seeds or exp.seeds) - set(r.seeds))})"
               for r in results if len(r.seeds) < len(seeds or exp.seeds)]  # fmt: skip
    if missing:
        lines += ["Not finished: " + "; ".join(missing) + ".", ""]
    if curves:
        plot_histories(curves, out_dir / "error-epochs.png", x="epochs_per_worker", title=title)
        plot_histories(curves, out_dir / "error-wall.png", x="wall_seconds", title=title)
        lines += ["![against epochs per worker](error-epochs.png)",
                  "![against wall-clock time](error-wall.png)", ""]  # fmt: skip
    lines += ["Commands (one per arm; `--seed S` for each seed):", "", "```bash"]
    lines += [f"snep {' '.join(r.arm.command(0)[:-2])}" for r in results]
    lines += ["```", ""]
    text = "\n".join(lines)
    return atomic_write(out_dir / "report.md", lambda fh: fh.write(text.encode()))
