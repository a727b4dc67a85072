"""Splits: nested budgets, stratification, no overlap."""

from __future__ import annotations

import numpy as np
import pytest

from transferlab.core.errors import DataError
from transferlab.data.splits import fraction_split, nested_budgets, per_class_split


@pytest.fixture
def labels() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.permutation(np.repeat(np.arange(5), [40, 35, 50, 38, 42]))


def test_per_class_split_is_stratified_disjoint_and_complete(labels: np.ndarray) -> None:
    test, val, pool = per_class_split(labels, [7, 3], seed=1)
    assert np.bincount(labels[test]).tolist() == [7] * 5
    assert np.bincount(labels[val]).tolist() == [3] * 5
    assert not set(test) & set(val) and not set(test) & set(pool) and not set(val) & set(pool)
    assert sorted(np.concatenate([test, val, pool]).tolist()) == list(range(len(labels)))


def test_per_class_split_is_seeded(labels: np.ndarray) -> None:
    a = per_class_split(labels, [7, 3], seed=1)
    b = per_class_split(labels, [7, 3], seed=1)
    c = per_class_split(labels, [7, 3], seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])


def test_per_class_split_too_small_class() -> None:
    labels = np.array([0] * 20 + [1] * 5)
    with pytest.raises(DataError, match="class 'b' has 5 images"):
        per_class_split(labels, [3, 2], seed=0, names=["a", "b"])


def test_fraction_split(labels: np.ndarray) -> None:
    test, val, train = fraction_split(labels, [0.2, 0.1], seed=0)
    for c, n in enumerate([40, 35, 50, 38, 42]):
        assert (labels[test] == c).sum() == round(0.2 * n)
        assert (labels[val] == c).sum() == max(1, round(0.1 * n))
    assert len(set(test) | set(val) | set(train)) == len(labels)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_budgets_are_nested_and_per_class(labels: np.ndarray, seed: int) -> None:
    names = list("abcde")
    subsets = nested_budgets(labels, [1, 3, 10, 30, "all"], seed, names)
    assert list(subsets) == ["1", "3", "10", "30", "all"]
    previous: set[int] = set()
    for budget, idx in subsets.items():
        current = set(idx)
        assert previous <= current  # nested
        previous = current
        if budget != "all":
            assert np.bincount(labels[idx], minlength=5).tolist() == [int(budget)] * 5
    assert sorted(subsets["all"]) == list(range(len(labels)))


def test_budgets_differ_between_seeds(labels: np.ndarray) -> None:
    a = nested_budgets(labels, [3], 0, list("abcde"))
    b = nested_budgets(labels, [3], 1, list("abcde"))
    assert a != b


def test_budget_larger_than_pool(labels: np.ndarray) -> None:
    with pytest.raises(DataError, match=r"budget 36 .* class 'b' has only 35"):
        nested_budgets(labels, [3, 36], 0, list("abcde"))
