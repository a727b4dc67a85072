"""Tests for transferlab.adapt.strategies on a tiny synthetic target and a tiny saved source
model."""

from __future__ import annotations

import copy
import itertools
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.adapt.strategies.helpers import (
    ARCH,
    CHECKPOINTS,
    CPU,
    SELECTION,
    SOURCE_CLASSES,
    assert_reproducible,
    loaded_states,
    part,
    run_and_load,
    save_source,
    states_equal,
)
from transferlab.adapt.replicates import replicate_seed, run_replicates, skip_reason
from transferlab.adapt.strategies import linear_probe
from transferlab.adapt.strategies.finetune import Finetune, FinetuneParams
from transferlab.adapt.strategies.linear_probe import LinearProbeParams
from transferlab.adapt.strategies.partial_finetune import PartialFinetuneParams
from transferlab.adapt.strategies.scratch import ScratchParams
from transferlab.adapt.target import TargetData
from transferlab.core.errors import DataError
from transferlab.models.nets import load_checkpoint, reset_head

ALIGNED = {"source_to_target": {"c": 0, "a": 1, "d": 2}, "aligned": True,
           "unmapped_target_classes": []}
CONFIGS = {
    "linear_probe": LinearProbeParams(epochs=3, batch_size=8, lr=0.05, patience=5),
    "partial_finetune": PartialFinetuneParams(epochs=2, batch_size=8, patience=5,
                                              frozen_blocks=1),
    "finetune": FinetuneParams(epochs=2, batch_size=8, patience=5),
    "scratch": ScratchParams(epochs=2, batch_size=8, patience=5),
}
TRAINED = list(CONFIGS)
# small_cnn width 8, 3 classes: conv 1->8, BN 8, conv 8->16, BN 16, conv 16->32, BN 32, head
N_PARAMS = {"block1": 72 + 16, "block2": 1152 + 32, "block3": 4608 + 64, "head": 32 * 3 + 3}


# ------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def results(target: TargetData, source_path: Path,
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict, Path]]:
    """One run_replicates per trained strategy (scratch without a source)."""
    out = {}
    for name, cfg in CONFIGS.items():
        folder = tmp_path_factory.mktemp(name)
        src = None if name == "scratch" else source_path
        out[name] = (run_replicates(name, cfg, src, target, CPU, folder, ARCH, SELECTION), folder)
    return out


# ------------------------------------------------------------------- cached pool features
def test_linear_probe_caches_the_pool_features_it_trained_on(results: dict, target: TargetData,
                                                             source_path: Path,
                                                             tmp_path: Path) -> None:
    result, run_folder = results["linear_probe"]
    folder = tmp_path / "digits" / "linear_probe"  # the stage's layout, with its runs.json
    shutil.copytree(run_folder, folder)
    (folder / "runs.json").write_text(json.dumps({k: v for k, v in result.items()
                                                  if k != "timing"}))
    source, _ = load_checkpoint(source_path)
    expected = linear_probe.extract_features(source, target.pool_x, CPU).numpy()
    cached = linear_probe.load_pool_features(folder, len(target.pool_x))
    assert cached is not None and np.array_equal(cached, expected)
    assert result["pool_features"]["shape"] == list(expected.shape)
    assert linear_probe.load_pool_features(folder, len(target.pool_x) + 1) is None  # another pool
    # no runs.json
    assert linear_probe.load_pool_features(folder.parent, len(target.pool_x)) is None


def test_edited_pool_features_are_caught_by_name(results: dict, target: TargetData,
                                                 tmp_path: Path) -> None:
    result, folder = results["linear_probe"]
    copy_dir = tmp_path / "digits" / "linear_probe"
    copy_dir.mkdir(parents=True)
    (copy_dir / "runs.json").write_text(json.dumps({"pool_features": result["pool_features"]}))
    features = np.load(folder / linear_probe.POOL_FEATURES)
    features[0, 0] += 1.0
    np.save(copy_dir / linear_probe.POOL_FEATURES, features)
    with pytest.raises(DataError, match=r"pool_features.npy: sha256 does not match .*runs.json"
                                        r".*dvc repro --force transfer@digits"):
        linear_probe.load_pool_features(copy_dir, len(target.pool_x))


