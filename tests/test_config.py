"""Config validation, TOML round trip and clear errors."""

from __future__ import annotations

import pytest

from snep.config import DATA_PRESETS, METHOD_PRESETS, Config, Schedule, load_config, with_preset
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


#: the sampler and SNEP sections of the dataclass defaults before the defaults changed
#: (docs/method.md §1.8): what ``--preset paper`` must give, value for value
PAPER_SAMPLER = {
    "kind": "adam_sgld",
    "step_size": 0.001,
    "step_unit": "absolute",
    "temperature": 1.0,
    "kappa": 1.0,
    "beta1": 0.0,
    "beta2": 0.999,
    "adam_eps": 1e-08,
    "rms_decay": 0.99,
    "rms_eps": 1e-05,
    "friction": 0.1,
    "gamma_term": False,
}
PAPER_SNEP = {
    "beta": 1.0,
    "p_snep": False,
    "site_step": {
        "kind": "constant",
        "value": 0.02,
        "offset": 1000.0,
        "power": 0.51,
        "boundaries": [],
        "values": [],
    },
    "n_inner": 10,
    "n_sync": 10,
    "n_samples": 1,
    "n_chains": 1,
    "prior_var": 0.5,
    "v_init": 0.01,
    "m_lo": -10.0,
    "m_hi": 10.0,
    "v_lo": 0.01,
    "v_hi": 100.0,
    "prec_floor": 0.001,
    "damping": 0.5,
}
#: the digits preset of the paper preset (tuned for its Adam-SGLD)
PAPER_DIGITS = {
    "train": {"iterations": 40_000, "eval_every": 2_000},
    "model": {"hidden": [200]},
    "sampler": {"step_size": 3e-3},
    "snep": {"site_step": {"value": 0.2}, "v_lo": 3e-3, "prior_var": 1.0},
}


def _paper(**train) -> Config:
    return Config.from_dict(with_preset({"train": {"preset": "paper", **train}}))


def test_paper_preset_is_the_reference_configuration():
    cfg = _paper(data="mnist")  # no data-set preset for mnist
    d = cfg.to_dict()
    assert cfg.train.preset == "paper"
    assert d["sampler"] == PAPER_SAMPLER
    assert {k: d["snep"][k] for k in PAPER_SNEP} == PAPER_SNEP
    # keys added to SNEPConfig later take their defaults unless the preset names them
    assert set(d["snep"]) >= set(PAPER_SNEP)
    assert cfg.model == Config().model and cfg.train.iterations == 0
    assert METHOD_PRESETS["default"] == {}
    assert DATA_PRESETS["paper"]["digits"] == PAPER_DIGITS


def test_paper_preset_on_digits_adds_its_digits_preset():
    cfg = _paper(workers=2)  # data defaults to digits
    assert cfg.train.data == "digits" and cfg.train.workers == 2
    assert cfg.train.iterations == 40_000 and cfg.train.eval_every == 2_000
    assert cfg.model.hidden == (200,) and cfg.sampler.step_size == 3e-3
    assert cfg.snep.site_step.value == 0.2 and cfg.snep.v_lo == 3e-3
    assert cfg.snep.prior_var == 1.0 and cfg.sampler.kind == "adam_sgld"
    plain = Config.from_dict(
        with_preset({"train": {"preset": "paper", "workers": 2}}, data_preset=False)
    )
    assert plain.model == Config().model and plain.sampler.step_size == 1e-3
    # a layer above keeps the preset's other keys of a nested table
    over = Config.from_dict(
        with_preset(
            {"train": {"preset": "paper"}, "snep": {"site_step": {"kind": "robbins_monro"}}}
        )
    )
    assert over.snep.site_step.kind == "robbins_monro" and over.snep.site_step.value == 0.2
    # the presets themselves are never modified by a merge
    assert DATA_PRESETS["paper"]["digits"] == PAPER_DIGITS
    assert METHOD_PRESETS["paper"]["snep"]["site_step"]["value"] == 0.02


