"""Tests for the ``adabn`` strategy (transferlab.adapt.strategies.adabn) on a tiny target and
source."""

from __future__ import annotations

import copy
from collections import OrderedDict
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
    assert_reproducible,
    run_and_load,
    states_equal,
)
from transferlab.adapt.replicates import run_replicates
from transferlab.adapt.strategies import Context, parse_blocks
from transferlab.adapt.strategies.adabn import (
    AdaBN,
    AdaBNParams,
    batchnorm_layers,
    recalibrate_batchnorm,
)
from transferlab.adapt.target import TargetData
from transferlab.core.errors import ParamsError
from transferlab.models.nets import (
    Normalize,
    TransferNet,
    load_checkpoint,
    reset_head,
)
from transferlab.training.loop import fit, predict_logits

CFG = AdaBNParams(epochs=2, batch_size=8, patience=5, lr=0.01)
STATS = ("running_mean", "running_var")


# -------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def recalibrated(source_path: Path, target: TargetData) -> dict[str, torch.Tensor]:
    """The source's state after recalibrating on the whole pool, directly."""
    model = load_checkpoint(source_path)[0]
    recalibrate_batchnorm(model, target.pool_x, CPU)  # the default batch size, as the strategy
    return model.state_dict()


@pytest.fixture(scope="module")
def searched(target: TargetData, source_path: Path,
             tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, dict]:
    folder = tmp_path_factory.mktemp("adabn")
    models = {}
    cfg = AdaBNParams(epochs=2, batch_size=8, patience=5, lr=0.01,
                      search={"then": ("probe", "all")})
    result = run_replicates("adabn", cfg, source_path, target, CPU, folder, ARCH, SELECTION,
                            on_result=lambda r, m, _device: models.update({r["checkpoint"]: m}))
    return result, folder, models


def _stats(state: dict) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k.endswith(STATS)}


# ---------------------------------------------------------------------------------- params
def test_params_name_the_valid_phases() -> None:
    assert parse_blocks({"adabn": {"then": "all"}})["adabn"].then == "all"
    with pytest.raises(ParamsError, match=r"transfer\.adabn\.then: unknown value 'fine'; "
                                          "expected one of probe, all"):
        parse_blocks({"adabn": {"then": "fine"}})


# ------------------------------------------------------------------------------ reference
def test_one_batchnorm_layer_gets_the_pool_statistics_of_its_inputs(target: TargetData) -> None:
    conv = nn.Conv2d(1, 4, 3, padding=1)
    backbone = nn.Sequential(OrderedDict(block1=nn.Sequential(conv, nn.BatchNorm2d(4)),
                                         pool=nn.Sequential(nn.AdaptiveAvgPool2d(1),
                                                            nn.Flatten())))
    model = TransferNet(Normalize(0.5, 0.2), backbone, 4, 3)
    recalibrate_batchnorm(model, target.pool_x, CPU, batch_size=7)
    with torch.no_grad():  # by hand, in float64: conv of the normalised pool, per channel
        h = F.conv2d((target.pool_x.double() - 0.5) / 0.2, conv.weight.double(),
                     conv.bias.double(), padding=1)
    bn = backbone.block1[1]
    torch.testing.assert_close(bn.running_mean, h.mean((0, 2, 3)).float())
    torch.testing.assert_close(bn.running_var, h.var((0, 2, 3), unbiased=True).float())


def test_every_layer_holds_the_pool_statistics_of_its_recalibrated_inputs(
        source: nn.Module, recalibrated: dict, target: TargetData) -> None:
    model = copy.deepcopy(source)
    model.load_state_dict(recalibrated)
    inputs = {}
    hooks = [bn.register_forward_pre_hook(lambda m, a, name=name: inputs.update({name: a[0]}))
             for name, bn in batchnorm_layers(model)]
    with torch.no_grad():  # the whole pool in one eval pass: every layer normalises with the
        model.eval()(target.pool_x)  # recalibrated statistics of the layers before it
    for h in hooks:
        h.remove()
    assert list(inputs) == ["backbone.block1.1", "backbone.block2.1", "backbone.block3.1"]
    for name, bn in batchnorm_layers(model):
        x = inputs[name].double()
        torch.testing.assert_close(bn.running_mean, x.mean((0, 2, 3)).float())
        torch.testing.assert_close(bn.running_var, x.var((0, 2, 3), unbiased=True).float())
        # and they moved away from the source's own statistics
        assert not torch.allclose(bn.running_mean, source.get_submodule(name).running_mean)


