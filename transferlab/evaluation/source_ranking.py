"""Judging a ranking of candidate sources: how well a transferability score orders the sources
by their realised target accuracy, with a confidence interval over sources.

The unit of inference is the source: with n candidate sources a rank correlation rests on n
points, whatever the number of seeds or test examples behind each accuracy. Pure functions.

Intervals (all on Fisher's z = atanh scale, then back with tanh, so they stay inside [-1, 1]):

* Kendall's tau: Fieller, Hartley and Pearson (1957, Biometrika 44: 470-481),
  var(atanh tau) = 0.437 / (n - 4), normal quantile. Needs n >= 5. Measured coverage of the 95%
  interval under bivariate-normal sources (3,000 simulated rankings each, 2026-12-06; the
  population tau is (2 / pi) asin(rho)):

  ======  ===========  ===========  ===========
  n       rho = 0      rho = 0.6    rho = 0.9
  ======  ===========  ===========  ===========
  5       0.979        0.938        0.773
  9       0.958        0.938        0.927
  15      0.949        0.953        0.928
  ======  ===========  ===========  ===========

  So it is near nominal from 9 sources on, a little short where the scores agree closely, and
  far short at 5 sources with strong agreement: below 5 sources no agreement is trusted
  (:data:`transferlab.evaluation.analysis.MIN_AGREEMENT_SOURCES`), and at 5 to 8 the interval
  is a rough guide. tests/evaluation/test_source_ranking.py checks coverage at n = 9. A
  bootstrap over sources is not used: at n ~ 9 a resample repeats about a third of the
  sources, the repeats become ties, and tau-b of the resamples is biased toward 0.
* Weighted tau (Vigna, 2015; hyperbolic weights, as scipy.stats.weightedtau and TLlib): it has no
  known sampling variance, so the interval is the delete-one jackknife over sources of
  atanh(weighted tau), with a Student t quantile on n - 2 degrees of freedom. Its population
  value depends on n (the weights are by rank), so the interval covers the expected weighted
  tau of n sources; the simulation test checks that coverage. Treat it as approximate: measured
  (as above, 1,000 rankings each) 0.974 / 0.927 / 0.784 at n = 5 for rho = 0 / 0.6 / 0.9,
  0.964 / 0.991 / 0.982 at n = 9 and 0.949 / 0.959 / 0.987 at n = 15.
* Pearson's r: Fisher (1921), var(atanh r) = 1 / (n - 3), normal quantile. Needs n >= 4.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats as _sps

__all__ = ["FHP_VARIANCE", "judge_ranking", "kendall_ci", "pearson_ci", "weighted_tau_ci"]

FHP_VARIANCE = 0.437  # Fieller, Hartley & Pearson (1957): var(atanh tau) ~ 0.437 / (n - 4)
_NAN = float("nan")
_CLIP = 1.0 - 1e-12  # atanh(+-1) is infinite: a perfect sample correlation keeps a finite bound


def _z(x: float) -> float:
    return math.atanh(max(-_CLIP, min(_CLIP, x)))


def _interval(estimate: float, se: float, quantile: float) -> tuple[float, float]:
    z = _z(estimate)
    return math.tanh(z - quantile * se), math.tanh(z + quantile * se)


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def kendall_ci(tau: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Fieller-Hartley-Pearson interval for Kendall's tau over ``n`` paired observations.

    Args:
        tau: the sample Kendall tau.
        n: the number of pairs (sources).
        confidence: the interval's level.

    Returns:
        (low, high); (nan, nan) when n < 5 or tau is not finite.
    """
    _check_confidence(confidence)
    if n < 5 or not math.isfinite(tau):
        return _NAN, _NAN
    q = _sps.norm.ppf(0.5 + confidence / 2)
    return _interval(tau, math.sqrt(FHP_VARIANCE / (n - 4)), q)


