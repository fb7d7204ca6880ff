"""The SNEP worker on a device backend (the code path of ``--backend cuda``), on the CPU.

:class:`~tests.algorithm.device_double.DeviceBackend` runs the cpu kernels behind the
device interface and refuses any implicit host/device mixing, so a run through it checks
that the worker keeps its chain on the device, crosses to the host only at syncs and
evaluations, and computes exactly what the cpu backend computes (same kernels: bitwise).
"""

from __future__ import annotations

import numpy as np
import pytest

from snep.algorithm.runner import fit, simulate
from snep.backends import get_backend
from snep.config import Config
from snep.data.loaders import load_digits
from snep.errors import ConfigError

from .device_double import DeviceArray, DeviceBackend
from .simulate_args import simulate_args


def _config(method: str = "snep", **train) -> Config:
    return Config().replace(
        train={"method": method, "workers": 3, "iterations": 60, "eval_every": 20, **train},
        model={"hidden": (16,)},
        sampler={"step_size": 3e-3},
        snep={"site_step": {"value": 0.1}},
    )


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_the_double_refuses_host_device_mixing():
    dev = np.zeros(4, np.float32).view(DeviceArray)
    host = np.ones(4, np.float32)
    for bad in (
        lambda: dev + host,
        lambda: np.add(dev, dev, out=host),
        lambda: np.copyto(host, dev),
        lambda: dev.__setitem__(slice(None), host),
    ):
        with pytest.raises(TypeError):
            bad()
    assert isinstance(dev + 1.0, DeviceArray) and isinstance(np.sqrt(dev), DeviceArray)


@pytest.mark.parametrize("method", ["snep", "ep"])
def test_a_device_run_equals_the_cpu_run(digits, method, tmp_path):
    config = _config(method)
    backend = DeviceBackend()
    on_device = fit(config, digits, backend, checkpoint=tmp_path / "ck.npz")
    on_cpu = fit(config, digits, get_backend("cpu"))
    for a, b in zip(on_device.history, on_cpu.history, strict=True):
        assert {k: v for k, v in a.items() if "seconds" not in k} == {
            k: v for k, v in b.items() if "seconds" not in k
        }
    np.testing.assert_array_equal(on_device.posterior.mean, on_cpu.posterior.mean)
    np.testing.assert_array_equal(on_device.posterior.var, on_cpu.posterior.var)
    # the guard count stays on the device between syncs and evaluations
    assert backend.fired_reads < config.train.iterations * config.train.workers


def test_a_device_run_resumes_bitwise_from_a_checkpoint(digits):
    cfg = _config()
    backend = DeviceBackend()
    args = simulate_args(cfg, digits, backend)
    states: list[dict[str, np.ndarray]] = []
    kinds: set[type] = set()

    def keep(state: dict) -> None:
        kinds.update(type(v) for v in state.values())
        states.append({k: np.array(v) for k, v in state.items()})

    full = simulate(*args, checkpoint=keep)
    assert DeviceArray not in kinds  # the checkpoint holds host copies
    resumed = simulate(*args, resume=states[1])
    np.testing.assert_array_equal(resumed.server.precision_mean, full.server.precision_mean)
    for a, b in zip(resumed.workers, full.workers, strict=True):
        assert isinstance(a.arrays.x, DeviceArray)
        np.testing.assert_array_equal(backend.to_host(a.arrays.x), backend.to_host(b.arrays.x))
        assert a.guard_fired == b.guard_fired


@pytest.mark.parametrize("method", ["adam", "asgd", "easgd"])
def test_baselines_on_a_device_backend_are_a_clear_error(digits, method):
    config = _config(method, workers=1 if method == "adam" else 3)
    with pytest.raises(ConfigError, match=f"'{method}' runs on the host backends"):
        fit(config, digits, DeviceBackend())
