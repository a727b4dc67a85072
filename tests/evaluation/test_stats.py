"""Tests for transferlab.evaluation.stats."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sps

from transferlab.evaluation.stats import (
    adjust_p_values,
    area_under_learning_curve,
    benjamini_hochberg,
    holm_bonferroni,
    labels_to_reach,
    marginal_level,
    mean_ci,
    minimum_detectable_effect,
    paired_t_power,
    paired_t_test,
    seeds_for_power,
    verdict,
)

ALPHA = 0.05


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
    assert res["n"] == 5 and res["df"] == 4 and res["method"] == "paired t"


def test_paired_t_single_pair_is_nan() -> None:
    res = paired_t_test([0.9], [0.7])
    assert res["diff"] == pytest.approx(0.2)
    assert math.isnan(res["p_value"]) and math.isnan(res["ci_low"])
    assert verdict(res["diff"], res["p_value"], ALPHA) == "no detectable effect"


def test_paired_t_constant_nonzero_difference() -> None:
    # zero variance: the exact sign-flip p (all 3 signs alike: 2 of 8 sign patterns)
    res = paired_t_test([0.5, 0.75, 1.0], [0.25, 0.5, 0.75])
    assert res["diff"] == 0.25 and res["method"] == "sign flip"
    assert math.isnan(res["ci_low"]) and math.isnan(res["ci_high"])
    assert res["p_value"] == 0.25
    assert verdict(res["diff"], res["p_value"], ALPHA) == "no detectable effect"
    # with enough seeds a constant sign is evidence: 2 / 2**6 < 0.05
    six = paired_t_test([0.5] * 6, [0.25] * 6)
    assert six["p_value"] == 2 / 64
    assert verdict(six["diff"], six["p_value"], ALPHA) == "positive transfer"


def test_paired_t_identical_inputs() -> None:
    res = paired_t_test([0.7, 0.8, 0.9], [0.7, 0.8, 0.9])
    assert res["diff"] == 0.0 and res["p_value"] == 1.0
    assert math.isnan(res["ci_low"]) and math.isnan(res["ci_high"])
    assert verdict(res["diff"], res["p_value"], ALPHA) == "no detectable effect"


@pytest.mark.parametrize("n", range(2, 11))
def test_zero_variance_rule_is_exact_on_discrete_differences(n: int) -> None:
    """Accuracies on a finite test set are discrete. Under the null "+c or -c with equal
    chance" every sign pattern is equally likely, so enumerating them gives exact rates. The
    zero-variance rule alone must reject at most alpha (the old rule, p = 0 whenever every
    difference is equal, rejected 2 ** (1 - n): a quarter of the time at 3 seeds)."""
    base = np.full(n, 0.8)
    results = [paired_t_test(base + 0.005 * np.array(signs), base)
               for signs in itertools.product((-1.0, 1.0), repeat=n)]
    by_rule = sum(r["p_value"] < ALPHA for r in results if r["method"] == "sign flip")
    assert by_rule / 2 ** n <= ALPHA
    if n == 3:  # the default's seeds: the whole procedure holds its level on this null
        assert sum(r["p_value"] < ALPHA for r in results) == 0


def test_paired_t_validation() -> None:
    with pytest.raises(ValueError):
        paired_t_test([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        paired_t_test([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError):
        paired_t_test([], [])


# ---------------------------------------------------------------- verdict
@pytest.mark.parametrize(
    ("diff", "p", "expected"),
    [
        (-0.2, 0.01, "negative transfer"),
        (0.2, 0.01, "positive transfer"),
        (0.2, 0.2, "no detectable effect"),
        (0.2, 0.05, "no detectable effect"),  # p < alpha, strictly: as the t interval excludes 0
        (0.2, 0.0499, "positive transfer"),
        (0.0, 0.0, "no detectable effect"),
        (0.2, float("nan"), "no detectable effect"),
        (float("nan"), 0.01, "no detectable effect"),
    ],
)
def test_verdict(diff: float, p: float, expected: str) -> None:
    assert verdict(diff, p, ALPHA) == expected


def test_verdict_agrees_with_the_unadjusted_t_interval() -> None:
    rng = np.random.default_rng(5)
    for _ in range(200):
        res = paired_t_test(rng.normal(0.02, 0.03, 3), rng.normal(0.0, 0.03, 3))
        excludes_zero = res["ci_low"] > 0 or res["ci_high"] < 0
        assert (verdict(res["diff"], res["p_value"], ALPHA) != "no detectable effect") \
            == excludes_zero


def test_verdict_rejects_bad_alpha() -> None:
    with pytest.raises(ValueError):
        verdict(0.1, 0.01, 1.5)


# ---------------------------------------------------------------- power (noncentral t)
def test_power_matches_hand_values_and_limits() -> None:
    # delta = 0: the two tails hold alpha between them
    null = paired_t_power(0.0, 1.0, 3, ALPHA)
    assert null["any"] == pytest.approx(ALPHA, rel=1e-9)
    assert null["t_critical"] == pytest.approx(4.302652729911275, rel=1e-9)
    # noncentrality delta / (sigma / sqrt(n)) = 2 * sqrt(5); power from scipy's noncentral t
    got = paired_t_power(2.0, 1.0, 5, ALPHA)
    assert got["noncentrality"] == pytest.approx(2 * math.sqrt(5))
    assert got["positive"] == pytest.approx(sps.nct.sf(sps.t.ppf(0.975, 4), 4, 2 * math.sqrt(5)))
    assert paired_t_power(-2.0, 1.0, 5, ALPHA)["negative"] == pytest.approx(got["positive"])
    with pytest.raises(ValueError):
        paired_t_power(1.0, 0.0, 3)
    with pytest.raises(ValueError):
        paired_t_power(1.0, 1.0, 1)


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


# ---------------------------------------------------------------- Benjamini-Hochberg
def test_bh_hand_computed() -> None:
    # m = 4, sorted 0.005, 0.01, 0.03, 0.04 -> 4p/k = 0.02, 0.02, 0.04, 0.04;
    # step-up minimum from the largest: 0.04, 0.04, 0.02, 0.02
    got = benjamini_hochberg([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(got, [0.02, 0.04, 0.04, 0.02])
    # the step-up minimum matters: 3 * 0.02 / 1 = 0.06 > 3 * 0.03 / 3 = 0.03
    np.testing.assert_allclose(benjamini_hochberg([0.02, 0.025, 0.03]), [0.03, 0.03, 0.03])


def test_bh_matches_scipy_reference() -> None:
    # statsmodels (multipletests) is not installed; scipy's false_discovery_control is the
    # reference implementation of the same adjustment
    rng = np.random.default_rng(3)
    for m in (1, 2, 7, 60):
        p = np.concatenate([rng.uniform(size=m // 2), rng.uniform(0, 0.01, size=m - m // 2)])
        np.testing.assert_allclose(benjamini_hochberg(p), sps.false_discovery_control(p),
                                   rtol=1e-12)


def test_bh_clips_passes_nan_and_validates() -> None:
    got = benjamini_hochberg([0.4, float("nan"), 0.6])
    assert math.isnan(got[1])
    assert got[0] == pytest.approx(0.6) and got[2] == pytest.approx(0.6)
    assert benjamini_hochberg([]) == []
    assert benjamini_hochberg([0.9, 1.0]) == [1.0, 1.0]
    with pytest.raises(ValueError):
        benjamini_hochberg([0.1, 1.2])


def test_adjust_p_values_dispatches() -> None:
    p = [0.01, 0.04, 0.03, 0.005, float("nan")]
    assert adjust_p_values(p, "holm")[:4] == holm_bonferroni(p)[:4]
    assert adjust_p_values(p, "bh")[:4] == benjamini_hochberg(p)[:4]
    assert adjust_p_values(p, "none")[:4] == p[:4]
    assert all(math.isnan(adjust_p_values(p, m)[4]) for m in ("holm", "bh", "none"))
    with pytest.raises(ValueError, match="expected one of holm, bh, none"):
        adjust_p_values(p, "bonferroni")


# ---------------------------------------------------------------- simulations
# A model of the pipeline's runs on ONE fixed test set of N examples (the pipeline's test split is
# fixed; inference is conditional on it). Example i has a difficulty b_i (logit scale), drawn once.
# A seed draws the label-budget subset that every curve at that seed trains on: a seed effect u_s,
# shared by curves A and B at that seed (this is the pairing). Each run also has its own effect
# e (initialisation, data order), independent between A and B. Run (curve, seed) classifies
# example i correctly with probability sigmoid(b_i + u_s + e + delta_curve), independently over
# examples given the run. sd(u) = sd(e) = sigma, the "seed-to-seed spread" of the issue (0.3 or
# 0.6 logit). Real runs also differ in which examples they get right in structured ways (an
# effect per curve x example); that would make the example-level noise larger, not the seed-level
# test less valid, since the test only sees per-seed accuracies.
N_TEST = 500


def _test_set(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(1.0, 1.5, N_TEST)  # mean accuracy about 0.67


def _per_seed_accuracy(rng: np.random.Generator, b: np.ndarray, n_sim: int, seeds: int,
                       sigma: float, delta: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(n_sim, seeds) test accuracies of curve A (shifted by ``delta`` logits) and B."""
    out_a, out_b = [], []
    for start in range(0, n_sim, 500):  # chunks keep memory at ~ 500 * seeds * N booleans
        k = min(500, n_sim - start)
        u = rng.normal(0.0, sigma, (k, seeds, 1))
        la = b + u + rng.normal(0.0, sigma, (k, seeds, 1)) + delta
        lb = b + u + rng.normal(0.0, sigma, (k, seeds, 1))
        out_a.append((rng.random(la.shape) < 1 / (1 + np.exp(-la))).mean(2))
        out_b.append((rng.random(lb.shape) < 1 / (1 + np.exp(-lb))).mean(2))
    return np.concatenate(out_a), np.concatenate(out_b)


