"""The counter-based generator: exact words, accurate normals, right distribution."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from snep import _native
from snep.maths.noise import philox4x32, philox4x32_10, reference_normals


def test_philox_known_answer_random123():
    # Known-answer vectors of Random123 (kat_vectors): philox4x32 10 rounds.
    zero = philox4x32_10(np.zeros((1, 4), np.uint64), 0)[0]
    assert [hex(v) for v in zero] == ["0x6627e8d5", "0xe169c58d", "0xbc57ac4c", "0x9b00dbd8"]
    ones = philox4x32_10(np.full((1, 4), 0xFFFFFFFF, np.uint64), 0xFFFFFFFFFFFFFFFF)[0]
    assert [hex(v) for v in ones] == ["0x408f276d", "0x41c83b0e", "0xa20bc7c6", "0x6d5451fd"]


# Random123's kat_vectors for philox4x32 with 7 rounds: (counter, key) -> words
KAT_PHILOX4X32_7 = [
    ((0, 0, 0, 0), 0, (0x5F6FB709, 0x0D893F64, 0x4F121F81, 0x4F730A48)),
    ((0xFFFFFFFF,) * 4, 0xFFFFFFFFFFFFFFFF, (0x5207DDC2, 0x45165E59, 0x4D8EE751, 0x8C52F662)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        0x299F31D0A4093822,  # key words (0xa4093822, 0x299f31d0): low word first
        (0x4DFCCABA, 0x190A87F0, 0xC47362BA, 0xB6B5242A),
    ),
]


@pytest.mark.parametrize("counter,key,words", KAT_PHILOX4X32_7)
def test_philox_seven_rounds_known_answer_random123(counter, key, words):
    # the round count bench/noise_cost.py times against the kernels' 10
    out = philox4x32(np.array([counter], np.uint64), key, 7)[0]
    assert tuple(int(v) for v in out) == words


@pytest.mark.parametrize("rounds", [0, -1, 7.0, True])
def test_philox_rejects_a_bad_round_count(rounds):
    with pytest.raises(ValueError, match="rounds="):
        philox4x32(np.zeros((1, 4), np.uint64), 0, rounds)


@pytest.mark.parametrize("seed,stream,step,chain", [(0, 0, 0, 0), (2**40 + 7, 3, 12345, 9)])
def test_native_words_match_reference(seed, stream, step, chain):
    out = np.zeros((257, 4), np.uint32)
    _native.philox_words(out, seed, stream, step, chain)
    ctr = np.stack(
        [np.arange(257), np.full(257, chain), np.full(257, step), np.full(257, stream)], axis=1
    )
    np.testing.assert_array_equal(out, philox4x32_10(ctr, seed))


@pytest.mark.parametrize("n_params", [1, 3, 4, 1023, 1024, 1025, 5003])
def test_native_normals_match_reference(n_params):
    out = np.full((3, n_params), np.nan, np.float32)
    _native.fill_normal(out, 1234, 1, 77, 5)
    ref = reference_normals(3, n_params, 1234, 1, 77, chain0=5)
    # float32 polynomial log/sin/cos: absolute error grows with |z| (<= 5.9)
    assert np.abs(out - ref).max() < 4e-6


def test_thread_count_does_not_change_numbers():
    a = np.empty((2, 10_000), np.float32)
    b = np.empty_like(a)
    _native.fill_normal(a, 5, 0, 3, 0, 1)
    _native.fill_normal(b, 5, 0, 3, 0, 2)
    np.testing.assert_array_equal(a, b)


def test_normal_distribution():
    n = 1_000_000
    z = np.empty((1, n), np.float32)
    _native.fill_normal(z, 2024, 0, 0)
    z = z[0].astype(np.float64)
    se = 1.0 / np.sqrt(n)
    assert abs(z.mean()) < 5 * se
    assert abs(z.var() - 1.0) < 5 * np.sqrt(2.0) * se  # var of s^2 is 2 for a normal
    assert abs(stats.skew(z)) < 5 * np.sqrt(6.0) * se
    assert abs(stats.kurtosis(z)) < 5 * np.sqrt(24.0) * se
    # tails: P(|z| > 3) = 0.0026998; binomial standard error
    p3 = 2 * stats.norm.sf(3.0)
    assert abs((np.abs(z) > 3).mean() - p3) < 5 * np.sqrt(p3 * (1 - p3) / n)
    assert np.abs(z).max() <= np.sqrt(2 * 25 * np.log(2)) + 1e-5
    # Kolmogorov–Smirnov at alpha = 1e-4 on a subsample (the statistic's null
    # distribution is exact, so this fails only with probability 1e-4).
    assert stats.kstest(z[:100_000], "norm").pvalue > 1e-4


def test_steps_and_streams_are_independent():
    n = 200_000
    a = np.empty((1, n), np.float32)
    b = np.empty((1, n), np.float32)
    _native.fill_normal(a, 1, 0, 0)
    _native.fill_normal(b, 1, 0, 1)
    r = np.corrcoef(a[0], b[0])[0, 1]
    assert abs(r) < 5 / np.sqrt(n)
    _native.fill_normal(b, 1, 1, 0)
    assert abs(np.corrcoef(a[0], b[0])[0, 1]) < 5 / np.sqrt(n)
