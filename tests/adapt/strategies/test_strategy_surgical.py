"""Tests for the ``surgical`` strategy (transferlab.adapt.strategies.surgical) on a tiny target and
source."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.adapt.strategies.helpers import (
    ARCH,
    BLOCKS,
    CPU,
    SELECTION,
    assert_same_runs,
    context,
    loaded_states,
    part,
    run_and_load,
    states_equal,
)
from transferlab.adapt.replicates import replicate_seed, run_replicates
from transferlab.adapt.strategies import parse_blocks
from transferlab.adapt.strategies.surgical import Surgical, SurgicalParams
from transferlab.adapt.target import TargetData
from transferlab.core.errors import ParamsError
from transferlab.models.nets import load_checkpoint, reset_head

CFG = SurgicalParams(epochs=2, batch_size=8, patience=5, block="block2")


def _changed_blocks(state: dict, src: dict) -> set[str]:
    return {b for b in BLOCKS if not states_equal(part(state, f"backbone.{b}."),
                                                  part(src, f"backbone.{b}."))}


def test_only_the_block_and_the_head_train(source: nn.Module, target: TargetData) -> None:
    model = reset_head(source, 3, seed=0)
    cfg = SurgicalParams(lr=0.01, backbone_lr_mult=0.5, block="block2")
    net, groups = Surgical(cfg, context(target, model)).trainable(model, cfg)
    assert net is model
    assert [g["lr"] for g in groups] == [0.005, 0.01]
    assert [id(p) for p in groups[0]["params"]] == [
        id(p) for p in model.backbone.block2.parameters()]
    assert [id(p) for p in groups[1]["params"]] == [id(p) for p in model.head.parameters()]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters()
                         if n.startswith(("backbone.block2.", "head."))}
    assert set(model.frozen_bn) == {"backbone.block1.1", "backbone.block3.1"}


def test_unknown_block_names_the_valid_ones(target: TargetData, source_path: Path,
                                            tmp_path: Path) -> None:
    cfg = SurgicalParams(epochs=1, batch_size=8, block="layer4")
    with pytest.raises(ValueError, match=r"transfer\.surgical\.block: unknown block 'layer4'; "
                                         r"expected one of block1, block2, block3"):
        run_replicates("surgical", cfg, source_path, target, CPU, tmp_path, ARCH, SELECTION)


def test_only_the_chosen_block_changes(target: TargetData, source_path: Path,
                                       source: nn.Module, tmp_path: Path) -> None:
    run_replicates("surgical", CFG, source_path, target, CPU, tmp_path, ARCH, SELECTION)
    src = source.state_dict()
    for name, state in loaded_states(tmp_path).items():
        # block1 and block3 keep weights and BatchNorm statistics bitwise; block2 moves in both
        assert _changed_blocks(state, src) == {"block2"}, name
        for key in ("0.weight", "1.running_mean"):
            assert not torch.equal(state[f"backbone.block2.{key}"], src[f"backbone.block2.{key}"])
        seed, budget = name[:-3].split("_")
        init = reset_head(copy.deepcopy(source), 3, replicate_seed(seed, budget)).head
        assert not torch.equal(state["head.weight"], init.weight), name  # the new head trains


def test_search_picks_the_block_with_the_best_val_accuracy(target: TargetData,
                                                           source_path: Path, source: nn.Module,
                                                           tmp_path: Path) -> None:
    cfg = SurgicalParams(epochs=2, batch_size=8, patience=5,
                         search={"block": ("block1", "block2", "block3")})
    seen = []
    result = run_replicates("surgical", cfg, source_path, target, CPU, tmp_path, ARCH,
                            SELECTION, on_result=lambda record, model, _device: seen.append(model))
    src = source.state_dict()
    for r, model in zip(result["runs"], seen, strict=True):
        candidates = r["search"]["candidates"]
        assert [c["config"] for c in candidates] == [{"block": b} for b in BLOCKS]
        assert all(0.0 <= c["best_val_accuracy"] <= 1.0 for c in candidates)
        best = max(candidates, key=lambda c: (c["best_val_accuracy"], -c["best_val_loss"]))
        assert r["search"]["chosen"] == best["config"]
        assert r["selection_score"] == best["best_val_accuracy"]
        loaded, config = load_checkpoint(tmp_path / r["checkpoint"])
        assert config["strategy"] == "surgical"
        assert _changed_blocks(loaded.state_dict(), src) == {best["config"]["block"]}
        with torch.no_grad():
            assert torch.equal(loaded(target.val_x), model(target.val_x))


def test_run_replicates_is_bitwise_reproducible(target: TargetData, source_path: Path,
                                                tmp_path: Path) -> None:
    assert_same_runs(*(run_and_load("surgical", CFG, source_path, target, tmp_path / str(i))
                       for i in range(2)))


@pytest.mark.parametrize(("block", "message"), [
    ({"block": 3}, r"block: .*expected a non-empty string"),
    ({"search": {"block": []}}, r"search\.block: must list at least one value"),
    ({"backbone_lr_mult": 0}, r"backbone_lr_mult: must be > 0")])
def test_params_are_validated_by_key(block: dict, message: str) -> None:
    with pytest.raises(ParamsError, match=rf"transfer\.surgical\.{message}"):
        parse_blocks({"surgical": block})