# ----------------------------------------------------------------------- replicate seeds
def test_replicate_seed_is_distinct_and_stable() -> None:
    seeds, budgets = ["0", "1", "2", "3", "17"], ["1", "2", "3", "10", "30", "100", "all"]
    values = [replicate_seed(s, b) for s, b in itertools.product(seeds, budgets)]
    assert len(set(values)) == len(values)
    assert replicate_seed("1", "10") == replicate_seed("1", "10")
    assert all(isinstance(v, int) and v >= 0 for v in values)


def test_skip_reason_unknown_strategy() -> None:
    with pytest.raises(ValueError, match="unknown strategy 'fintune'; expected one of "
                                         "source_only, zero_shot, in_context, linear_probe"):
        skip_reason("fintune", None, None)


# ---------------------------------------------------------------------- records and files
@pytest.mark.parametrize("name", TRAINED)
def test_records_and_checkpoints(name: str, results: dict, target: TargetData) -> None:
    result, folder = results[name]
    cfg = CONFIGS[name]
    assert result["strategy"] == name and result["skipped"] is None
    cache = {linear_probe.POOL_FEATURES} if name == "linear_probe" else set()
    assert {p.name for p in folder.iterdir()} == CHECKPOINTS | cache
    runs = result["runs"]
    assert [(r["seed"], r["budget"]) for r in runs] == [(0, "2"), (0, "all"), (1, "2"),
                                                        (1, "all")]
    # per example: forward F, weight gradients of what trains, input gradients of what
    # follows a trainable block (small_cnn width 8 at 16x16: conv FLOPs 2 * out elems * fan-in)
    conv = [2 * 8 * 256 * 1 * 9, 2 * 16 * 64 * 8 * 9, 2 * 32 * 16 * 16 * 9]
    head = 2 * 32 * 3
    forward = sum(conv) + head
    per_example = {"linear_probe": 2 * head,  # the head alone, on cached features
                   "partial_finetune": forward + (forward - conv[0]) + (forward - sum(conv[:2])),
                   "finetune": forward + forward + (forward - conv[0]),
                   "scratch": forward + forward + (forward - conv[0])}[name]
    trainable = {"linear_probe": N_PARAMS["head"],
                 "partial_finetune": sum(N_PARAMS.values()) - N_PARAMS["block1"],
                 "finetune": sum(N_PARAMS.values()), "scratch": sum(N_PARAMS.values())}[name]
    for r in runs:
        assert {"seed", "budget", "checkpoint", "best_epoch", "epochs_run", "steps",
                "trainable_params", "train_flops", "history", "selection_method",
                "selection_score", "fit_examples", "holdout_examples", "refit"} <= set(r)
        assert r["checkpoint"] == f"{r['seed']}_{r['budget']}.pt"
        n = len(target.budgets[str(r["seed"])][r["budget"]])
        # within_budget: 2 labels per class hold out 1 each; 'all' (10) holds out 3 each
        held = {"2": 3, "all": 9}[r["budget"]]
        assert (r["selection_method"], r["fit_examples"], r["holdout_examples"],
                r["refit"]) == ("holdout", n - held, held, True)
        assert 0.0 <= r["selection_score"] <= 1.0
        assert r["selection_score"] == r["best_val_accuracy"]
        assert r["epochs_run"] == len(r["history"]) and 1 <= r["best_epoch"] <= r["epochs_run"]
        # the choosing run on the fit part, then the refit on all n for best_epoch epochs
        assert r["steps"] == (r["epochs_run"] * math.ceil((n - held) / cfg.batch_size)
                              + r["best_epoch"] * math.ceil(n / cfg.batch_size))
        assert r["trainable_params"] == trainable
        # plus one forward pass over the held-out labels per epoch of the choosing run, and
        # precise BatchNorm (bn_stats: auto) before each of its validations and at the end of
        # the refit: a backbone pass over the fit's inputs per BatchNorm layer that had no
        # statistics before and that the fit moved (scratch's three; a source's keep theirs)
        val_forward = head if name == "linear_probe" else forward
        moved = 3 if name == "scratch" else 0
        assert r["train_flops"] == (per_example * ((n - held) * r["epochs_run"]
                                                   + n * r["best_epoch"])
                                    + val_forward * held * r["epochs_run"]
                                    + moved * sum(conv) * ((n - held) * r["epochs_run"] + n))
    for ckpt in folder.glob("*.pt"):
        model, config = load_checkpoint(ckpt)
        assert model.head.out_features == 3
        assert config["strategy"] == name and config["num_classes"] == 3
        want = (0.1, 0.3) if name == "scratch" else (0.5, 0.2)  # target vs source statistics
        assert (config["mean"], config["std"]) == pytest.approx(want)