def test_recalibration_does_not_depend_on_the_batch_size(source: nn.Module, recalibrated: dict,
                                                         target: TargetData) -> None:
    model = copy.deepcopy(source)
    stats = recalibrate_batchnorm(model, target.pool_x, CPU, batch_size=7)
    assert set(stats) == {"backbone.block1.1", "backbone.block2.1", "backbone.block3.1"}
    for k, v in _stats(model.state_dict()).items():
        torch.testing.assert_close(v, recalibrated[k], rtol=1e-5, atol=1e-6)
    assert not model.training  # the source was in eval mode and stays so
    with pytest.raises(ValueError, match="at least 2"):
        recalibrate_batchnorm(model, target.pool_x[:1], CPU)


def test_finetune_phase_trains_every_weight_but_keeps_the_statistics(
        source: nn.Module, recalibrated: dict, target: TargetData) -> None:
    cfg = AdaBNParams(epochs=2, batch_size=8, then="all", backbone_lr_mult=0.5)
    strategy = AdaBN(cfg, Context.build(target, source, arch=ARCH, device=CPU, seed=3,
                                        shared={}))
    train = (target.pool_x, target.pool_y)
    generator = torch.Generator().manual_seed(3)
    model = strategy.before_fit(strategy.initial_model(), train, cfg, generator)
    net, groups = strategy.trainable(model, cfg)
    assert [g["lr"] for g in groups] == [0.0015, 0.003]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    fit(net, train, None, cfg, groups, generator, CPU)
    state = model.state_dict()
    assert states_equal(_stats(state), _stats(recalibrated))
    for k in ("backbone.block1.0.weight", "backbone.block2.1.weight", "backbone.block3.1.bias"):
        assert not torch.equal(state[k], recalibrated[k]), k


# ----------------------------------------------------------------------------- end to end
def test_run_replicates_records_search_and_keeps_the_statistics(
        searched: tuple, source: nn.Module, recalibrated: dict, target: TargetData) -> None:
    result, folder, models = searched
    assert result["skipped"] is None
    assert {p.name for p in folder.glob("*.pt")} == CHECKPOINTS
    trainable = {"probe": 32 * 3 + 3, "all": sum(p.numel() for p in source.backbone
                                                      .parameters()) + 32 * 3 + 3}
    for r in result["runs"]:
        search = r["search"]
        assert [c["config"] for c in search["candidates"]] == [{"then": "probe"},
                                                               {"then": "all"}]
        best = max(search["candidates"],
                   key=lambda c: (c["best_val_accuracy"], -c["best_val_loss"]))
        assert search["chosen"] == best["config"]
        then = search["chosen"]["then"]
        assert r["trainable_params"] == trainable[then]
        model, config = load_checkpoint(folder / r["checkpoint"])
        assert config["strategy"] == "adabn"
        state = model.state_dict()
        # the statistics are the pool's, through training, whatever trained
        assert states_equal(_stats(state), _stats(recalibrated))
        conv_kept = torch.equal(state["backbone.block2.0.weight"],
                                recalibrated["backbone.block2.0.weight"])
        assert conv_kept == (then == "probe")
        assert torch.equal(predict_logits(model, target.val_x, CPU),
                           predict_logits(models[r["checkpoint"]], target.val_x, CPU))


def test_run_replicates_is_bitwise_reproducible(deterministic, target: TargetData,
                                                source_path: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)  # `deterministic` sets 2 (and restores the count afterwards)
    cfg = AdaBNParams(epochs=2, batch_size=8, patience=5, lr=0.01, then="all")
    first, second = (run_and_load("adabn", cfg, source_path, target, tmp_path / str(i))
                     for i in range(2))
    assert_reproducible(first, second)


def test_statistics_are_computed_once_per_normalisation(source: nn.Module, recalibrated: dict,
                                                        target: TargetData) -> None:
    """Once per stage and input normalisation, then copied from the cache."""
    shared: dict = {}
    models = []
    for seed, normalization in ((0, "source"), (1, "source"), (2, "target")):
        cfg = AdaBNParams(normalization=normalization)
        strategy = AdaBN(cfg, Context.build(target, source, arch=ARCH, device=CPU, seed=seed,
                                            shared=shared))
        model = reset_head(copy.deepcopy(source), 3, seed)  # a fresh copy, source statistics
        if normalization == "target":
            model = strategy.initial_model()
        models.append(strategy.before_fit(model, (target.pool_x, target.pool_y), cfg,
                                          torch.Generator()).state_dict())
    assert len(shared["adabn_statistics"]) == 2  # one per input normalisation
    assert states_equal(_stats(models[0]), _stats(recalibrated))
    assert states_equal(_stats(models[1]), _stats(recalibrated))  # from the cache
    assert not torch.equal(models[0]["backbone.block1.1.running_mean"],
                           models[2]["backbone.block1.1.running_mean"])