def _verdicts(acc_a: np.ndarray, acc_b: np.ndarray) -> list[str]:
    """The gain procedure on one comparison (a family of one): paired t over seeds, verdict."""
    out = []
    for a, b in zip(acc_a, acc_b, strict=True):
        res = paired_t_test(a, b, confidence=1 - ALPHA)
        out.append(verdict(res["diff"], res["p_value"], ALPHA))
    return out


@pytest.mark.parametrize(("sigma", "rng_seed"), [(0.3, 11), (0.6, 12)])
def test_null_false_verdict_rate_with_between_seed_variance(sigma: float, rng_seed: int) -> None:
    """No true difference between A and B: at most 6% non-null verdicts at alpha = 5%, over
    4,000 comparisons of 3 seeds x 500 test examples (binomial SE at 5%: 0.34 points)."""
    acc_a, acc_b = _per_seed_accuracy(np.random.default_rng(rng_seed), _test_set(), 4000, 3,
                                      sigma)
    rate = np.mean([v != "no detectable effect" for v in _verdicts(acc_a, acc_b)])
    print(f"null, sigma={sigma}: non-null verdict rate {rate:.4f}")
    assert rate <= 0.06
    # the simulation has the between-seed variance that breaks example-level inference: a
    # two-proportion z test pooling the 3 x 500 examples per curve rejects far more than 5%
    pa, pb = acc_a.mean(1), acc_b.mean(1)
    pooled = (pa + pb) / 2
    z = (pa - pb) / np.sqrt(pooled * (1 - pooled) * 2 / (3 * N_TEST))
    naive = np.mean(2 * sps.norm.sf(np.abs(z)) < ALPHA)
    print(f"null, sigma={sigma}: pooled-examples z test rate {naive:.4f}")
    assert naive > 0.2


