"""Statistics for comparing transfer-learning strategies across label budgets and seeds.

Pure numpy/scipy helpers: t intervals, the paired t test over seeds, effect verdicts from
(multiplicity-adjusted) p-values, Holm and Benjamini-Hochberg adjustment, and learning-curve
summaries.

The seed is the unit of inference. A seed draws one label-budget subset and one initialisation,
so two curves run with the same seed are paired; the test examples of one run are not
independent replicates of the training process, and resampling them as if they were (a
bootstrap over seeds x examples) is anti-conservative with a handful of seeds. What the
procedures here claim:

* :func:`paired_t_test`: if the per-seed differences are independent draws from a normal
  distribution with mean 0, ``p_value < alpha`` with probability alpha (the two-sided type-I
  error rate), and the t interval on S - 1 degrees of freedom covers the true mean difference with
  probability ``confidence``. With S seeds and per-seed differences of mean delta and standard
  deviation sigma, the probability of a significant result is the noncentral-t power
  ``P(|T| > t_{1-alpha/2, S-1})`` with noncentrality ``delta / (sigma / sqrt(S))``
  (:func:`paired_t_power`). Where every per-seed difference is the same, the exact sign-flip
  test takes over (p = 2 ** (1 - S)): its type-I error is at most alpha under any null
  symmetric about 0, so a discrete accuracy cannot make a constant difference "significant" at
  3 seeds. The t test's own level is exact only for normal differences: on discrete ones it
  can exceed alpha (differences of +-c with equal chance at 7 seeds: 0.125, by enumeration).
  Inference is conditional on the fixed test set: its variance is that
  of retraining (new label subset, new initialisation), not that of drawing a new test set.
* :func:`minimum_detectable_effect`: the true mean per-seed difference that :func:`paired_t_test`
  calls positive with probability ``power`` at level alpha, for normal differences of standard
  deviation sigma (the inverse of :func:`paired_t_power`). Fed the observed standard deviation of
  a comparison that found nothing, it says what that design could have seen; the observed
  sigma is itself an estimate from S seeds, so the minimum detectable effect is one too.
  :func:`marginal_level` gives the per-comparison level at which one more comparison of a
  family would have been rejected under Holm or Benjamini-Hochberg, given the others.
* :func:`holm_bonferroni`: the family-wise error rate (probability of at least one false
  verdict among the m comparisons) is at most alpha, for any dependence between the p-values.
* :func:`benjamini_hochberg`: the false discovery rate (expected share of false verdicts among
  the non-null verdicts) is at most alpha for independent or positively dependent p-values
  (PRDS); at most alpha * (1 + 1/2 + ... + 1/m) under arbitrary dependence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import optimize as _sps_optimize
from scipy import special as _special
from scipy import stats as _sps

__all__ = [
    "MULTIPLICITY",
    "adjust_p_values",
    "area_under_learning_curve",
    "benjamini_hochberg",
    "holm_bonferroni",
    "labels_to_reach",
    "marginal_level",
    "mean_ci",
    "minimum_detectable_effect",
    "seeds_for_power",
    "paired_t_power",
    "paired_t_test",
    "verdict",
]

MULTIPLICITY = ("holm", "bh", "none")  # the methods of adjust_p_values

_NAN = float("nan")


def _check_confidence(confidence: float) -> None:
    if not (0.0 < confidence < 1.0):
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")


def _finite_1d(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values")
    return arr


def _t_quantile(q: float, df: int) -> float:
    # scipy.special.stdtrit is scipy.stats.t.ppf without its per-call overhead (~100x faster),
    # which the simulation tests, calling the test thousands of times, need
    return float(_special.stdtrit(df, q))


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean with a Student t confidence interval.

    Args:
        values: Finite observations (e.g. one metric over seeds); at least one.
        confidence: Two-sided confidence level in (0, 1).

    Returns:
        {"mean", "std" (ddof=1; 0.0 when n == 1), "ci_low", "ci_high" (nan when n == 1),
        "n", "method": "t"}.
    """
    _check_confidence(confidence)
    x = _finite_1d(values, "values")
    n = int(x.size)
    mean = float(np.mean(x))
    if n == 1:
        return {"mean": mean, "std": 0.0, "ci_low": _NAN, "ci_high": _NAN, "n": 1, "method": "t"}
    std = float(np.std(x, ddof=1))
    half = _t_quantile(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n)
    return {
        "mean": mean,
        "std": std,
        "ci_low": mean - half,
        "ci_high": mean + half,
        "n": n,
        "method": "t",
    }


