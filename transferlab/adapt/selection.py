"""The selection protocol: how a run chooses its epoch, and what ranks runs afterwards.

Every choice uses labelled examples inside the label budget, never the test split:

- ``within_budget`` (default). The budget's labels of each class are split, seeded per
  replicate, into a part the model trains on and a held-out part (``holdout_fraction`` of each
  class, at least one example, and at least one left to train on). Training early-stops on the
  held-out part and keeps its best epoch; the held-out accuracy there is the run's
  ``selection_score``, the number that later ranks strategies and picks the champion. With
  ``refit`` the model is then trained again from the same initialisation on *all* the budget's
  labels for the chosen number of epochs, so no label is spent on selection alone. Below
  ``min_labels_to_split`` labels per class (1 label per class by default) nothing can be held
  out without removing a class from training, so the run uses a fixed schedule: the strategy's
  ``epochs``, no early stopping, and no selection score (no choice between strategies is made
  at that budget).
- ``within_budget`` with ``scheme: kfold``: the budget's labels are dealt, per class and seeded
  per replicate, into K stratified folds (K = ``folds``, at most the smallest class's count).
  Every candidate trains once per fold on the other folds and is validated on its fold, so
  every budget label is scored exactly once out of fold. Each epoch's score is the folds'
  scores weighted by their sizes (for accuracy: the pooled out-of-fold accuracy); the epoch
  and candidate with the best pooled score are chosen (ties: lower pooled loss, then the
  earlier epoch), and the refit trains on every budget label for that many epochs. A choice a
  strategy makes after its fit (``wise_ft``'s alpha) is made per fold; the refit replays the
  one most folds made (ties: the earliest fold's).
- ``external_val``: the fixed validation set of ``prepare.val_per_class`` labelled examples per
  class chooses, at every budget. Those labels are outside the budget, so label efficiency
  counts them (budget + val_per_class labels per class) and the report says so.

The selection score is the held-out accuracy at the epoch that early stopping chose, a maximum
over epochs: it is biased upward, and more so for longer schedules. It ranks runs; the test
split (read once, by ``evaluate``) gives the unbiased estimate of the choice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from transferlab.config.params import SelectionParams

FIXED, HOLDOUT, KFOLD, EXTERNAL = "fixed_schedule", "holdout", "kfold", "external_val"


@dataclass(frozen=True)
class SelectionPlan:
    """How one (budget, seed) replicate trains and chooses.

    ``choose_on`` is the pool indices that choose the epoch (``holdout``), or None: the
    external validation set chooses (``external_val``) or nothing does (``fixed_schedule``).
    """

    method: str  # holdout | kfold | external_val | fixed_schedule
    train_idx: np.ndarray  # pool indices the choosing run trains on (kfold: the first fold's)
    choose_on: np.ndarray | None  # held-out pool indices (holdout; kfold: every budget label)
    refit_idx: np.ndarray | None  # pool indices of the refit on the whole budget, or None
    # kfold: ((train indices, held-out indices) per fold); holdout: the one split
    folds: tuple[tuple[np.ndarray, np.ndarray], ...] = ()

    def record(self) -> dict:
        """The runs.json fields that say how this run was chosen."""
        out = {"selection_method": self.method, "fit_examples": int(len(self.train_idx)),
               "holdout_examples": 0 if self.choose_on is None else int(len(self.choose_on)),
               "refit": self.refit_idx is not None}
        if self.method == KFOLD:
            out["folds"] = len(self.folds)
        return out


def holdout_count(n: int, fraction: float) -> int:
    """Labels of one class held out: ``fraction`` of ``n`` rounded half up, at least 1, and
    leaving at least 1 to train on (``n`` >= 2)."""
    return min(n - 1, max(1, math.floor(fraction * n + 0.5)))


def plan_selection(budget_idx: np.ndarray, pool_labels: np.ndarray, p: SelectionParams,
                   seed: int) -> SelectionPlan:
    """Split one replicate's budget for the selection protocol.

    Args:
        budget_idx: (B,) pool indices of the budget's labelled examples.
        pool_labels: (P,) labels of the whole pool.
        p: the ``selection`` params block.
        seed: the replicate's seed (the same split for every strategy of the replicate, so
            strategies are ranked on the same held-out examples).
    Returns:
        The :class:`SelectionPlan`.
    """
    budget_idx = np.asarray(budget_idx, dtype=np.int64)
    if p.protocol == "external_val":
        return SelectionPlan(EXTERNAL, budget_idx, None, None)
    labels = pool_labels[budget_idx]
    classes, counts = np.unique(labels, return_counts=True)
    if counts.min() < p.min_labels_to_split:
        return SelectionPlan(FIXED, budget_idx, None, None)
    rng = np.random.default_rng(seed)
    if p.scheme == "kfold":
        return _kfold(budget_idx, labels, classes, int(min(p.folds, counts.min())), rng)
    held = []
    for c in classes:
        members = budget_idx[labels == c]
        held.append(rng.permutation(members)[:holdout_count(len(members), p.holdout_fraction)])
    choose_on = np.sort(np.concatenate(held))
    train_idx = np.setdiff1d(budget_idx, choose_on)
    return SelectionPlan(HOLDOUT, train_idx, choose_on, budget_idx if p.refit else None,
                         ((train_idx, choose_on),))


def _kfold(budget_idx: np.ndarray, labels: np.ndarray, classes: np.ndarray, k: int,
           rng: np.random.Generator) -> SelectionPlan:
    """Stratified K folds: each class's labels, in a seeded order, dealt round-robin to the
    folds, the dealing starting where the last class's ended (fold sizes then differ by at most
    one overall, and every class is in every fold's training part: k <= its count)."""
    fold_of = np.empty(len(budget_idx), dtype=np.int64)
    start = 0
    for c in classes:
        members = np.flatnonzero(labels == c)
        order = rng.permutation(members)
        fold_of[order] = (start + np.arange(len(order))) % k
        start = (start + len(order)) % k
    folds = tuple((np.sort(budget_idx[fold_of != f]), np.sort(budget_idx[fold_of == f]))
                  for f in range(k))
    return SelectionPlan(KFOLD, folds[0][0], np.sort(budget_idx), budget_idx, folds)


def labels_per_class_used(budget_value: float, protocol: str, val_per_class: int) -> float:
    """Labelled examples per class a protocol consumes at a budget: the budget itself, plus the
    external validation set under ``external_val``."""
    return budget_value + (val_per_class if protocol == "external_val" else 0)
