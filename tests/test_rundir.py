"""Run directories: TOML writer round trip, naming, metrics stream, loading errors."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest

from snep.config import Config, load_config
from snep.errors import DataError
from snep.model.spec import ParamSpec
from snep.posterior import Posterior
from snep.rundir import (
    CONFIG_FILE,
    METRICS_FILE,
    POSTERIOR_FILE,
    MetricsWriter,
    create_run_dir,
    default_run_name,
    load_run,
    read_metrics,
    to_jsonable,
    toml_dumps,
    write_config,
    write_summary,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def unusual_config() -> Config:
    return Config().replace(
        train={
            "workers": 2,
            "speeds": (1.0, 2.5),
            "data": 'C:\\data\\"mnist"\tdir',
            "reply_delay": 0.1 + 0.2,
            "average_from": 7,
        },
        model={"hidden": (100, 50)},
        sampler={"kind": "psgld", "adam_eps": 1e-8, "gamma_term": True, "rms_eps": 5e-324},
        snep={
            "p_snep": True,
            "v_hi": 1e16,
            "site_step": {
                "kind": "piecewise",
                "boundaries": (100, 200),
                "values": (0.1, 0.05, 1e-8),
            },
        },
    )


@pytest.mark.parametrize("config", [Config(), unusual_config()], ids=["defaults", "unusual"])
def test_config_toml_round_trip(tmp_path, config):
    path = write_config(tmp_path, config)
    assert path == tmp_path / CONFIG_FILE
    text = path.read_text()
    assert "[snep.site_step]" in text
    for table in ("[train]", "[model]", "[sampler]", "[snep]"):
        assert table in text
    back = load_config(path)
    assert back == config
    assert back.to_dict() == config.to_dict()  # bit-exact floats, tuples as tuples


def test_toml_values_are_written_as_expected():
    text = toml_dumps(unusual_config().to_dict())
    assert "gamma_term = true" in text
    assert "p_snep = true" in text
    assert "adam_eps = 1e-08" in text
    assert "hidden = [100, 50]" in text
    assert "boundaries = [100, 200]" in text
    assert "values = [0.1, 0.05, 1e-08]" in text
    assert "reply_delay = 0.30000000000000004" in text


def test_toml_dumps_generic_nesting_and_escapes():
    data = {
        "top": 1,
        "a": {"s": "line\nbreak \x7f \x01 é", "empty": [], "key with space": -0.0},
        "b": {"c": {"d": {"x": float("inf"), "y": [True, False]}}},
    }
    back = tomllib.loads(toml_dumps(data))
    assert back["top"] == 1
    assert back["a"] == {"s": "line\nbreak \x7f \x01 é", "empty": [], "key with space": -0.0}
    assert back["b"]["c"]["d"] == {"x": float("inf"), "y": [True, False]}
    with pytest.raises(TypeError, match=r"a\.none"):
        toml_dumps({"a": {"none": None}})


def test_default_run_name():
    cfg = Config().replace(train={"workers": 8})
    assert re.fullmatch(r"\d{8}-\d{6}-snep-8w", default_run_name(cfg))
    assert default_run_name(None).endswith("-run")


def test_create_run_dir_never_overwrites(tmp_path):
    first = create_run_dir(tmp_path, "exp")
    assert first == tmp_path / "exp" and first.is_dir()
    # an existing empty directory is reused
    assert create_run_dir(tmp_path, "exp") == first
    (first / "metrics.jsonl").write_text("{}\n")
    second = create_run_dir(tmp_path, "exp")
    assert second == tmp_path / "exp-2"
    (second / "x").write_text("")
    assert create_run_dir(tmp_path, "exp") == tmp_path / "exp-3"
    # a plain file of that name is not a run directory either
    (tmp_path / "f").write_text("")
    assert create_run_dir(tmp_path, "f") == tmp_path / "f-2"
    assert (first / "metrics.jsonl").read_text() == "{}\n"


def test_create_run_dir_default_name_and_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = create_run_dir(config=Config().replace(train={"method": "ep", "workers": 3}))
    assert path.parent == tmp_path / "runs" or path.parent.resolve() == tmp_path / "runs"
    assert path.name.endswith("-ep-3w")
    with pytest.raises(DataError, match="run name"):
        create_run_dir(tmp_path, "a/b")


def test_metrics_writer_appends_and_flushes(tmp_path):
    with MetricsWriter(tmp_path) as w:
        w.write({"iteration": np.float64(10.0), "mean_error": np.float32(0.25), "n": np.int64(3)})
        # flushed: readable while the writer is still open
        assert read_metrics(tmp_path) == [{"iteration": 10.0, "mean_error": 0.25, "n": 3}]
        w.write({"iteration": 20, "mean_nll": float("nan"), "arr": np.arange(2)})
    with MetricsWriter(tmp_path / METRICS_FILE) as w:
        w({"iteration": 30})
        assert w.count == 1
    recs = read_metrics(tmp_path)
    assert [r["iteration"] for r in recs] == [10.0, 20, 30]
    assert recs[1]["mean_nll"] is None and recs[1]["arr"] == [0, 1]
    for line in (tmp_path / METRICS_FILE).read_text().splitlines():
        json.loads(line)  # strict JSON, one object per line
    with pytest.raises(RuntimeError, match="outside"):
        MetricsWriter(tmp_path).write({})


def test_read_metrics_truncated_and_malformed(tmp_path):
    (tmp_path / METRICS_FILE).write_text('{"iteration": 1}\n{"iteration": 2}\n{"itera')
    with pytest.warns(UserWarning, match="truncated"):
        assert read_metrics(tmp_path) == [{"iteration": 1}, {"iteration": 2}]
    (tmp_path / METRICS_FILE).write_text('{"iteration": 1}\nnot json\n{"iteration": 2}\n')
    with pytest.raises(DataError, match="line 2"):
        read_metrics(tmp_path)


def test_to_jsonable_and_write_summary(tmp_path):
    summary = {"a": np.float32(1.5), "b": (np.int32(1), np.bool_(True)), "c": {1: np.inf}}
    assert to_jsonable(summary) == {"a": 1.5, "b": [1, True], "c": {"1": None}}
    path = write_summary(tmp_path, summary)
    assert json.loads(path.read_text()) == {"a": 1.5, "b": [1, True], "c": {"1": None}}
    with pytest.raises(TypeError):
        to_jsonable({"x": object()})


def _posterior(with_average: bool) -> Posterior:
    spec = ParamSpec((4, 3, 2))
    rng = np.random.default_rng(0)
    prec = rng.uniform(1, 2, spec.size)
    avg = (rng.normal(size=spec.size), rng.uniform(0.1, 1, spec.size)) if with_average else None
    return Posterior(spec, prec, rng.normal(size=spec.size), *(avg if avg else (None, None)))


@pytest.mark.parametrize("with_average", [False, True])
def test_load_run_round_trip(tmp_path, with_average):
    cfg = unusual_config()
    post = _posterior(with_average)
    write_config(tmp_path, cfg)
    post.save(tmp_path / POSTERIOR_FILE)
    cfg2, post2 = load_run(tmp_path)
    assert cfg2 == cfg
    np.testing.assert_array_equal(post2.precision, post.precision)
    np.testing.assert_array_equal(post2.precision_mean, post.precision_mean)
    assert (post2.average_mean is None) == (not with_average)


def test_load_run_errors_name_file_and_directory(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match=r"run directory .*nope.* does not exist.*contains"):
        load_run(missing)
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(DataError) as err:
        load_run(run)
    assert CONFIG_FILE in str(err.value) and str(run) in str(err.value)
    assert "posterior.npz" in str(err.value)  # says what a run directory contains
    write_config(run, Config())
    with pytest.raises(DataError) as err:
        load_run(run)
    assert f"has no {POSTERIOR_FILE}" in str(err.value) and str(run) in str(err.value)
    with pytest.raises(DataError, match=r"has no metrics\.jsonl"):
        read_metrics(run)
    (tmp_path / "file").write_text("")
    with pytest.raises(DataError, match="is not a directory"):
        load_run(tmp_path / "file")