def paired_t_test(
    a: Sequence[float], b: Sequence[float], confidence: float = 0.95
) -> dict[str, Any]:
    """Paired t test of a - b over seeds, with a t interval on S - 1 degrees of freedom.

    The p-value is that of scipy.stats.ttest_rel (computed directly); the interval is the
    Student t interval of the mean per-seed difference. Both are exact when the per-seed
    differences are independent and normal (the module docstring states the error rates).

    Degenerate cases (documented rule):
      * n == 1: diff = a[0] - b[0]; CI and p are nan (no variance estimate), so no verdict.
      * n >= 2 and all differences exactly equal to d (accuracies on a finite test set are
        discrete, so this happens): the sample variance is 0 and the t statistic is undefined
        (ttest_rel returns an infinite t and p = 0, which would declare any constant
        difference significant, at 3 seeds a false verdict a quarter of the time when the
        differences are +-c with equal chance). The p-value is then the exact sign-flip
        test's: under any null symmetric about 0, the signs of equal-magnitude differences are
        fair coins, and "all the same sign" has probability 2 ** (1 - n); p = 1.0 if d == 0.
        The interval is nan (no variance estimate), as for n == 1.

    Args:
        a: Per-seed metric of strategy A (finite).
        b: Per-seed metric of baseline B, paired with ``a`` by position (same seed), same length.
        confidence: Two-sided confidence level in (0, 1).

    Returns:
        {"diff" (mean of a - b), "ci_low", "ci_high", "p_value" (two-sided), "n" (pairs),
        "df" (n - 1), "sd" (standard deviation of the differences; nan for one pair),
        "method": "paired t", or "sign flip" in the zero-variance case}.
    """
    _check_confidence(confidence)
    x = _finite_1d(a, "a")
    y = _finite_1d(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"length mismatch: {x.size} vs {y.size}")
    d = x - y
    n = int(d.size)
    out: dict[str, Any] = {"n": n, "df": n - 1, "method": "paired t"}
    if n == 1:
        out.update(diff=float(d[0]), ci_low=_NAN, ci_high=_NAN, p_value=_NAN, sd=_NAN)
        return out
    if np.all(d == d[0]):
        d0 = float(d[0])
        out.update(diff=d0, ci_low=_NAN, ci_high=_NAN, sd=0.0,
                   p_value=2.0 ** (1 - n) if d0 != 0.0 else 1.0, method="sign flip")
        return out
    ci = mean_ci(d, confidence)
    t = ci["mean"] / (ci["std"] / math.sqrt(n))
    p = min(1.0, 2.0 * float(_special.stdtr(n - 1, -abs(t))))  # as scipy.stats.ttest_rel
    out.update(diff=ci["mean"], ci_low=ci["ci_low"], ci_high=ci["ci_high"], p_value=p,
               sd=ci["std"])
    return out


def paired_t_power(delta: float, sigma: float, n: int, alpha: float = 0.05) -> dict[str, float]:
    """The rate at which :func:`paired_t_test` detects a true mean difference, as it claims.

    Per-seed differences ~ Normal(delta, sigma^2), n seeds, two-sided level alpha: the statistic
    is noncentral t with n - 1 degrees of freedom and noncentrality delta / (sigma / sqrt(n)).

    Args:
        delta: True mean per-seed difference a - b.
        sigma: True standard deviation of the per-seed difference (> 0).
        n: Number of seeds (>= 2).
        alpha: Two-sided significance level in (0, 1).

    Returns:
        {"positive": P(significant with a positive mean difference), "negative": the same with a
        negative one, "any": their sum, "t_critical": t_{1-alpha/2, n-1}, "noncentrality"}.
    """
    if n < 2 or sigma <= 0:
        raise ValueError(f"need n >= 2 and sigma > 0, got n={n!r}, sigma={sigma!r}")
    _check_confidence(1.0 - alpha)
    df = n - 1
    crit = float(_sps.t.ppf(1.0 - alpha / 2.0, df))
    nc = float(delta) / (float(sigma) / math.sqrt(n))
    pos = float(_sps.nct.sf(crit, df, nc))
    neg = float(_sps.nct.cdf(-crit, df, nc))
    return {"positive": pos, "negative": neg, "any": pos + neg, "t_critical": crit,
            "noncentrality": nc}


