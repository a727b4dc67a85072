"""Tests for the ``lora`` strategy (transferlab.adapt.strategies.lora) on a tiny target and
source."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.adapt.strategies.helpers import (
    ARCH,
    CHECKPOINTS,
    CPU,
    SELECTION,
    assert_reproducible,
    run_and_load,
)
from transferlab.adapt.replicates import replicate_seed, run_replicates
from transferlab.adapt.strategies import Context, parse_blocks
from transferlab.adapt.strategies.lora import Lora, LoraParams, lora_targets, wrap
from transferlab.adapt.target import TargetData
from transferlab.core.errors import ParamsError
from transferlab.models.nets import (
    TransferNet,
    load_checkpoint,
    reset_head,
)
from transferlab.training.loop import fit, flops_per_example, predict_logits

CFG = LoraParams(epochs=2, batch_size=8, patience=5, rank=4, alpha=8.0)


# -------------------------------------------------------------------------------- fixtures
def _hand_trainable(model: nn.Module, rank: int, classes: int = 3) -> int:
    """LoRA parameters by hand (conv k x k: A is r x in x k x k, B is out x r x 1 x 1; linear:
    r * (in + out)) plus a whole new head for ``classes``."""
    n = 0
    for m in model.backbone.modules():
        if isinstance(m, nn.Conv2d):
            n += rank * m.in_channels * m.kernel_size[0] * m.kernel_size[1] + m.out_channels * rank
        elif isinstance(m, nn.Linear):
            n += rank * (m.in_features + m.out_features)
    return n + (model.feature_dim + 1) * classes


@pytest.fixture(scope="module")
def searched(target: TargetData, source_path: Path,
             tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, dict]:
    folder = tmp_path_factory.mktemp("lora")
    models = {}
    cfg = LoraParams(epochs=2, batch_size=8, patience=5, search={"rank": (2, 8)})
    result = run_replicates("lora", cfg, source_path, target, CPU, folder, ARCH, SELECTION,
                            on_result=lambda r, m, _device: models.update({r["checkpoint"]: m}))
    return result, folder, models


# ---------------------------------------------------------------------------------- params
def test_params_validate_rank_and_alpha() -> None:
    blocks = parse_blocks({"lora": {"rank": 8, "alpha": 16, "search": {"rank": [2, 8]}}})
    assert blocks["lora"].rank == 8 and blocks["lora"].alpha == 16.0
    with pytest.raises(ParamsError, match=r"transfer\.lora\.rank: must be >= 1"):
        parse_blocks({"lora": {"rank": 0}})
    with pytest.raises(ParamsError, match=r"transfer\.lora\.alpha: must be > 0"):
        parse_blocks({"lora": {"alpha": 0}})


# ------------------------------------------------------------------------------ reference
def test_lora_targets_every_backbone_conv_and_refuses_grouped(source: nn.Module) -> None:
    assert lora_targets(source) == ["backbone.block1.0", "backbone.block2.0",
                                    "backbone.block3.0"]
    grouped = copy.deepcopy(source)
    grouped.backbone.block2[0] = nn.Conv2d(8, 16, 3, padding=1, groups=8, bias=False)
    with pytest.raises(ValueError, match=r"backbone\.block2\.0 is a grouped convolution"):
        lora_targets(grouped)


def test_wrapped_model_starts_exactly_at_the_unwrapped_one(source: nn.Module,
                                                           target: TargetData) -> None:
    model = reset_head(copy.deepcopy(source), 3, seed=0)
    x = target.val_x
    with torch.no_grad():
        before = model.eval()(x)
        net = wrap(model, rank=4, alpha=8.0, seed=0).eval()
        assert torch.equal(net(x), before)  # B = 0: the adapters add exactly nothing
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    assert trainable and all(("lora_A" in n or "lora_B" in n or "modules_to_save.default" in n)
                             for n in trainable)
    lora_b = [p for n, p in net.named_parameters() if "lora_B" in n]
    assert len(lora_b) == 3 and all(not p.any() for p in lora_b)


def test_training_changes_only_adapters_and_head_and_merge_is_exact(
        source: nn.Module, target: TargetData) -> None:
    strategy = Lora(CFG, Context.build(target, source, arch=ARCH, device=CPU, seed=7))
    model = strategy.initial_model()
    keys = list(model.state_dict())
    train = (target.pool_x, target.pool_y)
    generator = torch.Generator().manual_seed(7)
    model = strategy.before_fit(model, train, CFG, generator)
    net, groups = strategy.trainable(model, CFG)
    assert groups[0]["lr"] == CFG.lr
    assert sum(p.numel() for g in groups for p in g["params"]) == _hand_trainable(source, 4)
    start = copy.deepcopy(net.state_dict())
    fit(net, train, None, CFG, groups, generator, CPU)
    end = net.state_dict()
    changed = {k for k in start if not torch.equal(start[k], end[k])}
    assert changed and all(("lora_" in k or "modules_to_save" in k) for k in changed), changed
    assert any("lora_B" in k for k in changed)  # the adapters did learn
    assert all(torch.equal(start[k], end[k]) for k in start if "running_" in k)  # BN frozen
    adapted = predict_logits(net, target.val_x, CPU)
    merged, choices = strategy.after_fit(model, net, None, CFG, None)
    assert choices == {} and isinstance(merged, TransferNet)
    assert list(merged.state_dict()) == keys  # a plain TransferNet again
    torch.testing.assert_close(predict_logits(merged, target.val_x, CPU), adapted,
                               rtol=1e-5, atol=1e-5)
    src = source.state_dict()
    out = merged.state_dict()
    for k in src:
        if k.startswith("backbone."):
            same = torch.equal(src[k], out[k])
            # merged convolutions moved; BatchNorm parameters and statistics did not
            assert same != k.endswith(".0.weight"), k


# ----------------------------------------------------------------------------- end to end
def test_run_replicates_records_search_and_checkpoints(searched: tuple, target: TargetData,
                                                       source: nn.Module) -> None:
    result, folder, models = searched
    assert result["skipped"] is None
    assert {p.name for p in folder.glob("*.pt")} == CHECKPOINTS
    for r in result["runs"]:
        search = r["search"]
        assert [c["config"] for c in search["candidates"]] == [{"rank": 2}, {"rank": 8}]
        best = max(search["candidates"],
                   key=lambda c: (c["best_val_accuracy"], -c["best_val_loss"]))
        assert search["chosen"] == best["config"]
        # counted on the peft model of the refit, at the chosen rank
        assert r["trainable_params"] == _hand_trainable(source, search["chosen"]["rank"]) == (
            {2: 2 * (9 + 8) + 2 * (72 + 16) + 2 * (144 + 32), 8: 8 * (9 + 8) + 8 * (72 + 16)
             + 8 * (144 + 32)}[search["chosen"]["rank"]] + 32 * 3 + 3)
        model, config = load_checkpoint(folder / r["checkpoint"])
        assert config["strategy"] == "lora"
        assert model.state_dict().keys() == source.state_dict().keys()
        logits = predict_logits(model, target.val_x, CPU)
        assert torch.equal(logits, predict_logits(models[r["checkpoint"]], target.val_x, CPU))


def test_run_replicates_is_bitwise_reproducible_and_counts_flops(
        deterministic, target: TargetData, source_path: Path, source: nn.Module,
        tmp_path: Path) -> None:
    torch.set_num_threads(1)  # `deterministic` sets 2 (and restores the count afterwards)
    first, second = (run_and_load("lora", CFG, source_path, target, tmp_path / str(i))
                     for i in range(2))
    assert_reproducible(first, second)
    # FLOPs: measured on the adapter model (forward + backward), times examples x epochs
    for r in first[0]:
        net = wrap(reset_head(copy.deepcopy(source), 3, replicate_seed(str(r["seed"]),
                                                                        r["budget"])), 4, 8.0, 0)
        per_example = flops_per_example(net, target.val_x[:1], train=True)
        forward = flops_per_example(net, target.val_x[:1], train=False)
        n = len(target.budgets[str(r["seed"])][r["budget"]])
        fit_examples = r["fit_examples"]
        # plus a forward pass over the held-out labels per epoch of the choosing run (merging
        # the adapters after training is a few tiny products: B @ A of every layer)
        merge = sum(2 * m.lora_B["default"].weight.shape[0] * 4
                    * m.lora_A["default"].weight[0].numel()
                    for m in net.modules() if hasattr(m, "lora_A") and "default" in m.lora_A)
        assert merge > 0
        assert r["train_flops"] == (per_example * (fit_examples * r["epochs_run"]
                                                   + n * r["best_epoch"])
                                    + forward * r["holdout_examples"] * r["epochs_run"]
                                    + 2 * merge)
        assert r["trainable_params"] == _hand_trainable(source, 4)
