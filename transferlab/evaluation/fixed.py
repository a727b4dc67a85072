"""Curves whose test predictions are the same for every seed and budget: judged per example.

A prompt that reads no label (``zero_shot``, with or without calibration) or a source model
used as it is gives one set of predictions, whatever the seed and the budget. Its per-seed
differences from another such curve are all equal, so the seed-paired t-test of
:mod:`~transferlab.evaluation.analysis` has no spread to work with (the test of its gain over
scratch still has scratch's). What can be asked of such a curve is about this one model on texts
like the test set, so the test example is the unit:

- against chance: an exact binomial test of the curve's test accuracy against the share of the
  test set's most frequent class (the accuracy of the best constant guess);
- against each other fixed curve of the same source: McNemar's exact test, a binomial test of
  the discordant pairs (right by one, wrong by the other) at 1/2 (``scipy.stats.binomtest``).

Every such p-value of one evaluate output is one family, adjusted by ``evaluate.multiplicity``
apart from the seed-level family; the verdict follows the adjusted p-value and the sign, at
alpha = 1 - ``evaluate.confidence``. Both tests are exact, so their error rates hold at any test
size (checked by simulation in the tests). The classification task only.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np
from scipy.stats import binomtest

from transferlab.config.params import EvaluateParams
from transferlab.evaluation.analysis import curve_name
from transferlab.evaluation.stats import adjust_p_values, verdict

RULE = ("the test example is the unit: an exact binomial test against the most frequent test "
        "class's share (chance), and McNemar's exact test between two such curves of one "
        "source; one family, adjusted apart from the seed-level verdicts")


def fixed_curves(results: Sequence) -> dict[str, np.ndarray]:
    """{curve: its (N,) predicted classes} for every curve whose runs (two or more) all predict
    the same class for every test example."""
    grouped: dict[str, list[np.ndarray]] = {}
    for r in results:
        grouped.setdefault(curve_name(r.key["source"], r.key["strategy"]), []).append(
            np.asarray(r.proba).argmax(1))
    return {curve: preds[0] for curve, preds in sorted(grouped.items())
            if len(preds) > 1 and all(np.array_equal(preds[0], p) for p in preds[1:])}


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """McNemar's exact test of two classifiers on the same examples: ``b`` examples only A got
    right, ``c`` only B; the p-value of ``b`` of ``b + c`` under 1/2, two-sided (1 where
    they never disagree)."""
    a, b_ = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    b, c = int((a & ~b_).sum()), int((~a & b_).sum())
    p = binomtest(b, b + c, 0.5).pvalue if b + c else 1.0
    return {"only_a": b, "only_b": c, "diff": (b - c) / len(a), "p_value": float(p)}


def against_chance(correct: np.ndarray, chance: float) -> dict:
    """The exact binomial test of accuracy ``mean(correct)`` against ``chance``, two-sided."""
    k, n = int(np.sum(correct)), len(correct)
    return {"accuracy": k / n, "chance": chance, "diff": k / n - chance,
            "p_value": float(binomtest(k, n, chance).pvalue)}


def judge_fixed(results: Sequence, truth: np.ndarray, p: EvaluateParams) -> dict:
    """Every fixed curve against chance, and every pair of them on one source against each
    other, as one family (see the module's docstring).

    Returns:
        {} where fewer than one curve is fixed; else {"unit", "rule", "alpha",
        "multiplicity", "curves": {curve: against_chance + verdict}, "pairs": [{"a", "b",
        ...mcnemar_exact, "p_adjusted", "verdict"}]}: ``diff`` is a minus b, verdicts "better",
        "worse" or "no detectable difference" (of a, or of the curve against chance).
    """
    truth = np.asarray(truth)
    fixed = fixed_curves(results)
    if not fixed or truth.ndim != 1:
        return {}
    chance = float(np.bincount(truth.astype(int)).max() / len(truth))
    correct = {c: pred == truth for c, pred in fixed.items()}
    curves = {c: against_chance(ok, chance) for c, ok in correct.items()}
    pairs = [{"a": a, "b": b, **mcnemar_exact(correct[a], correct[b])}
             for a, b in combinations(sorted(fixed), 2)
             if a.split("/")[0] == b.split("/")[0]]
    family = [*curves.values(), *pairs]
    alpha = 1.0 - p.confidence
    words = {"positive transfer": "better", "negative transfer": "worse",
             "no detectable effect": "no detectable difference"}
    for test, q in zip(family, adjust_p_values([t["p_value"] for t in family], p.multiplicity),
                       strict=True):
        test["p_adjusted"] = q
        test["verdict"] = words[verdict(test["diff"], q, alpha)]
    return {"unit": "test example", "rule": RULE, "alpha": alpha,
            "multiplicity": p.multiplicity, "n": len(truth), "curves": curves, "pairs": pairs}
