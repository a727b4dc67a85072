"""Fixtures of the strategy tests: a tiny target, a tiny saved source, its prepared data
and label mapping. ``one_thread`` is autouse: every test here runs on one thread."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.adapt.strategies.helpers import budgets, save_source, squares
from transferlab.adapt.target import TargetData
from transferlab.data.store import ExampleSet, PreparedDataset, write_dataset
from transferlab.models.nets import load_checkpoint


@pytest.fixture(scope="module", autouse=True, name="one_thread")
def one_thread_fixture() -> Iterator[None]:
    """Tiny convolutions run faster on one thread on a shared 2-core machine."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module", name="target")
def target_fixture() -> TargetData:
    pool_x, pool_y = squares(10, seed=0)
    val_x, val_y = squares(5, seed=1)
    return TargetData(pool_x, pool_y, val_x, val_y, 3, budgets(pool_y),
                      {"mean": 0.1, "std": 0.3})


@pytest.fixture(scope="module", name="source_path")
def source_path_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_source(tmp_path_factory.mktemp("source") / "source.pt")


@pytest.fixture(scope="module", name="source_data")
def source_data_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared source folder (for strategies that train on the source's images): 4 classes
    of horizontal bars, a domain unlike the target's."""
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(4), 6)
    images = (rng.random((len(labels), 16, 16)) * 60).astype(np.uint8)
    for i, k in enumerate(labels):
        images[i, 4 * k:4 * k + 3, 2:14] = 230
    folder = tmp_path_factory.mktemp("prepared") / "sources" / "bars"
    write_dataset(folder, {"train": ExampleSet(images, labels.astype(np.int64), tuple("abcd"))},
                  {"kind": "fonts"})
    return folder


@pytest.fixture(scope="module", name="mapping")
def mapping_fixture(source_data: Path) -> dict:
    return PreparedDataset.open(source_data).manifest  # what the transfer stage passes


@pytest.fixture(name="source")
def source_fixture(source_path: Path) -> nn.Module:
    """A fresh copy per test: tests may train it."""
    return load_checkpoint(source_path)[0]
