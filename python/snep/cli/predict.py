"""``snep predict RUN_DIR INPUTS``: the model average's predictions on new inputs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from snep import rundir
from snep.cli.flags import positive_int

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    """Add the ``predict`` command to the subparsers ``sub``."""
    p = sub.add_parser(
        "predict",
        help="class probabilities and uncertainty of a run's posterior on new inputs",
        description=(
            "Apply a run's posterior to new inputs: per input the model average's class "
            "probabilities, the predicted class, the predictive entropy and the mutual "
            "information (the epistemic part), written as PREFIX.npz and PREFIX.csv."
        ),
    )
    p.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="directory written by snep train")
    p.add_argument(
        "inputs",
        metavar="INPUTS",
        type=Path,
        help="an .npz (array 'x' or 'x_test'), an IDX file or a directory of IDX files; "
        "uint8 pixels are scaled by 1/255 as in training",
    )
    p.add_argument(
        "--out",
        metavar="PREFIX",
        type=Path,
        help="output prefix (default RUN_DIR/predictions: .npz and .csv)",
    )
    p.add_argument(
        "--samples",
        type=positive_int,
        metavar="S",
        help="posterior draws of the model average (default: the run's train.bma_samples)",
    )
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the draws")
    p.add_argument("--backend", metavar="NAME", help="auto, numpy or cpu (default: cpu)")
    p.set_defaults(command=run)


def run(args: argparse.Namespace) -> int:
    """``snep predict``; returns 0."""
    import numpy as np

    from snep.predict import load_inputs, predict, write_predictions

    config, posterior = rundir.load_run(args.run_dir)
    x = load_inputs(args.inputs)
    samples = args.samples or config.train.bma_samples
    out = predict(posterior, x, samples, args.seed, args.backend or "cpu")
    npz, csv = write_predictions(args.out or args.run_dir / "predictions", out)
    classes, counts = np.unique(out["classes"], return_counts=True)
    counted = ", ".join(f"{c}: {n}" for c, n in zip(classes, counts, strict=True))
    print(f"{len(x)} inputs from {args.inputs}; model average over {samples} draws")
    print(f"predicted classes ({counted})")
    print(
        f"mean predictive entropy {out['entropy'].mean():.4f} nats, mean mutual "
        f"information {out['mutual_information'].mean():.4f} nats"
    )
    print(f"wrote {npz} and {csv}")
    return 0
