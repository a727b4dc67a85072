"""Tests for the ``wise_ft`` strategy (transferlab.adapt.strategies.wise_ft) on a tiny target and
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
    assert_same_runs,
    context,
    loaded_states,
    part,
    run_and_load,
    snapshot,
    states_equal,
)
from transferlab.adapt.replicates import replicate_seed, run_replicates
from transferlab.adapt.strategies import parse_blocks
from transferlab.adapt.strategies.lp_ft import LpFtParams
from transferlab.adapt.strategies.wise_ft import WiseFt, WiseFtParams, interpolate
from transferlab.adapt.target import TargetData
from transferlab.config.params import SelectionParams
from transferlab.core.errors import ParamsError
from transferlab.models.nets import load_checkpoint, reset_head

CFG = WiseFtParams(epochs=2, batch_size=8, patience=5, probe_epochs=20, probe_lr=0.05)


# ---------------------------------------------------------------------------- interpolate
def _tiny_pair() -> tuple[dict, dict]:
    """Two states of Linear(2, 3) -> BatchNorm1d(3) that differ in every entry."""
    nets = []
    for seed in (0, 1):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3)).train()
            with torch.no_grad():
                net[1].weight.uniform_(0.5, 1.5)
                net[1].bias.normal_()
                for _ in range(seed * 4 + 1):  # distinct statistics and num_batches_tracked
                    net(torch.randn(5, 2))
        nets.append(snapshot(net))
    return nets[0], nets[1]


def test_interpolate_endpoints_are_exact() -> None:
    theta_0, theta_1 = _tiny_pair()
    at_0, at_1 = interpolate(theta_0, theta_1, 0.0), interpolate(theta_0, theta_1, 1.0)
    for key in theta_0:
        if key.endswith("num_batches_tracked"):  # integer: always theta_1's
            assert at_0[key] == theta_1[key] == 5 and theta_0[key] == 1
        else:
            assert torch.equal(at_0[key], theta_0[key]), key
        assert torch.equal(at_1[key], theta_1[key]), key


def test_interpolate_half_is_the_hand_average() -> None:
    theta_0, theta_1 = _tiny_pair()
    half = interpolate(theta_0, theta_1, 0.5)
    assert half.keys() == theta_0.keys()
    for key in ("0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var"):
        torch.testing.assert_close(half[key], (theta_0[key] + theta_1[key]) / 2, rtol=0,
                                   atol=1e-7)
        assert not torch.equal(half[key], theta_1[key])
    assert torch.equal(half["1.num_batches_tracked"], theta_1["1.num_batches_tracked"])
    with pytest.raises(ValueError, match="different keys: extra"):
        interpolate(theta_0, {**theta_1, "extra": torch.zeros(1)}, 0.5)


# ---------------------------------------------------------------------- choosing an alpha
BIAS_0 = [1.0, 0.6, 0.0]  # theta_0 predicts class 0
BIAS_1 = [0.0, 0.6, 1.0]  # theta_1 predicts class 2; class 1 wins only at alpha = 0.5


def _endpoints(source: nn.Module, target: TargetData) -> tuple[WiseFt, nn.Module]:
    """A strategy whose theta_0 has head bias BIAS_0, and a 'fine-tuned' model: the same
    backbone with head bias BIAS_1 (weights zero: logits are the bias)."""
    cfg = WiseFtParams(probe_epochs=0)
    model = reset_head(source, 3, seed=0)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor(BIAS_0))
    strategy = WiseFt(cfg, context(target, model))
    strategy.before_fit(model, (target.pool_x, target.pool_y), cfg, torch.Generator())
    with torch.no_grad():
        model.head.bias.copy_(torch.tensor(BIAS_1))
    return strategy, model


def test_after_fit_chooses_the_alpha_with_the_best_val_accuracy(source: nn.Module,
                                                                target: TargetData) -> None:
    strategy, model = _endpoints(source, target)
    backbone = part(snapshot(model), "backbone.")
    val = (target.val_x[:6], torch.ones(6, dtype=torch.long))  # every label is class 1
    model, choices = strategy.after_fit(model, model, val, strategy.cfg, None)
    assert choices["alpha"] == 0.5 and choices["diagnostics"] == {"val_accuracy_by_alpha": {
        "0.25": 0.0, "0.5": 1.0, "0.75": 0.0, "1.0": 0.0}}
    assert choices["selection"]["best_val_accuracy"] == 1.0  # the mixed model's, not alpha 1's
    torch.testing.assert_close(model.head.bias, torch.tensor([0.5, 0.6, 0.5]))
    assert states_equal(part(snapshot(model), "backbone."), backbone)


def test_after_fit_breaks_an_accuracy_tie_by_the_val_loss(source: nn.Module,
                                                          target: TargetData) -> None:
    strategy, model = _endpoints(source, target)
    val = (target.val_x[:6], torch.full((6,), 2))  # 0.75 and 1.0 both predict class 2
    _, choices = strategy.after_fit(model, model, val, strategy.cfg, None)
    assert choices["diagnostics"]["val_accuracy_by_alpha"] == {
        "0.25": 0.0, "0.5": 0.0, "0.75": 1.0, "1.0": 1.0}
    assert choices["alpha"] == 1.0  # more confident in class 2: the lower loss


@pytest.mark.parametrize(("chosen", "alpha"), [({"alpha": 0.25}, 0.25), (None, 0.5)])
def test_after_fit_without_val_replays_the_choice_or_uses_the_default(
        chosen: dict | None, alpha: float, source: nn.Module, target: TargetData) -> None:
    strategy, model = _endpoints(source, target)
    model, choices = strategy.after_fit(model, model, None, strategy.cfg, chosen)
    assert choices == {"alpha": alpha}
    want = [(1 - alpha) * b0 + alpha * b1 for b0, b1 in zip(BIAS_0, BIAS_1, strict=True)]
    torch.testing.assert_close(model.head.bias, torch.tensor(want))


# ---------------------------------------------------------------------- through the loop
def test_run_replicates_records_the_chosen_alpha(target: TargetData, source_path: Path,
                                                 tmp_path: Path) -> None:
    selection = SelectionParams(min_labels_to_split=3)  # budget 2: a fixed schedule
    seen = []
    result = run_replicates("wise_ft", CFG, source_path, target, CPU, tmp_path, ARCH, selection,
                            on_result=lambda record, model, _device: seen.append(model))
    assert {p.name for p in tmp_path.iterdir()} == CHECKPOINTS
    for r in result["runs"]:
        search = r["search"]
        if r["budget"] == "2":  # nothing held out: the default alpha
            assert r["selection_method"] == "fixed_schedule"
            assert search["chosen"] == {"alpha": 0.5}
            continue
        assert set(search["chosen"]) == {"alpha"}
        cand = search["candidates"][0]
        scores = cand["diagnostics"]["val_accuracy_by_alpha"]
        assert list(scores) == ["0.25", "0.5", "0.75", "1.0"]
        assert scores[str(search["chosen"]["alpha"])] == max(scores.values())
        assert cand["alpha"] == search["chosen"]["alpha"]
        # the run's selection score is the mixed model's held-out accuracy
        assert r["selection_score"] == max(scores.values()) == cand["best_val_accuracy"]
    for r, model in zip(result["runs"], seen, strict=True):
        loaded, config = load_checkpoint(tmp_path / r["checkpoint"])
        assert config["strategy"] == "wise_ft" and type(loaded) is type(model)
        with torch.no_grad():
            assert torch.equal(loaded(target.val_x), model(target.val_x))


def test_alpha_zero_is_the_probed_source(target: TargetData, source_path: Path,
                                         source: nn.Module, tmp_path: Path) -> None:
    cfg = WiseFtParams(epochs=2, batch_size=8, probe_epochs=20, probe_lr=0.05, alphas=(0.0,),
                       default_alpha=0.0)
    run_replicates("wise_ft", cfg, source_path, target, CPU, tmp_path, ARCH, SELECTION)
    src = snapshot(source)
    for name, state in loaded_states(tmp_path).items():
        # BatchNorm statistics included; num_batches_tracked is the fine-tuned model's
        body = [k for k in src if not k.startswith("head.") and "num_batches" not in k]
        assert all(torch.equal(state[k], src[k]) for k in body), name
        seed, budget = name[:-3].split("_")
        init = reset_head(copy.deepcopy(source), 3, replicate_seed(seed, budget)).head.weight
        assert not torch.equal(state["head.weight"], init), name  # the probe trained it


def test_alpha_one_is_lp_ft(target: TargetData, source_path: Path, tmp_path: Path) -> None:
    common = {"epochs": 2, "batch_size": 8, "patience": 5, "probe_epochs": 20, "probe_lr": 0.05}
    cfgs = {"lp_ft": LpFtParams(**common),
            "wise_ft": WiseFtParams(**common, alphas=(1.0,), default_alpha=1.0)}
    states, runs = {}, {}
    for name, cfg in cfgs.items():
        runs[name], states[name] = run_and_load(name, cfg, source_path, target, tmp_path / name)
    for ckpt in CHECKPOINTS:
        assert states_equal(states["wise_ft"][ckpt], states["lp_ft"][ckpt]), ckpt
    for a, b in zip(runs["wise_ft"], runs["lp_ft"], strict=True):
        assert a["search"]["chosen"]["alpha"] == 1.0
        # the same record but for the search entry and the cost of scoring alpha on the
        # held-out labels (a forward pass over them)
        assert ({k: v for k, v in a.items() if k not in ("search", "train_flops")}
                == {k: v for k, v in b.items() if k != "train_flops"})
        assert a["train_flops"] > b["train_flops"]


def test_run_replicates_is_bitwise_reproducible(target: TargetData, source_path: Path,
                                                tmp_path: Path) -> None:
    assert_same_runs(*(run_and_load("wise_ft", CFG, source_path, target, tmp_path / str(i))
                       for i in range(2)))


@pytest.mark.parametrize(("block", "message"), [
    ({"alphas": []}, r"alphas: must list at least one"),
    ({"alphas": [0.5, 1.2]}, r"alphas\[1\]: must be <= 1"),
    ({"alphas": [0.5, 0.5]}, r"alphas: repeats a value"),
    ({"default_alpha": -0.1}, r"default_alpha: must be >= 0")])
def test_params_are_validated_by_key(block: dict, message: str) -> None:
    with pytest.raises(ParamsError, match=rf"transfer\.wise_ft\.{message}"):
        parse_blocks({"wise_ft": block})
