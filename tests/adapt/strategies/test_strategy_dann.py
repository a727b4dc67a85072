"""Tests for the ``dann`` strategy (transferlab.adapt.strategies.dann) on a tiny target, a tiny
source
model and a tiny prepared source folder."""

from __future__ import annotations

import copy
import math
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
    loaded_states,
    run_and_load,
    run_into,
    states_equal,
)
from transferlab.adapt.replicates import run_replicates
from transferlab.adapt.strategies import Context, parse_blocks
from transferlab.adapt.strategies.dann import (
    DANN,
    DANNParams,
    discriminator,
    domain_loss,
    grad_reverse,
    grl_coefficient,
)
from transferlab.adapt.strategies.finetune import FinetuneParams
from transferlab.adapt.target import TargetData
from transferlab.core.errors import ParamsError
from transferlab.data.store import PreparedDataset
from transferlab.models.nets import load_checkpoint
from transferlab.training.loop import predict_logits, to_tensor

CFG = DANNParams(epochs=2, batch_size=8, patience=5, domain_weight=0.3)


# -------------------------------------------------------------------------------- fixtures
def _run(name: str, cfg: object, source_path: Path, target: TargetData, folder: Path,
         source_data: Path, mapping: dict, **kwargs: object) -> dict:
    return run_into(name, cfg, source_path, target, folder, mapping=mapping,
                    source_data=source_data, **kwargs)


# ---------------------------------------------------------------------------------- params
def test_params_validate_the_domain_weight() -> None:
    block = parse_blocks({"dann": {"domain_weight": 0.3, "search": {"domain_weight": [0.03]}}})
    assert block["dann"].domain_weight == 0.3 and block["dann"].backbone_lr_mult == 0.1
    with pytest.raises(ParamsError, match=r"transfer\.dann\.domain_weight: must be >= 0"):
        parse_blocks({"dann": {"domain_weight": -1}})
    with pytest.raises(ParamsError, match=r"transfer\.dann\.disc_hidden: must be >= 1"):
        parse_blocks({"dann": {"disc_hidden": 0}})


# ------------------------------------------------------------------------------ reference
def test_gradient_reversal_is_identity_forward_and_minus_lambda_backward() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    y = grad_reverse(x, 0.37)
    assert torch.equal(y, x)
    y.backward(upstream)
    assert torch.equal(x.grad, -0.37 * upstream)


def test_schedule_follows_the_paper() -> None:
    assert grl_coefficient(0.0) == 0.0
    assert grl_coefficient(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1, abs=0)
    assert grl_coefficient(0.5) == pytest.approx(0.986614298151430, rel=1e-12)
    ps = [i / 10 for i in range(11)]
    values = [grl_coefficient(p) for p in ps]
    assert values == sorted(values) and 0.9999 < values[-1] < 1


def test_domain_loss_reverses_the_backbone_gradient_only(source: nn.Module,
                                                         target: TargetData) -> None:
    """Against the same loss without reversal (coefficient -1: the plain gradient)."""
    model = copy.deepcopy(source).train()
    disc = discriminator(model.feature_dim, 16, seed=0)
    xs, xt = target.val_x[:6] * 0.5, target.pool_x[:6]
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k
             or "num_batches" in k}
    grads = []
    for coeff in (0.4, -1.0):
        model.zero_grad()
        disc.zero_grad()
        loss = domain_loss(model, disc, xs, xt, coeff)
        loss.backward()
        grads.append(({n: p.grad.clone() for n, p in model.backbone.named_parameters()},
                      {n: p.grad.clone() for n, p in disc.named_parameters()}))
    (back, disc_reversed), (plain, disc_plain) = grads
    assert back and all(plain[n].abs().sum() > 0 for n in plain)
    for n in back:  # the backbone ascends the domain loss, scaled by the coefficient
        torch.testing.assert_close(back[n], -0.4 * plain[n])
    for n in disc_plain:  # the discriminator descends it, unscaled
        assert torch.equal(disc_reversed[n], disc_plain[n])
    # the mixed batch left the running statistics alone
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in stats.items())


def test_progress_runs_over_the_planned_epochs(source: nn.Module, target: TargetData,
                                               source_data: Path) -> None:
    images = to_tensor(PreparedDataset.open(source_data).load("train").examples)
    cfg = DANNParams(epochs=2, batch_size=4)
    strategy = DANN(cfg, Context.build(target, source, arch=ARCH, device=CPU, seed=1,
                                       source_data=(images, torch.zeros(len(images)))))
    model = strategy.initial_model().train()
    train = (target.pool_x[:10], target.pool_y[:10])  # 3 steps per epoch
    strategy.before_fit(model, train, cfg, torch.Generator())
    net, groups = strategy.trainable(model, cfg)
    assert [id(p) for p in groups[-1]["params"]] == [id(p) for p in strategy.disc.parameters()]
    term = strategy.loss_term(model, cfg)
    seen = []
    for epoch in (1, 2):
        strategy.on_epoch(model, epoch, cfg)
        for _ in range(3):
            seen.append(strategy.progress(cfg))
            xb = train[0][:4]
            features = model.features(xb)
            value = term(features, model.head(features), xb, train[1][:4])
            assert value.shape == () and value > 0
    assert seen == pytest.approx([0, 1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6])


