"""Tests for the ``llrd`` strategy (transferlab.adapt.strategies.llrd) on a tiny target and
source."""

from __future__ import annotations

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
    run_and_load,
)
from transferlab.adapt.replicates import run_replicates
from transferlab.adapt.strategies import parse_blocks
from transferlab.adapt.strategies.finetune import FinetuneParams
from transferlab.adapt.strategies.llrd import Llrd, LlrdParams
from transferlab.adapt.target import TargetData
from transferlab.core.errors import ParamsError
from transferlab.models.nets import load_checkpoint, reset_head

CFG = LlrdParams(epochs=2, batch_size=8, patience=5, decay=0.5)


def test_group_lrs_are_the_geometric_sequence(source: nn.Module, target: TargetData) -> None:
    model = reset_head(source, 3, seed=0)
    cfg = LlrdParams(lr=0.01, decay=0.5)
    _, groups = Llrd(cfg, context(target, model)).trainable(model, cfg)
    # block1 is three blocks below the head, block3 one
    assert [g["lr"] for g in groups] == [0.01 * 0.125, 0.01 * 0.25, 0.01 * 0.5, 0.01]
    modules = [model.backbone.get_submodule(b) for b in BLOCKS] + [model.head]
    for group, module in zip(groups, modules, strict=True):
        assert [id(p) for p in group["params"]] == [id(p) for p in module.parameters()]
    placed = [id(p) for g in groups for p in g["params"]]
    assert sorted(placed) == sorted(id(p) for p in model.parameters())  # each exactly once


def test_a_parameter_outside_the_blocks_joins_the_lowest_rate(source: nn.Module,
                                                              target: TargetData) -> None:
    model = reset_head(source, 3, seed=0)
    model.normalize.scale = nn.Parameter(torch.ones(1))  # neither a block nor the head
    cfg = LlrdParams(lr=0.01, decay=0.5)
    _, groups = Llrd(cfg, context(target, model)).trainable(model, cfg)
    assert groups[0]["params"][0] is model.normalize.scale and groups[0]["lr"] == 0.01 * 0.125
    placed = [id(p) for g in groups for p in g["params"]]
    assert sorted(placed) == sorted(id(p) for p in model.parameters())


def test_decay_one_is_finetune_at_the_full_backbone_rate(target: TargetData, source_path: Path,
                                                         tmp_path: Path) -> None:
    common = {"epochs": 2, "batch_size": 8, "patience": 5, "lr": 0.01}
    cfgs = {"finetune": FinetuneParams(**common, backbone_lr_mult=1.0),
            "llrd": LlrdParams(**common, decay=1.0)}
    runs = {name: run_and_load(name, cfg, source_path, target, tmp_path / name)
            for name, cfg in cfgs.items()}
    assert_same_runs(runs["llrd"], runs["finetune"])


def test_run_replicates_searches_the_decay(target: TargetData, source_path: Path,
                                           source: nn.Module, tmp_path: Path) -> None:
    cfg = LlrdParams(epochs=2, batch_size=8, patience=5, decay=0.6, search={"decay": (0.3, 0.6)})
    seen = []
    result = run_replicates("llrd", cfg, source_path, target, CPU, tmp_path, ARCH, SELECTION,
                            on_result=lambda record, model, _device: seen.append(model))
    assert {p.name for p in tmp_path.iterdir()} == CHECKPOINTS
    for r in result["runs"]:
        candidates = r["search"]["candidates"]
        assert [c["config"] for c in candidates] == [{"decay": 0.3}, {"decay": 0.6}]
        best = max(candidates, key=lambda c: (c["best_val_accuracy"], -c["best_val_loss"]))
        assert r["search"]["chosen"] == best["config"]
        assert r["selection_score"] == best["best_val_accuracy"]
    src = source.state_dict()
    for r, model in zip(result["runs"], seen, strict=True):
        loaded, config = load_checkpoint(tmp_path / r["checkpoint"])
        assert config["strategy"] == "llrd"
        with torch.no_grad():
            assert torch.equal(loaded(target.val_x), model(target.val_x))
        for block in BLOCKS:  # every block trains, if slowly
            key = f"backbone.{block}.0.weight"
            assert not torch.equal(loaded.state_dict()[key], src[key]), (r["checkpoint"], key)


def test_run_replicates_is_bitwise_reproducible(target: TargetData, source_path: Path,
                                                tmp_path: Path) -> None:
    assert_same_runs(*(run_and_load("llrd", CFG, source_path, target, tmp_path / str(i))
                       for i in range(2)))


@pytest.mark.parametrize(("value", "message"), [(0, "must be > 0"), (1.5, "must be <= 1"),
                                                ("fast", "expected a number")])
def test_decay_is_validated_by_key(value: object, message: str) -> None:
    with pytest.raises(ParamsError, match=rf"transfer\.llrd\.decay: .*{message}"):
        parse_blocks({"llrd": {"decay": value}})
