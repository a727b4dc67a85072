"""Stratified splits and nested label budgets, all driven by explicit seeds."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from transferlab.core.errors import DataError


def per_class_split(labels: np.ndarray, counts: Sequence[int], seed: int,
                    names: Sequence[str] | None = None) -> list[np.ndarray]:
    """Split indices into consecutive parts holding ``counts[k]`` examples of every class.

    The remainder of each class forms a last part (the pool). Args: labels (N,), per-part counts
    per class, seed. Returns: len(counts) + 1 sorted index arrays, disjoint and covering all.
    Raises DataError if a class has too few examples.
    """
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(len(counts) + 1)]
    need = int(sum(counts))
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        if len(idx) <= need:
            name = names[c] if names is not None else str(c)
            raise DataError(f"class {name!r} has {len(idx)} images; the fixed splits need "
                            f"{need} per class plus at least one for training")
        bounds = np.cumsum([0, *counts])
        for k in range(len(counts)):
            parts[k].append(idx[bounds[k]:bounds[k + 1]])
        parts[-1].append(idx[need:])
    return [np.sort(np.concatenate(p)) for p in parts]


def fraction_split(labels: np.ndarray, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Stratified split by fractions (e.g. test, val); the remainder is the last part.

    Every class keeps at least one example in each part. Returns sorted index arrays.
    """
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        sizes = [max(1, int(round(f * len(idx)))) for f in fractions]
        if sum(sizes) >= len(idx):
            raise DataError(f"class {c} has only {len(idx)} images; too few to split off "
                            f"fractions {list(fractions)} and keep a training part")
        bounds = np.cumsum([0, *sizes])
        for k in range(len(fractions)):
            parts[k].append(idx[bounds[k]:bounds[k + 1]])
        parts[-1].append(idx[bounds[-1]:])
    return [np.sort(np.concatenate(p)) for p in parts]


def nested_budgets(pool_labels: np.ndarray, budgets: Sequence[int | str], seed: int,
                   class_names: Sequence[str]) -> dict[str, list[int]]:
    """Draw nested label-budget subsets of a pool for one seed.

    For every class the pool is shuffled once with ``seed``; budget k takes the first k of each
    class, so the budget-k subset is contained in every larger budget's subset.

    Args:
        pool_labels: (P,) labels of the pool.
        budgets: labels per class, increasing; ``"all"`` takes the whole pool.
        seed: the replicate seed.
        class_names: for error messages.
    Returns:
        {str(budget): sorted pool indices}.
    Raises:
        DataError: a budget exceeds the smallest class of the pool.
    """
    rng = np.random.default_rng(seed)
    orders = {int(c): rng.permutation(np.flatnonzero(pool_labels == c))
              for c in np.unique(pool_labels)}
    smallest = min(orders, key=lambda c: len(orders[c]))
    out: dict[str, list[int]] = {}
    for b in budgets:
        if b == "all":
            out["all"] = list(range(len(pool_labels)))
            continue
        if b > len(orders[smallest]):
            raise DataError(f"prepare.budgets: budget {b} labels per class is larger than the "
                            f"pool: class {class_names[smallest]!r} has only "
                            f"{len(orders[smallest])} training images")
        out[str(b)] = sorted(int(i) for c in sorted(orders) for i in orders[c][:b])
    return out
