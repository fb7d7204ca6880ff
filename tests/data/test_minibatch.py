"""Tests of snep.data.minibatch: epochs without replacement, checkpointing, gathering."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest

from snep.data.minibatch import MinibatchStream, gather_batch
from snep.errors import DataError


def _draw(stream: MinibatchStream, n_batches: int) -> np.ndarray:
    return np.concatenate([stream.next_indices() for _ in range(n_batches)])


@pytest.mark.parametrize(("n", "b"), [(10, 3), (10, 10), (10, 1), (7, 7), (100, 32), (1, 1)])
def test_every_epoch_covers_every_index_once(n, b):
    stream = MinibatchStream(n, b, seed=4)
    n_epochs = 5
    n_batches = -(-n_epochs * n // b)  # ceil
    batches = [stream.next_indices() for _ in range(n_batches)]
    assert all(batch.shape == (b,) and batch.dtype == np.intp for batch in batches)
    flat = np.concatenate(batches)[: n_epochs * n]
    for e in range(n_epochs):
        np.testing.assert_array_equal(np.sort(flat[e * n : (e + 1) * n]), np.arange(n))


def test_epochs_are_reshuffled_and_counters_advance():
    stream = MinibatchStream(50, 10, seed=0)
    first = _draw(stream, 5)
    assert stream.epoch == 1 and stream.position == 0 and stream.epochs_seen == 1.0
    second = _draw(stream, 5)
    assert not np.array_equal(first, second)
    stream.next_indices()
    assert stream.epochs_seen == pytest.approx(2.2)


def test_batch_spanning_two_epochs():
    stream = MinibatchStream(5, 3, seed=1)
    a = stream.next_indices()
    b = stream.next_indices()  # 2 from epoch 0, 1 from epoch 1
    assert stream.epoch == 1 and stream.position == 1
    np.testing.assert_array_equal(np.sort(np.concatenate([a, b[:2]])), np.arange(5))


def test_same_seed_same_stream_other_seed_differs():
    a = _draw(MinibatchStream(30, 7, seed=9), 20)
    b = _draw(MinibatchStream(30, 7, seed=9), 20)
    c = _draw(MinibatchStream(30, 7, seed=10), 20)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("via", ["dict", "json", "npz"])
def test_state_save_restore_reproduces_stream(tmp_path, via):
    stream = MinibatchStream(23, 5, seed=3)
    _draw(stream, 7)  # mid-epoch, past one epoch boundary
    state = stream.state_dict()
    assert all(type(v) is int for v in state.values())
    expected = _draw(stream, 20)
    if via == "json":
        state = json.loads(json.dumps(state))
    elif via == "npz":
        np.savez(tmp_path / "s.npz", **state)
        with np.load(tmp_path / "s.npz") as f:
            state = {k: f[k] for k in f.files}
    restored = MinibatchStream(23, 5, seed=999)  # the seed is taken from the state
    restored.load_state_dict(state)
    assert restored.seed == 3
    np.testing.assert_array_equal(_draw(restored, 20), expected)


def test_load_state_dict_errors():
    stream = MinibatchStream(10, 2, seed=0)
    state = stream.state_dict()
    with pytest.raises(DataError) as info:
        MinibatchStream(11, 2, seed=0).load_state_dict(state)
    assert "n_examples=10" in str(info.value) and "n_examples=11" in str(info.value)
    with pytest.raises(DataError, match=r"batch_size=2.*batch_size=3"):
        MinibatchStream(10, 3, seed=0).load_state_dict(state)
    with pytest.raises(DataError, match=r"missing keys \['position'\]"):
        stream.load_state_dict({k: v for k, v in state.items() if k != "position"})
    with pytest.raises(DataError, match=r"position 10"):
        stream.load_state_dict(state | {"position": 10})
    with pytest.raises(DataError, match=r"epoch is -1"):
        stream.load_state_dict(state | {"epoch": -1})


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        ((0, 1, 0), ["n_examples", "0"]),
        ((10, 0, 0), ["batch_size", "0", "[1, 10]"]),
        ((10, 11, 0), ["batch_size", "11", "[1, 10]"]),
        ((10, 2, -1), ["seed", "-1"]),
        ((10, 2.5, 0), ["batch_size", "2.5"]),
        ((10, True, 0), ["batch_size", "True"]),
    ],
)
def test_constructor_validation(args, fragments):
    with pytest.raises(DataError) as info:
        MinibatchStream(*args)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_next_indices_into_preallocated_out():
    stream = MinibatchStream(20, 4, seed=2)
    ref = _draw(MinibatchStream(20, 4, seed=2), 3)
    out = np.empty(4, dtype=np.intp)
    got = []
    for _ in range(3):
        res = stream.next_indices(out=out)
        assert res is out
        got.append(res.copy())
    np.testing.assert_array_equal(np.concatenate(got), ref)
    with pytest.raises(DataError, match=r"shape \(5,\)"):
        stream.next_indices(out=np.empty(5, dtype=np.intp))
    with pytest.raises(DataError, match=r"int32|dtype"):
        stream.next_indices(out=np.empty(4, dtype=np.float64))


def test_gather_batch_matches_fancy_indexing():
    rng = np.random.default_rng(0)
    x = rng.random((50, 7), dtype=np.float32)
    y = rng.integers(0, 10, 50).astype(np.int32)
    idx = rng.permutation(50)[:16]
    out_x = np.empty((16, 7), dtype=np.float32)
    out_y = np.empty(16, dtype=np.int32)
    rx, ry = gather_batch(x, y, idx, out_x, out_y)
    assert rx is out_x and ry is out_y
    np.testing.assert_array_equal(out_x, x[idx])
    np.testing.assert_array_equal(out_y, y[idx])


def test_gather_batch_allocates_nothing():
    rng = np.random.default_rng(0)
    x = rng.random((2000, 784), dtype=np.float32)
    y = rng.integers(0, 10, 2000).astype(np.int32)
    idx = rng.permutation(2000)[:500]  # a 1.5 MB batch
    out_x = np.empty((500, 784), dtype=np.float32)
    out_y = np.empty(500, dtype=np.int32)
    gather_batch(x, y, idx, out_x, out_y)  # warm up
    tracemalloc.start()
    try:
        gather_batch(x, y, idx, out_x, out_y)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024, f"gather_batch allocated {peak} bytes"
    np.testing.assert_array_equal(out_x, x[idx])


@pytest.mark.parametrize(
    ("case", "fragments"),
    [
        ("idx_range", ["index 50", "[0, 50)"]),
        ("idx_negative", ["index -1"]),
        ("idx_float", ["idx", "float64"]),
        ("out_x_shape", ["out_x", "(4, 6)", "(4, 7)"]),
        ("out_x_dtype", ["out_x", "float64", "float32"]),
        ("out_y_dtype", ["out_y", "int64", "int32"]),
        ("y_shape", ["y", "(49,)", "(50,)"]),
        ("out_x_layout", ["C-contiguous"]),
    ],
)
def test_gather_batch_errors(case, fragments):
    x = np.zeros((50, 7), dtype=np.float32)
    y = np.zeros(50, dtype=np.int32)
    idx = np.array([0, 1, 2, 3])
    out_x = np.empty((4, 7), dtype=np.float32)
    out_y = np.empty(4, dtype=np.int32)
    if case == "idx_range":
        idx = np.array([0, 1, 50, 3])
    elif case == "idx_negative":
        idx = np.array([0, -1, 2, 3])
    elif case == "idx_float":
        idx = idx.astype(np.float64)
    elif case == "out_x_shape":
        out_x = np.empty((4, 6), dtype=np.float32)
    elif case == "out_x_dtype":
        out_x = np.empty((4, 7), dtype=np.float64)
    elif case == "out_y_dtype":
        out_y = np.empty(4, dtype=np.int64)
    elif case == "y_shape":
        y = np.zeros(49, dtype=np.int32)
    elif case == "out_x_layout":
        out_x = np.empty((7, 4), dtype=np.float32).T
    with pytest.raises(DataError) as info:
        gather_batch(x, y, idx, out_x, out_y)
    for fragment in fragments:
        assert fragment in str(info.value)
