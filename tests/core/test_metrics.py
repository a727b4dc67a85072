"""Tests for transferlab.core.metrics: against scikit-learn called directly and hand-computed
cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from transferlab.core.metrics import classification_metrics, confusion, expected_calibration_error


def _random_case(n: int, c: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels covering every class and strictly positive Dirichlet probabilities."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % c)
    proba = rng.dirichlet(np.ones(c), size=n)
    return y, proba


def _sklearn_reference(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    pred = proba.argmax(1)
    labels = np.arange(proba.shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # classes absent from y_pred / y_true
        return {
            "accuracy": skm.accuracy_score(y, pred),
            "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
            "precision_macro": skm.precision_score(y, pred, average="macro", zero_division=0),
            "recall_macro": skm.recall_score(y, pred, average="macro", zero_division=0),
            "f1_macro": skm.f1_score(y, pred, average="macro", zero_division=0),
            "log_loss": skm.log_loss(y, proba, labels=labels),
            "brier": skm.brier_score_loss(y, proba, labels=labels, scale_by_half=False),
        }


@pytest.mark.parametrize(("n", "c", "seed"), [(60, 3, 0), (200, 5, 1), (37, 2, 2)])
def test_classification_metrics_match_sklearn(n: int, c: int, seed: int) -> None:
    y, proba = _random_case(n, c, seed)
    got = classification_metrics(y, proba)
    for key, want in _sklearn_reference(y, proba).items():
        assert got[key] == pytest.approx(want, rel=1e-9, abs=1e-12), key
    assert all(isinstance(v, float) for v in got.values())


def test_classification_metrics_direct_formulas() -> None:
    # log loss and Brier score written out, independently of scikit-learn
    y, proba = _random_case(50, 4, 3)
    onehot = np.eye(4)[y]
    got = classification_metrics(y, proba)
    assert got["log_loss"] == pytest.approx(-np.mean(np.log(proba[np.arange(50), y])), rel=1e-9)
    assert got["brier"] == pytest.approx(np.mean(((proba - onehot) ** 2).sum(1)), rel=1e-9)
    assert got["accuracy"] == pytest.approx(np.mean(proba.argmax(1) == y))


def test_classification_metrics_with_a_class_never_predicted() -> None:
    y, proba = _random_case(90, 3, 4)
    proba[:, 2] *= 0.01  # class 2 is never the argmax
    proba /= proba.sum(1, keepdims=True)
    assert 2 not in proba.argmax(1) and 2 in y
    got = classification_metrics(y, proba)
    for key, want in _sklearn_reference(y, proba).items():
        assert got[key] == pytest.approx(want, rel=1e-9, abs=1e-12), key
    # the never-predicted class contributes recall 0 and precision 0 to the macro averages
    recalls = [np.mean(proba.argmax(1)[y == k] == k) for k in range(3)]
    assert recalls[2] == 0.0
    assert got["recall_macro"] == pytest.approx(np.mean(recalls))
    assert got["balanced_accuracy"] == pytest.approx(np.mean(recalls))


def test_classification_metrics_with_a_class_absent_from_y_true() -> None:
    # balanced accuracy averages recall over the classes present in y_true, like scikit-learn
    y, proba = _random_case(40, 3, 5)
    y = np.where(y == 2, 0, y)
    proba[:5, 2] = 5.0  # class 2 is predicted for a few examples
    proba /= proba.sum(1, keepdims=True)
    assert 2 in proba.argmax(1) and 2 not in y
    got = classification_metrics(y, proba)
    want = _sklearn_reference(y, proba)
    assert got["balanced_accuracy"] == pytest.approx(want["balanced_accuracy"], rel=1e-12)
    assert got["log_loss"] == pytest.approx(want["log_loss"], rel=1e-9)
    assert got["brier"] == pytest.approx(want["brier"], rel=1e-9)


def test_classification_metrics_log_loss_finite_for_zero_probability() -> None:
    y = np.array([0, 1, 1])
    proba = np.array([[1.0, 0.0], [1.0, 0.0], [0.2, 0.8]])  # example 1: true class has p = 0
    got = classification_metrics(y, proba)
    assert np.isfinite(got["log_loss"]) and got["log_loss"] > 5.0


def test_classification_metrics_ece_uses_bins() -> None:
    y, proba = _random_case(80, 3, 6)
    for bins in (4, 15):
        want = expected_calibration_error(y, proba, bins)["ece"]
        assert classification_metrics(y, proba, bins=bins)["ece"] == want


# ------------------------------------------------------------------------------ calibration
def _hand_case() -> tuple[np.ndarray, np.ndarray]:
    proba = np.array([[0.9, 0.05, 0.05],   # conf 0.9, correct  -> bin (0.75, 1]
                      [0.6, 0.3, 0.1],     # conf 0.6, wrong    -> bin (0.5, 0.75]
                      [0.2, 0.7, 0.1],     # conf 0.7, correct  -> bin (0.5, 0.75]
                      [0.4, 0.35, 0.25]])  # conf 0.4, wrong    -> bin (0.25, 0.5]
    return np.array([0, 1, 1, 2]), proba


def test_ece_hand_computed() -> None:
    y, proba = _hand_case()
    out = expected_calibration_error(y, proba, bins=4)
    # 1/4 |1 - 0.9| + 2/4 |0.5 - 0.65| + 1/4 |0 - 0.4| = 0.025 + 0.075 + 0.1
    assert out["ece"] == pytest.approx(0.2, abs=1e-12)
    assert [b["count"] for b in out["bins"]] == [0, 1, 2, 1]
    assert [b["lower"] for b in out["bins"]] == [0.0, 0.25, 0.5, 0.75]
    assert [b["upper"] for b in out["bins"]] == [0.25, 0.5, 0.75, 1.0]
    assert out["bins"][2]["confidence"] == pytest.approx(0.65)
    assert out["bins"][2]["accuracy"] == pytest.approx(0.5)
    assert np.isnan(out["bins"][0]["confidence"]) and np.isnan(out["bins"][0]["accuracy"])


def test_ece_bins_are_closed_on_the_right() -> None:
    # confidence exactly 0.5 belongs to (0.25, 0.5], confidence 1.0 to the last bin
    y = np.array([0, 0])
    proba = np.array([[0.5, 0.3, 0.2], [1.0, 0.0, 0.0]])
    counts = [b["count"] for b in expected_calibration_error(y, proba, bins=4)["bins"]]
    assert counts == [0, 1, 0, 1]


def test_ece_zero_for_perfectly_calibrated_predictions() -> None:
    # groups whose accuracy equals their (constant) confidence
    groups = [(0.6, 5, 3), (0.75, 8, 6), (0.9, 10, 9), (1.0, 4, 4)]  # (conf, n, n correct)
    proba, y = [], []
    for conf, n, n_correct in groups:
        for i in range(n):
            proba.append([conf, 1 - conf])
            y.append(0 if i < n_correct else 1)
    out = expected_calibration_error(np.array(y), np.array(proba), bins=10)
    assert out["ece"] == pytest.approx(0.0, abs=1e-12)
    assert sum(b["count"] for b in out["bins"]) == len(y)


def test_ece_matches_a_direct_loop() -> None:
    y, proba = _random_case(300, 4, 7)
    bins = 7
    conf, correct = proba.max(1), proba.argmax(1) == y
    edges = np.linspace(0, 1, bins + 1)
    want = 0.0
    for k in range(bins):
        mask = (conf > edges[k]) & (conf <= edges[k + 1])
        if k == 0:
            mask |= conf == 0
        if mask.any():
            want += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    assert expected_calibration_error(y, proba, bins)["ece"] == pytest.approx(want, rel=1e-12)


# ------------------------------------------------------------------------------- confusion
def test_confusion_matches_sklearn() -> None:
    rng = np.random.default_rng(8)
    y, pred = rng.integers(0, 4, 100), rng.integers(0, 4, 100)
    got = confusion(y, pred, 5)  # class 4 appears nowhere: a zero row and column
    assert got.shape == (5, 5)
    np.testing.assert_array_equal(got, skm.confusion_matrix(y, pred, labels=np.arange(5)))
    assert got[4].sum() == 0 and got[:, 4].sum() == 0


def test_confusion_hand_case() -> None:
    got = confusion(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2]), 3)
    np.testing.assert_array_equal(got, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])


# ------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("fn", [classification_metrics, expected_calibration_error])
def test_shape_errors(fn) -> None:
    y, proba = _random_case(10, 3, 9)
    with pytest.raises(ValueError, match=r"proba must be \(N, C\)"):
        fn(y, proba[:, 0])
    with pytest.raises(ValueError, match="N = len\\(y_true\\) = 9"):
        fn(y[:9], proba)


@pytest.mark.parametrize("fn", [classification_metrics, expected_calibration_error])
@pytest.mark.parametrize("bad", [-1, 3])
def test_label_range_errors(fn, bad: int) -> None:
    y, proba = _random_case(10, 3, 10)
    y[4] = bad
    with pytest.raises(ValueError, match=r"y_true must lie in \[0, 3\)"):
        fn(y, proba)