# ----------------------------------------------------------------------------- end to end
def test_domain_weight_zero_is_exactly_finetune(target: TargetData, source_path: Path,
                                                source_data: Path, mapping: dict,
                                                tmp_path: Path) -> None:
    common = {"epochs": 2, "batch_size": 8, "patience": 5, "backbone_lr_mult": 0.5}
    dann = _run("dann", DANNParams(domain_weight=0.0, **common), source_path, target,
                tmp_path / "dann", source_data, mapping)
    finetune = _run("finetune", FinetuneParams(**common), source_path, target,
                    tmp_path / "finetune", source_data, mapping)
    # the same runs, but dann still computes (at weight 0) its domain passes and trains a
    # discriminator of 32 * 100 + 100 + 100 + 1 parameters: both are counted
    cost = ("train_flops", "trainable_params")
    assert ([{k: v for k, v in r.items() if k not in cost} for r in dann["runs"]]
            == [{k: v for k, v in r.items() if k not in cost} for r in finetune["runs"]])
    for d, f in zip(dann["runs"], finetune["runs"], strict=True):
        assert d["trainable_params"] == f["trainable_params"] + 32 * 100 + 100 + 100 + 1
        assert d["train_flops"] > f["train_flops"]
    a, b = loaded_states(tmp_path / "dann"), loaded_states(tmp_path / "finetune")
    assert a.keys() == b.keys() == CHECKPOINTS
    for name in CHECKPOINTS:
        assert states_equal(a[name], b[name]), name


def test_run_replicates_records_search_and_checkpoints(target: TargetData, source_path: Path,
                                                       source_data: Path, mapping: dict,
                                                       tmp_path: Path) -> None:
    # batches of 2: every refit takes several steps in its first epoch, so the GRL coefficient
    # (0 at the first step) is positive for some of them whatever the chosen epoch
    common = {"epochs": 2, "batch_size": 2, "patience": 5}
    cfg = DANNParams(**common, search={"domain_weight": (0.03, 3.0)})
    models = {}
    result = _run("dann", cfg, source_path, target, tmp_path / "dann", source_data, mapping,
                  on_result=lambda r, m, _device: models.update({r["checkpoint"]: m}))
    assert result["skipped"] is None and len(result["runs"]) == 4
    _run("dann", DANNParams(**common, domain_weight=0.0),
                 source_path, target, tmp_path / "plain", source_data, mapping)
    plain_states = loaded_states(tmp_path / "plain")
    for r in result["runs"]:
        search = r["search"]
        assert [c["config"] for c in search["candidates"]] == [{"domain_weight": 0.03},
                                                               {"domain_weight": 3.0}]
        best = max(search["candidates"],
                   key=lambda c: (c["best_val_accuracy"], -c["best_val_loss"]))
        assert search["chosen"] == best["config"]
        # the model's parameters, and the discriminator's (trained, then discarded)
        assert r["trainable_params"] == (88 + 1184 + 4672 + 32 * 3 + 3) + (32 * 100 + 100
                                                                           + 100 + 1)
        model, config = load_checkpoint(tmp_path / "dann" / r["checkpoint"])
        assert config["strategy"] == "dann"
        assert torch.equal(predict_logits(model, target.val_x, CPU),
                           predict_logits(models[r["checkpoint"]], target.val_x, CPU))
        # the domain loss changed the backbone (against the same run without it)
        key = "backbone.block2.0.weight"
        assert not torch.equal(model.state_dict()[key], plain_states[r["checkpoint"]][key])


def test_run_replicates_is_bitwise_reproducible(deterministic, target: TargetData,
                                                source_path: Path, source_data: Path,
                                                mapping: dict, tmp_path: Path) -> None:
    torch.set_num_threads(1)  # `deterministic` sets 2 (and restores the count afterwards)
    first, second = (run_and_load("dann", CFG, source_path, target, tmp_path / str(i),
                                  mapping=mapping, source_data=source_data) for i in range(2))
    assert_reproducible(first, second)


def test_skips_a_null_source_and_needs_the_source_folder(target: TargetData, source_path: Path,
                                                         source_data: Path, mapping: dict,
                                                         tmp_path: Path) -> None:
    null = {"kind": "none", "class_names": [], "sha256": {}}
    result = run_replicates("dann", CFG, source_path, target, CPU, tmp_path, ARCH, SELECTION,
                            mapping=null, source_data=source_data)
    assert result["skipped"] == "the source has no data (null source)"
    assert result["runs"] == [] and list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="prepared source folder"):
        run_replicates("dann", CFG, source_path, target, CPU, tmp_path, ARCH, SELECTION,
                       mapping=mapping)
