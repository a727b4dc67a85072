"""Tests for transferlab.evaluation.selection_sim (the selection-rule simulation)."""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import pytest

from transferlab.adapt.selection import holdout_count
from transferlab.config.params import SelectionParams
from transferlab.evaluation.selection_sim import (
    DEFAULT_RULES,
    Candidate,
    Predictor,
    Rule,
    TaskSpec,
    markdown_table,
    rule_scores,
    simulate,
    simulate_records,
)

HOLDOUT, HOLDOUT_X3 = Rule("holdout"), Rule("holdout_x3", repeats=3)
KFOLD3 = Rule("kfold3", SelectionParams(scheme="kfold", folds=3))
KFOLD5 = Rule("kfold5", SelectionParams(scheme="kfold", folds=5))
SMALL = TaskSpec(classes=(5, 5), dims=(20, 20), test_size=1000)


def _ncm_on(share: float) -> Candidate:
    """Nearest class mean on the first ``share`` of the features: less of the signal."""

    def fit(x: np.ndarray, y: np.ndarray, c: int) -> Predictor:
        k = max(1, int(share * x.shape[1]))
        mu = np.stack([x[y == j, :k].mean(axis=0) for j in range(c)])
        return lambda z: np.argmin(((z[:, None, :k] - mu[None]) ** 2).sum(axis=2), axis=1)

    return Candidate(f"ncm_{share}", fit)


def _guess(tag: int) -> Candidate:
    """Uniformly random labels, seeded by the training data: every such candidate has the
    same quality (chance), with independent errors."""

    def fit(x: np.ndarray, y: np.ndarray, c: int) -> Predictor:
        rng = np.random.default_rng([tag, zlib.crc32(x.tobytes())])
        return lambda z: rng.integers(0, c, size=len(z))

    return Candidate(f"guess_{tag}", fit)


def _constant(x: np.ndarray, y: np.ndarray, c: int) -> Predictor:
    return lambda z: np.zeros(len(z), dtype=np.int64)


def _one_nn(x: np.ndarray, y: np.ndarray, c: int) -> Predictor:
    sq = (x * x).sum(axis=1)
    return lambda z: y[np.argmin(sq - 2 * z @ x.T, axis=1)]


def test_simulation_is_deterministic_for_a_seed() -> None:
    a = simulate(2, (2, 5), DEFAULT_RULES, seed=11, spec=SMALL)
    b = simulate(2, (2, 5), DEFAULT_RULES, seed=11, spec=SMALL)
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 2 * len(DEFAULT_RULES)
    ra = simulate_records(2, (2, 5), DEFAULT_RULES, seed=11, spec=SMALL)
    rc = simulate_records(2, (2, 5), DEFAULT_RULES, seed=12, spec=SMALL)
    assert not ra["best_acc"].equals(rc["best_acc"])  # the seed matters


def test_large_held_out_set_selects_the_truly_best() -> None:
    # 150 labels per class, 51 held out each: the clearly best candidate (all features) is
    # chosen although it is listed last; 1-NN (perfect on its own training data) is listed
    # too, so scoring on the training part would choose it and fail here
    cands = [_guess(0), _ncm_on(0.25), Candidate("1nn", _one_nn), _ncm_on(0.5), _ncm_on(1.0)]
    spec = TaskSpec(classes=(5, 5), dims=(20, 20), separation=(3.0, 4.0), multimodal_share=0.0,
                    test_size=1000)
    rec = simulate_records(10, (150,), [HOLDOUT], seed=3, candidates=cands, spec=spec)
    assert (rec["best"] == "ncm_1.0").mean() >= 0.9
    assert rec["correct"].mean() >= 0.9


def test_candidates_of_identical_quality_are_chosen_at_chance() -> None:
    cands = [_guess(k) for k in range(4)]
    rec = simulate_records(160, (2, 4), [HOLDOUT], seed=5, candidates=cands, spec=SMALL)
    # 320 choices: chance is 1/4 (plus exact ties on the test set), s.e. about 0.025
    assert abs(rec["correct"].mean() - 0.25) < 0.08
    # held-out ties go to the earlier candidate, yet every one is chosen now and then
    assert rec["selected"].nunique() == len(cands)


def test_kfold_scores_every_budget_label_exactly_once() -> None:
    y = np.repeat(np.arange(3), [3, 5, 4])
    x = np.random.default_rng(0).standard_normal((len(y), 4))
    cands = [Candidate("zero", _constant)]
    for rule in (KFOLD3, KFOLD5):  # K = min(folds, smallest class count) = 3 for both
        scores, fits, held = rule_scores(x, y, rule, cands, seed=1)
        assert held.tolist() == [1] * len(y)
        assert fits == 3 + 1
        # predicting class 0 everywhere: the pooled accuracy is class 0's share of the budget
        assert scores[0] == pytest.approx(np.mean(y == 0))
    scores, fits, held = rule_scores(x, y, HOLDOUT, cands, seed=1)
    n_held = sum(holdout_count(n, 0.34) for n in (3, 5, 4))
    assert (fits, held.sum(), held.max()) == (2, n_held, 1)
    scores, fits, held = rule_scores(x, y, HOLDOUT_X3, cands, seed=1)
    assert (fits, held.sum()) == (4, 3 * n_held)


def test_regret_is_non_negative_and_zero_exactly_when_correct() -> None:
    rec = simulate_records(4, (2, 3, 10), DEFAULT_RULES, seed=2, spec=SMALL)
    assert (rec["regret"] >= 0).all()
    assert ((rec["regret"] == 0) == rec["correct"]).all()
    tests = rec[[c for c in rec.columns if c.startswith("test_")]]
    assert np.allclose(rec["best_acc"], tests.max(axis=1))


def test_budgets_below_two_labels_per_class_are_refused() -> None:
    with pytest.raises(ValueError, match=">= 2 labels per class"):
        simulate_records(1, (1, 5), DEFAULT_RULES, seed=0)


def test_markdown_table_has_a_row_per_rule_and_budget() -> None:
    summary = simulate(2, (2, 3), DEFAULT_RULES[:2], seed=0, spec=SMALL)
    lines = markdown_table(summary).splitlines()
    assert len(lines) == 2 + 2 * 2
    assert lines[2].startswith("| 2 | holdout | 2 |")
    assert "+0.00" in lines[2]  # the reference's difference to itself
