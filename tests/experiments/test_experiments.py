"""The experiment registry, the resumable queue and the reports (snep.experiments)."""

from __future__ import annotations

import json
import math
import os

import pytest

from snep.cli import main
from snep.errors import ConfigError
from snep.experiments import EXPERIMENTS, Arm, Experiment, get_experiment, plan
from snep.experiments.execute import acquire_lock, release_lock, run_experiments, run_state
from snep.experiments.registry import PAPER
from snep.experiments.report import collect, format_table, mean_records, write_report

TINY = ("--data", "digits", "--iterations", "20", "--eval-every", "10", "--hidden", "8")


def _tiny_experiment() -> Experiment:
    return Experiment(
        "tiny",
        "digits, tiny",
        "two arms, two seeds",
        (
            Arm("digits/snep-2w", "SNEP, 2 workers", (*TINY, "--workers", "2")),
            Arm("digits/adam-1w", "Adam", (*TINY, "--method", "adam")),
        ),
        seeds=(0, 1),
    )


def test_registry_covers_the_issue_and_commands_parse():
    from snep.cli import build_parser

    need = {"mnist-workers", "mnist-distributed", "mnist-deep", "omniglot", "mnist-noniid"}
    assert need <= set(EXPERIMENTS) and "mnist-sensitivity" in EXPERIMENTS
    assert len(EXPERIMENTS["mnist-workers"].seeds) >= 3
    keys: dict[str, tuple[str, ...]] = {}
    parser = build_parser()
    for exp in EXPERIMENTS.values():
        for arm in exp.arms:
            # an arm shared by two experiments is the same command in both
            assert keys.setdefault(arm.key, arm.args) == arm.args, arm.key
            args = parser.parse_args(arm.command(3))
            assert args.seed == 3
    deep = EXPERIMENTS["mnist-deep"].arms[0].args
    assert deep[deep.index("--hidden") + 1] == ",".join(["50"] * 20)
    with pytest.raises(ConfigError, match=r"unknown experiment 'nope'.*mnist-workers"):
        get_experiment("nope")


def test_every_arm_runs_the_paper_preset():
    """SNEP/EP arms and baselines alike run with --preset paper, so a change of the
    dataclass defaults changes no experiment (docs/results.md stays reproducible)."""
    from snep.cli import build_parser, resolve_config

    parser = build_parser()
    paper_sampler = {"kind": "adam_sgld", "beta1": 0.0, "beta2": 0.999, "adam_eps": 1e-8}
    for exp in EXPERIMENTS.values():
        if exp.tracks_defaults:  # stated in its description and docs/results.md
            assert all(arm.args[:2] == ("--preset", "default") for arm in exp.arms), exp.name
            assert "defaults" in exp.title, exp.name
            continue
        for arm in exp.arms:
            assert arm.args[:2] == PAPER == ("--preset", "paper"), arm.key
            cfg = resolve_config(parser.parse_args(arm.command(0)))
            assert cfg.train.preset == "paper", arm.key
            sampler = cfg.sampler
            assert {k: getattr(sampler, k) for k in paper_sampler} == paper_sampler, arm.key
            args = arm.args

            def last(flag: str, args=args) -> float:  # a sweep repeats a flag: the last wins
                return float(args[len(args) - 1 - args[::-1].index(flag) + 1])

            assert sampler.step_size == last("--step-size"), arm.key
            if "sampler.kappa" not in " ".join(args):
                assert sampler.kappa == 1.0, arm.key
            if "sampler.temperature" not in " ".join(args):
                assert sampler.temperature == 1.0, arm.key
            snep = cfg.snep
            assert (snep.n_chains, snep.n_samples, snep.v_init) == (1, 1, 0.01), arm.key
            assert snep.prior_var == last("--prior-var"), arm.key
            for flag, key, ref in (
                ("--n-sync", "n_sync", 10),
                ("--n-inner", "n_inner", 10),
                ("--v-lo", "v_lo", 1e-2),
                ("--beta", "beta", 1.0),
            ):
                want = last(flag) if flag in args else ref
                assert getattr(snep, key) == want, (arm.key, key)
            want = last("--site-step") if "--site-step" in args else 0.02
            assert snep.site_step.value == want, arm.key
            assert snep.site_step.kind == "constant" and snep.damping == 0.5, arm.key
            assert cfg.train.iterations == last("--iterations"), arm.key


def test_plan_is_breadth_first_and_deduplicates(tmp_path):
    exps = [get_experiment("mnist-workers"), get_experiment("mnist-distributed")]
    runs = plan(exps, tmp_path)
    keys = [str(r.run_dir.relative_to(tmp_path)) for r in runs]
    assert len(keys) == len(set(keys))
    assert keys.count("mnist/snep-8w-s0") == 1
    seeds = [r.seed for r in runs]
    assert seeds == sorted(seeds)  # every arm's seed 0 before any seed 1
    assert [r.seed for r in plan(exps, tmp_path, seeds=[5])] == [5] * len(
        set(r.arm.key for r in runs)
    )


