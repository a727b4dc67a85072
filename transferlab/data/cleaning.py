"""Data hygiene of a prepared target: copies across splits, and label-noise candidates.

Two checks, both deterministic for a given input and seed:

* Duplicates across splits (train pool vs val, train pool vs test, val vs test). An image of the
  second split is an *exact* duplicate when an image of the first has the very same bytes, and a
  *near* duplicate when its nearest neighbour there (L2 distance of the [0, 1] pixel vectors,
  ``sklearn.neighbors.NearestNeighbors``) is within ``near_threshold``. Counts are images of the
  second split, so they read as "how many val/test images have a copy in the first split". L2 on
  pixels finds re-encoded, noisy or re-thresholded copies; it does not find shifted ones.
* Label issues in the train pool: ``cleanlab.filter.find_label_issues`` on out-of-fold predicted
  probabilities (stratified K-fold ``cross_val_predict``) of a PCA + logistic regression on
  pixels, ranked by self-confidence (least confident first).

The duplicate check reads the test images (never the test labels). The report describes the data;
no choice (epoch, strategy, hyperparameter) should be made from it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from cleanlab.filter import find_label_issues
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import make_pipeline
from threadpoolctl import threadpool_limits

SPLIT_PAIRS = (("train", "val"), ("train", "test"), ("val", "test"))
# default near-duplicate threshold: this fraction of the median distance from a train image to
# its nearest distinct train image (the typical gap between two different images of the data)
RELATIVE_THRESHOLD = 0.25
FOLDS = 5
PCA_COMPONENTS = 32
# The arrays are small, so BLAS and OpenMP run single-threaded here: results then do not depend
# on the thread count, and OpenBLAS's threads no longer fight torch's spinning OpenMP threads for
# the cores (with torch loaded, 2 threads each on 2 cores made this 30x slower).
SINGLE_THREAD = 1


def _vectors(images: np.ndarray) -> np.ndarray:
    """(N, H, W) uint8 -> (N, H * W) float64 in [0, 1]."""
    return images.reshape(len(images), -1).astype(np.float64) / 255.0


def typical_nn_distance(images: np.ndarray) -> float:
    """Median L2 distance from an image to its nearest *distinct* image of the same set.

    Args:
        images: (N, H, W) uint8 with at least two distinct images.
    Returns:
        The median, in [0, 1]-pixel L2 units.
    """
    unique = np.unique(images.reshape(len(images), -1), axis=0)  # exact copies would give 0
    if len(unique) < 2:
        raise ValueError("typical_nn_distance needs at least two distinct images")
    x = unique.astype(np.float64) / 255.0
    with threadpool_limits(limits=SINGLE_THREAD):
        dist, _ = NearestNeighbors(n_neighbors=2, algorithm="brute").fit(x).kneighbors(x)
    return float(np.median(dist[:, 1]))


def find_duplicates(first: np.ndarray, second: np.ndarray, near_threshold: float,
                    max_listed: int = 20) -> dict[str, Any]:
    """Images of ``second`` that have an exact or near copy in ``first``.

    Args:
        first, second: (N, H, W) and (M, H, W) uint8 images.
        near_threshold: largest L2 distance of [0, 1] pixel vectors counted as a near copy.
        max_listed: at most this many pairs are listed (closest first, then by index).
    Returns:
        ``{"exact": n, "near": n, "pairs": [[i, j, dist], ...]}``: ``i`` indexes ``first``,
        ``j`` indexes ``second``; exact pairs have ``dist`` 0.0 and ``i`` the first identical one.
    """
    if first.shape[1:] != second.shape[1:]:
        raise ValueError(f"image shapes differ: {first.shape[1:]} vs {second.shape[1:]}")
    if len(first) == 0 or len(second) == 0:
        return {"exact": 0, "near": 0, "pairs": []}
    seen: dict[bytes, int] = {}
    for i, image in enumerate(first):
        seen.setdefault(image.tobytes(), i)
    a, b = _vectors(first), _vectors(second)
    with threadpool_limits(limits=SINGLE_THREAD):
        _, nearest = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(a).kneighbors(b)
    exact, near = [], []
    for j, image in enumerate(second):
        if (i := seen.get(image.tobytes())) is not None:
            exact.append((0.0, i, j))
            continue
        i = int(nearest[j, 0])
        dist = float(np.linalg.norm(a[i] - b[j]))  # exact, unlike the neighbour search's
        if dist <= near_threshold:
            near.append((dist, i, j))
    pairs = sorted(exact + near)[:max_listed]
    return {"exact": len(exact), "near": len(near),
            "pairs": [[i, j, round(dist, 6)] for dist, i, j in pairs]}


def out_of_fold_probs(images: np.ndarray, labels: np.ndarray, seed: int = 0,
                      features: str = "pixels") -> tuple[np.ndarray, np.ndarray, str]:
    """Out-of-fold class probabilities of a PCA + logistic regression on pixels.

    Args:
        images: (N, H, W) uint8.
        labels: (N,) integer labels (any values; at least two classes, two images each).
        seed: ``random_state`` of the stratified fold shuffle and the PCA.
    Returns:
        (probs (N, K), labels as 0 .. K - 1 in sorted order of the given values, a one-line
        description of the model and folds).
    """
    classes, y = np.unique(labels, return_inverse=True)  # cleanlab wants labels 0 .. K - 1
    counts = np.bincount(y)
    if len(classes) < 2 or counts.min() < 2:
        raise ValueError(f"label issues need at least 2 classes with 2 images each; class counts "
                         f"{dict(zip(classes.tolist(), counts.tolist(), strict=True))}")
    folds = int(min(FOLDS, counts.min()))
    x = _vectors(images)
    smallest_fit = len(x) - -(-len(x) // folds)  # images a model is fitted on, at least
    components = int(min(PCA_COMPONENTS, x.shape[1], smallest_fit - 1))
    model = make_pipeline(PCA(n_components=components, svd_solver="full", random_state=seed),
                          LogisticRegression(max_iter=2000))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with threadpool_limits(limits=SINGLE_THREAD):
        probs = cross_val_predict(model, x, y, cv=cv, method="predict_proba")
    return probs, y, (f"{folds}-fold out-of-fold PCA({components}) + LogisticRegression on "
                      f"{features}")


def label_issue_indices(images: np.ndarray, labels: np.ndarray, seed: int = 0,
                        features: str = "pixels") -> tuple[np.ndarray, str]:
    """Indices whose label cleanlab flags as likely wrong, least self-confident first.

    Args:
        images, labels, seed: as for :func:`out_of_fold_probs`.
    Returns:
        (indices into ``images``, a one-line description of the method).
    """
    probs, y, model = out_of_fold_probs(images, labels, seed, features)
    with threadpool_limits(limits=SINGLE_THREAD):
        ranked = find_label_issues(y, probs, return_indices_ranked_by="self_confidence",
                                   n_jobs=1)
    method = (f"cleanlab.filter.find_label_issues (prune_by_noise_rate, ranked by "
              f"self_confidence) on the probabilities of a {model}")
    return np.asarray(ranked, dtype=np.int64), method


def cleaning_report(splits: dict[str, tuple[np.ndarray, np.ndarray]],
                    near_threshold: float | None = None, seed: int = 0,
                    max_listed: int = 20, features: str = "pixels") -> dict[str, Any]:
    """Duplicates across splits and label-issue candidates in the train pool, as a JSON-able dict.

    Args:
        splits: ``{"train": (images, labels), "val": ..., "test": ...}``, images (N, H, W)
            uint8 (or any uint8 arrays of one shape per example: a modality's
            ``cleaning_arrays``); a missing split skips its pairs. Only the train labels are read.
        near_threshold: L2 distance of [0, 1] pixel vectors under which two images are near
            copies; ``None`` for ``RELATIVE_THRESHOLD`` times :func:`typical_nn_distance` of the
            train images.
        seed: seed of the label-issue cross-validation.
        max_listed: cap on the pairs listed per split pair and on the indices listed.
        features: what the arrays hold, in words, for the method's description.
    Returns:
        ``{"near_threshold": t, "duplicates": {"train/test": {"exact", "near", "pairs"}, ...},
        "label_issues": {"split": "train", "count", "indices", "method"}}``.
    """
    unknown = sorted(set(splits) - {"train", "val", "test"})
    if unknown:
        raise ValueError(f"unknown split {unknown[0]!r}; expected train, val, test")
    if "train" not in splits:
        raise ValueError(f"cleaning_report needs the 'train' split; got {', '.join(splits)}")
    train_images, train_labels = splits["train"]
    if near_threshold is None:
        near_threshold = RELATIVE_THRESHOLD * typical_nn_distance(train_images)
    duplicates = {f"{a}/{b}": find_duplicates(splits[a][0], splits[b][0], near_threshold,
                                              max_listed)
                  for a, b in SPLIT_PAIRS if a in splits and b in splits}
    indices, method = label_issue_indices(train_images, train_labels, seed, features)
    return {
        "near_threshold": round(float(near_threshold), 6),
        "duplicates": duplicates,
        "label_issues": {"split": "train", "count": len(indices),
                         "indices": indices[:max_listed].tolist(), "method": method},
    }