def minimum_detectable_effect(sigma: float, n: int, alpha: float = 0.05,
                              power: float = 0.8) -> float:
    """The smallest true mean difference that :func:`paired_t_test` detects as positive with
    probability ``power`` at two-sided level ``alpha`` (:func:`paired_t_power`'s ``positive``).

    Args:
        sigma: standard deviation of the per-seed difference (> 0; the observed one, where the
            design is judged after the fact).
        n: number of seeds (>= 2).
        alpha: the per-comparison two-sided level (a family's :func:`marginal_level`).
        power: the wanted detection rate, in (alpha / 2, 1).

    Returns:
        delta > 0 with ``paired_t_power(delta, sigma, n, alpha)["positive"] == power`` (to
        1e-10 relative); nan where n < 2 or sigma is not positive and finite (no variance
        estimate: the sign-flip case of :func:`paired_t_test`).
    """
    if not 0 < alpha < 1 or not alpha / 2 < power < 1:
        raise ValueError(f"need 0 < alpha < 1 and alpha/2 < power < 1, got alpha={alpha!r}, "
                         f"power={power!r}")
    if n < 2 or not (math.isfinite(sigma) and sigma > 0):
        return _NAN
    df = n - 1
    crit = float(_sps.t.ppf(1.0 - alpha / 2.0, df))
    se = float(sigma) / math.sqrt(n)

    def shortfall(delta: float) -> float:
        return float(_sps.nct.sf(crit, df, delta / se)) - power

    high = se * (crit + float(_sps.norm.ppf(power)) + 1.0)
    while shortfall(high) < 0:
        high *= 2.0
    return float(_sps_optimize.brentq(shortfall, 0.0, high, xtol=1e-12, rtol=1e-10))


def seeds_for_power(sigma: float, delta: float, alpha: float = 0.05, power: float = 0.8,
                    max_seeds: int = 10_000) -> int | None:
    """The fewest seeds (>= 2) at which :func:`paired_t_test` detects a true mean difference
    ``delta`` > 0 as positive with probability ``power`` at two-sided level ``alpha``, for
    per-seed differences of standard deviation ``sigma``; None if more than ``max_seeds``
    (or sigma is not positive and finite)."""
    if delta <= 0 or not (math.isfinite(sigma) and sigma > 0):
        return None

    def enough(n: int) -> bool:
        return paired_t_power(delta, sigma, n, alpha)["positive"] >= power
    if not enough(max_seeds):
        return None
    low, high = 1, 2  # enough(high), not enough(low): the power grows with n
    while not enough(high):
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid, high)
    return high


def marginal_level(method: str, alpha: float, family_size: int, rejections: int) -> float:
    """The per-comparison level at which one more comparison of a family is rejected, given the
    family's other verdicts: a comparison whose raw p-value is at most this level joins the
    ``rejections`` already made (and keeps every one of them); under Holm and with no
    adjustment one above it does not.

    - ``none``: alpha.
    - ``holm``: alpha / (m - R): the step-down's next threshold; a p-value at most it is the
      (R + 1)-th smallest or below a rejected one, so it is rejected.
    - ``bh``: alpha (R + 1) / m: with it, R + 1 p-values lie under the step-up line. For BH the
      level is sufficient, not necessary: a p-value above it can still be rejected together
      with another that it lifts under the line, so the minimum detectable effect taken at it
      is conservative.

    Args:
        method: "holm", "bh" or "none" (:data:`MULTIPLICITY`).
        alpha: the family's level.
        family_size: m, the number of comparisons with a p-value (>= 1).
        rejections: R, how many of them are rejected now (0 <= R < m).
    """
    if not 0 <= rejections < family_size:
        raise ValueError(f"need 0 <= rejections < family_size, got {rejections} of "
                         f"{family_size}")
    if method == "none":
        return alpha
    if method == "holm":
        return alpha / (family_size - rejections)
    if method == "bh":
        return alpha * (rejections + 1) / family_size
    raise ValueError(f"unknown multiplicity method {method!r}; expected one of "
                     f"{', '.join(MULTIPLICITY)}")


def verdict(diff: float, p_value: float, alpha: float) -> str:
    """Classify an effect (strategy - baseline) from its (adjusted) p-value and its sign.

    Args:
        diff: Mean difference, strategy minus baseline.
        p_value: Its two-sided p-value, adjusted for the family of comparisons where there is
            one; nan where no test was possible.
        alpha: Significance level in (0, 1), e.g. 1 - confidence.

    Returns:
        "positive transfer" if p_value < alpha and diff > 0, "negative transfer" if
        p_value < alpha and diff < 0, otherwise "no detectable effect" (including a nan p or
        diff). With no adjustment, p < alpha exactly when the t interval at level 1 - alpha
        excludes 0, so the verdict and the interval agree.
    """
    _check_confidence(1.0 - alpha)
    if math.isnan(p_value) or math.isnan(diff) or p_value >= alpha or diff == 0:
        return "no detectable effect"
    return "positive transfer" if diff > 0 else "negative transfer"


