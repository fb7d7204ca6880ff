"""Loaders for the data sets of snep: MNIST (IDX or ``.npz``), Omniglot and 8x8 digits.

The paper's experiments (Hasenclever et al., "Distributed Bayesian Learning with
Stochastic Natural Gradient Expectation Propagation and the Posterior Server",
JMLR 18 (2017), section 6) use MNIST with pixels scaled to ``[0, 1]``. Nothing here
downloads anything: MNIST and Omniglot are read from local files (see
:func:`find_shared_data` for where snep looks), and the embedded default, the 8x8
digits bundled with scikit-learn, needs no file at all.

Every loader returns a :class:`~snep.data.dataset.Dataset` with float32,
C-contiguous, flattened features in ``[0, 1]`` and int32 labels, and raises
:class:`~snep.errors.DataError` naming the file and what is wrong with it.
"""

from __future__ import annotations

import gzip
import math
import os
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from snep.data.dataset import Dataset
from snep.errors import DataError

__all__ = [
    "DATASET_NAMES",
    "find_shared_data",
    "flatten_unit",
    "load_dataset",
    "load_digits",
    "load_idx",
    "load_mnist",
    "load_mnist_idx_dir",
    "load_npz",
    "load_omniglot",
    "save_idx",
]

#: Data set names understood by :func:`load_dataset` (besides filesystem paths).
DATASET_NAMES: tuple[str, ...] = ("digits", "mnist", "omniglot", "omniglot-alphabet")

#: Environment variable naming a directory that holds ``mnist.npz``/``omniglot28.npz``.
DATA_DIR_ENV = "SNEP_DATA_DIR"

# IDX dtype codes (third byte of the magic number) -> big-endian numpy dtype.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES: dict[np.dtype, int] = {dt.newbyteorder("="): code for code, dt in _IDX_DTYPES.items()}

_GZIP_MAGIC = b"\x1f\x8b"

# The four MNIST IDX files: key -> (accepted base names, expected magic number).
_MNIST_IDX_FILES: dict[str, tuple[tuple[str, ...], int]] = {
    "train_images": (("train-images-idx3-ubyte", "train-images.idx3-ubyte"), 0x00000803),
    "train_labels": (("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"), 0x00000801),
    "test_images": (("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"), 0x00000803),
    "test_labels": (("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"), 0x00000801),
}

_HOW_TO_POINT = (
    f"Point snep at the file with the environment variable {DATA_DIR_ENV}=DIR (a directory "
    "holding {filename}) or with --data PATH on the command line (or the path argument)."
)


# --------------------------------------------------------------------------- IDX


def _read_maybe_gzip(path: Path) -> bytes:
    """Read a file, decompressing it when it starts with the gzip magic bytes."""
    raw = path.read_bytes()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise DataError(
            f"{path}: gzip-compressed file (starts with bytes 1f 8b) is truncated or "
            f"corrupt ({exc}); re-download or re-extract it."
        ) from exc