@pytest.mark.parametrize(("seeds", "sigma", "delta", "rng_seed"),
                         [(3, 0.3, 0.8, 21), (3, 0.6, 1.0, 22), (5, 0.3, 0.35, 23)])
def test_true_effect_is_detected_at_the_claimed_rate(seeds: int, sigma: float, delta: float,
                                                     rng_seed: int) -> None:
    """Curve A is better by ``delta`` logits on every example. The claimed detection rate is the
    noncentral-t power for the per-seed differences' mean and sd, measured on an independent
    pilot of 50,000 seeds (its sampling error moves the claim by about half a binomial SE). The
    simulated rate of "positive transfer" over 4,000 comparisons must match the claim within 3
    binomial SEs (about 2.3 points).

    The claim is normal theory. Where the per-seed differences are skewed it is slightly
    optimistic: at sigma = 0.6 and delta = 1.5 (skewness 0.24) 20,000 comparisons detected
    0.334 against a claimed 0.349 (z = -4.5); for the cases below, 20,000 comparisons each put
    the gap under 1 point (simulated minus claimed: -0.2, -0.7, -0.6 points)."""
    b = _test_set()
    pa, pb = _per_seed_accuracy(np.random.default_rng(rng_seed + 100), b, 50_000, 1, sigma,
                                delta)
    d = (pa - pb)[:, 0]
    claimed = paired_t_power(float(d.mean()), float(d.std(ddof=1)), seeds, ALPHA)["positive"]
    assert 0.2 < claimed < 0.8  # informative: neither certain nor hopeless
    acc_a, acc_b = _per_seed_accuracy(np.random.default_rng(rng_seed), b, 4000, seeds, sigma,
                                      delta)
    rate = np.mean([v == "positive transfer" for v in _verdicts(acc_a, acc_b)])
    se = math.sqrt(claimed * (1 - claimed) / 4000)
    print(f"S={seeds}, sigma={sigma}, delta={delta}: per-seed gain {d.mean():.4f} sd "
          f"{d.std(ddof=1):.4f}; claimed {claimed:.4f}, simulated {rate:.4f} (SE {se:.4f})")
    assert abs(rate - claimed) <= 3 * se


