"""Uncertainty on Omniglot for MNIST runs: AUROC of the predictive entropy.

For each run directory (an MNIST run: ``snep train --data mnist ...``), the entropy
of the point estimate at the posterior mean and of the model average (20 draws) as a
score for "this is an Omniglot character, not an MNIST digit": MNIST's 10,000 test
images against Omniglot's test drawers (``snep.uncertainty.entropy_auroc``).  Prints
one JSON object per run and writes them all with ``--json PATH``.

    python bench/ood_auroc.py runs/experiments/nn-mnist/*-s0 --json bench/results/ood_auroc.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from snep.data import load_dataset
from snep.posterior import Posterior
from snep.rundir import POSTERIOR_FILE, read_summary
from snep.uncertainty import entropy_auroc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="MNIST run directories")
    parser.add_argument("--samples", type=int, default=20, help="model-average draws")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    x_in = load_dataset("mnist").x_test
    x_out = load_dataset("omniglot").x_test
    rows = []
    for run in args.runs:
        summary = read_summary(run)
        post = Posterior.load(run / POSTERIOR_FILE)
        row = {"run": str(run), "method": summary["method"], "workers": summary["workers"]}
        row.update(entropy_auroc(post, x_in, x_out, n_samples=args.samples))
        if summary["method"] not in ("snep", "ep"):  # a point estimate: no model average
            row = {k: v for k, v in row.items() if not k.startswith("bma_")}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