def load_idx(path: str | os.PathLike[str], *, expect_magic: int | None = None) -> np.ndarray:
    """Read an array from an IDX file (the format of the MNIST distribution).

    Parameters
    ----------
    path : str or os.PathLike
        The file, raw or gzip-compressed; compression is detected from the gzip magic
        bytes ``1f 8b``, not from the file name.
    expect_magic : int, optional
        Require this exact magic number, e.g. ``0x00000803`` (uint8, 3-D: MNIST images)
        or ``0x00000801`` (uint8, 1-D: MNIST labels).

    Returns
    -------
    numpy.ndarray
        The array in native byte order, with the dtype given by the file's type code
        (``0x08`` uint8, ``0x09`` int8, ``0x0B`` int16, ``0x0C`` int32, ``0x0D``
        float32, ``0x0E`` float64) and the shape given by its dimensions.

    Raises
    ------
    snep.errors.DataError
        If the file is missing, the magic number is wrong (found and expected values are
        shown in hex), the file is shorter than its header says (bytes found and
        expected), or has bytes after the data.

    Notes
    -----
    Format: two zero bytes, a type code byte, a byte giving the number of dimensions
    ``k``, then ``k`` big-endian uint32 sizes, then the data in big-endian C order.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"IDX file not found: {path}. Expected an IDX file, raw or gzip-compressed, "
            "such as MNIST's train-images-idx3-ubyte, train-labels-idx1-ubyte, "
            "t10k-images-idx3-ubyte or t10k-labels-idx1-ubyte (optionally with .gz)."
        )
    data = _read_maybe_gzip(path)
    if len(data) < 4:
        raise DataError(
            f"{path}: truncated IDX file: {len(data)} bytes found, expected at least 4 "
            "(the magic number)."
        )
    magic = int.from_bytes(data[:4], "big")
    code, ndim = data[2], data[3]
    valid_form = data[0] == 0 and data[1] == 0 and code in _IDX_DTYPES and ndim >= 1
    if expect_magic is not None and magic != expect_magic:
        raise DataError(
            f"{path}: wrong IDX magic number 0x{magic:08X}; expected 0x{expect_magic:08X}. "
            "Is this the right file (images vs labels), and is it an IDX file?"
        )
    if not valid_form:
        codes = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise DataError(
            f"{path}: wrong IDX magic number 0x{magic:08X}; expected 0x0000TTNN with type "
            f"code TT in {{{codes}}} and NN the number of dimensions (e.g. 0x00000803 for "
            "MNIST images). Is this an IDX file?"
        )
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(
            f"{path}: truncated IDX file: {len(data)} bytes found, expected at least "
            f"{header_len} for the header of a {ndim}-D array."
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[code]
    n_items = math.prod(dims)
    expected = header_len + n_items * dtype.itemsize
    if len(data) < expected:
        raise DataError(
            f"{path}: truncated IDX file: {len(data)} bytes found, expected {expected} "
            f"(header {header_len} + {n_items} items of {dtype.itemsize} bytes for shape "
            f"{dims}). Re-download or re-extract it."
        )
    if len(data) > expected:
        raise DataError(
            f"{path}: {len(data) - expected} bytes of trailing garbage after the IDX data: "
            f"{len(data)} bytes found, expected {expected} for shape {dims}. The file may "
            "be corrupt or a concatenation of several files."
        )
    arr = np.frombuffer(data, dtype=dtype, count=n_items, offset=header_len)
    return arr.astype(dtype.newbyteorder("="), copy=True).reshape(dims)


def save_idx(
    path: str | os.PathLike[str], array: np.ndarray, *, compress: bool | None = None
) -> Path:
    """Write an array as an IDX file (the inverse of :func:`load_idx`).

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.
    array : numpy.ndarray
        Array of dtype uint8, int8, int16, int32, float32 or float64, 1 to 255 dims.
    compress : bool, optional
        Gzip the file; by default, compress when the name ends in ``.gz``.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    snep.errors.DataError
        If the dtype or the number of dimensions cannot be stored in IDX.
    """
    path = Path(path)
    arr = np.asarray(array)
    native = arr.dtype.newbyteorder("=") if arr.dtype.byteorder in "<>" else arr.dtype
    if native not in _IDX_CODES:
        raise DataError(
            f"save_idx({path}): dtype {arr.dtype} cannot be stored in IDX; expected one of "
            "uint8, int8, int16, int32, float32, float64."
        )
    if not 1 <= arr.ndim <= 255:
        raise DataError(f"save_idx({path}): array is {arr.ndim}-D; IDX stores 1 to 255 dims.")
    code = _IDX_CODES[native]
    header = bytes([0, 0, code, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    payload = header + np.ascontiguousarray(arr, dtype=_IDX_DTYPES[code]).tobytes()
    if compress is None:
        compress = path.name.endswith(".gz")
    if compress:
        payload = gzip.compress(payload, mtime=0)
    path.write_bytes(payload)
    return path


def flatten_unit(x: np.ndarray, source: str) -> np.ndarray:
    """Turn uint8 pixels or float values in [0, 1] into float32 (N, D) in [0, 1]."""
    n = x.shape[0]
    if x.dtype == np.uint8:
        out = np.empty(x.shape, dtype=np.float32)
        np.divide(x, np.float32(255.0), out=out, dtype=np.float32)
        return out.reshape(n, -1)
    if x.dtype.kind != "f":
        raise DataError(
            f"{source} has dtype {x.dtype}; expected uint8 pixels (0..255) or floats in "
            "[0, 1]. Convert it to uint8 or scale it to [0, 1] as floats."
        )
    bad = ~np.isfinite(x)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(
            f"{source} has {int(bad.sum())} NaN/Inf values (first: {x[first]} at index "
            f"{first}); expected finite values in [0, 1]. Remove or repair them."
        )
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    if lo < 0.0 or hi > 1.0:
        raise DataError(
            f"{source} has float values in [{lo:g}, {hi:g}]; expected floats in [0, 1] "
            "(or uint8 pixels 0..255). Scale the data to [0, 1] first, e.g. x / 255 "
            "for 8-bit pixel values stored as floats."
        )
    return np.ascontiguousarray(x, dtype=np.float32).reshape(n, -1)


def _as_labels(y: np.ndarray, source: str) -> np.ndarray:
    """Validate labels (integers >= 0, or floats holding such) and return int32."""
    if y.ndim != 1:
        raise DataError(f"{source} has shape {y.shape}; expected a 1-D array of class labels.")
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{source} contains non-integer label {y[i].item()!r} at index {i}; expected "
                "integer class labels 0, 1, ..., n_classes-1."
            )
    elif y.dtype.kind not in "iub":
        raise DataError(
            f"{source} has dtype {y.dtype}; expected integer class labels 0, 1, ..., n_classes-1."
        )
    if y.size:
        lo, hi = y.min(), y.max()
        if lo < 0:
            i = int(np.argmin(y))
            raise DataError(
                f"{source} contains negative label {lo.item()!r} at index {i}; expected class "
                "labels 0, 1, ..., n_classes-1."
            )
        if hi > np.iinfo(np.int32).max:
            raise DataError(
                f"{source} contains label {hi.item()!r}; expected class labels below 2**31."
            )
    return y.astype(np.int32)


def _build_dataset(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    name: str,
    source: str,
    n_classes: int | None = None,
) -> Dataset:
    """Check consistency of raw arrays, convert them and construct a Dataset."""
    for key, x in (("x_train", x_train), ("x_test", x_test)):
        if x.ndim < 2:
            raise DataError(
                f"{source}: {key} has shape {x.shape}; expected (N, ...) with one example "
                "per row, e.g. (N, 28, 28) images or (N, D) features."
            )
        if x.shape[0] == 0:
            raise DataError(f"{source}: {key} has shape {x.shape}; expected at least one example.")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"{source}: x_train examples have shape {x_train.shape[1:]} but x_test examples "
            f"have shape {x_test.shape[1:]}; expected the same shape."
        )
    for xk, yk, x, y in (
        ("x_train", "y_train", x_train, y_train),
        ("x_test", "y_test", x_test, y_test),
    ):
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise DataError(
                f"{source}: {yk} has shape {y.shape} but {xk} has {x.shape[0]} examples; "
                f"expected {yk} of shape ({x.shape[0]},), one label per example."
            )
    ytr = _as_labels(y_train, f"{source}: y_train")
    yte = _as_labels(y_test, f"{source}: y_test")
    if n_classes is None:
        n_classes = int(max(ytr.max(), yte.max())) + 1
    return Dataset(
        x_train=flatten_unit(x_train, f"{source}: x_train"),
        y_train=ytr,
        x_test=flatten_unit(x_test, f"{source}: x_test"),
        y_test=yte,
        n_classes=n_classes,
        name=name,
        image_shape=tuple(int(s) for s in x_train.shape[1:]),
    )


def _find_idx_files(directory: Path) -> tuple[dict[str, Path], list[str]]:
    """Locate the four MNIST IDX files in a directory; return (found, missing names)."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for key, (bases, _magic) in _MNIST_IDX_FILES.items():
        for base in bases:
            hit = next(
                (directory / f for f in (base, base + ".gz") if (directory / f).is_file()), None
            )
            if hit is not None:
                found[key] = hit
                break
        else:
            missing.append(f"{bases[0]}[.gz]")
    return found, missing


