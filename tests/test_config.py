"""Config validation, TOML round trip and clear errors."""

from __future__ import annotations

import pytest

from snep.config import Config, Schedule, load_config
from snep.errors import ConfigError


def test_defaults_are_valid_and_round_trip():
    cfg = Config()
    assert Config.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "section,key,value,fragment",
    [
        ("train", "workers", 0, "'train.workers' = 0"),
        ("train", "method", "sgd", "one of ['snep', 'ep', 'adam', 'asgd', 'easgd']"),
        ("train", "backend", "tpu", "'train.backend' = 'tpu'"),
        ("sampler", "kind", "hmc", "'sampler.kind' = 'hmc'"),
        ("sampler", "step_size", -1.0, "> 0"),
        ("snep", "beta", 1.5, "(0, 1]"),
        ("snep", "v_lo", 1e3, "less than snep.v_hi"),
        ("snep", "n_sync", 0, "integer >= 1"),
    ],
)
def test_bad_values_name_key_value_and_allowed(section, key, value, fragment):
    with pytest.raises(ConfigError) as err:
        Config().replace(**{section: {key: value}})
    assert fragment in str(err.value)


def test_unknown_keys_and_sections_are_errors():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['wokers'\].*allowed keys"):
        Config.from_dict({"train": {"wokers": 4}})
    with pytest.raises(ConfigError, match="unknown config section"):
        Config.from_dict({"trian": {}})


def test_adam_needs_one_worker():
    with pytest.raises(ConfigError, match="1 for method 'adam'"):
        Config().replace(train={"method": "adam", "workers": 4})


def test_toml_file_with_overrides(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(
        """
[train]
workers = 8
iterations = 100
[sampler]
kind = "sgld"
step_size = 1e-4
[snep]
p_snep = true
[snep.site_step]
kind = "robbins_monro"
value = 0.05
"""
    )
    cfg = load_config(path, {"train": {"seed": 3}})
    assert cfg.train.workers == 8 and cfg.train.seed == 3
    assert cfg.sampler.kind == "sgld"
    assert cfg.snep.effective_beta(8) == pytest.approx(1 / 8)
    assert cfg.snep.site_step(0) == pytest.approx(0.05)
    assert cfg.snep.site_step(1000) < 0.05


def test_bad_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nworkers = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_schedules():
    assert Schedule("constant", 0.1)(10**6) == 0.1
    rm = Schedule("robbins_monro", 0.1, offset=100, power=1.0)
    assert rm(0) == pytest.approx(0.1) and rm(100) == pytest.approx(0.05)
    pw = Schedule("piecewise", 1.0, boundaries=(10, 20), values=(0.3, 0.2, 0.1))
    assert [pw(t) for t in (0, 9, 10, 19, 20, 99)] == [0.3, 0.3, 0.2, 0.2, 0.1, 0.1]
    with pytest.raises(ConfigError, match="3 values for 2 boundaries"):
        Schedule("piecewise", boundaries=(10, 20), values=(0.3, 0.2))
    with pytest.raises(ConfigError, match="Robbins"):
        Schedule("robbins_monro", power=0.3)


def test_replace_merges_nested_tables():
    cfg = Config().replace(
        snep={"site_step": {"kind": "piecewise", "boundaries": [5], "values": [0.1, 0.01]}}
    )
    cfg2 = cfg.replace(snep={"site_step": {"value": 0.3}})
    assert cfg2.snep.site_step.kind == "piecewise"
    assert cfg2.snep.site_step.boundaries == (5,)
    assert cfg2.snep.site_step.value == 0.3


def test_presets_sit_below_explicit_values():
    from snep.config import PRESETS, with_preset

    cfg = Config.from_dict(with_preset({"train": {"workers": 2}}))
    digits = PRESETS["digits"]
    assert cfg.train.data == "digits" and cfg.train.workers == 2
    assert cfg.model.hidden == tuple(digits["model"]["hidden"])
    assert cfg.snep.site_step.value == digits["snep"]["site_step"]["value"]
    over = Config.from_dict(with_preset({"snep": {"site_step": {"kind": "robbins_monro"}}}))
    assert over.snep.site_step.kind == "robbins_monro"
    assert over.snep.site_step.value == digits["snep"]["site_step"]["value"]
    mnist = Config.from_dict(with_preset({"train": {"data": "mnist"}}))
    assert mnist == Config().replace(train={"data": "mnist"})  # no preset: paper defaults
