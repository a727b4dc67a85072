"""Pure metric functions: arrays in, dicts out. Checked against scikit-learn in the tests."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def _check(y_true: np.ndarray, proba: np.ndarray) -> None:
    if proba.ndim != 2 or len(proba) != len(y_true):
        raise ValueError(f"proba must be (N, C) with N = len(y_true) = {len(y_true)}, "
                         f"got {proba.shape}")
    if len(y_true) and (y_true.min() < 0 or y_true.max() >= proba.shape[1]):
        raise ValueError(f"y_true must lie in [0, {proba.shape[1]}), got "
                         f"[{y_true.min()}, {y_true.max()}]")


def classification_metrics(y_true: np.ndarray, proba: np.ndarray,
                           bins: int = 15) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro precision / recall / F1, log loss and Brier score.

    Args:
        y_true: (N,) integer labels in [0, C).
        proba: (N, C) predicted class probabilities.
        bins: equal-width confidence bins of the expected calibration error.
    Returns:
        A flat dict of floats. ``brier`` is scikit-learn's multiclass Brier score: the mean over
        examples of the squared error between the probability vector and the one-hot label.
    """
    _check(y_true, proba)
    labels = np.arange(proba.shape[1])
    pred = proba.argmax(1)
    p, r, f1, _ = skm.precision_recall_fscore_support(y_true, pred, labels=labels,
                                                      average="macro", zero_division=0)
    clipped = np.clip(proba, 1e-12, 1.0)
    clipped = clipped / clipped.sum(1, keepdims=True)
    return {
        "accuracy": float(skm.accuracy_score(y_true, pred)),
        "balanced_accuracy": float(_balanced_accuracy(y_true, pred, labels)),
        "precision_macro": float(p),
        "recall_macro": float(r),
        "f1_macro": float(f1),
        "log_loss": float(skm.log_loss(y_true, clipped, labels=labels)),
        "brier": float(skm.brier_score_loss(y_true, proba, labels=labels, scale_by_half=False)),
        "ece": expected_calibration_error(y_true, proba, bins)["ece"],
    }


def _balanced_accuracy(y_true: np.ndarray, pred: np.ndarray, labels: np.ndarray) -> float:
    # sklearn's balanced_accuracy_score warns when a class is absent from y_pred; recall per
    # present class is the same quantity.
    return skm.recall_score(y_true, pred, labels=np.unique(y_true), average="macro",
                            zero_division=0)


def confusion(y_true: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) counts, rows = true class, columns = predicted class."""
    return skm.confusion_matrix(y_true, pred, labels=np.arange(num_classes))


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, bins: int = 15) -> dict:
    """Top-label expected calibration error with equal-width confidence bins (Guo et al. 2017).

    Returns:
        {"ece": float, "bins": [{"lower", "upper", "count", "confidence", "accuracy"}, ...]}.
    """
    _check(y_true, proba)
    conf = proba.max(1)
    correct = (proba.argmax(1) == y_true).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # bin k holds confidences in (edges[k], edges[k+1]]; confidence 0 falls in bin 0
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    ece, rows = 0.0, []
    for k in range(bins):
        mask = which == k
        n = int(mask.sum())
        acc = float(correct[mask].mean()) if n else float("nan")
        mean_conf = float(conf[mask].mean()) if n else float("nan")
        if n:
            ece += n / len(y_true) * abs(acc - mean_conf)
        rows.append({"lower": float(edges[k]), "upper": float(edges[k + 1]), "count": n,
                     "confidence": mean_conf, "accuracy": acc})
    return {"ece": float(ece), "bins": rows}