def load_mnist_idx_dir(directory: str | os.PathLike[str], name: str = "mnist") -> Dataset:
    """Load MNIST (or an IDX data set laid out like it) from a directory of IDX files.

    Parameters
    ----------
    directory : str or os.PathLike
        Directory holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each raw or gzipped
        (optional ``.gz`` suffix); the ``train-images.idx3-ubyte`` spelling with a dot
        is accepted too.
    name : str, default "mnist"
        Name of the returned data set.

    Returns
    -------
    Dataset
        Pixels scaled to ``[0, 1]``, images flattened; ``n_classes`` is the largest
        label plus one.

    Raises
    ------
    snep.errors.DataError
        If the directory or some of the files are missing (all missing files are
        listed), a file is malformed, or image and label counts differ.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(
            f"MNIST IDX directory not found: {directory}. Expected a directory holding "
            "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
            "t10k-labels-idx1-ubyte (each optionally .gz)."
        )
    found, missing = _find_idx_files(directory)
    if missing:
        raise DataError(
            f"{directory}: missing MNIST IDX files: {', '.join(missing)} (the dot spelling "
            "such as train-images.idx3-ubyte is accepted too). Found "
            f"{len(found)} of 4."
        )
    arrays = {key: load_idx(found[key], expect_magic=_MNIST_IDX_FILES[key][1]) for key in found}
    for part in ("train", "test"):
        imgs, labs = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if imgs.shape[0] != labs.shape[0]:
            raise DataError(
                f"{directory}: {found[f'{part}_images'].name} holds {imgs.shape[0]} images but "
                f"{found[f'{part}_labels'].name} holds {labs.shape[0]} labels; expected the "
                "same count. One of the files is from another data set or is damaged."
            )
    return _build_dataset(
        arrays["train_images"],
        arrays["train_labels"],
        arrays["test_images"],
        arrays["test_labels"],
        name=name,
        source=str(directory),
    )


# --------------------------------------------------------------------------- npz


def _open_npz(path: Path, what: str) -> np.lib.npyio.NpzFile:
    """Open an ``.npz`` archive without pickle, with DataError on failure."""
    if not path.is_file():
        raise DataError(
            f"{what} file not found: {path}. Expected an .npz archive "
            "(np.savez / np.savez_compressed)."
        )
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(
            f"{path}: cannot be read as an .npz archive ({exc}); expected a file written by "
            "np.savez or np.savez_compressed."
        ) from exc


def _get_arrays(
    npz: np.lib.npyio.NpzFile, path: Path, keys: Sequence[str]
) -> dict[str, np.ndarray]:
    """Read the named arrays from an open archive; DataError naming missing keys."""
    missing = [k for k in keys if k not in npz.files]
    if missing:
        raise DataError(
            f"{path}: missing arrays {missing}; expected keys {list(keys)}, found keys "
            f"{sorted(npz.files)}."
        )
    out: dict[str, np.ndarray] = {}
    for k in keys:
        try:
            out[k] = npz[k]
        except (ValueError, OSError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
            raise DataError(
                f"{path}: array {k!r} cannot be read ({exc}); object arrays (pickle) are "
                "not accepted and the file may be damaged."
            ) from exc
    return out


def load_npz(path: str | os.PathLike[str], name: str | None = None) -> Dataset:
    """Load a data set from an ``.npz`` archive with ``x_train, y_train, x_test, y_test``.

    Parameters
    ----------
    path : str or os.PathLike
        The archive. Images have shape ``(N, ...)`` (any example shape) and are either
        uint8 in ``0..255`` (scaled by 1/255) or floats in ``[0, 1]``; labels are
        integers ``>= 0`` (floats holding integer values are accepted).
    name : str, optional
        Name of the data set; defaults to the file's stem.

    Returns
    -------
    Dataset
        Flattened float32 features in ``[0, 1]``; ``n_classes`` is the largest label
        over training and test data plus one.

    Raises
    ------
    snep.errors.DataError
        If the file is missing or unreadable, keys are missing (the keys found are
        listed), shapes disagree, labels are negative or non-integer, values are NaN/Inf,
        or float data lie outside ``[0, 1]``.
    """
    path = Path(path)
    with _open_npz(path, "Data set") as npz:
        arrs = _get_arrays(npz, path, ("x_train", "y_train", "x_test", "y_test"))
    return _build_dataset(
        arrs["x_train"],
        arrs["y_train"],
        arrs["x_test"],
        arrs["y_test"],
        name=name if name is not None else path.stem,
        source=str(path),
    )


# --------------------------------------------------------------------------- search


def _default_search_starts() -> list[Path]:
    """Directories whose parents are searched for ``shared/data`` (cwd, this file)."""
    return [Path.cwd(), Path(__file__).resolve().parent]


def _shared_data_candidates(filename: str) -> list[Path]:
    """Every path :func:`find_shared_data` checks, in order, without duplicates."""
    candidates: list[Path] = []
    env = os.environ.get(DATA_DIR_ENV, "")
    if env:
        candidates.append(Path(env) / filename)
    for start in _default_search_starts():
        for parent in (start, *start.parents):
            candidates.append(parent / "shared" / "data" / filename)
            candidates.append(parent / ".." / "shared" / "data" / filename)
    unique: dict[str, Path] = {}
    for c in candidates:
        key = os.path.normpath(os.path.abspath(c))
        unique.setdefault(key, Path(key))
    return list(unique.values())


def find_shared_data(filename: str) -> Path | None:
    """Find a data file of the project's shared data directory.

    Checks, in order: ``$SNEP_DATA_DIR/filename``; then, for the current working
    directory and each of its parents ``P``, and likewise for the directory of this
    source file and its parents, ``P/shared/data/filename`` and
    ``P/../shared/data/filename``.

    Parameters
    ----------
    filename : str
        File name such as ``"mnist.npz"`` or ``"omniglot28.npz"``.

    Returns
    -------
    pathlib.Path or None
        The first existing file, or None if there is none.
    """
    for candidate in _shared_data_candidates(filename):
        if candidate.is_file():
            return candidate
    return None


def _not_found(filename: str, what: str) -> DataError:
    """DataError saying where ``filename`` was looked for and how to point snep at it."""
    looked = _shared_data_candidates(filename)
    shown = [str(p) for p in looked[:12]]
    if len(looked) > 12:
        shown.append(f"... and {len(looked) - 12} more parent directories")
    env = os.environ.get(DATA_DIR_ENV)
    env_note = f"{DATA_DIR_ENV} is set to {env!r}" if env else f"{DATA_DIR_ENV} is not set"
    return DataError(
        f"{what}: {filename} not found ({env_note}). Looked in:\n  "
        + "\n  ".join(shown)
        + "\n"
        + _HOW_TO_POINT.format(filename=filename)
    )


def load_mnist(path: str | os.PathLike[str] | None = None) -> Dataset:
    """Load MNIST: 60,000 training and 10,000 test images of 28x28 pixels, 10 classes.

    Parameters
    ----------
    path : str or os.PathLike, optional
        An ``.npz`` file (see :func:`load_npz`), or a directory holding the four IDX
        files (see :func:`load_mnist_idx_dir`) or ``mnist.npz``. By default the file
        ``mnist.npz`` is looked for with :func:`find_shared_data`.

    Returns
    -------
    Dataset
        Named ``"mnist"``, pixels in ``[0, 1]``, ``image_shape`` ``(28, 28)``.

    Raises
    ------
    snep.errors.DataError
        If no file is found (the message lists where snep looked and how to point it at
        the file: ``SNEP_DATA_DIR`` or ``--data PATH``) or the file is malformed.
    """
    if path is None:
        found = find_shared_data("mnist.npz")
        if found is None:
            env = os.environ.get(DATA_DIR_ENV)
            if env and Path(env).is_dir() and not _find_idx_files(Path(env))[1]:
                return load_mnist_idx_dir(env, name="mnist")
            raise _not_found("mnist.npz", "load_mnist")
        return load_npz(found, name="mnist")
    path = Path(path)
    if path.is_dir():
        _, missing = _find_idx_files(path)
        if not missing:
            return load_mnist_idx_dir(path, name="mnist")
        if (path / "mnist.npz").is_file():
            return load_npz(path / "mnist.npz", name="mnist")
        raise DataError(
            f"load_mnist: directory {path} holds neither mnist.npz nor the four MNIST IDX "
            f"files (missing: {', '.join(missing)}). " + _HOW_TO_POINT.format(filename="mnist.npz")
        )
    if not path.exists():
        raise DataError(
            f"load_mnist: {path} does not exist; expected mnist.npz or a directory with the "
            "four MNIST IDX files. " + _HOW_TO_POINT.format(filename="mnist.npz")
        )
    return load_npz(path, name="mnist")


# --------------------------------------------------------------------------- Omniglot

_OMNIGLOT_LABELS = ("character", "alphabet")
_OMNIGLOT_SUBSETS = ("background", "evaluation", "all")
_OMNIGLOT_DRAWERS = 20


def _validate_drawers(train_drawers: Iterable[int]) -> np.ndarray:
    """Return the sorted unique drawer indices, validated against 0..19."""
    try:
        drawers = [int(d) for d in train_drawers]
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"load_omniglot: train_drawers is {train_drawers!r}; expected integers in "
            f"0..{_OMNIGLOT_DRAWERS - 1}."
        ) from exc
    uniq = np.unique(np.asarray(drawers, dtype=np.int64))
    bad = [d for d in uniq.tolist() if not 0 <= d < _OMNIGLOT_DRAWERS]
    if bad:
        raise DataError(
            f"load_omniglot: train_drawers contains {bad}; expected drawer indices in "
            f"0..{_OMNIGLOT_DRAWERS - 1}."
        )
    if len(uniq) == 0 or len(uniq) == _OMNIGLOT_DRAWERS:
        raise DataError(
            f"load_omniglot: train_drawers {drawers!r} selects {len(uniq)} of the "
            f"{_OMNIGLOT_DRAWERS} drawers; expected between 1 and {_OMNIGLOT_DRAWERS - 1} so "
            "that both the training and the test part are non-empty (e.g. range(0, 15))."
        )
    return uniq


def load_omniglot(
    path: str | os.PathLike[str] | None = None,
    label: str = "character",
    train_drawers: Iterable[int] = range(0, 15),
    subset: str = "background",
) -> Dataset:
    """Load Omniglot at 28x28 (``omniglot28.npz``) as a many-class classification task.

    Every character was drawn by 20 people ("drawers"); the split holds out drawers,
    so every character occurs in both parts.

    Parameters
    ----------
    path : str or os.PathLike, optional
        ``omniglot28.npz`` or a directory holding it; by default found with
        :func:`find_shared_data`.
    label : {"character", "alphabet"}
        Class label: the character (964 background, 659 evaluation, 1623 for "all")
        or its alphabet (30, 20, 50).
    train_drawers : iterable of int, default range(0, 15)
        Drawers (0..19) whose drawings form the training part; the others form the
        test part.
    subset : {"background", "evaluation", "all"}
        Which of Lake et al.'s sets to use; "all" concatenates them, offsetting the
        evaluation labels by the number of background classes (964 characters,
        30 alphabets).

    Returns
    -------
    Dataset
        Named ``"omniglot"`` (``"-alphabet"`` and ``"-<subset>"`` appended when not the
        defaults), pixels (ink bright) in ``[0, 1]``, ``image_shape`` ``(28, 28)``.

    Raises
    ------
    snep.errors.DataError
        If ``label``, ``subset`` or ``train_drawers`` is invalid (the allowed values are
        named), or the file is missing or malformed.
    """
    if label not in _OMNIGLOT_LABELS:
        raise DataError(
            f"load_omniglot: label is {label!r}; expected one of {list(_OMNIGLOT_LABELS)}."
        )
    if subset not in _OMNIGLOT_SUBSETS:
        raise DataError(
            f"load_omniglot: subset is {subset!r}; expected one of {list(_OMNIGLOT_SUBSETS)}."
        )
    drawers = _validate_drawers(train_drawers)
    if path is None:
        found = find_shared_data("omniglot28.npz")
        if found is None:
            raise _not_found("omniglot28.npz", "load_omniglot")
        path = found
    path = Path(path)
    if path.is_dir():
        path = path / "omniglot28.npz"
    parts = ("background", "evaluation") if subset == "all" else (subset,)
    label_key = "char" if label == "character" else "alphabet"
    keys = [f"{k}_{p}" for p in parts for k in ("x", label_key, "drawer")]
    with _open_npz(path, "Omniglot") as npz:
        arrs = _get_arrays(npz, path, list(dict.fromkeys(keys)))
    xs, ys, ds = [], [], []
    offset = 0
    for p in parts:
        x, y, d = arrs[f"x_{p}"], arrs[f"{label_key}_{p}"], arrs[f"drawer_{p}"]
        if not (x.ndim == 3 and y.shape == (x.shape[0],) and d.shape == (x.shape[0],)):
            raise DataError(
                f"{path}: inconsistent Omniglot arrays for {p!r}: x_{p} {x.shape}, "
                f"{label_key}_{p} {y.shape}, drawer_{p} {d.shape}; expected (M, H, W), (M,), (M,)."
            )
        y = _as_labels(y, f"{path}: {label_key}_{p}").astype(np.int64)
        xs.append(x)
        ys.append(y + offset)
        ds.append(d)
        offset += int(y.max()) + 1 if y.size else 0
    x_all = np.concatenate(xs) if len(xs) > 1 else xs[0]
    y_all = np.concatenate(ys) if len(ys) > 1 else ys[0]
    d_all = np.concatenate(ds) if len(ds) > 1 else ds[0]
    is_train = np.isin(d_all, drawers)
    name = "omniglot" + ("" if label == "character" else "-alphabet")
    name += "" if subset == "background" else f"-{subset}"
    return _build_dataset(
        x_all[is_train],
        y_all[is_train],
        x_all[~is_train],
        y_all[~is_train],
        name=name,
        source=str(path),
        n_classes=offset,
    )


# --------------------------------------------------------------------------- digits


def load_digits() -> Dataset:
    """Load scikit-learn's bundled 8x8 digits, snep's embedded default data set.

    1,797 images of 8x8 pixels with values 0..16 (scaled to ``[0, 1]`` by 1/16),
    10 classes, split once and for all into 1,437 training and 360 test images,
    stratified by class (``train_test_split(..., test_size=360, stratify=y,
    random_state=0)``). No download is needed.

    Returns
    -------
    Dataset
        Named ``"digits"``, 64 features, ``image_shape`` ``(8, 8)``.
    """
    from sklearn.datasets import load_digits as _sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = _sk_load_digits()
    x = (np.asarray(bunch.data, dtype=np.float64) / 16.0).astype(np.float32)
    y = np.asarray(bunch.target).astype(np.int32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=360, stratify=y, random_state=0)
    return Dataset(
        x_train=np.ascontiguousarray(x_tr),
        y_train=np.ascontiguousarray(y_tr),
        x_test=np.ascontiguousarray(x_te),
        y_test=np.ascontiguousarray(y_te),
        n_classes=10,
        name="digits",
        image_shape=(8, 8),
    )


# --------------------------------------------------------------------------- dispatch


def _load_path(path: Path) -> Dataset:
    """Load a data set from a directory of IDX files or an ``.npz`` archive."""
    if path.is_dir():
        _, missing = _find_idx_files(path)
        if not missing:
            return load_mnist_idx_dir(path, name=path.name or "idx")
        for fname, loader in (("mnist.npz", load_mnist), ("omniglot28.npz", load_omniglot)):
            if (path / fname).is_file():
                return loader(path / fname)
        raise DataError(
            f"load_dataset: directory {path} holds neither the four IDX files (missing: "
            f"{', '.join(missing)}) nor mnist.npz or omniglot28.npz."
        )
    with _open_npz(path, "Data set") as npz:
        files = set(npz.files)
    if "x_train" not in files and "x_background" in files:
        return load_omniglot(path)
    return load_npz(path)


def load_dataset(name_or_path: str | os.PathLike[str] = "digits") -> Dataset:
    """Load a data set by name or from a path.

    Parameters
    ----------
    name_or_path : str or os.PathLike, default "digits"
        One of ``"digits"`` (the embedded default, :func:`load_digits`), ``"mnist"``
        (:func:`load_mnist`), ``"omniglot"`` (character labels) or
        ``"omniglot-alphabet"`` (alphabet labels) (:func:`load_omniglot`); or a path: a
        directory with the four MNIST-style IDX files, or an ``.npz`` archive (with
        ``x_train, y_train, x_test, y_test``, or an Omniglot archive).

    Returns
    -------
    Dataset

    Raises
    ------
    snep.errors.DataError
        If the name is unknown and no such path exists (the valid names are listed), or
        loading fails.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise DataError(
            f"load_dataset: got {name_or_path!r}; expected a data set name "
            f"({', '.join(DATASET_NAMES)}) or a path."
        )
    key = os.fspath(name_or_path)
    if isinstance(name_or_path, str) and key.strip().lower() in DATASET_NAMES:
        key = key.strip().lower()
        if key == "digits":
            return load_digits()
        if key == "mnist":
            return load_mnist()
        if key == "omniglot":
            return load_omniglot(label="character")
        return load_omniglot(label="alphabet")
    path = Path(key)
    if path.exists():
        return _load_path(path)
    raise DataError(
        f"load_dataset: unknown data set {key!r} and no file or directory of that name "
        f"exists; expected one of {', '.join(repr(n) for n in DATASET_NAMES)}, or a path to "
        "a directory with MNIST-style IDX files or to an .npz archive."
    )
