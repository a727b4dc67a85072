"""The target as the adaptation loop sees it: the train pool and validation set as tensors, the
budgets drawn per seed, and what the inputs and labels are.

The strategies and the replicate loop both read it, so it lives below both of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from transferlab.data.store import PreparedDataset


@dataclass(frozen=True)
class TargetData:
    """The target's train pool and validation set as tensors, with the drawn budgets."""

    pool_x: torch.Tensor  # (P, 1, H, W)
    pool_y: torch.Tensor  # (P,) labels, or a regression's numeric targets
    val_x: torch.Tensor
    val_y: torch.Tensor
    num_classes: int  # outputs of the head (a regression: 1)
    budgets: dict[str, dict[str, list[int]]]  # {seed: {budget: pool indices}}
    normalization: dict[str, float]
    modality: str = "image"  # what the inputs are (transferlab.data.modalities)
    task: str = "classification"  # what a label is (transferlab.core.tasks)
    pool_strata: torch.Tensor | None = None  # a regression's quantile strata of pool_y
    class_names: tuple[str, ...] = ()  # the name of each class index (what a prompt says)

    @property
    def strata(self) -> torch.Tensor:
        """(P,) the groups that splits and held-out parts stratify by: the classes, or a
        regression's quantile strata."""
        return self.pool_y if self.pool_strata is None else self.pool_strata

    def replicates(self) -> Iterator[tuple[str, str]]:
        """(seed, budget) of every drawn replicate, in a fixed order."""
        for seed in sorted(self.budgets, key=int):
            for budget in self.budgets[seed]:
                yield seed, budget


def load_target(folder: str | Path, arch: str | None = None) -> TargetData:
    """The prepared target's pool, validation set and budgets (sha256-verified), as a model of
    ``arch`` reads them (:meth:`~transferlab.data.store.PreparedDataset.encoded_for`; None:
    as prepared for ``pretrain.arch``)."""
    data = PreparedDataset.open(folder).encoded_for(arch)
    (pool_x, pool_y), (val_x, val_y) = data.inputs("train"), data.inputs("val")
    strata = None
    if data.task.name == "regression":
        strata = torch.from_numpy(data.load("train").labels)
    return TargetData(pool_x, pool_y, val_x, val_y, data.task.outputs(len(data.class_names)),
                      data.budgets(), data.modality.normalization(data.manifest),
                      data.modality.name, data.task.name, strata,
                      tuple(map(str, data.class_names)))