def test_lock_is_exclusive_and_stale_locks_are_taken_over(tmp_path):
    run_dir = tmp_path / "g" / "r-s0"
    assert acquire_lock(run_dir)
    lock = run_dir.with_name("r-s0.lock")
    assert lock.read_text() == str(os.getpid())
    assert not acquire_lock(run_dir)  # held by a live process (this one)
    release_lock(run_dir)
    lock.write_text("999999999")  # no such process
    assert acquire_lock(run_dir)
    release_lock(run_dir)
    assert not lock.exists()


def test_queue_runs_skips_done_and_reports(tmp_path, capsys):
    exp = _tiny_experiment()
    runs = plan([exp], tmp_path)
    assert [run_state(r.run_dir) for r in runs] == ["new"] * 4
    # a run killed before its first checkpoint is moved aside, not deleted
    partial = tmp_path / "digits" / "adam-1w-s1"
    partial.mkdir(parents=True)
    (partial / "metrics.jsonl").write_text("{}\n")
    assert run_experiments(runs, tmp_path, jobs=2, threads=1, echo=lambda s: None) == 0
    assert [run_state(r.run_dir) for r in runs] == ["done"] * 4
    assert (tmp_path / "digits" / "adam-1w-s1.incomplete-1" / "metrics.jsonl").is_file()
    assert len(list((tmp_path / "logs").glob("digits--*.log"))) == 4
    # a second pass runs nothing
    lines: list[str] = []
    assert run_experiments(runs, tmp_path, jobs=1, echo=lines.append) == 0
    assert lines == ["4 of 4 runs done; 0 to go, 1 at once"]

    results = collect(exp, tmp_path)
    snep_arm = results[0]
    assert snep_arm.seeds == [0, 1]
    finals = [
        json.loads((tmp_path / f"digits/snep-2w-s{s}/summary.json").read_text())["final"]
        for s in (0, 1)
    ]
    mean, sd, n = snep_arm.stat("mean_error", 100.0)
    vals = [100 * f["mean_error"] for f in finals]
    assert n == 2 and mean == pytest.approx(sum(vals) / 2)
    assert sd == pytest.approx(abs(vals[0] - vals[1]) / math.sqrt(2))
    assert math.isnan(results[1].stat("bma_error")[0])  # Adam has no model average
    table = format_table(results)
    assert "| SNEP, 2 workers | 2 |" in table and "| Adam | 2 |" in table

    report = write_report(exp, tmp_path)
    text = report.read_text()
    assert report == tmp_path / "tiny" / "report.md"
    assert "Not finished" not in text and "snep train --data digits" in text
    for png in ("error-epochs.png", "error-wall.png"):
        assert (tmp_path / "tiny" / png).read_bytes()[:4] == b"\x89PNG"


def test_a_checkpointed_run_resumes(tmp_path):
    arm = Arm("digits/snep-2w", "SNEP", (*TINY, "--workers", "2"))
    (run,) = plan([Experiment("t", "t", "t", (arm,), seeds=(0,))], tmp_path)
    assert main([*arm.command(0), "--out", str(run.run_dir.parent), "--name", "snep-2w-s0",
                 "-q", "--no-plot"]) == 0  # fmt: skip
    (run.run_dir / "summary.json").unlink()  # as if killed after its last checkpoint
    assert run_state(run.run_dir) == "resumable"
    assert run.argv(1)[:3] == ["train", "--resume", str(run.run_dir)]
    assert run_experiments([run], tmp_path, echo=lambda s: None) == 0
    assert run_state(run.run_dir) == "done"


def test_mean_records_aligns_on_common_iterations():
    a = [{"iteration": 10, "x": 1.0}, {"iteration": 20, "x": 2.0, "y": 1.0}]
    b = [{"iteration": 20, "x": 4.0}, {"iteration": 30, "x": 5.0}]
    assert mean_records([a, b]) == [{"iteration": 20.0, "x": 3.0}]
    assert mean_records([]) == []


def test_cli_list_dry_run_and_bad_seeds(tmp_path, capsys):
    assert main(["experiment", "--list"]) == 0
    assert "mnist-deep/psnep-8w" in capsys.readouterr().out
    pool = ["--pool", str(tmp_path)]
    assert main(["experiment", "omniglot", "--dry-run", "--seeds", "4", *pool]) == 0
    out = capsys.readouterr().out
    assert out.count("snep train --preset paper --data omniglot ") == 3 and "--seed 4" in out
    assert out.count("snep train --preset paper --data omniglot-alphabet ") == 3
    assert not any(tmp_path.iterdir())  # a dry run writes nothing
    assert main(["experiment", "omniglot", "--seeds", "x"]) == 2
    assert main(["experiment", "nope", *pool]) == 2
    assert "unknown experiment" in capsys.readouterr().err