def test_default_preset_without_data_preset_is_the_dataclass_defaults():
    assert Config.from_dict(with_preset({"train": {"data": "mnist"}})) == Config().replace(
        train={"data": "mnist"}
    )
    assert Config.from_dict(with_preset({}, data_preset=False)) == Config()


def test_each_layer_overrides_the_one_below(monkeypatch):
    # defaults < method preset < its data-set preset < file (layer 1) < flags (layer 2)
    monkeypatch.setitem(
        METHOD_PRESETS, "t", {"sampler": {"step_size": 2e-3, "kappa": 2.0, "temperature": 2.0}}
    )
    monkeypatch.setitem(
        DATA_PRESETS, "t", {"digits": {"sampler": {"step_size": 3e-3, "kappa": 3.0}}}
    )
    file = {"train": {"preset": "t"}, "sampler": {"step_size": 4e-3, "kappa": 4.0}}
    flags = {"sampler": {"step_size": 5e-3}}
    cfg = Config.from_dict(with_preset(file, flags))
    s = cfg.sampler
    assert (s.step_size, s.kappa, s.temperature) == (5e-3, 4.0, 2.0)
    assert s.beta2 == Config().sampler.beta2  # set by no layer
    s = Config.from_dict(with_preset(file)).sampler
    assert (s.step_size, s.kappa) == (4e-3, 4.0)
    s = Config.from_dict(with_preset({"train": {"preset": "t"}})).sampler
    assert (s.step_size, s.kappa, s.temperature) == (3e-3, 3.0, 2.0)
    s = Config.from_dict(with_preset({"train": {"preset": "t"}}, data_preset=False)).sampler
    assert (s.step_size, s.kappa, s.temperature) == (2e-3, 2.0, 2.0)
    assert Config.from_dict(with_preset({})).sampler == Config().sampler
    # the preset and the data set are chosen by the top layers: a later layer wins
    cfg = Config.from_dict(with_preset(file, {"train": {"preset": "default"}}, data_preset=False))
    assert cfg.train.preset == "default" and cfg.sampler.step_size == 4e-3
    assert cfg.sampler.temperature == Config().sampler.temperature
    cfg = Config.from_dict(with_preset(file, {"train": {"data": "mnist"}}))
    assert cfg.sampler.temperature == 2.0 and cfg.sampler.step_size == 4e-3


@pytest.mark.parametrize("name", ["nope", "Paper", 3])
def test_unknown_preset_lists_the_known_ones(name):
    with pytest.raises(ConfigError, match=r"'train.preset' = .*'default', 'paper'"):
        with_preset({"train": {"preset": name}})
    with pytest.raises(ConfigError, match=r"'train.preset' = .*'default', 'paper'"):
        Config().replace(train={"preset": name})


def test_load_config_applies_the_method_preset_of_the_file(tmp_path):
    path = tmp_path / "paper.toml"
    path.write_text('[train]\npreset = "paper"\n[snep]\nv_lo = 0.003\n')
    cfg = load_config(path)
    assert cfg.to_dict()["sampler"] == PAPER_SAMPLER
    assert cfg.snep.v_lo == 0.003 and cfg.snep.site_step.value == 0.02
    assert cfg.model == Config().model  # no data-set preset: load_config reads a file as is
    # a full config (a run directory's config.toml) reads back as written
    assert load_config(path, {"train": {"workers": 2}}).train.workers == 2
    from snep.rundir import CONFIG_FILE, write_config

    write_config(tmp_path, cfg)
    assert load_config(tmp_path / CONFIG_FILE) == cfg


# --------------------------------------------------------------------------- run length


def test_defaults_derive_the_iterations_from_epochs():
    t = Config().train
    assert t.iterations == 0 and t.epochs == 20.0


