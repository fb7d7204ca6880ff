"""The SNEP worker on a device backend (the code path of ``--backend cuda``), on the CPU.

:class:`~tests.algorithm.device_double.DeviceBackend` runs the cpu kernels behind the
device interface and refuses any implicit host/device mixing, so a run through it checks
that the worker keeps its chain on the device, crosses to the host only at syncs and
evaluations, and computes exactly what the cpu backend computes (same kernels: bitwise).
"""

from __future__ import annotations

import numpy as np
import pytest

from snep.backends import get_backend
from snep.config import Config
from snep.data.loaders import load_digits
from snep.errors import ConfigError
from snep.run.fit import fit
from snep.transport.inprocess import simulate

from .device_double import DeviceArray, DeviceBackend, GraphRuleError
from .simulate_args import simulate_args


def _config(method: str = "snep", snep: dict | None = None, **train) -> Config:
    return Config().replace(
        train={"method": method, "workers": 3, "iterations": 60, "eval_every": 20, **train},
        model={"hidden": (16,)},
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
# train.cuda_graph: the captured iteration (snep.backends.cuda.graph)
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


# ---------------------------------------------------------------------------------------
# train.cuda_aware_mpi: the protocol's float64 sites, pushes and replies in device memory
# ---------------------------------------------------------------------------------------
def _protocol_pair(digits, backend):
    """Two workers on the device double with one shard, one with host messages and one with
    device messages, and a host server for each."""
    from snep.algorithm.worker import SnepWorker
    from snep.run.setup import build_spec, initial_position, make_server, prior_for

    cfg = _config(backend="cuda", workers=1)
    spec = build_spec(cfg, digits)
    x, y = digits.x_train, digits.y_train
    make = lambda: SnepWorker(  # noqa: E731
        0,
        1,
        backend.mlp(spec, cfg.snep.n_chains, 100),
        x,
        y,
        cfg,
        backend,
        initial_position(cfg, spec),
    )
    host, dev = make(), make()
    dev.enable_device_messages()
    servers = [make_server(cfg, prior_for(cfg, spec), initial_position(cfg, spec), 1) for _ in "ab"]
    return host, dev, servers


def test_device_messages_equal_host_messages_bitwise(digits):
    backend = DeviceBackend()
    host, dev, (srv_h, srv_d) = _protocol_pair(digits, backend)
    assert dev.device_messages and not host.device_messages
    assert isinstance(dev.sent.precision, DeviceArray)
    srv_h.register(0, host.initial_site())
    srv_d.register(0, dev.initial_site())
    to_dev = lambda r: type(r)(  # noqa: E731  the reply a CUDA-aware MPI leaves on the device
        backend.to_device(r.precision), backend.to_device(r.precision_mean), r.version, r.accepted
    )
    host.start(srv_h.reply_to(0))
    dev.start(to_dev(srv_d.reply_to(0)))
    pushes = 0
    for _ in range(45):
        ph, pd = host.step(), dev.step()
        assert (ph is None) == (pd is None)
        if ph is None:
            continue
        pushes += 1
        assert isinstance(pd.delta_precision, DeviceArray)  # computed on the device
        got = backend.to_host(pd.delta_precision), backend.to_host(pd.delta_precision_mean)
        np.testing.assert_array_equal(got[0], ph.delta_precision)
        np.testing.assert_array_equal(got[1], ph.delta_precision_mean)
        host.receive(srv_h.push(ph))
        pd_host = type(pd)(pd.worker, pd.iteration, *got, pd.version_seen)  # what MPI delivers
        dev.receive(to_dev(srv_d.push(pd_host)))
    assert pushes >= 4
    np.testing.assert_array_equal(backend.to_host(dev.arrays.x), backend.to_host(host.arrays.x))
    # the checkpoint holds host arrays, equal to the host-message worker's, and reloads
    sh, sd = host.state_dict(), dev.state_dict()
    assert set(sh) == set(sd) and not any(isinstance(v, DeviceArray) for v in sd.values())
    for key in sh:
        np.testing.assert_array_equal(sd[key], sh[key])
    _, again, _ = _protocol_pair(digits, backend)
    again.load_state_dict(sd)
    assert isinstance(again.sent.precision, DeviceArray)
    np.testing.assert_array_equal(backend.to_host(again.sent.precision), sh["sent_precision"])


def test_device_messages_are_for_device_backends_under_mpi(digits):
    from snep.algorithm.worker import SnepWorker

    with pytest.raises(ConfigError, match="applies to runs under mpiexec"):
        fit(_config(cuda_aware_mpi=True, backend="cuda"), digits, DeviceBackend())
    for bad in ({"backend": "cpu"}, {"backend": "auto"}, {"method": "asgd", "backend": "cuda"}):
        with pytest.raises(ConfigError, match=r"train\.cuda_aware_mpi"):
            _config(cuda_aware_mpi=True, **bad)
    cpu = get_backend("cpu")
    cfg = _config()
    from snep.run.setup import build_spec, initial_position

    spec = build_spec(cfg, digits)
    worker = SnepWorker(
        0, 1, cpu.mlp(spec, cfg.snep.n_chains, 100), digits.x_train, digits.y_train, cfg, cpu,
        initial_position(cfg, spec),
    )  # fmt: skip
    with pytest.raises(ConfigError, match="device messages need a device backend"):
        worker.enable_device_messages()
