"""The command line: train/evaluate/info in process, error exits, ``python -m snep``."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from snep.cli import format_metrics_table, main
from snep.config import load_config
from snep.progress import ProgressReporter, format_record
from snep.rundir import read_metrics

TINY = ["--iterations", "30", "--eval-every", "10", "--workers", "2", "--hidden", "16"]
FILES = ("config.toml", "metrics.jsonl", "posterior.npz", "summary.json", "plot.png")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    assert main(["train", *TINY, "--out", str(out), "--name", "tiny", "--no-progress"]) == 0
    return out / "tiny"


def test_train_writes_the_run_directory(run_dir, capsys):
    for name in FILES:
        assert (run_dir / name).is_file(), name
        assert (run_dir / name).stat().st_size > 0, name
    records = read_metrics(run_dir)
    assert len(records) == 3
    assert [r["iteration"] for r in records] == [10, 20, 30]
    summary = json.loads((run_dir / "summary.json").read_text())
    p = summary["P"]
    assert p == 64 * 16 + 16 + 16 * 10 + 10
    with np.load(run_dir / "posterior.npz") as f:
        for key in ("precision", "precision_mean", "mean", "var"):
            assert f[key].shape == (p,)
    assert summary["data"] == {
        "name": "digits",
        "source": "digits",
        "n_train": 1437,
        "n_test": 360,
        "n_features": 64,
        "n_classes": 10,
    }
    assert summary["method"] == "snep" and summary["workers"] == 2
    assert summary["backend"] == "cpu"
    assert summary["final"] == records[-1]
    assert summary["stats"]["pushes"] > 0 and len(summary["stats"]["workers"]) == 2
    cfg = load_config(run_dir / "config.toml")
    assert cfg.train.iterations == 30 and cfg.model.hidden == (16,)


def test_evaluate_reproduces_the_final_metrics(run_dir, capsys):
    assert main(["evaluate", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "posterior mean" in out and "running average" in out and "BMA, S=20" in out
    final = json.loads((run_dir / "summary.json").read_text())["final"]
    metrics = json.loads((run_dir / "evaluation.json").read_text())["metrics"]
    assert metrics["mean_error"] == final["mean_error"]
    assert metrics["bma_error"] == final["bma_error"]  # same draws (seed, S)
    assert metrics["avg_error"] == final["avg_error"]
    assert main(["evaluate", str(run_dir), "--samples", "3", "--backend", "numpy"]) == 0
    assert json.loads((run_dir / "evaluation.json").read_text())["bma_samples"] == 3


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["--workers", "0"], "'train.workers' = 0"),
        (["--sampler", "foo"], "'sampler.kind' = 'foo'"),
        (["--method", "sgd"], "'train.method' = 'sgd'"),
        (["--method", "adam", "--workers", "2"], "'train.workers' = 2"),
        (["--site-step", "-1"], "'snep.site_step.value'"),
        (["--data", "no-such-data"], "no-such-data"),
        (["--backend", "tpu"], "'train.backend' = 'tpu'"),
        (["--cuda-graph", "--backend", "cpu"], "'train.cuda_graph' = True"),
        (["--gemm", "cublas"], "'train.gemm' = 'cublas'"),
        (["--gemm", "tiled", "--backend", "cpu"], "'train.gemm' = 'tiled'"),
        (["--epochs", "0"], "'train.epochs' = 0.0 is invalid: expected a finite number > 0"),
        (["--epochs", "2", "--iterations", "5"], "pass one of them"),
        (["--preset", "nope"], "'train.preset' = 'nope' is invalid"),
        (["--preset", "nope"], "['default', 'paper']"),
        (["--config", "PAPER_TOML", "--preset", "nope"], "(set by --preset)"),
    ],
)
def test_bad_values_exit_2_naming_the_key(tmp_path, capsys, argv, fragment):
    if "PAPER_TOML" in argv:
        toml = tmp_path.parent / "paper.toml"
        toml.write_text('[train]\npreset = "paper"\n')
        argv = [str(toml) if a == "PAPER_TOML" else a for a in argv]
    assert main(["train", *argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("snep: error: ") and fragment in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # nothing written for a run that never started


def test_unknown_config_key_and_missing_config_file(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nwokers = 4\n")
    assert main(["train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "snep: error:" in err and "'wokers'" in err and "bad.toml" in err
    assert main(["train", "--config", str(tmp_path / "none.toml")]) == 2
    assert "none.toml" in capsys.readouterr().err
    (tmp_path / "broken.toml").write_text("[train\n")
    assert main(["train", "--config", str(tmp_path / "broken.toml")]) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys):
    assert main(["train", "--workers", "many"]) == 2
    assert "--workers" in capsys.readouterr().err
    assert main(["train", "--hidden", "16,x"]) == 2
    assert "model.hidden" in capsys.readouterr().err
    assert main([]) == 2
    assert main(["train", "--help"]) == 0
    assert "--site-step" in capsys.readouterr().out


def test_evaluate_missing_run_dir(tmp_path, capsys):
    missing = tmp_path / "no-such-run"
    assert main(["evaluate", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("snep: error:") and str(missing) in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["evaluate", str(empty)]) == 2
    assert "config.toml" in capsys.readouterr().err


def test_config_file_flags_and_adam_implies_one_worker(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[train]\nmethod = "adam"\niterations = 20\neval_every = 10\n'
        '[model]\nhidden = [8]\n[snep.site_step]\nkind = "robbins_monro"\n'
    )
    argv = ["train", "--config", str(cfg), "--out", str(tmp_path), "--name", "a"]
    assert main([*argv, "--site-step", "0.05", "--iterations", "10", "--no-plot", "-q"]) == 0
    run = tmp_path / "a"
    got = load_config(run / "config.toml")
    assert got.train.method == "adam" and got.train.workers == 1
    assert got.train.iterations == 10  # flag beats file
    assert got.model.hidden == (8,)  # file beats default
    assert got.snep.site_step.kind == "robbins_monro" and got.snep.site_step.value == 0.05
    assert not (run / "plot.png").exists()
    assert len(read_metrics(run)) == 1
    assert set(json.loads((run / "summary.json").read_text())["final"]) >= {"mean_error"}
    assert "model average" not in capsys.readouterr().out
    # evaluate of the point-estimate baseline reproduces it too
    assert main(["evaluate", str(run)]) == 0
    final = json.loads((run / "summary.json").read_text())["final"]
    metrics = json.loads((run / "evaluation.json").read_text())["metrics"]
    assert metrics == {k: final[k] for k in ("mean_error", "mean_nll", "mean_ece")}


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "snep " in out and "numpy" in out and "numba" in out and "cpu" in out
    assert "OPENBLAS_NUM_THREADS" in out


def test_metrics_table_and_progress_lines():
    rec = {
        "iteration": 20.0,
        "epochs_per_worker": 1.39,
        "mean_error": 0.1,
        "bma_error": 0.05,
        "bma_nll": 0.2,
        "bma_ece": 0.01,
        "guard_fired": 3,
    }
    line = format_record(rec, 30)
    assert "iter 20/30" in line and "BMA err 5.00%" in line and "guard 3" in line
    assert "mean err 10.00%" in format_record({"mean_error": 0.1})
    table = format_metrics_table(rec, 20)
    assert "5.00" in table and "10.00" in table and "running average" not in table

    buf = io.StringIO()
    with ProgressReporter(30, bar=True, stream=buf) as prog:  # not a terminal: lines
        assert prog.mode == "lines"
        prog(rec)
    assert buf.getvalue().count("\n") == 1
    with ProgressReporter(30, quiet=True, stream=buf) as prog:
        prog(rec)
    assert buf.getvalue().count("\n") == 1
    term = io.StringIO()
    console = Console(file=term, force_terminal=True, width=160)
    with ProgressReporter(30, console=console) as prog:
        assert prog.mode == "bar"
        prog(rec)
    assert "BMA err 5.00%" in term.getvalue()


def _env() -> dict[str, str]:
    # snep is installed (its compiled extension lives in the installed package);
    # drop inherited thread settings so that --threads is what sets them
    return {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}


def test_cli_import_is_light():
    code = (
        "import sys, snep.cli; "
        "heavy = [m for m in ('numpy', 'numba', 'matplotlib', 'rich') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=_env(), timeout=60)


SUB_ARGS = ("--name", "sub", "--threads", "1", "--no-plot")


def test_python_m_snep_train(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "snep", "train", *TINY, *SUB_ARGS, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "run directory" in proc.stdout
    summary = json.loads((tmp_path / "sub" / "summary.json").read_text())
    assert summary["threads"] == dict.fromkeys(
        ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS"), "1"
    )
    assert len(read_metrics(tmp_path / "sub")) == 3


def test_resume_continues_a_run_and_rejects_another_config(tmp_path):
    from snep.cli import main

    common = ["--hidden", "16", "--eval-every", "30", "--out", str(tmp_path), "--no-progress"]
    assert main(["train", "--workers", "2", "--iterations", "60", "--name", "r", *common]) == 0
    run = tmp_path / "r"
    assert (run / "checkpoint.npz").is_file()
    config_before = (run / "config.toml").read_text()
    assert main(["train", "--resume", str(run), "--hidden", "8", "--no-progress"]) == 2
    assert (run / "config.toml").read_text() == config_before  # untouched by the refusal
    assert main(["train", "--resume", str(run), "--iterations", "120", "--no-progress"]) == 0
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["iteration"] for x in lines] == [30, 60, 90, 120]


def test_a_baseline_run_can_be_evaluated(tmp_path):
    from snep.cli import main

    argv = ["train", "--method", "easgd", "--workers", "2", "--iterations", "40",
            "--eval-every", "20", "--hidden", "8", "--out", str(tmp_path), "--name", "e",
            "--no-progress", "-q"]  # fmt: skip
    assert main(argv) == 0
    assert main(["evaluate", str(tmp_path / "e"), "--samples", "2"]) == 0


def test_validation_split_and_set_keys(tmp_path, capsys):
    argv = ["train", *TINY, "--validation", "0.2", "--v-lo", "0.005", "--no-plot", "-q"]
    argv += ["--set", "sampler.kind=sgld", "--set", "snep.site_step.value=0.05"]
    argv += ["--site-step", "0.3"]  # --set wins over every flag
    argv += ["--set", "model.hidden=[8, 4]", "--out", str(tmp_path), "--name", "v"]
    assert main(argv) == 0
    run = tmp_path / "v"
    cfg = load_config(run / "config.toml")
    assert cfg.train.validation == 0.2 and cfg.snep.v_lo == 0.005
    assert cfg.sampler.kind == "sgld" and cfg.snep.site_step.value == 0.05
    assert cfg.model.hidden == (8, 4)  # --set wins over --hidden
    summary = json.loads((run / "summary.json").read_text())
    # digits has 1437 training images: 287 held out, scored instead of the test set
    assert summary["data"]["n_train"] == 1437 - 287 and summary["data"]["n_test"] == 287
    assert "final validation metrics" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--validation", "1.5"], "train.validation"),
        (["--set", "snep"], "expected SECTION.KEY=VALUE"),
        (["--set", "snep.nope=1"], "nope"),
        (["--set", "train.workers.x=1"], "'workers' is not a table"),
    ],
)
def test_validation_and_set_errors(tmp_path, capsys, argv, fragment):
    assert main(["train", *TINY, "--out", str(tmp_path), "-q", *argv]) == 2
    assert fragment in capsys.readouterr().err


# --------------------------------------------------------------------------- presets, epochs


def _resolve(*argv: str):
    from snep.cli import build_parser, resolve_config

    return resolve_config(build_parser().parse_args(["train", *argv]))


def test_epochs_resolve_before_config_toml_is_written(tmp_path):
    # digits: 1437 training images, 2 workers: shard 719, batch 100
    argv = ["train", "--preset", "paper", "--no-preset", "--epochs", "2", "--workers", "2"]
    argv += ["--hidden", "8", "--eval-every", "5", "--out", str(tmp_path), "--name", "ep"]
    assert main([*argv, "--no-plot", "-q"]) == 0
    run = tmp_path / "ep"
    cfg = load_config(run / "config.toml")
    assert cfg.train.iterations == 15 and cfg.train.epochs == 2  # ceil(2 * 719 / 100)
    assert cfg.train.preset == "paper"
    assert [r["iteration"] for r in read_metrics(run)] == [5, 10, 15]
    # --resume with --epochs extends the run to ceil(4 * 719 / 100) = 29 iterations
    assert main(["train", "--resume", str(run), "--epochs", "4", "-q", "--no-plot"]) == 0
    cfg = load_config(run / "config.toml")
    assert cfg.train.iterations == 29 and cfg.train.epochs == 4
    assert [r["iteration"] for r in read_metrics(run)] == [5, 10, 15, 20, 25, 29]


def test_default_run_length_comes_from_epochs():
    cfg = _resolve("--no-preset")
    assert cfg.train.iterations == 0 and cfg.train.epochs == 20
    assert cfg.with_data_size(1437).train.iterations == 72  # 20 * 360 / 100
    assert _resolve("--no-preset", "--iterations", "9").with_data_size(1437).train.iterations == 9
    # --epochs beats the iterations of the paper preset's digits preset and of a file
    assert _resolve("--preset", "paper").train.iterations == 40_000
    assert _resolve("--preset", "paper", "--epochs", "1").train.iterations == 0


def test_preset_paper_flag_and_file_key():
    from snep.config import Config, with_preset

    want = Config.from_dict(with_preset({"train": {"preset": "paper", "data": "mnist"}}))
    assert _resolve("--preset", "paper", "--data", "mnist") == want
    assert want.sampler.kind == "adam_sgld" and want.snep.n_chains == 1
    # flags still win over the preset
    got = _resolve("--preset", "paper", "--data", "mnist", "--step-size", "3e-4")
    assert got.sampler.step_size == 3e-4 and got.sampler.kappa == 1.0


def test_cli_layers_each_override_the_one_below(tmp_path, monkeypatch):
    from snep.config import DATA_PRESETS, METHOD_PRESETS, Config

    monkeypatch.setitem(
        METHOD_PRESETS, "t", {"snep": {"v_lo": 2e-3, "v_init": 2e-2, "prior_var": 2.0}}
    )
    monkeypatch.setitem(DATA_PRESETS, "t", {"digits": {"snep": {"v_lo": 3e-3, "v_init": 3e-2}}})
    toml = tmp_path / "t.toml"
    toml.write_text('[train]\npreset = "t"\n[snep]\nv_lo = 4e-3\n')
    cfg = _resolve("--config", str(toml), "--v-lo", "5e-3").snep
    assert (cfg.v_lo, cfg.v_init, cfg.prior_var) == (5e-3, 3e-2, 2.0)  # flag, data, method
    cfg = _resolve("--config", str(toml)).snep
    assert (cfg.v_lo, cfg.v_init, cfg.prior_var) == (4e-3, 3e-2, 2.0)  # file, data, method
    cfg = _resolve("--preset", "t").snep
    assert (cfg.v_lo, cfg.v_init, cfg.prior_var) == (3e-3, 3e-2, 2.0)  # data, data, method
    cfg = _resolve("--preset", "t", "--no-preset").snep  # the method preset stays
    assert (cfg.v_lo, cfg.v_init, cfg.prior_var) == (2e-3, 2e-2, 2.0)
    assert _resolve("--no-preset").snep == Config().snep
    # --preset beats the file's preset
    got = _resolve("--config", str(toml), "--preset", "default", "--no-preset").snep
    assert got.prior_var == Config().snep.prior_var and got.v_lo == 4e-3
