"""Tests for transferlab.stats."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy import stats as sps

from transferlab.stats import (
    _replicate_stats,
    area_under_learning_curve,
    holm_bonferroni,
    labels_to_reach,
    mean_ci,
    paired_bootstrap_diff,
    paired_t_test,
    verdict,
)


# ---------------------------------------------------------------- mean_ci
def test_mean_ci_matches_scipy_interval() -> None:
    vals = [0.71, 0.74, 0.69, 0.77, 0.72]
    res = mean_ci(vals, confidence=0.9)
    lo, hi = sps.t.interval(0.9, df=4, loc=np.mean(vals), scale=sps.sem(vals))
    assert res["ci_low"] == pytest.approx(lo, abs=1e-12)
    assert res["ci_high"] == pytest.approx(hi, abs=1e-12)
    assert res["n"] == 5 and res["method"] == "t"
    assert res["std"] == pytest.approx(np.std(vals, ddof=1))


def test_mean_ci_hand_computed() -> None:
    # values 1, 2, 3: mean 2, sd 1, t_{0.975, 2} = 4.302652729911275
    res = mean_ci([1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)
    assert res["mean"] == pytest.approx(2.0)
    assert res["std"] == pytest.approx(1.0)
    assert res["ci_low"] == pytest.approx(2.0 - half, rel=1e-9)
    assert res["ci_high"] == pytest.approx(2.0 + half, rel=1e-9)


def test_mean_ci_single_value() -> None:
    res = mean_ci([0.8])
    assert res["mean"] == 0.8 and res["std"] == 0.0 and res["n"] == 1
    assert math.isnan(res["ci_low"]) and math.isnan(res["ci_high"])


@pytest.mark.parametrize("bad", [[1.0, float("nan")], [float("inf")], []])
def test_mean_ci_rejects_bad_values(bad: list[float]) -> None:
    with pytest.raises(ValueError):
        mean_ci(bad)


@pytest.mark.parametrize("conf", [0.0, 1.0, 1.5, -0.1])
def test_mean_ci_rejects_bad_confidence(conf: float) -> None:
    with pytest.raises(ValueError):
        mean_ci([1.0, 2.0], confidence=conf)


# ---------------------------------------------------------------- paired_t_test
def test_paired_t_matches_scipy() -> None:
    a = [0.81, 0.79, 0.84, 0.80, 0.83]
    b = [0.78, 0.79, 0.80, 0.76, 0.80]
    res = paired_t_test(a, b)
    ref = sps.ttest_rel(a, b)
    d = np.subtract(a, b)
    lo, hi = sps.t.interval(0.95, df=4, loc=d.mean(), scale=sps.sem(d))
    assert res["p_value"] == pytest.approx(ref.pvalue, rel=1e-10)
    assert res["diff"] == pytest.approx(d.mean())
    assert res["ci_low"] == pytest.approx(lo) and res["ci_high"] == pytest.approx(hi)
    assert res["n"] == 5 and res["method"] == "paired t"


def test_paired_t_single_pair_is_nan() -> None:
    res = paired_t_test([0.9], [0.7])
    assert res["diff"] == pytest.approx(0.2)
    assert math.isnan(res["p_value"]) and math.isnan(res["ci_low"])
    assert verdict(res["ci_low"], res["ci_high"]) == "no detectable effect"


def test_paired_t_constant_nonzero_difference() -> None:
    res = paired_t_test([0.5, 0.75, 1.0], [0.25, 0.5, 0.75])
    assert res["diff"] == 0.25
    assert (res["ci_low"], res["ci_high"]) == (0.25, 0.25)
    assert res["p_value"] == 0.0
    assert verdict(res["ci_low"], res["ci_high"]) == "positive transfer"


def test_paired_t_identical_inputs() -> None:
    res = paired_t_test([0.7, 0.8, 0.9], [0.7, 0.8, 0.9])
    assert res["diff"] == 0.0 and res["p_value"] == 1.0
    assert (res["ci_low"], res["ci_high"]) == (0.0, 0.0)
    assert verdict(res["ci_low"], res["ci_high"]) == "no detectable effect"


def test_paired_t_validation() -> None:
    with pytest.raises(ValueError):
        paired_t_test([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        paired_t_test([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError):
        paired_t_test([], [])


# ---------------------------------------------------------------- bootstrap
def _fixed(n_seeds: int, n: int, n_correct: int) -> np.ndarray:
    row = np.zeros(n)
    row[:n_correct] = 1.0
    return np.tile(row, (n_seeds, 1))


def test_bootstrap_clearly_positive() -> None:
    a, b = _fixed(3, 400, 360), _fixed(3, 400, 200)  # 90% vs 50%
    res = paired_bootstrap_diff(a, b, n_boot=1000, seed=1)
    assert res["diff"] == pytest.approx(0.4)
    assert res["ci_low"] > 0
    assert res["p_value"] == pytest.approx(1 / 1000)
    assert verdict(res["ci_low"], res["ci_high"]) == "positive transfer"
    assert res["n_boot"] == 1000
    assert res["method"] == "paired bootstrap over seeds x test examples"


def test_bootstrap_clearly_negative() -> None:
    a, b = _fixed(3, 400, 200), _fixed(3, 400, 360)
    res = paired_bootstrap_diff(a, b, n_boot=1000, seed=1)
    assert res["ci_high"] < 0
    assert verdict(res["ci_low"], res["ci_high"]) == "negative transfer"


def test_bootstrap_identical_arrays() -> None:
    rng = np.random.default_rng(3)
    a = (rng.random((4, 300)) < 0.7).astype(float)
    res = paired_bootstrap_diff(a, a.copy(), n_boot=500)
    assert res["diff"] == 0.0 and res["ci_low"] == 0.0 and res["ci_high"] == 0.0
    assert res["p_value"] == 1.0
    assert verdict(res["ci_low"], res["ci_high"]) == "no detectable effect"


def test_bootstrap_same_seed_reproducible() -> None:
    rng = np.random.default_rng(5)
    a = (rng.random((5, 200)) < 0.75).astype(float)
    b = (rng.random((5, 200)) < 0.7).astype(float)
    r1 = paired_bootstrap_diff(a, b, n_boot=300, seed=42)
    r2 = paired_bootstrap_diff(a, b, n_boot=300, seed=42)
    r3 = paired_bootstrap_diff(a, b, n_boot=300, seed=43)
    assert r1 == r2
    assert (r1["ci_low"], r1["ci_high"]) != (r3["ci_low"], r3["ci_high"])


def test_bootstrap_covers_known_difference() -> None:
    # Per-example correctness drawn with P(A)=0.8, P(B)=0.6: true difference 0.2.
    rng = np.random.default_rng(11)
    u = rng.random((5, 400))
    a = (u < 0.8).astype(float)
    b = (rng.random((5, 400)) < 0.6).astype(float)
    res = paired_bootstrap_diff(a, b, n_boot=2000, seed=0)
    assert res["ci_low"] < 0.2 < res["ci_high"]
    assert res["ci_low"] <= res["diff"] <= res["ci_high"]
    assert res["ci_high"] - res["ci_low"] < 0.15
    assert verdict(res["ci_low"], res["ci_high"]) == "positive transfer"


def test_bootstrap_one_dim_and_float_scores() -> None:
    a = np.linspace(0.5, 1.0, 50)
    res = paired_bootstrap_diff(a, a - 0.1, n_boot=200)
    assert res["diff"] == pytest.approx(0.1)
    assert res["ci_low"] == pytest.approx(0.1) and res["ci_high"] == pytest.approx(0.1)


def test_replicate_stats_matches_naive_loop() -> None:
    rng = np.random.default_rng(7)
    d = rng.normal(size=(4, 30))
    seed_idx = rng.integers(0, 4, size=(25, 4))
    ex_idx = rng.integers(0, 30, size=(25, 30))
    fast = _replicate_stats(d, seed_idx, ex_idx)
    naive = [np.mean([d[s][ex_idx[r]].mean() for s in seed_idx[r]]) for r in range(25)]
    np.testing.assert_allclose(fast, naive, rtol=1e-12, atol=1e-12)


def test_bootstrap_is_fast() -> None:
    rng = np.random.default_rng(0)
    a = (rng.random((5, 400)) < 0.8).astype(float)
    b = (rng.random((5, 400)) < 0.7).astype(float)
    t0 = time.perf_counter()
    paired_bootstrap_diff(a, b, n_boot=2000)
    assert time.perf_counter() - t0 < 1.0


def test_bootstrap_validation() -> None:
    a = np.ones((2, 10))
    with pytest.raises(ValueError):
        paired_bootstrap_diff(a, np.ones((2, 9)))
    with pytest.raises(ValueError):
        paired_bootstrap_diff(a, a, n_boot=0)
    with pytest.raises(ValueError):
        paired_bootstrap_diff(np.ones((2, 2, 2)), np.ones((2, 2, 2)))
    bad = a.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError):
        paired_bootstrap_diff(bad, a)
    with pytest.raises(ValueError):
        paired_bootstrap_diff(np.ones((0, 5)), np.ones((0, 5)))


# ---------------------------------------------------------------- verdict
@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [
        (-0.3, -0.1, "negative transfer"),
        (0.1, 0.3, "positive transfer"),
        (-0.1, 0.2, "no detectable effect"),
        (0.0, 0.2, "no detectable effect"),
        (-0.2, 0.0, "no detectable effect"),
        (float("nan"), float("nan"), "no detectable effect"),
        (0.1, float("nan"), "no detectable effect"),
    ],
)
def test_verdict(lo: float, hi: float, expected: str) -> None:
    assert verdict(lo, hi) == expected


def test_verdict_rejects_inverted_interval() -> None:
    with pytest.raises(ValueError):
        verdict(0.3, 0.1)


# ---------------------------------------------------------------- labels_to_reach
def test_labels_to_reach_interpolates_in_log_space() -> None:
    got = labels_to_reach([1, 10, 100], [0.2, 0.6, 0.9], 0.75)
    assert got == pytest.approx(10**1.5)
    # within the first segment: 0.4 is halfway from 0.2 to 0.6 -> 10**0.5
    assert labels_to_reach([1, 10, 100], [0.2, 0.6, 0.9], 0.4) == pytest.approx(10**0.5)
    # exactly hitting a budget's accuracy returns that budget
    assert labels_to_reach([1, 10, 100], [0.2, 0.6, 0.9], 0.6) == pytest.approx(10.0)


def test_labels_to_reach_first_crossing_of_non_monotone_curve() -> None:
    got = labels_to_reach([1, 10, 100, 1000], [0.2, 0.8, 0.5, 0.9], 0.5)
    assert got == pytest.approx(10**0.5)


def test_labels_to_reach_already_and_never() -> None:
    assert labels_to_reach([5, 10, 50], [0.8, 0.85, 0.9], 0.75) == 5.0
    assert labels_to_reach([5, 10, 50], [0.5, 0.6, 0.7], 0.75) == float("inf")
    assert labels_to_reach([5], [0.5], 0.75) == float("inf")


def test_labels_to_reach_validation() -> None:
    with pytest.raises(ValueError):
        labels_to_reach([10, 1], [0.2, 0.6], 0.5)
    with pytest.raises(ValueError):
        labels_to_reach([0, 1], [0.2, 0.6], 0.5)
    with pytest.raises(ValueError):
        labels_to_reach([1, 10], [0.2], 0.5)
    with pytest.raises(ValueError):
        labels_to_reach([1, 10], [0.2, 0.6], float("nan"))


# ---------------------------------------------------------------- AULC
def test_aulc_constant_curve() -> None:
    assert area_under_learning_curve([1, 5, 20, 100], [0.8] * 4) == pytest.approx(0.8)


def test_aulc_hand_computed() -> None:
    assert area_under_learning_curve([1, 100], [0.2, 0.6]) == pytest.approx(0.4)
    # log10 x = 0, 1, 3: (0.5 * 1 + 1.0 * 2) / 3
    assert area_under_learning_curve([1, 10, 1000], [0.0, 1.0, 1.0]) == pytest.approx(2.5 / 3)


def test_aulc_single_budget_and_validation() -> None:
    assert area_under_learning_curve([10], [0.65]) == 0.65
    with pytest.raises(ValueError):
        area_under_learning_curve([1, 1], [0.5, 0.6])
    with pytest.raises(ValueError):
        area_under_learning_curve([-1, 1], [0.5, 0.6])
    with pytest.raises(ValueError):
        area_under_learning_curve([], [])


# ---------------------------------------------------------------- Holm
def test_holm_hand_computed() -> None:
    # sorted 0.005, 0.01, 0.03, 0.04 -> 0.02, 0.03, 0.06, max(0.06, 0.04)
    got = holm_bonferroni([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(got, [0.03, 0.06, 0.06, 0.02])


def test_holm_clips_and_passes_nan() -> None:
    got = holm_bonferroni([0.4, float("nan"), 0.6])
    assert math.isnan(got[1])
    assert got[0] == pytest.approx(0.8) and got[2] == pytest.approx(0.8)
    assert holm_bonferroni([0.9, 0.7]) == [1.0, 1.0]
    assert holm_bonferroni([]) == []


def test_holm_validation() -> None:
    with pytest.raises(ValueError):
        holm_bonferroni([0.1, 1.2])
    with pytest.raises(ValueError):
        holm_bonferroni([-0.1])
