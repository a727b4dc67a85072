"""``head_init: source``: a head-training strategy starts from the source head's rows of the
target classes a source class maps onto; ``adabn`` with ``then: none`` trains nothing and keeps
the source head (the zero-label curve)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from tests.adapt.strategies.helpers import ARCH, CHECKPOINTS, CPU, SELECTION, run_into
from transferlab.adapt.replicates import run_replicates
from transferlab.adapt.strategies import Context, get, parse_blocks
from transferlab.adapt.strategies.adabn import AdaBNParams, recalibrate_batchnorm
from transferlab.adapt.strategies.finetune import FinetuneParams
from transferlab.adapt.target import TargetData
from transferlab.core.errors import ParamsError
from transferlab.models.nets import load_checkpoint
from transferlab.training.loop import predict_logits

ALIGNED = {"source_to_target": {"a": 0, "b": 1, "c": 2}, "aligned": True,
           "unmapped_target_classes": []}
PARTIAL = {"source_to_target": {"c": 0, "a": 2}, "aligned": False,
           "unmapped_target_classes": ["1"]}
UNRELATED = {"source_to_target": {}, "aligned": False,
             "unmapped_target_classes": ["0", "1", "2"]}
SOURCE_CONFIG = {"source_classes": ["a", "b", "c", "d"]}
CFG = FinetuneParams(epochs=2, batch_size=8, patience=5, lr=0.01)


def _strategy(name: str, cfg: object, target: TargetData, source: nn.Module,
              mapping: dict) -> object:
    ctx = Context.build(target, source, arch=ARCH, device=CPU, seed=7,
                        source_config=SOURCE_CONFIG, mapping=mapping)
    return get(name)(cfg, ctx)


# ---------------------------------------------------------------------------------- params
def test_params_accept_source_and_fresh_and_search_over_them() -> None:
    blocks = parse_blocks({"finetune": {"head_init": "source"},
                           "l2_sp": {"search": {"head_init": ["source", "fresh"]}}})
    assert blocks["finetune"].head_init == "source"
    assert [c.head_init for _, c in blocks["l2_sp"].search_grid()] == ["source", "fresh"]
    with pytest.raises(ParamsError, match=r"transfer\.finetune\.head_init: unknown value "
                                          "'old'; expected one of fresh, source"):
        parse_blocks({"finetune": {"head_init": "old"}})


def test_params_refuse_source_for_an_mlp_head_and_for_scratch() -> None:
    with pytest.raises(ParamsError, match=r"transfer\.finetune\.head_init: source copies rows "
                                          "of the source's linear head; it needs head: linear"):
        parse_blocks({"finetune": {"head_init": "source", "head": "mlp"}})
    with pytest.raises(ParamsError, match=r"transfer\.scratch\.head_init: scratch starts from "
                                          "random weights"):
        parse_blocks({"scratch": {"search": {"head_init": ["fresh", "source"]}}})


# ------------------------------------------------------------------------------ the head
def test_source_rows_are_copied_onto_the_mapped_classes_only(
        target: TargetData, source: nn.Module) -> None:
    """Partial overlap: target 0 <- source c, target 2 <- source a; target 1 keeps the fresh
    row the replicate seed draws."""
    cfg = FinetuneParams(head_init="source")
    strategy = _strategy("finetune", cfg, target, source, PARTIAL)
    fresh = strategy.initial_model()
    fresh_row = fresh.head.weight[1].detach().clone()
    model = strategy.start_head(fresh, cfg)
    assert strategy.source_head_rows() == {0: 2, 2: 0}
    assert torch.equal(model.head.weight[0], source.head.weight[2])
    assert torch.equal(model.head.bias[2], source.head.bias[0])
    assert torch.equal(model.head.weight[1], fresh_row)
    assert not torch.equal(model.head.weight[1], source.head.weight[1])
    # fresh leaves the drawn head as it is
    again = _strategy("finetune", CFG, target, source, PARTIAL)
    assert torch.equal(again.start_head(again.initial_model(), CFG).head.weight[1], fresh_row)


def test_source_without_a_mapped_class_is_a_params_error_that_says_why(
        target: TargetData, source: nn.Module) -> None:
    strategy = _strategy("finetune", FinetuneParams(head_init="source"), target, source,
                         UNRELATED)
    with pytest.raises(ParamsError, match=r"transfer\.finetune\.head_init: source needs target "
                                          "classes that a source class maps onto.*only fresh"):
        strategy.source_head_rows()


def test_a_search_keeps_only_fresh_where_no_class_maps(
        target: TargetData, source_path: Path, tmp_path: Path) -> None:
    cfg = FinetuneParams(epochs=2, batch_size=8, patience=5, lr=0.01,
                         search={"head_init": ("source", "fresh")})
    aligned = run_into("finetune", cfg, source_path, target, tmp_path / "a", mapping=ALIGNED)
    unrelated = run_into("finetune", cfg, source_path, target, tmp_path / "u",
                         mapping=UNRELATED)
    for r in aligned["runs"]:
        assert [c["config"] for c in r["search"]["candidates"]] == [
            {"head_init": "source"}, {"head_init": "fresh"}]
    for r in unrelated["runs"]:  # one candidate left: no search record of two
        assert "search" not in r or [c["config"] for c in r["search"]["candidates"]] == [
            {"head_init": "fresh"}]
    fixed = FinetuneParams(epochs=2, batch_size=8, patience=5, lr=0.01, head_init="source")
    with pytest.raises(ParamsError, match=r"transfer\.finetune\.head_init"):
        run_into("finetune", fixed, source_path, target, tmp_path / "f", mapping=UNRELATED)


def test_the_source_head_is_the_start_of_training(
        target: TargetData, source_path: Path, tmp_path: Path) -> None:
    """With nothing to train (lr 0), a probe from the source head predicts as the source head
    does on the mapped classes; from a fresh head it does not."""
    source = load_checkpoint(source_path)[0]
    outs = {}
    for init in ("source", "fresh"):
        cfg = parse_blocks({"linear_probe": {"epochs": 1, "batch_size": 8, "patience": 5,
                                             "lr": 1e-12, "head_init": init}})["linear_probe"]
        run_into("linear_probe", cfg, source_path, target, tmp_path / init, mapping=ALIGNED)
        outs[init] = load_checkpoint(tmp_path / init / "0_2.pt")[0]
    want = predict_logits(source, target.val_x, CPU)[:, :3]
    assert torch.allclose(predict_logits(outs["source"], target.val_x, CPU), want, atol=1e-5)
    assert not torch.allclose(predict_logits(outs["fresh"], target.val_x, CPU), want,
                              atol=1e-2)


# ------------------------------------------------------------------------- adabn then: none
def test_adabn_none_is_not_a_search_point() -> None:
    assert parse_blocks({"adabn": {"then": "none"}})["adabn"].then == "none"
    with pytest.raises(ParamsError, match=r"transfer\.adabn\.search\.then: none trains nothing"):
        parse_blocks({"adabn": {"search": {"then": ["probe", "none"]}}})


def test_adabn_none_keeps_the_source_head_with_target_statistics(
        target: TargetData, source_path: Path, tmp_path: Path) -> None:
    result = run_into("adabn", AdaBNParams(then="none"), source_path, target, tmp_path,
                      mapping=ALIGNED)
    assert result["skipped"] is None
    assert [p.name for p in tmp_path.glob("*.pt")] == ["model.pt"]
    assert len(result["runs"]) == len(CHECKPOINTS)  # every budget and seed, no label trained
    for r in result["runs"]:
        assert r["trainable_params"] == 0 and r["checkpoint"] == "model.pt"
        assert r["refit"] is False
    model = load_checkpoint(tmp_path / "model.pt")[0]
    source = load_checkpoint(source_path)[0]
    assert torch.equal(model.head.weight, source.head.weight[:3])
    recalibrate_batchnorm(source, target.pool_x, CPU)
    state, want = model.state_dict(), source.state_dict()
    for k in want:
        if k.endswith(("running_mean", "running_var")) or k.startswith("backbone."):
            assert torch.equal(state[k], want[k]), k


def test_adabn_none_runs_only_where_every_target_class_maps(
        target: TargetData, source_path: Path, tmp_path: Path) -> None:
    cfg = AdaBNParams(then="none")
    for mapping in (PARTIAL, UNRELATED):
        result = run_replicates("adabn", cfg, source_path, target, CPU, tmp_path, ARCH,
                                SELECTION, mapping=mapping)
        assert "label spaces differ" in result["skipped"]
    assert get("adabn").skip_reason({"arch": "small_cnn", "source_classes": []}, ALIGNED,
                                    cfg).startswith("then: none keeps the source head")
    # probe and all still run on an unrelated source: they train a new head
    assert get("adabn").skip_reason({"arch": "small_cnn", **SOURCE_CONFIG}, UNRELATED,
                                    AdaBNParams(then="all")) is None


# ------------------------------------------------------------------- k-fold end to end
def test_kfold_trains_each_candidate_per_fold_and_refits_the_pooled_epoch(
        target: TargetData, source_path: Path, tmp_path: Path) -> None:
    from transferlab.config.params import SelectionParams
    cfg = FinetuneParams(epochs=3, batch_size=8, patience=5, lr=0.01,
                         search={"head_init": ("source", "fresh")})
    kfold = SelectionParams(scheme="kfold", folds=2)
    result = run_into("finetune", cfg, source_path, target, tmp_path, selection=kfold,
                      mapping=ALIGNED)
    for r in result["runs"]:
        assert r["selection_method"] == "kfold" and r["refit"] is True
        assert r["folds"] and len(r["folds"]) == 2
        assert r["holdout_examples"] == (6 if r["budget"] == "2" else 30)
        # the chosen candidate's pooled score is the size-weighted mean of its folds' epoch
        # scores at the pooled best epoch
        chosen = [c for c in r["search"]["candidates"] if c["config"] == r["search"]["chosen"]]
        assert chosen[0]["best_val_accuracy"] == r["selection_score"]
        assert r["history"][r["best_epoch"] - 1]["val_accuracy"] == r["selection_score"]
    untrained = run_into("source_only", None, source_path, target, tmp_path / "so",
                         selection=kfold, mapping=ALIGNED)
    for r in untrained["runs"]:  # scored on every budget label, no label trained it
        assert r["selection_method"] == "all_budget_labels"
        assert r["holdout_examples"] == (6 if r["budget"] == "2" else 30)
