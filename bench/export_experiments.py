"""Copy what ``snep experiment`` made into the repository: plots and per-run metrics.

For each experiment named (default: all), after ``snep experiment NAME --report``:

* ``<pool>/<name>/error-{epochs,wall}.png`` -> ``docs/figures/<name>-{epochs,wall}.png``;
* ``<pool>/<name>/report.md`` -> ``bench/results/experiments/<name>.md``;
* every finished run's ``metrics.jsonl`` and ``summary.json`` ->
  ``bench/results/experiments/<group>/<run>.{jsonl,json}`` (a few kB each: the numbers
  behind every table and plot of docs/results.md);
* the table of each experiment into ``docs/results.md``, between the markers
  ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->``.

Usage: ``python bench/export_experiments.py [NAME ...] [--pool runs/experiments]``.
"""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

from snep.experiments import DEFAULT_POOL, EXPERIMENTS, get_experiment, plan
from snep.experiments.execute import run_state
from snep.experiments.report import collect, format_table

ROOT = Path(__file__).resolve().parent.parent


def export(names: list[str], pool: Path) -> None:
    figures, results = ROOT / "docs" / "figures", ROOT / "bench" / "results" / "experiments"
    figures.mkdir(parents=True, exist_ok=True)
    results.mkdir(parents=True, exist_ok=True)
    for name in names:
        exp = get_experiment(name)
        for kind in ("epochs", "wall"):
            png = pool / name / f"error-{kind}.png"
            if png.is_file():
                shutil.copyfile(png, figures / f"{name}-{kind}.png")
        if (pool / name / "report.md").is_file():
            shutil.copyfile(pool / name / "report.md", results / f"{name}.md")
        for run in plan([exp], pool):
            if run_state(run.run_dir) != "done":
                continue
            out = results / run.run_dir.parent.name
            out.mkdir(exist_ok=True)
            shutil.copyfile(run.run_dir / "metrics.jsonl", out / f"{run.run_dir.name}.jsonl")
            shutil.copyfile(run.run_dir / "summary.json", out / f"{run.run_dir.name}.json")
        fill_table(ROOT / "docs" / "results.md", name, format_table(collect(exp, pool)))
        print(f"exported {name}")


def fill_table(doc: Path, name: str, table: str) -> None:
    """Replace the text between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->``."""
    if not doc.is_file():
        return
    text = doc.read_text()
    begin, finish = f"<!-- table:{name} -->", f"<!-- /table:{name} -->"
    pattern = re.compile(rf"({re.escape(begin)}\n)(?:.*?\n)?({re.escape(finish)})", re.S)
    new, n = pattern.subn(lambda m: m.group(1) + table + "\n" + m.group(2), text)
    if n:
        doc.write_text(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="experiments (default: all)")
    parser.add_argument("--pool", type=Path, default=DEFAULT_POOL)
    args = parser.parse_args()
    export(args.names or list(EXPERIMENTS), args.pool)


if __name__ == "__main__":
    main()
