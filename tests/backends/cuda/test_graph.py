"""The host side of :mod:`snep.backends.cuda.graph` (no GPU needed): the step record's
layout, that the module imports without CuPy, and its launch logic (the pinned ring, the
capture sequence, the stream ordering) against a recording stand-in for CuPy.  The
captured iteration itself is tested through the device double in
``tests/algorithm/test_device_worker.py`` and on a GPU by ``bench/gpu_check.py``."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from snep.backends.cuda.fused import FUSED_PARAMS_DTYPE, pack_params
from snep.backends.cuda.graph import step_record_dtype
from snep.errors import ConfigError
from snep.state import PassScalars


@pytest.mark.parametrize("n_samples,batch_size", [(1, 1), (1, 100), (3, 7), (8, 1024)])
def test_the_step_record_is_the_indices_then_aligned_structs(n_samples, batch_size):
    dt = step_record_dtype(n_samples, batch_size)
    assert dt.names == ("idx", "params")
    assert dt.fields["idx"][1] == 0 and dt.fields["idx"][0].shape == (n_samples, batch_size)
    off = dt.fields["params"][1]
    assert off == 8 * n_samples * batch_size
    assert off % FUSED_PARAMS_DTYPE.alignment == 0
    assert dt.itemsize == off + n_samples * FUSED_PARAMS_DTYPE.itemsize
    # a record filled on the host reads back, struct by struct, from its bytes
    rec = np.zeros((), dt)
    for k in range(n_samples):
        pack_params(
            PassScalars(step=k + 5, seed=2**64 - 1 - k), rec["params"][k : k + 1].reshape(())
        )
        rec["idx"][k] = np.arange(batch_size) + k
    raw = rec.reshape(1).view(np.uint8)
    for k in range(n_samples):
        start = off + k * FUSED_PARAMS_DTYPE.itemsize
        s = raw[start : start + FUSED_PARAMS_DTYPE.itemsize].view(FUSED_PARAMS_DTYPE)[0]
        assert int(s["step"]) == k + 5 and int(s["seed"]) == 2**64 - 1 - k
        idx = raw[: 8 * n_samples * batch_size].view(np.int64).reshape(n_samples, batch_size)
        np.testing.assert_array_equal(idx[k], np.arange(batch_size) + k)


@pytest.mark.parametrize("bad", [(0, 10), (2, 0)])
def test_an_empty_step_record_is_a_clear_error(bad):
    with pytest.raises(ConfigError, match="both must be >= 1"):
        step_record_dtype(*bad)


def test_the_graph_module_imports_without_cupy():
    code = (
        "import sys, snep.backends.cuda.graph as g; "
        "assert 'cupy' not in sys.modules, 'cupy imported'; print(g.DEFAULT_DEPTH)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


# ---------------------------------------------------------------------------------------
# the launch logic against a recording stand-in for CuPy (the CUDA calls themselves are
# checked by bench/gpu_check.py on a GPU)
# ---------------------------------------------------------------------------------------
class _Log(list):
    pass


class _FakeDeviceArray(np.ndarray):
    log: _Log

    def set(self, arr, stream=None):
        assert arr.dtype == self.dtype and arr.shape == self.shape
        self.log.append(("copy", stream.name))
        np.ndarray.__setitem__(self, Ellipsis, arr)


class _FakeStream:
    def __init__(self, log, name):
        self.log, self.name, self.capturing = log, name, False

    def __enter__(self):
        self.log.append(("enter", self.name))
        return self

    def __exit__(self, *exc):
        self.log.append(("exit", self.name))

    def wait_event(self, event):
        self.log.append(("wait", self.name, event.name))

    def begin_capture(self):
        self.capturing = True
        self.log.append(("begin_capture", self.name))

    def end_capture(self):
        self.capturing = False
        self.log.append(("end_capture", self.name))
        return _FakeGraph(self.log)


class _FakeGraph:
    def __init__(self, log):
        self.log = log

    def launch(self, stream=None):
        self.log.append(("graph_launch", stream.name))


class _FakeEvent:
    count = 0

    def __init__(self, log):
        _FakeEvent.count += 1
        self.log, self.name = log, f"event{_FakeEvent.count}"

    def record(self, stream):
        self.log.append(("record", self.name, stream.name))

    def synchronize(self):
        self.log.append(("event_sync", self.name))


def _fake_cupy(log):
    import contextlib
    import types

    current = _FakeStream(log, "current")
    streams = iter(_FakeStream(log, f"graph{i}") for i in range(100))

    def zeros(n, dtype):
        a = np.zeros(n, dtype).view(_FakeDeviceArray)
        a.log = log
        return a

    @contextlib.contextmanager
    def using_allocator(fn):
        log.append(("allocator", fn))
        yield
        log.append(("allocator_end", fn))

    cuda = types.SimpleNamespace(
        Stream=lambda non_blocking=False: next(streams),
        Event=lambda disable_timing=True: _FakeEvent(log),
        MemoryPool=lambda: types.SimpleNamespace(malloc="graph-pool"),
        using_allocator=using_allocator,
        get_current_stream=lambda: current,
    )
    return types.SimpleNamespace(cuda=cuda, zeros=zeros)


@pytest.fixture
def fake_cupy(monkeypatch):
    import types

    from snep.backends.cuda import graph as cuda_graph

    log = _Log()
    monkeypatch.setattr(cuda_graph, "_cupy", lambda: _fake_cupy(log))
    monkeypatch.setitem(
        sys.modules, "cupyx", types.SimpleNamespace(empty_pinned=lambda s, d: np.zeros(s, d))
    )
    return log


def test_the_pinned_ring_waits_only_when_it_wraps(fake_cupy):
    from snep.backends.cuda.graph import CudaGraphs

    graphs = CudaGraphs()
    inputs = graphs.step_inputs(2, 3)
    assert inputs.idx.shape == (2, 3) and inputs.params(1).size == FUSED_PARAMS_DTYPE.itemsize
    seen = []
    for it in range(11):  # depth 8: records 8, 9 and 10 reuse slots 0, 1 and 2
        rec = inputs.host()
        rec["idx"][...] = it
        pack_params(PassScalars(step=it), rec["params"][1:2].reshape(()))
        inputs.upload()
        # the device record holds this iteration's bytes once the copy has run
        assert np.all(inputs.idx.view(np.ndarray) == it)
        got = inputs.params(1).view(np.ndarray).view(FUSED_PARAMS_DTYPE)[0]
        seen.append(int(got["step"]))
    assert seen == list(range(11))
    syncs = [e for e in fake_cupy if e[0] == "event_sync"]
    assert len(syncs) == 3  # only for the reused slots
    copies = [e for e in fake_cupy if e[0] == "copy"]
    assert len(copies) == 11 and {s for _, s in copies} == {"graph0"}
    with pytest.raises(ConfigError, match="call host"):
        inputs.upload()  # nothing new to upload


def test_capture_runs_the_iteration_then_captures_and_launches_in_order(fake_cupy):
    from snep.backends.cuda.graph import CudaGraphs

    graphs = CudaGraphs()
    calls = []
    graph = graphs.capture(lambda: calls.append("body"))
    assert calls == ["body", "body"]  # once run now (this iteration), once captured
    log = [e for e in fake_cupy if e[0] != "record"]
    # the graph stream waits for the current stream, runs the body with the graph pool,
    # captures, and the current stream then waits for the graph stream
    assert log[0][0] == "wait" and log[0][1] == "graph0"
    assert ("allocator", "graph-pool") in log
    i_begin = log.index(("begin_capture", "graph0"))
    i_end = log.index(("end_capture", "graph0"))
    assert i_begin < i_end and log[-1][:2] == ("wait", "current")
    fake_cupy.clear()
    graph.launch()
    kinds = [e[0] for e in fake_cupy]
    assert kinds == ["record", "wait", "graph_launch", "record", "wait"]
    assert fake_cupy[1][1] == "graph0" and fake_cupy[4][1] == "current"


def test_a_body_that_fails_under_capture_ends_the_capture_and_raises(fake_cupy):
    from snep.backends.cuda.graph import CudaGraphs

    graphs = CudaGraphs()
    n = []

    def body():
        n.append(1)
        if len(n) == 2:
            raise RuntimeError("not capturable")

    with pytest.raises(RuntimeError, match="not capturable"):
        graphs.capture(body)
    assert ("end_capture", "graph0") in fake_cupy and not graphs.stream.capturing


def test_an_uncaptured_iteration_runs_on_the_graph_stream_in_order(fake_cupy):
    from snep.backends.cuda.graph import CudaGraphs

    graphs = CudaGraphs()
    calls = []
    graphs.run_eager(lambda: calls.append("body"))
    assert calls == ["body"]
    kinds = [e[0] for e in fake_cupy]
    assert kinds == ["record", "wait", "enter", "exit", "record", "wait"]
    assert fake_cupy[1][1] == "graph0" and fake_cupy[-1][1] == "current"
    assert not any(e[0] == "begin_capture" for e in fake_cupy)
