"""Tests for transferlab.data.cleaning: planted duplicates and planted label flips are found."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from transferlab.data.cleaning import (
    cleaning_report,
    find_duplicates,
    label_issue_indices,
    out_of_fold_probs,
    typical_nn_distance,
)

CENTRES = [(4, 4), (4, 11), (11, 4), (11, 11)]


def _blobs(n_per_class: int, seed: int, noise: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """(N, 16, 16) uint8 images of a Gaussian blob whose position is the class, plus pixel noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:16, :16]
    images, labels = [], []
    for c, (cy, cx) in enumerate(CENTRES):
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 2.0**2))
        for _ in range(n_per_class):
            img = blob * rng.uniform(0.7, 1.0) + rng.normal(0, noise, blob.shape)
            images.append(np.clip(img * 255, 0, 255).astype(np.uint8))
            labels.append(c)
    order = rng.permutation(len(labels))
    return np.stack(images)[order], np.asarray(labels, dtype=np.int64)[order]


def _nudge(image: np.ndarray, seed: int) -> np.ndarray:
    """A near copy: every pixel moved by at most 3 grey levels (never the identical image)."""
    rng = np.random.default_rng(seed)
    out = image.astype(np.int16) + rng.integers(-3, 4, image.shape)
    out[0, 0] = image[0, 0] + (1 if image[0, 0] < 255 else -1)
    return np.clip(out, 0, 255).astype(np.uint8)


