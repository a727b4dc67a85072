"""Tests for transferlab.adapt.selection: the within-budget protocol. That the test split never
chooses (permuting the test labels leaves every checkpoint, recommendation and champion) is
checked end to end by tests/test_pipeline.py's forced rerun."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transferlab.adapt.selection import (
    EXTERNAL,
    FIXED,
    HOLDOUT,
    holdout_count,
    labels_per_class_used,
    plan_selection,
)
from transferlab.config.params import SelectionParams, TrainParams
from transferlab.training.loop import fit

LABELS = np.repeat(np.arange(4), 12)  # a pool of 4 classes x 12


def _budget(per_class: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(np.equal(LABELS, c)))[:per_class]
                                   for c in range(4)]))


@pytest.mark.parametrize(("n", "fraction", "want"), [
    (2, 0.34, 1), (3, 0.34, 1), (10, 0.34, 3), (30, 0.34, 10), (2, 0.9, 1), (5, 0.5, 3),
    (100, 0.01, 1)])
def test_holdout_count(n: int, fraction: float, want: int) -> None:
    assert holdout_count(n, fraction) == want


@pytest.mark.parametrize("per_class", [2, 3, 10])
def test_holdout_split_is_a_per_class_partition_of_the_budget(per_class: int) -> None:
    budget = _budget(per_class)
    plan = plan_selection(budget, LABELS, SelectionParams(), seed=7)
    assert plan.method == HOLDOUT
    assert np.intersect1d(plan.train_idx, plan.choose_on).size == 0
    assert np.array_equal(np.union1d(plan.train_idx, plan.choose_on), budget)
    held = holdout_count(per_class, 0.34)
    assert np.array_equal(np.bincount(LABELS[plan.choose_on], minlength=4), [held] * 4)
    assert np.array_equal(np.bincount(LABELS[plan.train_idx], minlength=4),
                          [per_class - held] * 4)
    assert np.array_equal(plan.refit_idx, budget)
    assert plan.record() == {"selection_method": "holdout",
                             "fit_examples": 4 * (per_class - held),
                             "holdout_examples": 4 * held, "refit": True}


def test_holdout_split_is_seeded() -> None:
    budget = _budget(10)
    a, b = (plan_selection(budget, LABELS, SelectionParams(), seed=s) for s in (1, 1))
    c = plan_selection(budget, LABELS, SelectionParams(), seed=2)
    assert np.array_equal(a.choose_on, b.choose_on)
    assert not np.array_equal(a.choose_on, c.choose_on)


def test_one_label_per_class_uses_a_fixed_schedule() -> None:
    budget = _budget(1)
    plan = plan_selection(budget, LABELS, SelectionParams(), seed=0)
    assert (plan.method, plan.choose_on, plan.refit_idx) == (FIXED, None, None)
    assert np.array_equal(plan.train_idx, budget)
    # a higher threshold turns the 3-label budget into a fixed schedule too
    plan = plan_selection(_budget(3), LABELS, SelectionParams(min_labels_to_split=4), seed=0)
    assert plan.method == FIXED


def test_no_refit_trains_on_the_fit_part_only() -> None:
    plan = plan_selection(_budget(10), LABELS, SelectionParams(refit=False), seed=0)
    assert plan.method == HOLDOUT and plan.refit_idx is None and plan.record()["refit"] is False


def test_external_val_trains_on_the_whole_budget_and_counts_the_val_labels() -> None:
    budget = _budget(3)
    plan = plan_selection(budget, LABELS, SelectionParams(protocol="external_val"), seed=0)
    assert (plan.method, plan.choose_on, plan.refit_idx) == (EXTERNAL, None, None)
    assert np.array_equal(plan.train_idx, budget)
    assert labels_per_class_used(3, "external_val", 10) == 13
    assert labels_per_class_used(3, "within_budget", 10) == 3


def test_fit_without_validation_runs_the_fixed_schedule_and_keeps_the_last_epoch() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    x, y = torch.randn(8, 4), torch.tensor([0, 1] * 4)
    summary = fit(model, (x, y), None, TrainParams(epochs=5, batch_size=4, patience=1),
                  [{"params": list(model.parameters())}], torch.Generator().manual_seed(0),
                  torch.device("cpu"), augment=False)
    assert (summary["epochs_run"], summary["best_epoch"], summary["steps"]) == (5, 5, 10)
    assert summary["best_val_accuracy"] is None and summary["best_val_loss"] is None
    assert all(set(row) == {"epoch", "train_loss"} for row in summary["history"])
