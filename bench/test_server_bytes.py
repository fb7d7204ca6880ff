"""``bench/server_bytes.py`` times real work: its hypothetical server passes compute what
they claim (checked against numpy in float64), and the script writes its summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

import server_bytes
from snep.algorithm.exchange_kernels import apply_push


def _state(p: int, seed: int):
    rng = np.random.default_rng(seed)
    theta = (rng.random(p) + 1.0, rng.standard_normal(p))
    site = (rng.random(p), rng.standard_normal(p))
    d = (rng.standard_normal(p).astype(np.float32), rng.standard_normal(p).astype(np.float32))
    return theta, site, d


def test_site_read_only_is_theta_plus_delta_minus_site():
    theta, site, d = _state(1001, 0)
    want_theta = [t + dd.astype(np.float64) for t, dd in zip(theta, d, strict=True)]
    site_before = [s.copy() for s in site]
    cav = (np.empty(1001, np.float32), np.empty(1001, np.float32))
    server_bytes.site_read_only(*theta, *site, *d, *cav)
    for got, want in zip(theta, want_theta, strict=True):
        np.testing.assert_array_equal(got, want)
    for s, before in zip(site, site_before, strict=True):
        np.testing.assert_array_equal(s, before)  # only read
    for c, t, s in zip(cav, want_theta, site, strict=True):
        np.testing.assert_array_equal(c, (t - s).astype(np.float32))


def test_site_read_only_replies_as_the_pass_as_built():
    """The same cavity as apply_push's, given the site apply_push ends with."""
    theta, site, d = _state(777, 1)
    theta2 = tuple(t.copy() for t in theta)
    site2 = tuple(s.copy() for s in site)
    cav, cav2 = ((np.empty(777, np.float32), np.empty(777, np.float32)) for _ in range(2))
    apply_push(*theta, *site, *d, *cav)  # site += d there
    site2 = tuple(s + dd.astype(np.float64) for s, dd in zip(site2, d, strict=True))
    server_bytes.site_read_only(*theta2, *site2, *d, *cav2)
    for a, b in zip(cav, cav2, strict=True):
        np.testing.assert_array_equal(a, b)


def test_theta_only_adds_the_delta():
    theta, _, d = _state(513, 2)
    want = [t + dd.astype(np.float64) for t, dd in zip(theta, d, strict=True)]
    server_bytes.theta_only(*theta, *d)
    for got, w in zip(theta, want, strict=True):
        np.testing.assert_array_equal(got, w)


def test_script_writes_every_pass_warm_and_cold(tmp_path: Path):
    out = tmp_path / "s.json"
    script = Path(server_bytes.__file__)
    subprocess.run(
        [sys.executable, str(script), "--rounds", "2", "--repeats", "1", "--params", "4096",
         "--out", str(out)],
        check=True, capture_output=True,
    )  # fmt: skip
    data = json.loads(out.read_text())
    for name in server_bytes.BYTES_PER_PARAM:
        for mode in ("warm", "cold"):
            assert data["repeats"][0][f"{name}_{mode}_ms"] > 0