def _splits(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {"train": _blobs(100, seed), "val": _blobs(25, seed + 1), "test": _blobs(25, seed + 2)}


# ------------------------------------------------------------------------------ duplicates
def test_find_duplicates_against_a_brute_force_reference() -> None:
    rng = np.random.default_rng(3)
    first = rng.integers(0, 256, (40, 8, 8), dtype=np.uint8)
    second = rng.integers(0, 256, (30, 8, 8), dtype=np.uint8)
    second[4] = first[7]
    second[9] = _nudge(first[2], 0)
    a = first.reshape(40, -1) / 255.0
    b = second.reshape(30, -1) / 255.0
    dist = np.linalg.norm(b[:, None, :] - a[None, :, :], axis=2)  # (30, 40)
    threshold = float(np.sort(dist.min(axis=1))[2]) + 1e-9  # the two plants and one more
    got = find_duplicates(first, second, threshold, max_listed=10)
    want_near = [j for j in range(30) if dist[j].min() <= threshold and j != 4]
    assert got["exact"] == 1 and got["near"] == len(want_near) == 2
    pairs = {(i, j): d for i, j, d in got["pairs"]}
    assert pairs[(7, 4)] == 0.0
    for j in want_near:
        i = int(dist[j].argmin())
        assert pairs[(i, j)] == pytest.approx(dist[j, i], abs=1e-6)


def test_planted_duplicates_are_found_across_splits() -> None:
    splits = _splits()
    (tr, ytr), (va, yva), (te, yte) = splits["train"], splits["val"], splits["test"]
    te, va = te.copy(), va.copy()
    te[5] = tr[17]  # exact train/test
    te[6] = tr[17]  # a second test copy of the same train image
    va[3] = _nudge(tr[40], 1)  # near train/val
    te[7] = va[9]  # exact val/test
    te[8] = _nudge(tr[60], 2)  # near train/test
    report = cleaning_report({"train": (tr, ytr), "val": (va, yva), "test": (te, yte)})
    dup = report["duplicates"]
    assert set(dup) == {"train/val", "train/test", "val/test"}
    assert (dup["train/val"]["exact"], dup["train/val"]["near"]) == (0, 1)
    assert (dup["train/test"]["exact"], dup["train/test"]["near"]) == (2, 1)
    assert (dup["val/test"]["exact"], dup["val/test"]["near"]) == (1, 0)
    assert [p[:2] for p in dup["train/val"]["pairs"]] == [[40, 3]]
    assert [p[:2] for p in dup["train/test"]["pairs"]] == [[17, 5], [17, 6], [60, 8]]
    assert dup["train/test"]["pairs"][2][2] > 0
    assert dup["val/test"]["pairs"] == [[9, 7, 0.0]]


def test_distinct_images_are_not_flagged() -> None:
    report = cleaning_report(_splits(seed=5))
    for counts in report["duplicates"].values():
        assert counts == {"exact": 0, "near": 0, "pairs": []}
    rng = np.random.default_rng(0)  # unstructured images too
    noise = {s: (rng.integers(0, 256, (n, 16, 16), dtype=np.uint8), np.arange(n) % 2)
             for s, n in (("train", 200), ("val", 50), ("test", 50))}
    for counts in cleaning_report(noise)["duplicates"].values():
        assert counts["exact"] == counts["near"] == 0


def test_default_threshold_is_relative_to_the_typical_gap() -> None:
    splits = _splits()
    report = cleaning_report(splits)
    assert report["near_threshold"] == pytest.approx(
        0.25 * typical_nn_distance(splits["train"][0]), abs=1e-6)
    images = splits["train"][0]
    with_copies = np.concatenate([images, images[:50]])  # exact copies do not shrink it
    assert typical_nn_distance(with_copies) == typical_nn_distance(images)


def test_explicit_threshold_and_listing_cap() -> None:
    splits = _splits()
    tr = splits["train"][0]
    te = splits["test"][0].copy()
    te[:5] = tr[:5]
    report = cleaning_report({"train": splits["train"], "test": (te, splits["test"][1])},
                             near_threshold=0.0, max_listed=3)
    assert set(report["duplicates"]) == {"train/test"}
    assert report["duplicates"]["train/test"]["exact"] == 5
    assert len(report["duplicates"]["train/test"]["pairs"]) == 3
    huge = cleaning_report(splits, near_threshold=1e6)  # every image is "near" something
    assert huge["duplicates"]["train/val"]["near"] == len(splits["val"][0])


# ---------------------------------------------------------------------------- label issues
def _noisy_train(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    images, labels = _blobs(375, seed)  # 1500 images of 16x16
    rng = np.random.default_rng(seed + 100)
    flipped = rng.choice(len(labels), 60, replace=False)
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + rng.integers(1, 4, 60)) % 4  # always a different class
    return images, noisy, flipped


def test_flipped_labels_are_flagged_and_clean_ones_are_not() -> None:
    images, noisy, flipped = _noisy_train()
    start = time.perf_counter()
    indices, method = label_issue_indices(images, noisy, seed=0)
    assert time.perf_counter() - start < 10  # about 0.5 s on 2 shared cores
    found = set(indices.tolist())
    recall = len(found & set(flipped.tolist())) / len(flipped)
    false_flags = len(found - set(flipped.tolist()))
    assert recall >= 0.9, recall
    assert false_flags <= 5, false_flags  # of 1440 clean images
    assert "cleanlab" in method and "LogisticRegression" in method


def test_label_issue_ranking_is_by_self_confidence() -> None:
    images, noisy, _ = _noisy_train()
    indices, _ = label_issue_indices(images, noisy, seed=0)
    probs, y, _ = out_of_fold_probs(images, noisy, seed=0)
    assert np.array_equal(y, noisy)
    self_confidence = probs[indices, y[indices]]
    assert np.all(np.diff(self_confidence) >= 0)  # least self-confident first
    assert self_confidence.max() < 0.5  # each flagged label is the model's minority view
    report = cleaning_report({"train": (images, noisy)}, max_listed=1000)
    assert report["label_issues"]["indices"] == indices.tolist()
    assert report["label_issues"]["count"] == len(indices)
    capped = cleaning_report({"train": (images, noisy)}, max_listed=5)["label_issues"]
    assert capped["indices"] == indices[:5].tolist() and capped["count"] == len(indices)


def test_out_of_fold_probs_against_a_direct_fold_loop() -> None:
    """Each image's probabilities come from a model fitted without it (same folds, same model)."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    images, labels = _blobs(30, 4)
    probs, y, method = out_of_fold_probs(images, labels, seed=2)
    x = images.reshape(len(images), -1) / 255.0
    want = np.zeros_like(probs)
    for fit, held in StratifiedKFold(5, shuffle=True, random_state=2).split(x, labels):
        pca = PCA(n_components=32, svd_solver="full").fit(x[fit])
        lr = LogisticRegression(max_iter=2000).fit(pca.transform(x[fit]), labels[fit])
        want[held] = lr.predict_proba(pca.transform(x[held]))
    np.testing.assert_allclose(probs, want, atol=1e-8)
    assert probs.shape == (120, 4) and "5-fold" in method and "PCA(32)" in method


def test_labels_need_not_be_contiguous() -> None:
    images, noisy, _ = _noisy_train()
    shifted, _ = label_issue_indices(images, noisy * 10 + 3, seed=0)
    plain, _ = label_issue_indices(images, noisy, seed=0)
    assert np.array_equal(shifted, plain)


def test_clean_labels_flag_almost_nothing() -> None:
    images, labels = _blobs(100, 2)
    indices, _ = label_issue_indices(images, labels, seed=0)
    assert len(indices) <= 1


# ------------------------------------------------------------------------------- contract
def test_report_is_deterministic_and_json_able() -> None:
    images, noisy, _ = _noisy_train(1)
    splits = {"train": (images, noisy), "val": _blobs(20, 7), "test": _blobs(20, 8)}
    a = json.dumps(cleaning_report(splits, seed=3), sort_keys=True)
    b = json.dumps(cleaning_report(splits, seed=3), sort_keys=True)
    assert a == b
    report = json.loads(a)
    assert report["label_issues"]["split"] == "train"
    assert set(report["label_issues"]) == {"split", "count", "indices", "method"}


def test_report_does_not_read_val_or_test_labels() -> None:
    splits = _splits()
    scrambled = {**splits, "test": (splits["test"][0], splits["test"][1][::-1].copy()),
                 "val": (splits["val"][0], np.zeros_like(splits["val"][1]))}
    assert cleaning_report(splits) == cleaning_report(scrambled)


def test_errors_name_the_problem() -> None:
    splits = _splits()
    with pytest.raises(ValueError, match="unknown split 'pool'; expected train, val, test"):
        cleaning_report({**splits, "pool": splits["train"]})
    with pytest.raises(ValueError, match="needs the 'train' split; got val, test"):
        cleaning_report({"val": splits["val"], "test": splits["test"]})
    images, labels = splits["train"]
    with pytest.raises(ValueError, match=r"2 classes with 2 images each.*\{0: 1, 1: 3\}"):
        label_issue_indices(images[:4], np.array([0, 1, 1, 1]))
    with pytest.raises(ValueError, match="image shapes differ"):
        find_duplicates(images, images[:, :8, :8], 1.0)