def pearson_ci(r: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Fisher z interval for Pearson's r over ``n`` pairs; (nan, nan) when n < 4."""
    _check_confidence(confidence)
    if n < 4 or not math.isfinite(r):
        return _NAN, _NAN
    q = _sps.norm.ppf(0.5 + confidence / 2)
    return _interval(r, 1.0 / math.sqrt(n - 3), q)


def _weighted_tau(x: np.ndarray, y: np.ndarray) -> float:
    if np.all(x == x[0]) or np.all(y == y[0]):
        return _NAN
    return float(_sps.weightedtau(x, y)[0])


def weighted_tau_ci(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray,
                    confidence: float = 0.95) -> tuple[float, float]:
    """Delete-one jackknife interval for weighted tau on the atanh scale (t, n - 2 df).

    Args:
        x: one score per source (finite).
        y: the matching realised accuracy (finite).
        confidence: the interval's level.

    Returns:
        (low, high); (nan, nan) with fewer than 5 sources or where a leave-one-out sample is
        constant on either side.
    """
    _check_confidence(confidence)
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = x.size
    if n < 5:
        return _NAN, _NAN
    full = _weighted_tau(x, y)
    keep = ~np.eye(n, dtype=bool)
    loo = np.array([_weighted_tau(x[k], y[k]) for k in keep])
    if not math.isfinite(full) or not np.all(np.isfinite(loo)):
        return _NAN, _NAN
    z_loo = np.arctanh(np.clip(loo, -_CLIP, _CLIP))
    se = math.sqrt((n - 1) / n * float(np.sum((z_loo - z_loo.mean()) ** 2)))
    return _interval(full, se, _sps.t.ppf(0.5 + confidence / 2, n - 2))


def judge_ranking(scores: Sequence[float] | np.ndarray, accuracies: Sequence[float] | np.ndarray,
                  confidence: float = 0.95) -> dict[str, float | int]:
    """How well ``scores`` order the sources by ``accuracies``, with intervals over sources.

    Kendall's tau-b (scipy.stats.kendalltau), weighted tau (scipy.stats.weightedtau, hyperbolic
    weights, as TLlib reports) and Pearson's r, over the sources where both values are finite.

    Args:
        scores: one transferability score per source.
        accuracies: the matching realised target accuracy per source.
        confidence: the level of every interval.

    Returns:
        {"n_sources", "kendall_tau", "kendall_ci_low", "kendall_ci_high", "weighted_tau",
        "weighted_ci_low", "weighted_ci_high", "pearson_r", "pearson_ci_low",
        "pearson_ci_high"}; the estimates are nan with fewer than 2 finite pairs or a constant
        side, the intervals nan where the module docstring says.
    """
    _check_confidence(confidence)
    s, a = np.asarray(scores, dtype=np.float64), np.asarray(accuracies, dtype=np.float64)
    if s.ndim != 1 or a.shape != s.shape:
        raise ValueError(f"scores and accuracies must be 1-D of one length, got shapes "
                         f"{s.shape} and {a.shape}")
    keep = np.isfinite(s) & np.isfinite(a)
    s, a = s[keep], a[keep]
    n = int(s.size)
    out: dict[str, float | int] = {"n_sources": n}
    for k in ("kendall_tau", "kendall_ci_low", "kendall_ci_high", "weighted_tau",
              "weighted_ci_low", "weighted_ci_high", "pearson_r", "pearson_ci_low",
              "pearson_ci_high"):
        out[k] = _NAN
    if n < 2 or np.all(s == s[0]) or np.all(a == a[0]):
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        tau = float(_sps.kendalltau(s, a)[0])
        r = float(_sps.pearsonr(s, a)[0])
    out["kendall_tau"], out["weighted_tau"], out["pearson_r"] = tau, _weighted_tau(s, a), r
    out["kendall_ci_low"], out["kendall_ci_high"] = kendall_ci(tau, n, confidence)
    out["weighted_ci_low"], out["weighted_ci_high"] = weighted_tau_ci(s, a, confidence)
    out["pearson_ci_low"], out["pearson_ci_high"] = pearson_ci(r, n, confidence)
    return out
