"""``bench/noise_cost.py`` times the generator the pass uses: its driver's Philox-10 normals
are the extension's bitwise, its Philox-7 words are Random123's (through the numpy
reference, which the known-answer vectors of tests/maths/test_noise.py pin down)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import noise_cost
from snep import _native
from snep.maths.noise import _box_muller, philox4x32

pytestmark = pytest.mark.skipif(
    shutil.which(os.environ.get("CXX", "c++")) is None,
    reason="no C++ compiler (CXX, default c++) to build bench/noise_cost.cpp",
)

N = 3 * 1024 + 8  # three whole tiles and a part of one


@pytest.fixture(scope="module")
def exe():
    return noise_cost.build()


def _counters(n_blocks: int) -> np.ndarray:
    block = np.arange(n_blocks, dtype=np.uint64)
    zeros = np.zeros(n_blocks, np.uint64)
    return np.stack([block, zeros, np.full(n_blocks, 3, np.uint64), zeros], axis=1)


@pytest.mark.parametrize("rounds", [7, 10])
def test_driver_words_are_philox(exe, rounds):
    words, _ = noise_cost.check_output(exe, N, rounds)
    ref = philox4x32(_counters(N // 4), 2017, rounds).reshape(-1)
    np.testing.assert_array_equal(words, ref)


def test_driver_philox10_normals_are_the_extensions_bitwise(exe):
    _, normals = noise_cost.check_output(exe, N, 10)
    ext = np.empty((1, N), np.float32)
    _native.fill_normal(ext, 2017, 0, 3, 0, 1)
    np.testing.assert_array_equal(normals, ext[0])


def test_driver_philox7_normals_are_box_muller_of_its_words(exe):
    words, normals = noise_cost.check_output(exe, N, 7)
    w = words.reshape(-1, 4).astype(np.uint64)
    z0, z1 = _box_muller(w[:, 0], w[:, 1])
    z2, z3 = _box_muller(w[:, 2], w[:, 3])
    ref = np.stack([z0, z1, z2, z3], axis=1).reshape(-1)
    assert np.abs(normals - ref).max() < 4e-6  # tests/maths/test_noise.py's bound


def test_driver_rejects_bad_arguments(exe):
    for argv in (["check", "6", "10"], ["check", "8", "8"], ["time", "0", "3"], []):
        assert subprocess.run([str(exe), *argv], capture_output=True).returncode == 2


def _row(name: str, ms: float, group: str, impl: str, chains: int = 1) -> dict:
    info = {"impl": impl, "threads": 1, "chains": chains}
    return {"name": name, "median_ms": ms, "group": group, "extra_info": info}


def test_iteration_ratios():
    one, default = "test_snep_iteration[t1-c1-b100-sgld]", "test_snep_default_iteration[t1-c1-b100]"
    summary = {
        "benchmarks": [
            _row("test_numpy_gemms[t1-c1-b100]", 2.0, "fwd+bwd c1-b100 t1", "numpy"),
            _row(one, 3.0, "iteration c1-b100 t1", "snep"),
            _row(default, 40.0, "iteration default c8-b100 t1", "snep", chains=8),
            _row("test_snep_sync[t1-c1-b100]", 9.0, "iteration c1-b100 t1", "snep"),
            _row("test_jax_iteration[t1-c1-b100-sgld]", 6.0, "iteration c1-b100 t1", "jax"),
        ]
    }
    rows = noise_cost.iteration_ratios(summary, saved_ms=0.1, noise_ms=0.5)
    assert set(rows) == {one, default}  # snep's iterations, not the sync, not the peers
    assert rows[one]["ratio_per_chain"] == pytest.approx(1.5)
    assert rows[one]["ratio_with_philox7"] == pytest.approx(1.45)
    assert rows[one]["ratio_without_noise"] == pytest.approx(1.25)
    assert rows[default]["ratio_per_chain"] == pytest.approx(2.5)  # 40 ms / 8 chains / 2 ms


def test_script_writes_its_json(tmp_path):
    out = tmp_path / "noise.json"
    args = ["--params", "4096", "--rounds", "2", "--repeats", "1", "--out", str(out)]
    cmd = [sys.executable, noise_cost.__file__, *args]
    subprocess.run(cmd, check=True, capture_output=True)
    data = json.loads(out.read_text())
    assert data["params"] == 4096 and len(data["repeats"]) == 1
    for key in (*noise_cost.VARIANTS, "fill_normal_extension"):
        assert data["summary"][key]["median"] > 0.0
    assert np.isfinite(data["summary"]["philox7_saves_ms"]["median"])


def test_driver_flags_are_the_extensions(tmp_path):
    """The driver is compiled with CMakeLists.txt's flags for _native, read from it; a
    CMakeLists.txt that no longer states them is an error, not a silent default."""
    cmake = tmp_path / "CMakeLists.txt"
    std = "target_compile_features(_native PRIVATE cxx_std_17)\n"
    cmake.write_text(std + "  target_compile_options(_native PRIVATE -O2 -fno-math-errno)\n")
    assert noise_cost.extension_flags(cmake) == ["-O2", "-fno-math-errno", "-std=c++17"]
    cmake.write_text(std)
    with pytest.raises(RuntimeError, match="target_compile_options"):
        noise_cost.extension_flags(cmake)
