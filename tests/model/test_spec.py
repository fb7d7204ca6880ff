"""Tests of the flat parameter layout (snep.model.spec)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from snep.errors import ConfigError
from snep.model import LayerSpec, ParamSpec, init_params

MNIST = (784, 500, 300, 10)
DEEP = (784, *([50] * 20), 10)
ARCHS = [MNIST, (7, 3), (5, 4, 3), DEEP]


def test_mnist_parameter_count() -> None:
    spec = ParamSpec(MNIST)
    assert spec.size == 545810
    assert spec.n_inputs == 784
    assert spec.n_outputs == 10
    assert spec.n_layers == 3
    assert spec.layers[0] == LayerSpec("fc0", 784, 500, 0, 392000)
    assert spec.layers[1] == LayerSpec("fc1", 500, 300, 392500, 542500)
    assert spec.layers[2] == LayerSpec("fc2", 300, 10, 542800, 545800)


def test_logistic_regression_and_deep_counts() -> None:
    assert ParamSpec((7, 3)).size == 7 * 3 + 3
    assert ParamSpec((7, 3)).n_layers == 1
    deep = ParamSpec(DEEP)
    assert deep.n_layers == 21
    assert deep.size == 784 * 50 + 50 + 19 * (50 * 50 + 50) + 50 * 10 + 10


def test_layers_tile_the_flat_vector() -> None:
    for sizes in ARCHS:
        spec = ParamSpec(sizes)
        off = 0
        for lay in spec.layers:
            assert lay.w_offset == off
            assert lay.b_offset == off + lay.n_in * lay.n_out
            off = lay.end
        assert off == spec.size


@pytest.mark.parametrize("sizes", ARCHS)
@pytest.mark.parametrize("lead", [(), (3,), (2, 2)])
def test_views_are_views_with_right_shapes(sizes: tuple[int, ...], lead: tuple[int, ...]) -> None:
    spec = ParamSpec(sizes)
    flat = np.arange(np.prod(lead, dtype=int) * spec.size, dtype=np.float64).reshape(
        *lead, spec.size
    )
    views = spec.views(flat)
    assert len(views) == spec.n_layers
    pieces = []
    for lay, (w, b) in zip(spec.layers, views, strict=True):
        assert w.shape == (*lead, lay.n_in, lay.n_out)
        assert b.shape == (*lead, lay.n_out)
        assert np.shares_memory(w, flat)
        assert np.shares_memory(b, flat)
        np.testing.assert_array_equal(
            w, flat[..., lay.w_offset : lay.b_offset].reshape(*lead, lay.n_in, lay.n_out)
        )
        np.testing.assert_array_equal(b, flat[..., lay.b_offset : lay.end])
        # row-major (n_in, n_out): W[i, j] sits at w_offset + i * n_out + j
        assert w[..., 0, 1].ravel()[0] == flat.reshape(-1, spec.size)[0, lay.w_offset + 1]
        if lay.n_in > 1:
            assert (
                w[..., 1, 0].ravel()[0] == flat.reshape(-1, spec.size)[0, lay.w_offset + lay.n_out]
            )
        pieces += [w.reshape(*lead, -1), b]
    np.testing.assert_array_equal(np.concatenate(pieces, axis=-1), flat)


def test_writing_through_views_writes_the_flat_vector() -> None:
    spec = ParamSpec((5, 4, 3))
    flat = np.zeros((2, spec.size), np.float32)
    for i, (w, b) in enumerate(spec.views(flat)):
        w[...] = i + 1
        b[...] = -(i + 1)
    assert np.count_nonzero(flat) == flat.size
    assert flat[1, spec.layers[1].b_offset] == -2


def test_views_of_a_strided_flat_array_are_still_views() -> None:
    spec = ParamSpec((5, 4, 3))
    big = np.zeros((3, spec.size + 7))
    flat = big[:, 2 : 2 + spec.size]
    for w, b in spec.views(flat):
        assert np.shares_memory(w, big) and np.shares_memory(b, big)


def test_views_rejects_wrong_length() -> None:
    spec = ParamSpec((5, 4, 3))
    with pytest.raises(ConfigError, match=str(spec.size)):
        spec.views(np.zeros((2, spec.size + 1)))
    with pytest.raises(ConfigError):
        spec.views(np.float64(1.0))  # type: ignore[arg-type]


def test_to_dict_round_trip(tmp_path: Path) -> None:
    for sizes in ARCHS:
        spec = ParamSpec(sizes)
        d = spec.to_dict()
        assert d == {"layer_sizes": list(sizes)}
        assert ParamSpec.from_dict(json.loads(json.dumps(d))) == spec
        path = tmp_path / "spec.npz"
        np.savez(path, **d)
        with np.load(path) as z:
            assert ParamSpec.from_dict(dict(z)) == spec


def test_sizes_normalised_to_tuple_of_int() -> None:
    spec = ParamSpec([np.int64(4), 3])  # type: ignore[arg-type]
    assert spec.layer_sizes == (4, 3)
    assert all(type(s) is int for s in spec.layer_sizes)
    assert hash(spec) == hash(ParamSpec((4, 3)))


@pytest.mark.parametrize(
    "bad",
    [(), (5,), (5, 0), (5, -2), (5, 2.5), (5, True), (5, "3"), "53", None, 5],
)
def test_bad_sizes_raise_config_error(bad: object) -> None:
    with pytest.raises(ConfigError, match="layer_sizes"):
        ParamSpec(bad)  # type: ignore[arg-type]


def test_from_dict_missing_key() -> None:
    with pytest.raises(ConfigError, match="layer_sizes"):
        ParamSpec.from_dict({"sizes": [3, 2]})


def test_frozen() -> None:
    spec = ParamSpec((3, 2))
    with pytest.raises(AttributeError):
        spec.layer_sizes = (4, 2)  # type: ignore[misc]


def _check_normal_sample(w: np.ndarray, std: float) -> None:
    """Mean and variance of an N(0, std²) sample, within 5 standard errors."""
    n = w.size
    var = w.var(ddof=1)
    se_var = std**2 * np.sqrt(2.0 / (n - 1))
    assert abs(var - std**2) <= 5 * se_var, (var, std**2, se_var)
    assert abs(w.mean()) <= 5 * std / np.sqrt(n)


@pytest.mark.parametrize("sizes", [MNIST, (64, 10), (30, *([50] * 20), 10)])
def test_init_params_he_glorot(sizes: tuple[int, ...]) -> None:
    spec = ParamSpec(sizes)
    flat = init_params(spec, np.random.default_rng(1))
    assert flat.shape == (spec.size,)
    assert flat.dtype == np.float64
    views = spec.views(flat)
    for i, (lay, (w, b)) in enumerate(zip(spec.layers, views, strict=True)):
        np.testing.assert_array_equal(b, 0.0)
        if i < spec.n_layers - 1:
            std = np.sqrt(2.0 / lay.n_in)  # He, ReLU layers
        else:
            std = np.sqrt(2.0 / (lay.n_in + lay.n_out))  # Glorot, softmax layer
        _check_normal_sample(w, std)


def test_init_params_reproducible_and_seeded() -> None:
    spec = ParamSpec((10, 8, 3))
    a = init_params(spec, np.random.default_rng(5))
    b = init_params(spec, np.random.default_rng(5))
    c = init_params(spec, np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    with pytest.raises(ConfigError, match="Generator"):
        init_params(spec, 5)  # type: ignore[arg-type]
