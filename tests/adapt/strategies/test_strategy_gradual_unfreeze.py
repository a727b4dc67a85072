"""Tests for the ``gradual_unfreeze`` strategy (transferlab.adapt.strategies.gradual_unfreeze) on a
tiny target and source."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.adapt.strategies.helpers import (
    ARCH,
    BLOCKS,
    CHECKPOINTS,
    CPU,
    SELECTION,
    assert_same_runs,
    context,
    part,
    run_and_load,
    snapshot,
    states_equal,
)
from transferlab.adapt.replicates import run_replicates
from transferlab.adapt.strategies import parse_blocks
from transferlab.adapt.strategies.gradual_unfreeze import (
    GradualUnfreeze,
    GradualUnfreezeParams,
    thawed_blocks,
)
from transferlab.adapt.target import TargetData
from transferlab.core.errors import ParamsError
from transferlab.models.nets import load_checkpoint, reset_head
from transferlab.training.loop import fit

CFG = GradualUnfreezeParams(epochs=3, batch_size=8, patience=5, epochs_per_block=1)


def test_thawed_blocks_schedule() -> None:
    names = list(BLOCKS)
    got = [thawed_blocks(names, epoch, 2) for epoch in range(1, 10)]
    assert got == [[], [], ["block3"], ["block3"], ["block2", "block3"], ["block2", "block3"],
                   names, names, names]
    assert thawed_blocks(names, 1, 1) == [] and thawed_blocks(names, 4, 1) == names


@pytest.mark.parametrize(("epochs", "trained"), [
    (1, ()), (2, ("block3",)), (3, ("block2", "block3")), (4, BLOCKS)])
def test_after_epoch_k_exactly_the_thawed_blocks_changed(epochs: int, trained: tuple,
                                                         source: nn.Module,
                                                         target: TargetData) -> None:
    model = reset_head(source, 3, seed=0)
    before = snapshot(model)
    cfg = replace(CFG, epochs=epochs, augment=False)
    strategy = GradualUnfreeze(cfg, context(target, model))
    net, groups = strategy.trainable(model, cfg)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))  # all, at once
    fit(net, (target.pool_x, target.pool_y), None, cfg, groups, torch.Generator().manual_seed(0),
        CPU, on_epoch=lambda epoch: strategy.on_epoch(model, epoch, cfg))
    after = snapshot(model)
    assert not torch.equal(after["head.weight"], before["head.weight"])
    for block in BLOCKS:
        prefix = f"backbone.{block}."
        if block in trained:  # its weights and its BatchNorm statistics moved
            for key in ("0.weight", "1.weight", "1.running_mean", "1.running_var"):
                assert not torch.equal(after[prefix + key], before[prefix + key]), (block, key)
        else:  # bitwise as it was, BatchNorm statistics and num_batches_tracked included
            assert states_equal(part(after, prefix), part(before, prefix)), block
    assert all(p.requires_grad == (n.split(".")[1] in trained)
               for n, p in model.backbone.named_parameters(prefix="backbone"))


def test_run_replicates_records_and_checkpoints(target: TargetData, source_path: Path,
                                                tmp_path: Path) -> None:
    cfg = replace(CFG, epochs=2, search={"epochs_per_block": (1, 2)})
    seen = []
    result = run_replicates("gradual_unfreeze", cfg, source_path, target, CPU, tmp_path, ARCH,
                            SELECTION, on_result=lambda record, model, _device: seen.append(model))
    assert {p.name for p in tmp_path.iterdir()} == CHECKPOINTS
    for r, model in zip(result["runs"], seen, strict=True):
        candidates = r["search"]["candidates"]
        assert [c["config"] for c in candidates] == [{"epochs_per_block": 1},
                                                     {"epochs_per_block": 2}]
        assert r["search"]["chosen"] in [c["config"] for c in candidates]
        loaded, config = load_checkpoint(tmp_path / r["checkpoint"])
        assert config["strategy"] == "gradual_unfreeze"
        with torch.no_grad():
            assert torch.equal(loaded(target.val_x), model(target.val_x))


def test_run_replicates_is_bitwise_reproducible(target: TargetData, source_path: Path,
                                                tmp_path: Path) -> None:
    assert_same_runs(*(run_and_load("gradual_unfreeze", CFG, source_path, target,
                                    tmp_path / str(i)) for i in range(2)))


@pytest.mark.parametrize(("value", "message"), [(0, "must be >= 1"),
                                                (1.5, "expected an integer")])
def test_epochs_per_block_is_validated_by_key(value: object, message: str) -> None:
    with pytest.raises(ParamsError, match=rf"transfer\.gradual_unfreeze\.epochs_per_block: "
                                          rf".*{message}"):
        parse_blocks({"gradual_unfreeze": {"epochs_per_block": value}})