def _family_p_values(rng: np.random.Generator, n_families: int, effects: np.ndarray,
                     seeds: int = 3) -> np.ndarray:
    """(n_families, m) paired-t p-values of m curves against ONE shared scratch per family (as
    every gain at a budget shares scratch, so the p-values are positively dependent). Per-seed
    accuracies: 0.7 + seed effect (sd 0.03, shared) + run effect (sd 0.03) + the curve's effect."""
    m = effects.size
    seed_effect = rng.normal(0.0, 0.03, (n_families, 1, seeds))
    scratch = 0.7 + seed_effect + rng.normal(0.0, 0.03, (n_families, 1, seeds))
    curves = 0.7 + seed_effect + rng.normal(0.0, 0.03, (n_families, m, seeds)) \
        + effects[None, :, None]
    p = sps.ttest_rel(curves, np.broadcast_to(scratch, curves.shape), axis=-1).pvalue
    # the same p-values as paired_t_test (checked in test_paired_t_matches_scipy), vectorised
    return p


def test_holm_keeps_the_familywise_error_rate_under_a_global_null() -> None:
    """48 comparisons with no true effect, 2,000 families: the share of families with any
    non-null verdict stays within alpha + 3 binomial SEs (5% + 1.5 points) after Holm."""
    p = _family_p_values(np.random.default_rng(31), 2000, np.zeros(48))
    holm = np.array([holm_bonferroni(row) for row in p])
    fwer = float(np.mean((holm < ALPHA).any(axis=1)))
    raw = float(np.mean((p < ALPHA).any(axis=1)))
    print(f"global null, m=48: FWER unadjusted {raw:.4f}, Holm {fwer:.4f}")
    assert raw > 0.5  # without control, most families carry a false verdict
    assert fwer <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / 2000)


def test_bh_keeps_the_false_discovery_rate() -> None:
    """38 null and 10 real comparisons (a gain of 0.1, about 2.4 per-seed sds), 2,000
    families: the mean false discovery proportion after BH stays within alpha + 3 SEs; BH finds
    more real effects than Holm; under the global null BH's FWER is within alpha + 3 SEs."""
    effects = np.r_[np.zeros(38), np.full(10, 0.1)]
    p = _family_p_values(np.random.default_rng(32), 2000, effects)
    bh = np.array([benjamini_hochberg(row) for row in p]) < ALPHA
    holm = np.array([holm_bonferroni(row) for row in p]) < ALPHA
    false = bh[:, :38].sum(1)
    fdp = false / np.maximum(bh.sum(1), 1)
    se = float(fdp.std(ddof=1) / math.sqrt(fdp.size))
    print(f"38 null + 10 real: FDR BH {fdp.mean():.4f} (SE {se:.4f}); real found BH "
          f"{bh[:, 38:].sum(1).mean():.2f}, Holm {holm[:, 38:].sum(1).mean():.2f} of 10")
    assert fdp.mean() <= ALPHA + 3 * se
    assert bh[:, 38:].sum() > holm[:, 38:].sum()
    null_p = _family_p_values(np.random.default_rng(33), 2000, np.zeros(48))
    fwer = float(np.mean([min(benjamini_hochberg(row)) < ALPHA for row in null_p]))
    print(f"global null, m=48: FWER BH {fwer:.4f}")
    assert fwer <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / 2000)


# ---------------------------------------------------------------- minimum detectable effect
@pytest.mark.parametrize(("sigma", "n", "alpha"), [(0.03, 4, 0.05), (0.05, 5, 0.05 / 20),
                                                    (0.3, 3, 0.01)])