def test_on_result_sees_every_replicate(target: TargetData, tmp_path: Path) -> None:
    seen = []
    result = run_replicates("scratch", CONFIGS["scratch"], None, target, CPU, tmp_path, ARCH,
                            SELECTION, on_result=lambda *args: seen.append(args))
    assert [r for r, _, _ in seen] == result["runs"]
    assert all(isinstance(m, nn.Module) and not m.training for _, m, _ in seen)
    assert [d for _, _, d in seen] == ["cpu"] * len(result["runs"])  # where each one trained
    assert {t["device"] for t in result["timing"].values()} == {"cpu"}


# ---------------------------------------------------------------------------- source_only
def test_source_only_reorders_the_source_head(target: TargetData, source_path: Path,
                                              source: nn.Module, tmp_path: Path) -> None:
    result = run_replicates("source_only", None, source_path, target, CPU, tmp_path, ARCH,
                            SELECTION, mapping=ALIGNED)
    assert result["skipped"] is None
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
    assert len(result["runs"]) == 4
    assert all(r["checkpoint"] == "model.pt" and r["train_flops"] == 0
               and r["trainable_params"] == 0 for r in result["runs"])
    model, config = load_checkpoint(tmp_path / "model.pt")
    assert config["num_classes"] == 3 and config["source_classes"] == SOURCE_CLASSES
    rows = [SOURCE_CLASSES.index(s) for s in ("c", "a", "d")]  # target classes 0, 1, 2
    assert torch.equal(model.head.weight, source.head.weight[rows])
    assert torch.equal(model.head.bias, source.head.bias[rows])
    assert states_equal(model.backbone.state_dict(), source.backbone.state_dict())
    x = target.val_x[:4]
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x)[:, rows])


def test_source_only_skips_unaligned_label_spaces(target: TargetData, source_path: Path,
                                                  tmp_path: Path) -> None:
    mapping = {"source_to_target": {"a": 0}, "aligned": False,
               "unmapped_target_classes": ["seven", "eight"]}
    result = run_replicates("source_only", None, source_path, target, CPU, tmp_path, ARCH,
                            SELECTION, mapping=mapping)
    assert "seven" in result["skipped"] and "eight" in result["skipped"]
    assert result["runs"] == [] and list(tmp_path.iterdir()) == []


def test_source_only_skips_a_null_source(target: TargetData, tmp_path: Path) -> None:
    null = save_source(tmp_path / "null.pt", [])
    out = tmp_path / "out"
    out.mkdir()
    for path in (null, None):
        result = run_replicates("source_only", None, path, target, CPU, out, ARCH, SELECTION,
                                mapping=ALIGNED)
        assert "null source" in result["skipped"]
        assert result["runs"] == [] and list(out.iterdir()) == []


# --------------------------------------------------------------------------- linear_probe
def test_linear_probe_keeps_the_backbone(results: dict, source: nn.Module) -> None:
    _, folder = results["linear_probe"]
    src = source.state_dict()
    for name, state in loaded_states(folder).items():
        assert states_equal(part(state, "backbone."), part(src, "backbone.")), name
        seed, budget = name[:-3].split("_")
        init = reset_head(copy.deepcopy(source), 3, replicate_seed(seed, budget)).head
        assert not torch.equal(state["head.weight"], init.weight), name  # the head trained


