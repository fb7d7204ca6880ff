"""The elementwise kernels of ``kernels/mlp_gemm.cu`` (softmax-cross-entropy forward and
backward, the per-chain log-likelihood sum, the bias gradient), run on the CPU.

The launchers of :mod:`snep.backends.cuda.gemm_raw` are called on numpy stand-ins for
CuPy arrays with a module that records each launch; the recorded launch (grid, block,
arguments in the kernel's order) then runs the kernel's own C++ source, compiled by g++
with the CUDA names defined for the host, one (block, thread) after another (the kernels
are grid-stride loops whose threads share nothing, so this order is one a GPU may take).
The results are compared with float64 numpy oracles.  A GPU runs the same kernels in
``bench/gpu_check.py``.
"""

from __future__ import annotations

import subprocess
import types
from pathlib import Path

import numpy as np
import pytest

from snep.backends.cuda import gemm_raw as cuda_gemm_raw
from snep.errors import ConfigError
from snep.model import mlp_numpy

from .test_launch_args import CUDA_KEYWORDS, CUDA_SHIM, GXX, KERNELS, _FakeCupyArray, _run_emulated
from .test_launch_args import emulator as emulator  # the GEMM emulator fixture

_MAIN = (
    r"""
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>
struct dim3 { unsigned x = 1, y = 1, z = 1; };
static dim3 threadIdx, blockIdx, blockDim, gridDim;
inline void __syncthreads() {}  // only the GEMMs call it, and they are not run here
"""
    + CUDA_KEYWORDS
    + r"""
#define SNEP_GEMM_NO_WMMA 1
#include "mlp_gemm.cu"

static FILE* in;
static long long get64() {
    long long v;
    if (std::fread(&v, 8, 1, in) != 1) std::exit(3);
    return v;
}
template <typename T> static std::vector<T> get(long long n) {
    std::vector<T> v(n);
    if (n && std::fread(v.data(), sizeof(T), n, in) != (size_t)n) std::exit(4);
    return v;
}
template <typename T> static void put(FILE* f, const std::vector<T>& v) {
    std::fwrite(v.data(), sizeof(T), v.size(), f);
}
template <typename F> static void run(long long grid, long long block, F f) {
    gridDim.x = (unsigned)grid;
    blockDim.x = (unsigned)block;
    for (unsigned b = 0; b < gridDim.x; ++b)
        for (unsigned t = 0; t < blockDim.x; ++t) {
            blockIdx.x = b;
            threadIdx.x = t;
            f();
        }
}

int main(int argc, char** argv) {
    const std::string kernel = argv[1];
    in = std::fopen(argv[2], "rb");
    FILE* out = std::fopen(argv[3], "wb");
    const long long grid = get64(), block = get64();
    if (kernel == "softmax_xent_float32") {
        const long long rows = get64(), k = get64();
        auto z = get<float>(rows * k);
        auto y = get<int>(rows);
        auto dz = get<float>(rows * k);
        auto ll = get<double>(rows);
        run(grid, block, [&] {
            softmax_xent_float32(z.data(), y.data(), dz.data(), ll.data(), rows, k);
        });
        put(out, dz);
        put(out, ll);
    } else if (kernel == "loglik_sum_float64") {
        const long long c = get64(), rows = get64();
        auto ll = get<double>(c * rows);
        auto o = get<double>(c);
        run(grid, block, [&] { loglik_sum_float64(ll.data(), o.data(), c, rows); });
        put(out, o);
    } else if (kernel == "bias_grad_float32") {
        const long long c = get64(), rows = get64(), n = get64(), g_sc = get64(), off = get64();
        auto dz = get<float>(c * rows * n);
        auto g = get<float>(c * g_sc);
        run(grid, block, [&] { bias_grad_float32(dz.data(), g.data(), c, rows, n, g_sc, off); });
        put(out, g);
    } else {
        return 5;
    }
    std::fclose(out);
    return 0;
}
"""
)


