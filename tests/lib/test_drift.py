"""The monitor's statistics: exact values on tiny inputs, and tests that can tell samples apart."""

import numpy as np
import pytest

from tasks.lib.drift import (
    confidence_shift,
    corpus_profile,
    median_bandwidth,
    mmd_test,
    rate,
    squared_distances,
    subsample,
    wilson_interval,
    witness,
)


def test_squared_distances_and_bandwidth():
    a = np.array([[0.0, 0.0], [3.0, 4.0]])
    assert squared_distances(a, a).tolist() == [[0.0, 25.0], [25.0, 0.0]]
    assert median_bandwidth(squared_distances(a, a)) == 25.0
    assert median_bandwidth(np.zeros((3, 3))) == 1.0  # all points equal: no division by zero


def test_subsample_is_seeded_and_capped():
    assert subsample(5, 10, 0).tolist() == [0, 1, 2, 3, 4]
    picked = subsample(100, 10, 3)
    assert len(picked) == 10 and len(set(picked)) == 10 and picked.tolist() == sorted(picked)
    assert subsample(100, 10, 3).tolist() == picked.tolist()


def test_mmd_same_distribution_is_not_drift_and_a_shift_is():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 16)), rng.normal(size=(200, 16))
    same = mmd_test(x, y, permutations=200, seed=1)
    assert same["p_value"] > 0.05 and same["n_reference"] == 200 and same["n_served"] == 200
    shifted = mmd_test(x, y + 0.5, permutations=200, seed=1)
    assert shifted["p_value"] < 0.01 and shifted["mmd2"] > same["mmd2"]
    assert shifted["p_value"] >= 1 / 201  # a permutation p-value is never 0
    assert "MMD" in shifted["method"]
    with pytest.raises(ValueError, match="at least 2"):
        mmd_test(x[:1], y)


def test_mmd_is_seeded():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(30, 4)), rng.normal(size=(30, 4)) + 0.2
    assert mmd_test(x, y, 100, seed=5) == mmd_test(x, y, 100, seed=5)


def test_witness_points_at_the_new_cluster():
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(50, 2))
    served = np.vstack([rng.normal(size=(40, 2)), rng.normal(size=(10, 2)) + 6])
    w = witness(ref, served, served, bandwidth=2.0)
    assert set(np.argsort(-w)[:10]) == set(range(40, 50))


def test_corpus_profile_ignores_scale_not_direction():
    anchors = np.eye(3)
    prof = corpus_profile(np.array([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), anchors)
    assert np.allclose(prof[0], prof[1]) and not np.allclose(prof[0], prof[2])
    assert np.allclose(prof.mean(1), 0) and np.allclose(prof.std(1), 1)


def test_confidence_shift_one_sided():
    low = confidence_shift(np.full(30, 0.2) + np.linspace(0, 0.01, 30), np.linspace(0.5, 0.9, 40))
    assert low["p_value"] < 0.001 and low["median_change"] < 0
    high = confidence_shift(np.linspace(0.5, 0.9, 40), np.full(30, 0.2))
    assert high["p_value"] > 0.99  # higher served scores are not a loss of confidence
    with pytest.raises(ValueError):
        confidence_shift(np.array([]), np.array([0.5]))


def test_wilson_interval_known_values():
    low, high = wilson_interval(5, 10)
    assert round(low, 4) == 0.2366 and round(high, 4) == 0.7634
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(0, 20)
    assert low == 0.0 and 0.15 < high < 0.17
    r = rate(3, 12)
    assert r["rate"] == 0.25 and r["count"] == 3 and r["n"] == 12 and r["low"] < 0.25 < r["high"]