def test_linear_probe_extracts_features_once(target: TargetData, source_path: Path,
                                             tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = linear_probe.extract_features

    def counting(model: nn.Module, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        calls.append(len(x))
        return original(model, x, *args, **kwargs)

    monkeypatch.setattr(linear_probe, "extract_features", counting)
    result = run_replicates("linear_probe", CONFIGS["linear_probe"], source_path, target, CPU,
                            tmp_path, ARCH, SELECTION)
    assert len(result["runs"]) == 4
    assert calls == [len(target.pool_x), len(target.val_x)]


# ----------------------------------------------------------------------- partial_finetune
def test_partial_finetune_keeps_the_first_blocks(results: dict, source: nn.Module) -> None:
    _, folder = results["partial_finetune"]
    src = source.state_dict()
    for name, state in loaded_states(folder).items():
        # frozen_blocks=1, freeze_bn_stats=True: block1 weights and BN statistics are kept
        assert states_equal(part(state, "backbone.block1."), part(src, "backbone.block1."))
        for block in ("block2", "block3"):
            for key in ("0.weight", "1.weight", "1.running_mean"):
                full = f"backbone.{block}.{key}"
                assert not torch.equal(state[full], src[full]), (name, full)


def test_partial_finetune_without_frozen_bn_stats(target: TargetData, source_path: Path,
                                                  source: nn.Module, tmp_path: Path) -> None:
    cfg = PartialFinetuneParams(epochs=1, batch_size=8, frozen_blocks=2, freeze_bn_stats=False)
    run_replicates("partial_finetune", cfg, source_path, target, CPU, tmp_path, ARCH, SELECTION)
    src = source.state_dict()
    state = load_checkpoint(tmp_path / "0_all.pt")[0].state_dict()
    for block in ("block1", "block2"):
        for key in ("0.weight", "1.weight", "1.bias"):
            assert torch.equal(state[f"backbone.{block}.{key}"], src[f"backbone.{block}.{key}"])
        # the statistics of frozen blocks do follow the target data here
        key = f"backbone.{block}.1.running_mean"
        assert not torch.equal(state[key], src[key])
    assert not torch.equal(state["backbone.block3.0.weight"], src["backbone.block3.0.weight"])


@pytest.mark.parametrize("frozen", [3, 4])
def test_partial_finetune_cannot_freeze_every_block(frozen: int, target: TargetData,
                                                    source_path: Path, tmp_path: Path) -> None:
    cfg = PartialFinetuneParams(epochs=1, batch_size=8, frozen_blocks=frozen)
    with pytest.raises(ValueError, match=r"transfer\.partial_finetune\.frozen_blocks: "
                                         f"{frozen}.*block1, block2, block3"):
        run_replicates("partial_finetune", cfg, source_path, target, CPU, tmp_path, ARCH, SELECTION)


# ------------------------------------------------------------------------------- finetune
def test_finetune_backbone_learning_rate(source: nn.Module) -> None:
    model = reset_head(copy.deepcopy(source), 3, seed=0)
    cfg = FinetuneParams(lr=0.01, backbone_lr_mult=0.25)
    _, groups = Finetune(cfg, None).trainable(model, cfg)
    assert [g["lr"] for g in groups] == [pytest.approx(0.0025), 0.01]
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    assert {id(p) for p in groups[0]["params"]} == backbone_ids
    assert len(groups[0]["params"]) == len(backbone_ids)
    assert [id(p) for p in groups[1]["params"]] == [id(p) for p in model.head.parameters()]


def test_finetune_changes_every_block(results: dict, source: nn.Module) -> None:
    _, folder = results["finetune"]
    src = source.state_dict()
    for name, state in loaded_states(folder).items():
        for block in ("block1", "block2", "block3"):
            key = f"backbone.{block}.0.weight"
            assert not torch.equal(state[key], src[key]), (name, key)


# -------------------------------------------------------------------------------- scratch
def test_scratch_ignores_the_source(results: dict, target: TargetData, source_path: Path,
                                    source: nn.Module, tmp_path: Path) -> None:
    result, folder = results["scratch"]  # run with source_path=None
    with_source = run_replicates("scratch", CONFIGS["scratch"], source_path, target, CPU,
                                 tmp_path, ARCH, SELECTION)
    assert with_source["runs"] == result["runs"]
    a, b = loaded_states(folder), loaded_states(tmp_path)
    assert a.keys() == b.keys() == CHECKPOINTS
    for name in a:
        assert states_equal(a[name], b[name]), name
        assert not torch.equal(a[name]["backbone.block1.0.weight"],
                               source.state_dict()["backbone.block1.0.weight"])


# ---------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("name", TRAINED)
def test_run_replicates_is_bitwise_reproducible(name: str, deterministic, target: TargetData,
                                                source_path: Path, tmp_path: Path) -> None:
    src = None if name == "scratch" else source_path
    first, second = (run_and_load(name, CONFIGS[name], src, target, tmp_path / str(i))
                     for i in range(2))
    assert_reproducible(first, second)
