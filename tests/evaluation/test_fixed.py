"""Tests for transferlab.evaluation.fixed: curves with one set of predictions, judged per test
example (an exact binomial test against chance, McNemar's exact test between two of them).

The references: McNemar's exact p-value written out from the binomial distribution
(``2 * P(X <= min(b, c))`` under Binomial(b + c, 1/2), capped at 1), and the error rates
by simulation under the null.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from transferlab.config.params import EvaluateParams
from transferlab.evaluation.evaluate import RunResult
from transferlab.evaluation.fixed import against_chance, fixed_curves, judge_fixed, mcnemar_exact


def _reference_mcnemar(b: int, c: int) -> float:
    n = b + c
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def _pair(b: int, c: int, both: int = 5, neither: int = 3) -> tuple[np.ndarray, np.ndarray]:
    a = np.array([1] * b + [0] * c + [1] * both + [0] * neither, bool)
    bb = np.array([0] * b + [1] * c + [1] * both + [0] * neither, bool)
    return a, bb


@pytest.mark.parametrize(("b", "c"), [(10, 2), (2, 10), (7, 7), (0, 6), (15, 4), (1, 0)])
def test_mcnemar_matches_the_binomial_formula(b: int, c: int) -> None:
    a, bb = _pair(b, c)
    out = mcnemar_exact(a, bb)
    assert (out["only_a"], out["only_b"]) == (b, c)
    assert out["diff"] == pytest.approx((b - c) / len(a))
    assert out["p_value"] == pytest.approx(_reference_mcnemar(b, c), rel=1e-9)


def test_mcnemar_of_two_classifiers_that_never_disagree_is_one() -> None:
    a = np.array([1, 0, 1, 1], bool)
    assert mcnemar_exact(a, a)["p_value"] == 1.0


def test_the_documented_error_rates_hold_by_simulation() -> None:
    """Under the null, each exact test rejects at most alpha (plus Monte Carlo error)."""
    rng = np.random.default_rng(0)
    reps, n, alpha = 2000, 100, 0.05
    mc, chance = 0, 0
    for _ in range(reps):
        # two classifiers of equal accuracy: the discordant pairs split evenly on average
        u = rng.random(n)
        a, b = (u < 0.6), (u < 0.45) | ((u >= 0.6) & (u < 0.75))
        mc += mcnemar_exact(a, b)["p_value"] < alpha
        chance += against_chance(rng.random(n) < 0.5, 0.5)["p_value"] < alpha
    bound = alpha + 3 * math.sqrt(alpha * (1 - alpha) / reps)
    assert mc / reps <= bound
    assert chance / reps <= bound
    # and they have power where the effect is large
    a, b = _pair(25, 5)
    assert mcnemar_exact(a, b)["p_value"] < alpha


def _runs(curve: str, preds: list[np.ndarray]) -> list[RunResult]:
    source, strategy = curve.split("/")
    out = []
    for seed, pred in enumerate(preds):
        proba = np.eye(2)[pred]
        out.append(RunResult({"source": source, "strategy": strategy, "budget": "2",
                              "seed": seed}, {}, np.zeros(len(pred), bool), proba))
    return out


def test_judge_fixed_finds_the_fixed_curves_and_judges_them_as_one_family() -> None:
    truth = np.array([0, 1] * 20)
    right = truth.copy()
    mostly = truth.copy()
    mostly[:12] = 1 - mostly[:12]  # 28 of 40 right
    varying = [truth.copy(), 1 - truth]
    results = (_runs("lm/zero_shot", [right, right, right])
               + _runs("lm/zero_shot_raw", [mostly, mostly])
               + _runs("lm/linear_probe", varying)
               + _runs("other/source_only", [right, right]))
    assert set(fixed_curves(results)) == {"lm/zero_shot", "lm/zero_shot_raw",
                                          "other/source_only"}
    out = judge_fixed(results, truth, EvaluateParams(multiplicity="holm"))
    assert out["n"] == 40
    assert out["curves"]["lm/zero_shot"]["accuracy"] == 1.0
    assert out["curves"]["lm/zero_shot"]["chance"] == 0.5
    assert out["curves"]["lm/zero_shot"]["verdict"] == "better"
    # pairs only within a source
    assert [(t["a"], t["b"]) for t in out["pairs"]] == [("lm/zero_shot", "lm/zero_shot_raw")]
    pair = out["pairs"][0]
    assert (pair["only_a"], pair["only_b"]) == (12, 0)
    assert pair["p_value"] == pytest.approx(_reference_mcnemar(12, 0))
    # Holm over the four tests: the smallest raw p-value times 4
    ps = sorted([*(t["p_value"] for t in out["curves"].values()), pair["p_value"]])
    assert min(t["p_adjusted"] for t in [*out["curves"].values(), pair]) == pytest.approx(
        min(1.0, 4 * ps[0]))
    assert pair["verdict"] == "better"


def test_judge_fixed_is_empty_without_a_fixed_curve() -> None:
    truth = np.array([0, 1, 0, 1])
    results = _runs("lm/linear_probe", [truth, 1 - truth])
    assert judge_fixed(results, truth, EvaluateParams()) == {}
