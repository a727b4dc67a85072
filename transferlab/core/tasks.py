"""Tasks: what a target label is (a class or a number) and the few things that follow from it.

Two tasks are registered, ``classification`` and ``regression``. A prepared manifest without a
``task`` key is ``classification``: the store of every classification scenario is unchanged.

What a task decides, and the rest of the pipeline reads through it:

- the head's outputs (C logits, or one number) and the training loss (cross-entropy, or the
  mean squared error of the standardised target: see below);
- the validation score that early stopping and every choice rank by (accuracy, or R²);
- the test metrics (accuracy, macro recall / F1, ...; or MSE, MAE and R²) and the
  **headline** metric that the statistics, the recommendation and the report are built on
  (``accuracy``, or ``r2``);
- the per-example score whose mean is the headline: 1 for a correct prediction, 0 otherwise;
  or ``1 - (y - ŷ)² / Var(y_test)``, whose mean over the test set is R². A paired difference of
  R² between two runs is then their MSE difference divided by the fixed test variance, so the
  paired t over seeds is the same test whether it is read as R² or as MSE.

A regression target is **stratified**: ``prepare`` cuts it into ``strata`` quantile bins, and
the bins stand where classes stand for everything that only groups labels (the stratified
splits, the nested budgets in labels per stratum, the held-out part of each budget). The
network never sees the strata.

Targets are standardised per replicate with the mean and standard deviation of the budget's
labels (never the pool beyond the budget, never the test split): the head predicts the z-score,
the loss is the MSE of z-scores (the MSE in target units divided by the budget's variance), and
the checkpoint keeps the mean and deviation, so predictions come back in target units.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

import numpy as np

if TYPE_CHECKING:  # torch only where a loss is computed: the report stage never imports it
    import torch


class Task:
    """Base class: what a target label is."""

    name: ClassVar[str] = ""
    headline: ClassVar[str] = ""  # the metric key the statistics and report are built on
    headline_words: ClassVar[str] = ""  # the headline in the report's prose
    val_key: ClassVar[str] = ""  # the training record's key for the best validation score
    bounded: ClassVar[bool] = True  # the headline lies in [0, 1] (R² has no lower bound)
    group: ClassVar[str] = "class"  # what a budget counts labels per

    def outputs(self, num_classes: int) -> int:
        """Outputs of the head."""
        raise NotImplementedError

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Training loss of outputs ``out`` (B, K) against targets ``y`` (B,)."""
        raise NotImplementedError

    def val_score(self, out: torch.Tensor, y: torch.Tensor) -> float:
        """Higher is better: what early stopping and every choice rank by."""
        raise NotImplementedError

    def test_metrics(self, y: np.ndarray, pred: np.ndarray, bins: int) -> dict[str, float]:
        raise NotImplementedError

    def per_example(self, y: np.ndarray, pred: np.ndarray) -> np.ndarray:
        """(N,) scores whose mean is the headline metric."""
        raise NotImplementedError


class Classification(Task):
    name = "classification"
    headline = "accuracy"
    headline_words = "accuracy"
    val_key = "best_val_accuracy"

    def outputs(self, num_classes: int) -> int:
        return max(num_classes, 1)

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        return F.cross_entropy(out.float(), y)

    def val_score(self, out: torch.Tensor, y: torch.Tensor) -> float:
        return float((out.argmax(1) == y).double().mean())

    def test_metrics(self, y: np.ndarray, pred: np.ndarray, bins: int) -> dict[str, float]:
        from transferlab.core.metrics import classification_metrics

        return classification_metrics(y, pred, bins)

    def per_example(self, y: np.ndarray, pred: np.ndarray) -> np.ndarray:
        return (pred.argmax(1) == y).astype(np.float64)


class Regression(Task):
    name = "regression"
    headline = "r2"
    headline_words = "R²"
    val_key = "best_val_r2"
    bounded = False
    group = "stratum"

    def outputs(self, num_classes: int) -> int:
        return 1

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        return F.mse_loss(out.float().reshape(-1), y.float())

    def val_score(self, out: torch.Tensor, y: torch.Tensor) -> float:
        """R² on the validation targets; minus the MSE where they are all equal (R² undefined:
        only with ``strata: 1`` and a constant target), so a score always exists."""
        y, pred = y.double().numpy(), out.double().reshape(-1).numpy()
        score = r2(y, pred)
        return -float(np.mean((y - pred) ** 2)) if math.isnan(score) else score

    def test_metrics(self, y: np.ndarray, pred: np.ndarray, bins: int) -> dict[str, float]:
        return regression_metrics(y, pred)

    def per_example(self, y: np.ndarray, pred: np.ndarray) -> np.ndarray:
        y, pred = np.asarray(y, np.float64), np.asarray(pred, np.float64).reshape(-1)
        var = float(np.var(y))
        if var == 0.0:
            raise ValueError("the test targets are constant: R² is undefined")
        return 1.0 - (y - pred) ** 2 / var


def r2(y: np.ndarray, pred: np.ndarray) -> float:
    """Coefficient of determination, 1 - SS_res / SS_tot (nan for constant ``y``)."""
    from sklearn import metrics as skm

    y = np.asarray(y, np.float64)
    if len(y) < 2 or float(np.var(y)) == 0.0:
        return math.nan
    return float(skm.r2_score(y, np.asarray(pred, np.float64).reshape(-1)))


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """MSE, RMSE, MAE and R² of predictions ``pred`` (N,) against targets ``y`` (N,)."""
    from sklearn import metrics as skm

    y = np.asarray(y, np.float64)
    pred = np.asarray(pred, np.float64).reshape(-1)
    if pred.shape != y.shape:
        raise ValueError(f"pred must be (N,) with N = len(y) = {len(y)}, got {pred.shape}")
    mse = float(skm.mean_squared_error(y, pred))
    return {"r2": r2(y, pred), "mse": mse, "mae": float(skm.mean_absolute_error(y, pred)),
            "rmse": math.sqrt(mse)}


def quantile_strata(targets: np.ndarray, strata: int) -> tuple[np.ndarray, tuple[str, ...]]:
    """Cut numeric targets into ``strata`` bins of (about) equal counts.

    Returns (labels (N,) int64 in [0, k), names ``"[lo, hi]"`` of each bin). Ties at a cut go
    to the lower bin; duplicate cuts (many equal targets) merge bins, so k may be below
    ``strata``.
    """
    targets = np.asarray(targets, np.float64)
    cuts = np.unique(np.quantile(targets, np.linspace(0, 1, strata + 1)[1:-1]))
    labels = np.searchsorted(cuts, targets, side="left").astype(np.int64)
    used = np.unique(labels)
    labels = np.searchsorted(used, labels).astype(np.int64)  # no empty bin
    names = tuple(f"[{targets[labels == k].min():.4g}, {targets[labels == k].max():.4g}]"
                  for k in range(len(used)))
    return labels, names


CLASSIFICATION = Classification()
_REGISTRY: dict[str, Task] = {t.name: t for t in (CLASSIFICATION, Regression())}


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get(name: str) -> Task:
    if name not in _REGISTRY:
        raise ValueError(f"unknown task {name!r}; expected one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def of(manifest: dict) -> Task:
    """The task of a prepared manifest (no ``task`` key: classification)."""
    return get(manifest.get("task", "classification"))
