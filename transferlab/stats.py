"""Statistics for comparing transfer-learning strategies across label budgets and seeds.

Pure numpy/scipy helpers: t intervals, paired tests (t and bootstrap over seeds x test
examples), effect verdicts, learning-curve summaries and Holm correction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as _sps

__all__ = [
    "area_under_learning_curve",
    "holm_bonferroni",
    "labels_to_reach",
    "mean_ci",
    "paired_bootstrap_diff",
    "paired_t_test",
    "verdict",
]

_NAN = float("nan")
# Upper bound on elements of one (replicates x examples) count block in the bootstrap.
_BLOCK_ELEMENTS = 2_000_000


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
    half = float(_sps.t.ppf(0.5 + confidence / 2.0, df=n - 1)) * std / math.sqrt(n)
    return {
        "mean": mean,
        "std": std,
        "ci_low": mean - half,
        "ci_high": mean + half,
        "n": n,
        "method": "t",
    }


def _replicate_stats(d: np.ndarray, seed_idx: np.ndarray, ex_idx: np.ndarray) -> np.ndarray:
    """Bootstrap statistics for given resampling indices (vectorised via index counts).

    Args:
        d: (S, N) per-example differences a - b.
        seed_idx: (B, S) resampled seed indices, one row per replicate.
        ex_idx: (B, N) resampled example indices, shared by all seeds of a replicate.

    Returns:
        (B,) array: mean over resampled seeds and examples of d for each replicate.
    """
    s, n = d.shape
    b = seed_idx.shape[0]
    rows = np.arange(b)[:, None]
    seed_counts = np.bincount((seed_idx + rows * s).ravel(), minlength=b * s).reshape(b, s)
    ex_counts = np.bincount((ex_idx + rows * n).ravel(), minlength=b * n).reshape(b, n)
    weighted = seed_counts.astype(float) @ d  # (B, N): sum over drawn seeds
    return np.einsum("bn,bn->b", weighted, ex_counts.astype(float)) / (s * n)


def paired_bootstrap_diff(
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Paired bootstrap of the accuracy difference A - B over seeds x test examples.

    Each replicate resamples seeds with replacement and, independently, test examples with
    replacement; the same example indices are used for A and B and for every seed of the
    replicate. The CI is the percentile interval of the replicate statistics.

    p-value rule: p = 2 * min(mean(d* <= 0), mean(d* >= 0)), then clipped to
    [1 / n_boot, 1]. (Replicates exactly equal to 0 count on both sides, so an all-zero
    bootstrap distribution gives p = 1.)

    Args:
        correct_a: (S, N) 0/1 correctness (or float per-example scores) of strategy A; a 1-D
            array is treated as a single seed.
        correct_b: Same shape, baseline B, paired with A by seed and example.
        n_boot: Number of bootstrap replicates (>= 1).
        confidence: Two-sided confidence level in (0, 1).
        seed: Seed for ``np.random.default_rng``.

    Returns:
        {"diff" (mean over seeds of acc_a - acc_b), "ci_low", "ci_high", "p_value", "n_boot",
        "method": "paired bootstrap over seeds x test examples"}.
    """
    _check_confidence(confidence)
    if int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    n_boot = int(n_boot)
    a = np.asarray(correct_a, dtype=float)
    b = np.asarray(correct_b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")
    if a.ndim == 1:
        a, b = a[None, :], b[None, :]
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"expected non-empty (S, N) arrays, got shape {a.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("inputs contain non-finite values")
    d = a - b
    s, n = d.shape
    observed = float(np.mean(d.mean(axis=1)))

    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_ELEMENTS // max(n, s))
    reps = np.empty(n_boot, dtype=float)
    for start in range(0, n_boot, block):
        stop = min(n_boot, start + block)
        seed_idx = rng.integers(0, s, size=(stop - start, s))
        ex_idx = rng.integers(0, n, size=(stop - start, n))
        reps[start:stop] = _replicate_stats(d, seed_idx, ex_idx)

    alpha = 1.0 - confidence
    ci_low, ci_high = np.quantile(reps, [alpha / 2.0, 1.0 - alpha / 2.0])
    p = 2.0 * min(float(np.mean(reps <= 0.0)), float(np.mean(reps >= 0.0)))
    p = min(1.0, max(p, 1.0 / n_boot))
    return {
        "diff": observed,
        "ci_low": float(ci_low),
        "ci_high": float(ci_high),
        "p_value": p,
        "n_boot": n_boot,
        "method": "paired bootstrap over seeds x test examples",
    }


def paired_t_test(
    a: Sequence[float], b: Sequence[float], confidence: float = 0.95
) -> dict[str, Any]:
    """Paired t test of a - b (scipy.stats.ttest_rel) with a t interval for the mean difference.

    Degenerate cases (documented rule):
      * n == 1: diff = a[0] - b[0]; CI and p are nan (no variance estimate).
      * n >= 2 and all differences exactly equal to d: the t interval collapses to (d, d);
        p = 0.0 if d != 0 (as ttest_rel's infinite t statistic) and 1.0 if d == 0 (no evidence
        of a difference; ttest_rel would return nan for 0/0).

    Args:
        a: Per-seed metric of strategy A (finite).
        b: Per-seed metric of baseline B, paired with ``a``, same length.
        confidence: Two-sided confidence level in (0, 1).

    Returns:
        {"diff", "ci_low", "ci_high", "p_value", "n", "method": "paired t"}.
    """
    _check_confidence(confidence)
    x = _finite_1d(a, "a")
    y = _finite_1d(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"length mismatch: {x.size} vs {y.size}")
    d = x - y
    n = int(d.size)
    out: dict[str, Any] = {"n": n, "method": "paired t"}
    if n == 1:
        out.update(diff=float(d[0]), ci_low=_NAN, ci_high=_NAN, p_value=_NAN)
        return out
    if np.all(d == d[0]):
        d0 = float(d[0])
        out.update(diff=d0, ci_low=d0, ci_high=d0, p_value=0.0 if d0 != 0.0 else 1.0)
        return out
    ci = mean_ci(d, confidence)
    p = float(_sps.ttest_rel(x, y).pvalue)
    out.update(diff=ci["mean"], ci_low=ci["ci_low"], ci_high=ci["ci_high"], p_value=p)
    return out


def verdict(ci_low: float, ci_high: float) -> str:
    """Classify an effect from its confidence interval on the difference (strategy - baseline).

    Args:
        ci_low: Lower CI bound.
        ci_high: Upper CI bound.

    Returns:
        "negative transfer" if ci_high < 0, "positive transfer" if ci_low > 0, otherwise
        "no detectable effect" (including any nan bound).
    """
    if math.isnan(ci_low) or math.isnan(ci_high):
        return "no detectable effect"
    if ci_low > ci_high:
        raise ValueError(f"ci_low ({ci_low}) > ci_high ({ci_high})")
    if ci_high < 0:
        return "negative transfer"
    if ci_low > 0:
        return "positive transfer"
    return "no detectable effect"


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


def holm_bonferroni(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values.

    nan entries pass through as nan and are not counted in the family size m.

    Args:
        p_values: Raw p-values in [0, 1] (or nan).

    Returns:
        Adjusted p-values in input order: running max of (m - k) * p_(k) over the sorted
        p-values (k = 0..m-1), clipped to 1.
    """
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"p_values must be one-dimensional, got shape {p.shape}")
    valid = ~np.isnan(p)
    if np.any((p[valid] < 0) | (p[valid] > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    out = np.full(p.shape, _NAN)
    idx = np.flatnonzero(valid)
    m = idx.size
    if m:
        order = np.argsort(p[idx], kind="stable")
        scaled = (m - np.arange(m)) * p[idx][order]
        adjusted = np.minimum(np.maximum.accumulate(scaled), 1.0)
        out[idx[order]] = adjusted
    return [float(v) for v in out]