@pytest.mark.parametrize(
    "train,n_train,want",
    [
        ({}, 1437, 72),  # digits, 4 workers: shard 360, batch 100: 20 * 3.6
        ({"workers": 3}, 1437, 96),  # shard 479: 95.8 -> 96
        ({"workers": 8}, 60_000, 1500),  # MNIST: 7,500 per worker
        ({"workers": 4}, 50, 20),  # shard 13 < batch: 1 pass per iteration
        ({"epochs": 0.1, "workers": 1}, 1000, 1),  # 1.0 (rounding), not 2
        ({"epochs": 0.01, "workers": 1}, 1000, 1),  # at least one iteration
        ({"epochs": 2.5, "workers": 2, "batch_size": 32}, 1000, 40),  # 2.5 * 500 / 32
        ({"iterations": 7}, 1437, 7),  # explicit iterations win over epochs
        ({"iterations": 7, "epochs": 1000.0}, 1437, 7),
    ],
)
def test_with_data_size_resolves_the_iterations(train, n_train, want):
    cfg = Config().replace(train=train)
    got = cfg.with_data_size(n_train)
    assert got.train.iterations == want
    assert got.with_data_size(n_train) == got  # idempotent
    assert got.train.epochs == cfg.train.epochs  # only the iterations change
    assert got.replace(train={"iterations": 0}) == cfg.replace(train={"iterations": 0})


@pytest.mark.parametrize(
    "train,fragment",
    [
        ({"epochs": 0}, "'train.epochs' = 0 is invalid: expected a finite number > 0"),
        ({"epochs": -1.0}, "'train.epochs' = -1.0"),
        ({"epochs": float("nan")}, "'train.epochs' = nan"),
        ({"epochs": True}, "'train.epochs' = True"),
        ({"epochs": "20"}, "'train.epochs' = '20'"),
        ({"iterations": -1}, "'train.iterations' = -1 is invalid: expected an integer >= 1"),
        ({"iterations": 1.5}, "or 0 to derive it from train.epochs"),
    ],
)
def test_bad_run_lengths_name_key_value_and_allowed(train, fragment):
    with pytest.raises(ConfigError) as err:
        Config().replace(train=train)
    assert fragment in str(err.value)


def test_unresolved_run_length_is_an_error_not_zero():
    cfg = Config()
    with pytest.raises(ConfigError, match=r"train.averaging_start.*with_data_size"):
        _ = cfg.train.averaging_start
    with pytest.raises(ConfigError, match=r"train\.iterations = 0"):
        cfg.train.check_resolved("the run")
    assert cfg.replace(train={"average_from": 5}).train.averaging_start == 5
    assert cfg.with_data_size(1437).train.averaging_start == 72 * 3 // 4
    for bad in (0, -3, 2.5):
        with pytest.raises(ConfigError, match=r"training set has .* examples"):
            cfg.with_data_size(bad)


def test_epochs_in_a_layer_override_the_iterations_below():
    # the paper digits preset sets iterations; epochs set above it win
    assert _paper().train.iterations == 40_000
    cfg = Config.from_dict(with_preset({"train": {"preset": "paper", "epochs": 5}}))
    assert cfg.train.iterations == 0 and cfg.with_data_size(1437).train.iterations == 18
    # file: iterations; flags: epochs -> epochs
    cfg = Config.from_dict(with_preset({"train": {"iterations": 300}}, {"train": {"epochs": 2}}))
    assert cfg.train.iterations == 0 and cfg.train.epochs == 2
    # file: epochs; flags: iterations -> iterations
    cfg = Config.from_dict(with_preset({"train": {"epochs": 2}}, {"train": {"iterations": 300}}))
    assert cfg.with_data_size(1437).train.iterations == 300
    # one layer with both: the explicit iterations win
    cfg = Config.from_dict(with_preset({"train": {"epochs": 2, "iterations": 300}}))
    assert cfg.with_data_size(1437).train.iterations == 300
