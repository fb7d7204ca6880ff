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

from .device_double import DeviceArray, DeviceBackend, GraphRuleError
from .simulate_args import simulate_args


def _config(method: str = "snep", snep: dict | None = None, **train) -> Config:
    return Config().replace(
        train={"method": method, "workers": 3, "iterations": 60, "eval_every": 20, **train},
        model={"hidden": (16,)},
        sampler={"step_size": 3e-3},
        snep={"site_step": {"value": 0.1}, **(snep or {})},
    )


def _same_runs(a, b) -> None:
    for ha, hb in zip(a.history, b.history, strict=True):
        assert {k: v for k, v in ha.items() if "seconds" not in k} == {
            k: v for k, v in hb.items() if "seconds" not in k
        }
    np.testing.assert_array_equal(a.posterior.mean, b.posterior.mean)
    np.testing.assert_array_equal(a.posterior.var, b.posterior.var)


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
    _same_runs(on_device, on_cpu)
    # the guard count stays on the device between syncs and evaluations
    iterations = config.train.iterations * config.train.workers
    assert backend.fired_reads < iterations
    # every iteration ran its launches from the staged step record, uncaptured
    assert backend.eager_runs == iterations and backend.captures == 0


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


# ---------------------------------------------------------------------------------------
# train.cuda_graph: the captured iteration (snep.backends.cuda_graph)
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "method,snep",
    [("snep", {}), ("snep", {"n_samples": 3}), ("ep", {})],
    ids=["snep", "snep-3-samples", "ep"],
)
def test_a_graphed_run_equals_the_uncaptured_cpu_run(digits, method, snep):
    # the double replays a graph by re-running its body, refusing inside it every transfer,
    # host read and by-value scalar: equal numbers then mean the body reads each
    # iteration's inputs (indices, step, bias corrections, flags) from the device record
    config = _config(method, snep)
    backend = DeviceBackend()
    graphed = fit(config.replace(train={"cuda_graph": True, "backend": "cuda"}), digits, backend)
    _same_runs(graphed, fit(config, digits, get_backend("cpu")))
    t = config.train
    # one capture per variant and worker (snep: with and without the anchor refresh)
    variants = 2 if method == "snep" else 1
    assert backend.captures == variants * t.workers
    assert backend.launches == t.iterations * t.workers - backend.captures


def test_a_graphed_run_resumes_bitwise_from_a_checkpoint(digits):
    cfg = _config(cuda_graph=True, backend="cuda")
    backend = DeviceBackend()
    args = simulate_args(cfg, digits, backend)
    states: list[dict[str, np.ndarray]] = []
    full = simulate(
        *args, checkpoint=lambda state: states.append({k: np.array(v) for k, v in state.items()})
    )
    resumed = simulate(*args, resume=states[1])
    np.testing.assert_array_equal(resumed.server.precision_mean, full.server.precision_mean)
    for a, b in zip(resumed.workers, full.workers, strict=True):
        np.testing.assert_array_equal(backend.to_host(a.arrays.x), backend.to_host(b.arrays.x))
        assert a.sampler_steps == b.sampler_steps and a.guard_fired == b.guard_fired


def test_the_double_refuses_what_a_graph_cannot_replay():
    backend = DeviceBackend()
    host = np.ones(3, np.float32)
    for body in (
        lambda: backend.to_device(host),
        lambda: backend.to_host(backend.xp.zeros(3)),
        lambda: backend.take_fired(),
        lambda: backend.step_inputs(1, 2).upload(),
    ):
        with pytest.raises(GraphRuleError, match="inside a captured body"):
            backend.capture(body)
    assert not backend.in_body  # a failed body leaves the double usable


def test_cuda_graph_needs_a_capturing_device_backend(digits):
    with pytest.raises(ConfigError, match="needs a device backend that captures CUDA graphs"):
        fit(_config(cuda_graph=True, backend="cuda"), digits, get_backend("cpu"))
    # 'auto' picks cpu, so the flag needs backend 'cuda' by name
    for bad in ({"backend": "cpu"}, {"backend": "auto"}, {"method": "easgd", "backend": "cuda"}):
        with pytest.raises(ConfigError, match=r"train\.cuda_graph"):
            _config(cuda_graph=True, **bad)


def test_train_gemm_reaches_the_device_backend_and_is_refused_on_the_host(digits):
    backend = DeviceBackend()
    fit(_config(gemm="tiled-cpp", backend="cuda", iterations=4, eval_every=2), digits, backend)
    assert set(backend.gemms) == {"tiled-cpp"} and len(backend.gemms) == 3  # one per worker
    with pytest.raises(ConfigError, match="selects a GEMM of the cuda backend"):
        fit(_config(gemm="tiled", backend="cuda"), digits, get_backend("cpu"))
    for other in ("numpy", "auto"):
        with pytest.raises(ConfigError, match=r"train\.gemm"):
            _config(gemm="tiled", backend=other)
