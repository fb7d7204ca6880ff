"""Tests of snep.data.loaders on small synthetic files, plus the real shared data if present."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from snep.data import loaders
from snep.data.dataset import Dataset
from snep.data.loaders import (
    DATASET_NAMES,
    find_shared_data,
    load_dataset,
    load_digits,
    load_idx,
    load_mnist,
    load_mnist_idx_dir,
    load_npz,
    load_omniglot,
    save_idx,
)
from snep.errors import DataError

# --------------------------------------------------------------------------- helpers


def _images(n: int, seed: int, shape: tuple[int, ...] = (4, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def _labels(n: int, n_classes: int = 3) -> np.ndarray:
    return (np.arange(n) % n_classes).astype(np.uint8)


def _write_idx_dir(directory: Path, n_train: int = 12, n_test: int = 5, gz: bool = True) -> Path:
    """Write a tiny MNIST-like IDX directory, mixing raw/gzip and both spellings."""
    directory.mkdir(parents=True, exist_ok=True)
    sfx = ".gz" if gz else ""
    save_idx(directory / f"train-images-idx3-ubyte{sfx}", _images(n_train, 0))
    save_idx(directory / "train-labels.idx1-ubyte", _labels(n_train))
    save_idx(directory / "t10k-images.idx3-ubyte", _images(n_test, 1))
    save_idx(directory / f"t10k-labels-idx1-ubyte{sfx}", _labels(n_test))
    return directory


def _write_npz(path: Path, **overrides) -> Path:
    arrays = {
        "x_train": _images(12, 0),
        "y_train": _labels(12),
        "x_test": _images(5, 1),
        "y_test": _labels(5),
    }
    arrays.update(overrides)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return path


def _message(exc_info: pytest.ExceptionInfo) -> str:
    return str(exc_info.value)


@pytest.fixture
def no_shared_data(monkeypatch, tmp_path):
    """Make the shared-data search look only in an empty temporary tree."""
    start = tmp_path / "nowhere" / "deep"
    start.mkdir(parents=True)
    monkeypatch.setattr(loaders, "_default_search_starts", lambda: [start])
    monkeypatch.delenv("SNEP_DATA_DIR", raising=False)
    return start


# --------------------------------------------------------------------------- IDX


@pytest.mark.parametrize(
    ("dtype", "shape"),
    [
        (np.uint8, (7, 4, 3)),
        (np.uint8, (9,)),
        (np.int8, (5, 2)),
        (np.int16, (3, 4)),
        (np.int32, (2, 2, 2, 2)),
        (np.float32, (6,)),
        (np.float64, (3, 5)),
    ],
)
@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, dtype, shape, compress):
    rng = np.random.default_rng(0)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        arr = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    else:
        arr = rng.standard_normal(shape).astype(dtype)
    path = save_idx(tmp_path / "a.idx", arr, compress=compress)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == compress
    back = load_idx(path)
    assert back.dtype == np.dtype(dtype)
    assert back.dtype.isnative
    assert back.shape == shape
    np.testing.assert_array_equal(back, arr)


def test_idx_header_layout_is_big_endian(tmp_path):
    arr = np.arange(6, dtype=np.int16).reshape(2, 3)
    raw = save_idx(tmp_path / "x", arr).read_bytes()
    assert raw[:4] == bytes([0, 0, 0x0B, 2])
    assert raw[4:12] == (2).to_bytes(4, "big") + (3).to_bytes(4, "big")
    assert raw[12:] == arr.astype(">i2").tobytes()


def test_idx_gzip_detected_by_magic_bytes_not_extension(tmp_path):
    arr = _images(3, 0)
    gz_no_ext = save_idx(tmp_path / "images", arr, compress=True)
    raw_with_gz_ext = save_idx(tmp_path / "images.gz", arr, compress=False)
    np.testing.assert_array_equal(load_idx(gz_no_ext), arr)
    np.testing.assert_array_equal(load_idx(raw_with_gz_ext), arr)


def test_idx_mnist_magic_numbers(tmp_path):
    img = save_idx(tmp_path / "img", _images(2, 0))
    lab = save_idx(tmp_path / "lab", _labels(2))
    assert img.read_bytes()[:4] == (0x00000803).to_bytes(4, "big")
    assert lab.read_bytes()[:4] == (0x00000801).to_bytes(4, "big")
    assert load_idx(img, expect_magic=0x803).shape == (2, 4, 3)


def test_idx_missing_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    with pytest.raises(DataError) as info:
        load_idx(path)
    msg = _message(info)
    assert str(path) in msg and "not found" in msg
    assert "t10k-labels-idx1-ubyte" in msg  # says what files are expected


def test_idx_wrong_magic_shows_hex(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(bytes([0x12, 0x34, 0x08, 0x01]) + (1).to_bytes(4, "big") + b"\x00")
    with pytest.raises(DataError) as info:
        load_idx(path)
    msg = _message(info)
    assert str(path) in msg and "0x12340801" in msg and "0x00000803" in msg


def test_idx_unknown_type_code(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(bytes([0, 0, 0x0A, 1]) + (1).to_bytes(4, "big") + b"\x00")
    with pytest.raises(DataError, match=r"0x00000A01"):
        load_idx(path)


def test_idx_expected_magic_mismatch(tmp_path):
    lab = save_idx(tmp_path / "labels", _labels(4))
    with pytest.raises(DataError) as info:
        load_idx(lab, expect_magic=0x00000803)
    msg = _message(info)
    assert str(lab) in msg and "0x00000801" in msg and "0x00000803" in msg


def test_idx_truncated_header(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match=r"truncated.*2 bytes found, expected at least 4"):
        load_idx(path)
    path.write_bytes(bytes([0, 0, 8, 3]) + (5).to_bytes(4, "big"))
    with pytest.raises(DataError, match=r"8 bytes found, expected at least 16"):
        load_idx(path)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_truncated_data(tmp_path, compress):
    full = save_idx(tmp_path / "full", _images(5, 0)).read_bytes()  # 16 + 60 bytes
    payload = full[:-7]
    path = tmp_path / "cut"
    path.write_bytes(gzip.compress(payload) if compress else payload)
    with pytest.raises(DataError) as info:
        load_idx(path)
    msg = _message(info)
    assert str(path) in msg and "truncated" in msg
    assert f"{len(full) - 7} bytes found" in msg and f"expected {len(full)}" in msg


def test_idx_truncated_gzip_stream(tmp_path):
    data = gzip.compress(save_idx(tmp_path / "full", _images(50, 0)).read_bytes())
    path = tmp_path / "cut.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as info:
        load_idx(path)
    assert str(path) in _message(info) and "gzip" in _message(info)


def test_idx_trailing_garbage(tmp_path):
    full = save_idx(tmp_path / "full", _labels(10)).read_bytes()
    path = tmp_path / "long"
    path.write_bytes(full + b"garbage")
    with pytest.raises(DataError) as info:
        load_idx(path)
    msg = _message(info)
    assert str(path) in msg and "7 bytes of trailing garbage" in msg
    assert f"{len(full) + 7} bytes found, expected {len(full)}" in msg


def test_save_idx_rejects_unsupported_dtype(tmp_path):
    with pytest.raises(DataError, match=r"uint16"):
        save_idx(tmp_path / "x", np.zeros(3, dtype=np.uint16))


# --------------------------------------------------------------------------- IDX directory


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_idx_dir(tmp_path, gz):
    directory = _write_idx_dir(tmp_path / "mn", gz=gz)
    ds = load_mnist_idx_dir(directory)
    assert isinstance(ds, Dataset)
    assert ds.name == "mnist"
    assert ds.x_train.shape == (12, 12) and ds.x_test.shape == (5, 12)
    assert ds.image_shape == (4, 3)
    assert ds.x_train.dtype == np.float32 and ds.x_train.flags.c_contiguous
    assert ds.y_train.dtype == np.int32
    assert ds.n_classes == 3
    expected = _images(12, 0).reshape(12, -1).astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(ds.x_train, expected)
    np.testing.assert_array_equal(ds.y_test, _labels(5))


def test_load_mnist_idx_dir_lists_missing_files(tmp_path):
    directory = tmp_path / "mn"
    directory.mkdir()
    save_idx(directory / "train-images-idx3-ubyte", _images(3, 0))
    save_idx(directory / "t10k-labels-idx1-ubyte.gz", _labels(3))
    with pytest.raises(DataError) as info:
        load_mnist_idx_dir(directory)
    msg = _message(info)
    assert str(directory) in msg
    assert "train-labels-idx1-ubyte" in msg and "t10k-images-idx3-ubyte" in msg
    assert "train-images-idx3-ubyte[" not in msg  # present files are not listed as missing


def test_load_mnist_idx_dir_missing_directory(tmp_path):
    with pytest.raises(DataError, match=r"not found.*train-images-idx3-ubyte"):
        load_mnist_idx_dir(tmp_path / "absent")


def test_load_mnist_idx_dir_count_mismatch(tmp_path):
    directory = _write_idx_dir(tmp_path / "mn", gz=False)
    save_idx(directory / "train-labels.idx1-ubyte", _labels(11))
    with pytest.raises(DataError) as info:
        load_mnist_idx_dir(directory)
    msg = _message(info)
    assert "12 images" in msg and "11 labels" in msg and "train-labels.idx1-ubyte" in msg


def test_load_mnist_idx_dir_swapped_files(tmp_path):
    directory = _write_idx_dir(tmp_path / "mn", gz=False)
    save_idx(directory / "t10k-images.idx3-ubyte", _labels(5))
    with pytest.raises(DataError) as info:
        load_mnist_idx_dir(directory)
    msg = _message(info)
    assert "t10k-images.idx3-ubyte" in msg and "0x00000801" in msg and "0x00000803" in msg


# --------------------------------------------------------------------------- npz


def test_load_npz_uint8(tmp_path):
    path = _write_npz(tmp_path / "toy.npz")
    ds = load_npz(path)
    assert ds.name == "toy"
    assert ds.x_train.shape == (12, 12) and ds.image_shape == (4, 3)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    np.testing.assert_allclose(ds.x_test * 255, _images(5, 1).reshape(5, -1), atol=1e-4)
    assert load_npz(path, name="custom").name == "custom"


def test_load_npz_float_and_n_classes_over_both_parts(tmp_path):
    rng = np.random.default_rng(0)
    path = _write_npz(
        tmp_path / "f.npz",
        x_train=rng.random((8, 5)),
        y_train=np.array([0, 1, 2, 0, 1, 2, 0, 1], dtype=np.int64),
        x_test=rng.random((3, 5)).astype(np.float32),
        y_test=np.array([6.0, 0.0, 1.0]),  # float labels holding integers are accepted
    )
    ds = load_npz(path)
    assert ds.n_classes == 7
    assert ds.image_shape == (5,)
    np.testing.assert_array_equal(ds.y_test, [6, 0, 1])


def test_load_npz_missing_file(tmp_path):
    with pytest.raises(DataError) as info:
        load_npz(tmp_path / "absent.npz")
    assert str(tmp_path / "absent.npz") in _message(info) and "not found" in _message(info)


def test_load_npz_not_an_archive(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"this is not a zip file")
    with pytest.raises(DataError) as info:
        load_npz(path)
    assert str(path) in _message(info)


def test_load_npz_missing_keys(tmp_path):
    path = _write_npz(tmp_path / "m.npz", y_test=None, extra=np.zeros(2))
    with pytest.raises(DataError) as info:
        load_npz(path)
    msg = _message(info)
    assert str(path) in msg and "['y_test']" in msg and "'extra'" in msg and "'x_train'" in msg


def test_load_npz_rejects_pickled_objects(tmp_path):
    path = _write_npz(tmp_path / "o.npz", y_train=np.array([0, "a", None] * 4, dtype=object))
    with pytest.raises(DataError) as info:
        load_npz(path)
    assert "y_train" in _message(info) and "pickle" in _message(info)


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        ({"y_train": _labels(11)}, ["y_train", "(11,)", "12 examples"]),
        ({"y_test": _labels(10).reshape(5, 2)}, ["y_test", "(5, 2)"]),
        ({"x_test": _images(5, 1, shape=(3, 4))}, ["x_train", "(4, 3)", "x_test", "(3, 4)"]),
        ({"x_train": np.zeros(12, dtype=np.uint8)}, ["x_train", "(12,)", "(N, ...)"]),
        ({"x_train": _images(0, 0), "y_train": _labels(0)}, ["x_train", "(0, 4, 3)"]),
        ({"y_train": -_labels(12).astype(np.int64)}, ["y_train", "negative label -2 at index 2"]),
        ({"y_test": np.array([0, 1, 2.5, 0, 1])}, ["y_test", "non-integer label 2.5"]),
        ({"y_test": np.array([0, 1, np.nan, 0, 1])}, ["y_test", "non-integer label nan"]),
        ({"y_test": np.array(["a"] * 5)}, ["y_test", "<U1", "integer class labels"]),
        (
            {"x_train": np.full((12, 4, 3), 0.5).astype(np.float32) * 2.4},
            ["x_train", "1.2", "Scale the data to [0, 1]"],
        ),
        ({"x_test": np.full((5, 4, 3), -0.5)}, ["x_test", "-0.5", "[0, 1]"]),
        ({"x_train": _images(12, 0).astype(np.int16)}, ["x_train", "int16", "uint8"]),
    ],
)
def test_load_npz_invalid_content(tmp_path, overrides, fragments):
    path = _write_npz(tmp_path / "bad.npz", **overrides)
    with pytest.raises(DataError) as info:
        load_npz(path)
    msg = _message(info)
    assert str(path) in msg
    for fragment in fragments:
        assert fragment in msg


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_load_npz_non_finite(tmp_path, bad):
    x = np.full((12, 4, 3), 0.5)
    x[2, 1, 0] = bad
    path = _write_npz(tmp_path / "nan.npz", x_train=x)
    with pytest.raises(DataError) as info:
        load_npz(path)
    msg = _message(info)
    assert "x_train" in msg and "NaN/Inf" in msg and "(2, 1, 0)" in msg and str(bad) in msg


# --------------------------------------------------------------------------- search / MNIST


def test_find_shared_data_prefers_env(monkeypatch, tmp_path, no_shared_data):
    target = tmp_path / "envdir" / "thing.npz"
    target.parent.mkdir()
    target.write_bytes(b"x")
    assert find_shared_data("thing.npz") is None
    monkeypatch.setenv("SNEP_DATA_DIR", str(target.parent))
    assert find_shared_data("thing.npz") == target


@pytest.mark.parametrize("layout", ["beside", "parent"])
def test_find_shared_data_searches_parents(monkeypatch, tmp_path, layout):
    repo = tmp_path / "project" / "main"
    start = repo / "python" / "snep"
    start.mkdir(parents=True)
    base = repo if layout == "beside" else tmp_path / "project"
    target = base / "shared" / "data" / "thing.npz"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"x")
    monkeypatch.delenv("SNEP_DATA_DIR", raising=False)
    monkeypatch.setattr(loaders, "_default_search_starts", lambda: [start])
    found = find_shared_data("thing.npz")
    assert found is not None and found.resolve() == target.resolve()


def test_default_search_starts_include_cwd_and_package():
    starts = loaders._default_search_starts()
    assert Path.cwd() in starts
    assert Path(loaders.__file__).resolve().parent in starts


def test_load_mnist_not_found_explains_where_and_how(no_shared_data):
    with pytest.raises(DataError) as info:
        load_mnist()
    msg = _message(info)
    assert "mnist.npz" in msg and "SNEP_DATA_DIR" in msg and "--data PATH" in msg
    assert str(no_shared_data / "shared" / "data" / "mnist.npz") in msg
    assert "not set" in msg


def test_load_mnist_from_env_npz_and_idx(monkeypatch, tmp_path, no_shared_data):
    npz_dir = tmp_path / "npzdir"
    npz_dir.mkdir()
    _write_npz(npz_dir / "mnist.npz")
    monkeypatch.setenv("SNEP_DATA_DIR", str(npz_dir))
    ds = load_mnist()
    assert ds.name == "mnist" and ds.n_train == 12
    assert load_dataset("mnist").n_train == 12
    idx_dir = _write_idx_dir(tmp_path / "idxdir", n_train=7)
    monkeypatch.setenv("SNEP_DATA_DIR", str(idx_dir))
    assert load_mnist().n_train == 7


def test_load_mnist_explicit_paths(tmp_path):
    idx_dir = _write_idx_dir(tmp_path / "idx", n_train=7)
    assert load_mnist(idx_dir).n_train == 7
    npz_dir = tmp_path / "npz"
    npz_dir.mkdir()
    _write_npz(npz_dir / "mnist.npz")
    assert load_mnist(npz_dir).n_train == 12
    assert load_mnist(npz_dir / "mnist.npz").name == "mnist"


def test_load_mnist_bad_explicit_paths(tmp_path):
    with pytest.raises(DataError) as info:
        load_mnist(tmp_path / "absent.npz")
    assert str(tmp_path / "absent.npz") in _message(info) and "--data PATH" in _message(info)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as info:
        load_mnist(empty)
    msg = _message(info)
    assert str(empty) in msg and "mnist.npz" in msg and "train-images-idx3-ubyte" in msg


@pytest.mark.requires("mnist")
def test_real_mnist():
    ds = load_mnist()
    assert ds.x_train.shape == (60000, 784) and ds.x_test.shape == (10000, 784)
    assert ds.y_train.shape == (60000,) and ds.y_test.shape == (10000,)
    assert ds.n_classes == 10 and ds.image_shape == (28, 28)
    assert ds.x_train.dtype == np.float32 and ds.x_train.flags.c_contiguous
    assert abs(float(ds.x_train.mean(dtype=np.float64)) - 0.1307) < 5e-4
    assert 0.0 == ds.x_train.min() and ds.x_train.max() == 1.0
    np.testing.assert_array_equal(ds.y_train[:10], [5, 0, 4, 1, 9, 2, 1, 3, 1, 4])
    np.testing.assert_array_equal(ds.y_test[:10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9])


# --------------------------------------------------------------------------- Omniglot


def _write_omniglot(path: Path, n_bg: int = 3, n_ev: int = 2) -> Path:
    """Tiny omniglot28.npz look-alike: rows ordered by character then drawer."""
    arrays = {}
    for part, n_chars, n_alpha in (("background", n_bg, 2), ("evaluation", n_ev, 1)):
        m = n_chars * 20
        arrays[f"x_{part}"] = _images(m, n_chars, shape=(28, 28))
        arrays[f"char_{part}"] = np.repeat(np.arange(n_chars), 20).astype(np.int16)
        arrays[f"alphabet_{part}"] = (np.repeat(np.arange(n_chars), 20) % n_alpha).astype(np.int8)
        arrays[f"drawer_{part}"] = np.tile(np.arange(20), n_chars).astype(np.int8)
    np.savez_compressed(path, **arrays)
    return path


def test_load_omniglot_synthetic(tmp_path):
    path = _write_omniglot(tmp_path / "omniglot28.npz")
    ds = load_omniglot(path)
    assert ds.name == "omniglot"
    assert ds.n_classes == 3 and ds.n_train == 45 and ds.n_test == 15
    assert ds.image_shape == (28, 28) and ds.n_features == 784
    np.testing.assert_array_equal(np.bincount(ds.y_train), [15, 15, 15])
    # Directory argument and custom drawers.
    ds2 = load_omniglot(tmp_path, train_drawers=[0, 5, 5, 19])
    assert ds2.n_train == 9 and ds2.n_test == 51


def test_load_omniglot_subsets_and_offsets(tmp_path):
    path = _write_omniglot(tmp_path / "o.npz")
    ev = load_omniglot(path, subset="evaluation")
    assert ev.n_classes == 2 and ev.name == "omniglot-evaluation"
    both = load_omniglot(path, subset="all")
    assert both.n_classes == 5 and both.n_train == 75
    np.testing.assert_array_equal(np.unique(both.y_test), np.arange(5))
    alpha = load_omniglot(path, label="alphabet", subset="all")
    assert alpha.n_classes == 3 and alpha.name == "omniglot-alphabet-all"
    # Evaluation alphabet 0 becomes class 2 after the offset of 2 background alphabets.
    assert np.count_nonzero(alpha.y_train == 2) == 2 * 15


@pytest.mark.parametrize(
    ("kwargs", "fragments"),
    [
        ({"label": "char"}, ["'char'", "'character'", "'alphabet'"]),
        ({"subset": "train"}, ["'train'", "'background'", "'evaluation'", "'all'"]),
        ({"train_drawers": [3, 20]}, ["[20]", "0..19"]),
        ({"train_drawers": range(20)}, ["20 of the 20"]),
        ({"train_drawers": []}, ["0 of the 20"]),
        ({"train_drawers": ["x"]}, ["'x'", "integers"]),
    ],
)
def test_load_omniglot_invalid_arguments(tmp_path, kwargs, fragments):
    path = _write_omniglot(tmp_path / "o.npz")
    with pytest.raises(DataError) as info:
        load_omniglot(path, **kwargs)
    for fragment in fragments:
        assert fragment in _message(info)


def test_load_omniglot_missing_file_and_keys(tmp_path, no_shared_data):
    with pytest.raises(DataError) as info:
        load_omniglot()
    assert "omniglot28.npz" in _message(info) and "SNEP_DATA_DIR" in _message(info)
    path = _write_npz(tmp_path / "notomni.npz")
    with pytest.raises(DataError) as info:
        load_omniglot(path)
    msg = _message(info)
    assert "x_background" in msg and "'x_train'" in msg


@pytest.mark.requires("omniglot")
def test_real_omniglot():
    ds = load_omniglot()
    assert ds.n_classes == 964
    assert ds.n_train + ds.n_test == 19280
    assert ds.n_train == 19280 * 15 // 20
    assert ds.x_train.shape == (14460, 784) and ds.image_shape == (28, 28)
    np.testing.assert_array_equal(np.bincount(ds.y_train, minlength=964), np.full(964, 15))
    np.testing.assert_array_equal(np.bincount(ds.y_test, minlength=964), np.full(964, 5))
    alpha = load_dataset("omniglot-alphabet")
    assert alpha.n_classes == 30


# --------------------------------------------------------------------------- digits / dispatch


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_digits()


def test_load_digits(digits):
    assert digits.name == "digits"
    assert digits.x_train.shape == (1437, 64) and digits.x_test.shape == (360, 64)
    assert digits.n_classes == 10 and digits.image_shape == (8, 8)
    assert digits.x_train.dtype == np.float32 and digits.y_train.dtype == np.int32
    assert digits.x_train.min() == 0.0 and digits.x_train.max() == 1.0
    # Values are k/16; stratified split keeps every class's share.
    np.testing.assert_array_equal(digits.x_test * 16, np.round(digits.x_test * 16))
    hist = np.bincount(digits.y_test, minlength=10)
    assert hist.min() >= 35 and hist.max() <= 37
    again = load_digits()
    np.testing.assert_array_equal(again.x_train, digits.x_train)
    np.testing.assert_array_equal(again.y_test, digits.y_test)


def test_load_dataset_names_and_paths(tmp_path, digits):
    assert load_dataset().name == "digits"
    assert load_dataset(" Digits ").n_train == digits.n_train
    npz = _write_npz(tmp_path / "toy.npz")
    assert load_dataset(str(npz)).name == "toy"
    assert load_dataset(npz).n_train == 12
    idx_dir = _write_idx_dir(tmp_path / "myidx", n_train=6)
    ds = load_dataset(str(idx_dir))
    assert ds.n_train == 6 and ds.name == "myidx"
    omni = _write_omniglot(tmp_path / "omniglot28.npz")
    assert load_dataset(str(omni)).n_classes == 3


def test_load_dataset_unknown_name():
    with pytest.raises(DataError) as info:
        load_dataset("cifar10")
    msg = _message(info)
    assert "'cifar10'" in msg and "path" in msg
    for name in DATASET_NAMES:
        assert repr(name) in msg


def test_load_dataset_empty_directory(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset(str(tmp_path))
    assert str(tmp_path) in _message(info)