@pytest.fixture(scope="module")
def epilogue_emulator(tmp_path_factory) -> Path:
    if GXX is None:
        pytest.skip("g++ is not installed on this machine")
    d = tmp_path_factory.mktemp("epilogue_emulator")
    src = d / "emulator.cpp"
    src.write_text(CUDA_SHIM + _MAIN)
    exe = d / "emulator"
    cmd = [GXX, "-std=c++17", "-O1", "-Wno-unknown-pragmas", "-I", str(KERNELS), "-o", str(exe)]
    res = subprocess.run([*cmd, str(src)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return exe


class _Recorder:
    def __init__(self) -> None:
        self.launches: list = []

    def get_function(self, name: str):
        assert name in cuda_gemm_raw.EPILOGUE_KERNELS, name

        def launch(grid, block, args):
            assert block == (cuda_gemm_raw.EPILOGUE_THREADS,) and grid[0] >= 1
            self.launches.append((name, grid[0], block[0], args))

        return launch


@pytest.fixture
def recorder(monkeypatch) -> _Recorder:
    rec = _Recorder()
    monkeypatch.setattr(
        cuda_gemm_raw, "_cupy", lambda: types.SimpleNamespace(ndarray=_FakeCupyArray)
    )
    monkeypatch.setattr(cuda_gemm_raw, "_module", rec)
    return rec


def _dev(a: np.ndarray, dtype) -> _FakeCupyArray:
    return np.ascontiguousarray(a, dtype).view(_FakeCupyArray)


def _run(exe: Path, tmp: Path, launch: tuple) -> None:
    """Run a recorded launch through the emulator and write its outputs into the arrays."""
    name, grid, block, args = launch
    v = dict(zip([n for n, _ in cuda_gemm_raw.EPILOGUE_KERNELS[name]], args, strict=True))
    i64 = lambda *xs: np.array(xs, np.int64).tobytes()  # noqa: E731
    if name == "softmax_xent_float32":
        blob = i64(grid, block, v["n_rows"], v["k"]) + b"".join(
            np.asarray(v[k]).tobytes() for k in ("logits", "labels", "dlogits", "row_ll")
        )
    elif name == "loglik_sum_float64":
        blob = i64(grid, block, v["n_chains"], v["n_rows"])
        blob += np.asarray(v["row_ll"]).tobytes() + np.asarray(v["out"]).tobytes()
    else:
        keys = ("n_chains", "n_rows", "n", "g_sc", "off")
        blob = i64(grid, block, *(v[k] for k in keys))
        blob += np.asarray(v["dz"]).tobytes() + np.asarray(v["g"]).tobytes()
    (tmp / "in.bin").write_bytes(blob)
    res = subprocess.run([str(exe), name, str(tmp / "in.bin"), str(tmp / "out.bin")], timeout=60)
    assert res.returncode == 0
    raw = (tmp / "out.bin").read_bytes()
    outs = {
        "softmax_xent_float32": ("dlogits", "row_ll"),
        "loglik_sum_float64": ("out",),
        "bias_grad_float32": ("g",),
    }[name]
    pos = 0
    for key in outs:
        a = np.asarray(v[key])
        a.reshape(-1)[:] = np.frombuffer(raw[pos : pos + a.nbytes], a.dtype)
        pos += a.nbytes
    assert pos == len(raw)


@pytest.mark.parametrize("max_blocks", [4096, 1], ids=["a-thread-per-row", "grid-stride"])
@pytest.mark.parametrize("k", [10, 37])
def test_softmax_xent_matches_the_float64_oracle(
    epilogue_emulator, recorder, tmp_path, max_blocks, k
):
    rng = np.random.default_rng(k)
    c, b = 3, 101  # 303 rows: more than one block of 256 threads
    z = (4 * rng.normal(0, 1, (c, b, k))).astype(np.float32)
    y = rng.integers(0, k, (c, b)).astype(np.int32)
    y[1, 5] = k  # an out-of-range label: its row is NaN, the others are unaffected
    dz = _dev(np.full((c, b, k), np.nan), np.float32)
    ll = _dev(np.full(c * b, np.nan), np.float64)
    cuda_gemm_raw.softmax_xent(
        _dev(z, np.float32), _dev(y, np.int32), dz, ll, max_blocks=max_blocks
    )
    _run(epilogue_emulator, tmp_path, recorder.launches[-1])
    assert recorder.launches[-1][1] == min(max_blocks, 2)
    logp = mlp_numpy.log_softmax(z.astype(np.float64))
    y_ok = np.clip(y, 0, k - 1)
    want_ll = np.take_along_axis(logp, y_ok[..., None], axis=-1)[..., 0].reshape(-1)
    want_dz = np.eye(k)[y_ok] - np.exp(logp)
    bad = np.zeros((c, b), bool)
    bad[1, 5] = True
    got_ll, got_dz = np.asarray(ll).reshape(c, b), np.asarray(dz)
    assert np.isnan(got_ll[bad]).all() and np.isnan(got_dz[bad]).all()
    # float32: exp/log to a few ulps, a sum of k terms
    tol = (k + 8) * 2.0**-24
    np.testing.assert_allclose(got_ll[~bad], want_ll.reshape(c, b)[~bad], rtol=tol, atol=tol * 10)
    np.testing.assert_allclose(got_dz[~bad], want_dz[~bad], rtol=0, atol=tol)


def test_loglik_sum_is_the_per_chain_sum_in_row_order(epilogue_emulator, recorder, tmp_path):
    rng = np.random.default_rng(2)
    c, b = 5, 77
    row_ll = rng.normal(-2, 1, c * b)
    out = _dev(np.full(c, np.nan), np.float64)
    cuda_gemm_raw.loglik_sum(_dev(row_ll, np.float64), out)
    _run(epilogue_emulator, tmp_path, recorder.launches[-1])
    want = [sum(row_ll[i * b : (i + 1) * b].tolist()) for i in range(c)]  # same order
    assert np.asarray(out).tolist() == want


@pytest.mark.parametrize("max_blocks", [4096, 1], ids=["a-thread-per-column", "grid-stride"])
def test_bias_grad_writes_the_column_sums_into_the_flat_gradient(
    epilogue_emulator, recorder, tmp_path, max_blocks
):
    rng = np.random.default_rng(3)
    c, b, n, p, off = 3, 41, 300, 1000, 611
    dz = rng.normal(0, 1, (c, b, n)).astype(np.float32)
    g = _dev(np.full((c, p), np.nan), np.float32)
    cuda_gemm_raw.bias_grad(_dev(dz, np.float32), g, off, max_blocks=max_blocks)
    _run(epilogue_emulator, tmp_path, recorder.launches[-1])
    got = np.asarray(g)
    want = dz.astype(np.float64).sum(axis=1)
    bound = (b + 2) * 2.0**-24 * np.abs(dz.astype(np.float64)).sum(axis=1)
    assert np.all(np.abs(got[:, off : off + n] - want) <= bound)
    assert np.isnan(np.delete(got, np.s_[off : off + n], axis=1)).all()  # nothing else written


def test_the_epilogue_launchers_name_what_is_wrong(recorder):
    z = _dev(np.zeros((2, 3, 4)), np.float32)
    y = _dev(np.zeros((2, 3)), np.int32)
    ll = _dev(np.zeros(6), np.float64)
    with pytest.raises(ConfigError, match=r"labels is .* dtype int64, expected .* dtype int32"):
        cuda_gemm_raw.softmax_xent(z, _dev(np.zeros((2, 3)), np.int64), z.copy(), ll)
    with pytest.raises(ConfigError, match=r"row_ll .* expected .* shape \(6,\)"):
        cuda_gemm_raw.softmax_xent(z, y, z.copy(), _dev(np.zeros(5), np.float64))
    with pytest.raises(ConfigError, match="cannot be split evenly over 4 chains"):
        cuda_gemm_raw.loglik_sum(ll, _dev(np.zeros(4), np.float64))
    with pytest.raises(ConfigError, match="cannot hold a bias of 4 entries"):
        cuda_gemm_raw.bias_grad(z, _dev(np.zeros((2, 10)), np.float32), 7)
    with pytest.raises(ConfigError, match="expected a C-contiguous cupy array"):
        cuda_gemm_raw.bias_grad(
            np.zeros((2, 3, 4), np.float32), _dev(np.zeros((2, 9)), np.float32), 0
        )
    assert not recorder.launches


class _RunningModule:
    """A module whose kernels run at once through the emulators: the GEMMs through
    ``mlp_gemm.cu``'s threaded emulator, the elementwise passes through this file's."""

    def __init__(self, gemm_exe: Path, epilogue_exe: Path, tmp: Path) -> None:
        self.gemm_exe, self.epilogue_exe, self.tmp = gemm_exe, epilogue_exe, tmp
        self.names: list[str] = []

    def get_function(self, name: str):
        def launch(grid, block, args):
            self.names.append(name)
            if name in cuda_gemm_raw.EPILOGUE_KERNELS:
                _run(self.epilogue_exe, self.tmp, (name, grid[0], block[0], args))
            else:
                _run_emulated(self.gemm_exe, self.tmp, (name, grid[0], block[0], args))

        return launch


def test_the_cpp_mlp_path_is_cpp_end_to_end(emulator, epilogue_emulator, tmp_path, monkeypatch):
    """``EpilogueMLP(gemm="tiled-cpp").loglik_and_grad``: every launch is a kernel of
    mlp_gemm.cu (none is numba), run here from its C++ source, and the log-likelihood and
    gradient match the float64 oracle."""
    from snep.backends.cuda import epilogues as cuda_epilogues
    from snep.model.spec import ParamSpec, init_params

    xp = types.SimpleNamespace(
        ndarray=_FakeCupyArray,
        empty=lambda shape, dtype: np.empty(shape, dtype).view(_FakeCupyArray),
        matmul=None,
        __name__="fake_cupy",
    )
    module = _RunningModule(emulator, epilogue_emulator, tmp_path)
    monkeypatch.setattr(cuda_gemm_raw, "_cupy", lambda: xp)
    monkeypatch.setattr(cuda_gemm_raw, "_module", module)
    monkeypatch.setattr(cuda_epilogues, "_device", lambda a: a)  # no numba views needed

    def no_numba(*args, **kwargs):
        raise AssertionError("a numba.cuda kernel was launched on the C++ path")

    for name in (
        "softmax_xent",
        "loglik_sum",
        "bias_grad",
        "bias_relu_",
        "bias_",
        "relu_backward_bias_grad",
    ):
        monkeypatch.setattr(cuda_epilogues, name, no_numba)

    spec = ParamSpec((12, 9, 7, 4))
    c, b = 2, 11
    rng = np.random.default_rng(5)
    params = np.stack([init_params(spec, rng) for _ in range(c)]).astype(np.float32)
    x = rng.random((c, b, 12), dtype=np.float32)
    y = rng.integers(0, 4, (c, b))
    mlp = cuda_epilogues.EpilogueMLP(spec, c, b, xp=xp, gemm="tiled-cpp")
    grad = _dev(np.full(params.shape, np.nan), np.float32)
    ll = mlp.loglik_and_grad(_dev(params, np.float32), _dev(x, np.float32), _dev(y, np.int64), grad)
    assert set(module.names) <= {
        *cuda_gemm_raw.ENTRY_POINTS.values(),
        *cuda_gemm_raw.EPILOGUE_KERNELS,
    }
    assert {"softmax_xent_float32", "loglik_sum_float64", "bias_grad_float32"} <= set(module.names)
    want_ll, want_g = mlp_numpy.loglik_and_grad(spec, params.astype(np.float64), x, y)
    np.testing.assert_allclose(np.asarray(ll), want_ll, rtol=1e-5)
    got = np.asarray(grad, np.float64)
    assert np.isfinite(got).all()  # every entry written
    np.testing.assert_allclose(got, want_g, rtol=1e-4, atol=1e-4 * np.abs(want_g).max())