def _curve(budgets: Sequence[float], accuracies: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x = _finite_1d(budgets, "budgets")
    y = _finite_1d(accuracies, "accuracies")
    if x.shape != y.shape:
        raise ValueError(f"length mismatch: {x.size} budgets vs {y.size} accuracies")
    if np.any(x <= 0):
        raise ValueError("budgets must be positive")
    if np.any(np.diff(x) <= 0):
        raise ValueError("budgets must be strictly increasing")
    return x, y


def labels_to_reach(budgets: Sequence[float], accuracies: Sequence[float], target: float) -> float:
    """Labels per class needed to reach ``target`` accuracy (log-linear interpolation).

    Interpolates accuracy linearly against log(budget) within the first consecutive pair
    (b_i, b_{i+1}) with acc_i < target <= acc_{i+1}.

    Args:
        budgets: Strictly increasing positive label budgets (labels per class).
        accuracies: Accuracy at each budget (not required to be monotone).
        target: Accuracy to reach.

    Returns:
        budgets[0] if already reached there; the interpolated budget; or float('inf') if the
        target is never reached (i.e. "more than the largest budget").
    """
    x, y = _curve(budgets, accuracies)
    if not math.isfinite(target):
        raise ValueError(f"target must be finite, got {target!r}")
    if y[0] >= target:
        return float(x[0])
    for i in range(x.size - 1):
        if y[i] < target <= y[i + 1]:
            frac = (target - y[i]) / (y[i + 1] - y[i])
            lx0, lx1 = math.log10(x[i]), math.log10(x[i + 1])
            return float(10.0 ** (lx0 + frac * (lx1 - lx0)))
    return float("inf")


def area_under_learning_curve(budgets: Sequence[float], accuracies: Sequence[float]) -> float:
    """Normalised area under the learning curve over log10(budget).

    Trapezoidal area of accuracy against log10(budget), divided by the log10 budget range, so
    the result is in accuracy units (a constant curve at 0.8 gives 0.8).

    Args:
        budgets: Strictly increasing positive label budgets.
        accuracies: Accuracy at each budget.

    Returns:
        The normalised area; for a single budget, that budget's accuracy.
    """
    x, y = _curve(budgets, accuracies)
    if x.size == 1:
        return float(y[0])
    lx = np.log10(x)
    area = float(np.sum(np.diff(lx) * (y[1:] + y[:-1]) / 2.0))
    return area / float(lx[-1] - lx[0])


def _valid_p(p_values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"p_values must be one-dimensional, got shape {p.shape}")
    idx = np.flatnonzero(~np.isnan(p))
    if np.any((p[idx] < 0) | (p[idx] > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    return p, idx


def holm_bonferroni(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values.

    Rejecting where the adjusted p-value is below alpha keeps the family-wise error rate (the
    probability of one or more false rejections among the m tests) at most alpha, whatever the
    dependence between the tests. nan entries pass through as nan and are not counted in the
    family size m.

    Args:
        p_values: Raw p-values in [0, 1] (or nan).

    Returns:
        Adjusted p-values in input order: running max of (m - k) * p_(k) over the sorted
        p-values (k = 0..m-1), clipped to 1.
    """
    p, idx = _valid_p(p_values)
    out = np.full(p.shape, _NAN)
    m = idx.size
    if m:
        order = np.argsort(p[idx], kind="stable")
        scaled = (m - np.arange(m)) * p[idx][order]
        adjusted = np.minimum(np.maximum.accumulate(scaled), 1.0)
        out[idx[order]] = adjusted
    return [float(v) for v in out]


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg step-up adjusted p-values (q-values).

    Rejecting where the adjusted p-value is below alpha keeps the false discovery rate (the
    expected share of false rejections among all rejections, 0 when there are none) at most
    alpha for independent or positively dependent tests. It does not control the family-wise
    error rate except under the global null, where the two coincide. nan entries pass through
    as nan and are not counted in the family size m.

    Args:
        p_values: Raw p-values in [0, 1] (or nan).

    Returns:
        Adjusted p-values in input order: for the k-th smallest p-value (k = 1..m), the minimum
        over j >= k of m * p_(j) / j, clipped to 1.
    """
    p, idx = _valid_p(p_values)
    out = np.full(p.shape, _NAN)
    m = idx.size
    if m:
        order = np.argsort(p[idx], kind="stable")
        scaled = m * p[idx][order] / np.arange(1, m + 1)
        adjusted = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
        out[idx[order]] = adjusted
    return [float(v) for v in out]


def adjust_p_values(p_values: Sequence[float], method: str) -> list[float]:
    """Adjust a family of p-values for multiplicity.

    Args:
        p_values: Raw p-values in [0, 1] (nan: no test; passes through, not counted).
        method: "holm" (:func:`holm_bonferroni`, family-wise error rate), "bh"
            (:func:`benjamini_hochberg`, false discovery rate) or "none" (raw p-values: each
            verdict alone keeps its error rate, the family does not).

    Returns:
        Adjusted p-values in input order.
    """
    if method == "holm":
        return holm_bonferroni(p_values)
    if method == "bh":
        return benjamini_hochberg(p_values)
    if method == "none":
        p, _ = _valid_p(p_values)
        return [float(v) for v in p]
    raise ValueError(f"unknown multiplicity method {method!r}; expected one of "
                     f"{', '.join(MULTIPLICITY)}")
