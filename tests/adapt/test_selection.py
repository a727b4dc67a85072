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


# ------------------------------------------------------------------------------- k-fold
@pytest.mark.parametrize(("per_class", "folds", "want"), [(2, 3, 2), (3, 3, 3), (10, 3, 3),
                                                          (10, 5, 5), (7, 3, 3)])
def test_kfold_holds_every_budget_label_out_exactly_once(per_class: int, folds: int,
                                                         want: int) -> None:
    from transferlab.adapt.selection import KFOLD
    budget = _budget(per_class)
    plan = plan_selection(budget, LABELS, SelectionParams(scheme="kfold", folds=folds), seed=3)
    assert plan.method == KFOLD and len(plan.folds) == want
    held = np.concatenate([h for _, h in plan.folds])
    assert np.array_equal(np.sort(held), budget)  # each label out of fold once
    sizes = [len(h) for _, h in plan.folds]
    assert max(sizes) - min(sizes) <= 1
    for train, out in plan.folds:
        assert np.array_equal(np.union1d(train, out), budget)
        assert np.intersect1d(train, out).size == 0
        assert set(LABELS[train]) == set(range(4))  # every class trains in every fold
    assert np.array_equal(plan.refit_idx, budget)
    assert plan.record()["folds"] == want
    # seeded: the same seed deals the same folds
    again = plan_selection(budget, LABELS, SelectionParams(scheme="kfold", folds=folds), seed=3)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(plan.folds, again.folds, strict=True))


def test_kfold_below_two_labels_per_class_is_a_fixed_schedule() -> None:
    plan = plan_selection(_budget(1), LABELS, SelectionParams(scheme="kfold"), seed=0)
    assert plan.method == FIXED


def test_kfold_needs_a_refit() -> None:
    from transferlab.config.typed import from_dict
    from transferlab.core.errors import ParamsError
    with pytest.raises(ParamsError, match=r"selection\.refit: kfold needs refit: true"):
        from_dict(SelectionParams, {"scheme": "kfold", "refit": False}, "selection")


def test_pooled_folds_choose_the_epoch_of_the_best_out_of_fold_accuracy() -> None:
    """Two folds of 3 and 1 held-out labels: epoch scores weigh 3:1; the pooled curve stops at
    the epochs both folds ran; the choice most folds made is replayed."""
    from transferlab.adapt.replicates import pool_folds

    def fold(scores: list[float], losses: list[float], choice: dict) -> tuple:
        history = [{"epoch": e + 1, "train_loss": 1.0, "val_loss": loss, "val_accuracy": s}
                   for e, (s, loss) in enumerate(zip(scores, losses, strict=True))]
        summary = {"best_epoch": 1, "epochs_run": len(history), "steps": 2 * len(history),
                   "best_val_accuracy": max(scores), "best_val_loss": min(losses),
                   "history": history}
        return ("model", summary, choice, 10, 100)

    fits = [(3, fold([0.0, 2 / 3, 1 / 3, 1.0], [1.0, 0.5, 0.6, 0.1], {"alpha": 0.5})),
            (1, fold([1.0, 0.0, 1.0], [0.2, 0.9, 0.3], {"alpha": 0.5}))]
    model, summary, choice, trainable, flops = pool_folds(fits)
    curve = [r["val_accuracy"] for r in summary["history"]]
    assert curve == pytest.approx([0.25, 0.5, 0.5])  # epoch 4: only the first fold ran it
    # epochs 2 and 3 tie at 0.5; epoch 3's pooled loss is lower (0.525 against 0.6)
    assert summary["best_epoch"] == 3
    assert summary["best_val_accuracy"] == pytest.approx(0.5)
    assert summary["best_val_loss"] == pytest.approx(0.75 * 0.6 + 0.25 * 0.3)
    assert summary["steps"] == 14 and summary["epochs_run"] == 7
    assert (model, choice, trainable, flops) == ("model", {"alpha": 0.5}, 10, 200)


def test_a_refit_that_ends_on_a_loss_spike_is_flagged() -> None:
    from transferlab.adapt.replicates import refit_check
    chosen = {"best_epoch": 2, "history": [{"train_loss": 1.0}, {"train_loss": 0.4},
                                           {"train_loss": 0.3}]}

    def refit(*losses: float) -> dict:
        return {"history": [{"train_loss": v} for v in losses]}

    assert refit_check(chosen, refit(0.9, 0.5), 1.5) == {
        "chosen_train_loss": 0.4, "final_train_loss": 0.5, "unstable": False}
    assert refit_check(chosen, refit(0.9, 0.61), 1.5)["unstable"] is True  # > 1.5 x 0.4
    assert refit_check(chosen, refit(0.9, 0.61), 2.0)["unstable"] is False
    tiny = {"best_epoch": 1, "history": [{"train_loss": 0.01}]}
    assert refit_check(tiny, refit(0.05), 1.5)["unstable"] is False  # within the noise
