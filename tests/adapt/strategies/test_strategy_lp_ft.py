"""Tests for the ``lp_ft`` strategy (transferlab.adapt.strategies.lp_ft) on a tiny target and
source."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.adapt.strategies.helpers import (
    ARCH,
    CHECKPOINTS,
    CPU,
    SELECTION,
    assert_same_runs,
    context,
    loaded_states,
    part,
    run_and_load,
    snapshot,
    states_equal,
)
from transferlab.adapt.replicates import run_replicates
from transferlab.adapt.strategies import parse_blocks
from transferlab.adapt.strategies.finetune import FinetuneParams
from transferlab.adapt.strategies.lp_ft import LpFt, LpFtParams
from transferlab.adapt.target import TargetData
from transferlab.core.errors import ParamsError
from transferlab.models.nets import load_checkpoint, reset_head

CFG = LpFtParams(epochs=2, batch_size=8, patience=5, probe_epochs=20, probe_lr=0.05)


def _probe(source: nn.Module, target: TargetData, cfg: LpFtParams,
           generator: torch.Generator) -> nn.Module:
    model = reset_head(source, 3, seed=0)
    return LpFt(cfg, context(target, model)).before_fit(
        model, (target.pool_x, target.pool_y), cfg, generator)


def test_probe_trains_only_the_head(source: nn.Module, target: TargetData) -> None:
    before = snapshot(reset_head(copy.deepcopy(source), 3, seed=0))
    generator = torch.Generator().manual_seed(7)
    state = generator.get_state()
    model = _probe(source, target, CFG, generator)
    after = snapshot(model)
    body = [k for k in before if not k.startswith("head.")]
    assert body and all(torch.equal(before[k], after[k]) for k in body)  # BN statistics too
    assert not torch.equal(before["head.weight"], after["head.weight"])
    assert torch.equal(generator.get_state(), state)  # full batch: nothing drawn


def test_probe_is_full_batch_adamw_on_eval_mode_features(source: nn.Module,
                                                         target: TargetData) -> None:
    """Reference: the same steps written out by hand on features of the model in eval mode."""
    head = reset_head(copy.deepcopy(source), 3, seed=0).head
    with torch.no_grad():
        features = source.eval().features(target.pool_x)
    optimizer = torch.optim.AdamW(head.parameters(), lr=CFG.probe_lr,
                                  weight_decay=CFG.weight_decay)
    for _ in range(CFG.probe_epochs):
        optimizer.zero_grad()
        F.cross_entropy(head(features), target.pool_y).backward()
        optimizer.step()
    model = _probe(source, target, CFG, torch.Generator())
    torch.testing.assert_close(model.head.weight, head.weight)
    torch.testing.assert_close(model.head.bias, head.bias)
    with torch.no_grad():  # the probe fits the training labels it saw
        assert (model.head(features).argmax(1) == target.pool_y).double().mean() > 0.9


def test_probe_epochs_zero_is_finetune(target: TargetData, source_path: Path,
                                       tmp_path: Path) -> None:
    common = {"epochs": 2, "batch_size": 8, "patience": 5, "backbone_lr_mult": 0.3}
    runs = {name: run_and_load(name, cfg, source_path, target, tmp_path / name)
            for name, cfg in (("finetune", FinetuneParams(**common)),
                              ("lp_ft", LpFtParams(**common, probe_epochs=0)))}
    assert_same_runs(runs["lp_ft"], runs["finetune"])


def test_run_replicates_records_and_checkpoints(target: TargetData, source_path: Path,
                                                source: nn.Module, tmp_path: Path) -> None:
    result = run_replicates("lp_ft", CFG, source_path, target, CPU, tmp_path, ARCH, SELECTION)
    assert result["skipped"] is None
    assert {p.name for p in tmp_path.iterdir()} == CHECKPOINTS
    assert [(r["seed"], r["budget"]) for r in result["runs"]] == [
        (0, "2"), (0, "all"), (1, "2"), (1, "all")]
    for r in result["runs"]:
        assert r["selection_method"] == "holdout" and r["refit"]
        assert 0.0 <= r["selection_score"] <= 1.0
        assert "search" not in r  # no search space, nothing chosen after the fit
    src = source.state_dict()
    for name, state in loaded_states(tmp_path).items():
        for block in ("block1", "block3"):  # the main fit moved the backbone
            key = f"backbone.{block}.0.weight"
            assert not torch.equal(state[key], src[key]), (name, key)
    model, config = load_checkpoint(tmp_path / "0_all.pt")
    assert config["strategy"] == "lp_ft" and type(model).__name__ == "TransferNet"


def test_saved_model_gives_identical_logits(target: TargetData, source_path: Path,
                                            tmp_path: Path) -> None:
    seen = []
    run_replicates("lp_ft", CFG, source_path, target, CPU, tmp_path, ARCH, SELECTION,
                   on_result=lambda record, model, _: seen.append((record["checkpoint"], model)))
    for name, model in seen:
        loaded, _ = load_checkpoint(tmp_path / name)
        with torch.no_grad():
            assert torch.equal(loaded(target.val_x), model(target.val_x)), name


def test_run_replicates_is_bitwise_reproducible(target: TargetData, source_path: Path,
                                                tmp_path: Path) -> None:
    """Explicit generators alone make it so (no global deterministic switch needed on CPU)."""
    first, second = (run_and_load("lp_ft", CFG, source_path, target, tmp_path / str(i))
                     for i in range(2))
    assert_same_runs(first, second)
    states = first[1]
    assert not states_equal(part(states["0_2.pt"], "head."), part(states["1_2.pt"], "head."))


@pytest.mark.parametrize(("key", "value", "message"), [
    ("probe_epochs", -1, "must be >= 0"), ("probe_lr", 0, "must be > 0"),
    ("probe_lr", "fast", "expected a number")])
def test_params_are_validated_by_key(key: str, value: object, message: str) -> None:
    with pytest.raises(ParamsError, match=rf"transfer\.lp_ft\.{key}: .*{message}"):
        parse_blocks({"lp_ft": {key: value}})