def test_mde_is_the_inverse_of_the_power(sigma, n, alpha) -> None:
    mde = minimum_detectable_effect(sigma, n, alpha, power=0.8)
    assert paired_t_power(mde, sigma, n, alpha)["positive"] == pytest.approx(0.8, abs=1e-9)
    assert paired_t_power(0.95 * mde, sigma, n, alpha)["positive"] < 0.8
    # more seeds or a looser level detect less
    assert minimum_detectable_effect(sigma, n + 3, alpha) < mde
    assert minimum_detectable_effect(sigma, n, min(0.5, 2 * alpha)) < mde


def test_mde_holds_in_simulation() -> None:
    """Normal per-seed differences whose true mean is the mde: the paired t calls them positive
    at the mde's level 80 % of the time (20,000 simulated designs, within 3 binomial SEs)."""
    sigma, n, alpha, sims = 0.04, 4, 0.05 / 6, 20_000
    mde = minimum_detectable_effect(sigma, n, alpha)
    rng = np.random.default_rng(26)
    d = rng.normal(mde, sigma, (sims, n))
    t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(n))
    positive = np.mean((2 * sps.t.sf(np.abs(t), n - 1) < alpha) & (t > 0))
    assert abs(positive - 0.8) < 3 * math.sqrt(0.8 * 0.2 / sims)


def test_mde_is_nan_without_a_variance_estimate() -> None:
    assert math.isnan(minimum_detectable_effect(0.0, 4))
    assert math.isnan(minimum_detectable_effect(0.1, 1))
    assert math.isnan(minimum_detectable_effect(math.nan, 4))
    with pytest.raises(ValueError, match="power"):
        minimum_detectable_effect(0.1, 4, 0.05, power=1.2)


@pytest.mark.parametrize("method", ["holm", "bh", "none"])
def test_marginal_level_is_where_one_more_comparison_joins(method) -> None:
    """Against the adjustments themselves: a family with R rejections; one comparison moved just
    under the marginal level is rejected along with the R; just over it, not (Holm, none)."""
    rng = np.random.default_rng(3)
    for _ in range(200):
        m = int(rng.integers(2, 30))
        p = np.sort(np.concatenate([rng.uniform(0, 0.003, int(rng.integers(0, m))),
                                    rng.uniform(0.2, 1, m)]))[:m]
        q = np.array(adjust_p_values(list(p), method))
        rejected = int(np.sum(q < ALPHA))
        nulls = np.flatnonzero(q >= ALPHA)
        if not nulls.size:
            continue
        level = marginal_level(method, ALPHA, m, rejected)
        i = int(rng.choice(nulls))
        # above it: never under Holm (everything left fails the next step); BH may still reject
        # it together with another p that it lifts under the step-up line, so BH's is sufficient
        for factor, joins in ((0.999, True), (1.001, False))[:1 if method == "bh" else 2]:
            moved = p.copy()
            moved[i] = level * factor
            q2 = np.array(adjust_p_values(list(moved), method))
            assert (q2[i] < ALPHA) == joins, (method, m, rejected, factor)
            if joins:  # the R stay rejected (others may follow it: steps cascade)
                assert np.all(q2[q < ALPHA] < ALPHA) and int(np.sum(q2 < ALPHA)) > rejected
    with pytest.raises(ValueError, match="rejections"):
        marginal_level("bh", ALPHA, 3, 3)
    with pytest.raises(ValueError, match="unknown multiplicity"):
        marginal_level("bonferroni", ALPHA, 3, 0)


def test_seeds_for_power_is_the_fewest_that_reach_it() -> None:
    for sigma, delta, alpha in ((0.08, 0.05, 0.01), (0.03, 0.05, 0.05), (0.2, 0.05, 0.001)):
        n = seeds_for_power(sigma, delta, alpha)
        assert paired_t_power(delta, sigma, n, alpha)["positive"] >= 0.8
        assert n == 2 or paired_t_power(delta, sigma, n - 1, alpha)["positive"] < 0.8
        # and the mde at those seeds is at most the target
        assert minimum_detectable_effect(sigma, n, alpha) <= delta + 1e-12
    assert seeds_for_power(1.0, 0.001, 1e-6, max_seeds=100) is None
    assert seeds_for_power(0.0, 0.05) is None
