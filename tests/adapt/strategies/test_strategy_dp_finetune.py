"""Tests for the ``dp_finetune`` strategy (transferlab.adapt.strategies.dp_finetune): through
the shared loop on a tiny target and source, its privacy record, the fixed schedule and the
bitwise repeat. The accountant and the DP-SGD step are tested in tests/training/test_private.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from tests.adapt.strategies.helpers import (
    assert_reproducible,
    part,
    run_and_load,
    states_equal,
)
from transferlab.adapt.strategies.dp_finetune import DpFinetuneParams
from transferlab.adapt.target import TargetData
from transferlab.core.errors import ParamsError

pytest.importorskip("opacus")

CFG = DpFinetuneParams(epochs=2, batch_size=4, lr=0.05, target_epsilon=4.0)


@pytest.fixture(scope="module", name="cfg_run")
def cfg_run_fixture(target: TargetData, source_path: Path,
                    tmp_path_factory: pytest.TempPathFactory) -> tuple[list, dict]:
    """One run of CFG (records, states), shared by the tests that read it: each run costs
    seconds of per-sample gradients."""
    return run_and_load("dp_finetune", CFG, source_path, target, tmp_path_factory.mktemp("cfg"))


def test_runs_a_fixed_schedule_and_records_the_epsilon_reached(
        target: TargetData, source: nn.Module, cfg_run: tuple[list, dict]) -> None:
    runs, states = cfg_run
    for run in runs:
        # within_budget would hold labels out at 2 per class: a private run chooses on none
        assert run["selection_method"] == "fixed_schedule" and run["holdout_examples"] == 0, run
        assert run["best_epoch"] == CFG.epochs and "search" not in run
        privacy = run["privacy"]
        assert 0 < privacy["epsilon"] <= CFG.target_epsilon + 1e-6
        n = len(target.budgets[str(run["seed"])][str(run["budget"])])
        assert privacy["dp_delta"] == pytest.approx(1 / n) and privacy["noise_multiplier"] > 0
    src = source.state_dict()
    for name, state in states.items():  # BatchNorm keeps the source's statistics and affine
        bn = {k: v for k, v in part(state, "backbone.block1.1.").items()}
        assert states_equal(bn, part(src, "backbone.block1.1.")), name
        assert not torch.equal(state["backbone.block1.0.weight"],
                               src["backbone.block1.0.weight"]), name


def test_repeats_bit_for_bit(target: TargetData, source_path: Path, tmp_path: Path,
                             cfg_run: tuple[list, dict]) -> None:
    assert_reproducible(cfg_run, run_and_load("dp_finetune", CFG, source_path, target, tmp_path))


def test_more_privacy_costs_more_noise(target: TargetData, source_path: Path, tmp_path: Path,
                                       cfg_run: tuple[list, dict]) -> None:
    strict = DpFinetuneParams(epochs=2, batch_size=4, lr=0.05, target_epsilon=1.0)
    loose, _ = cfg_run
    tight, _ = run_and_load("dp_finetune", strict, source_path, target, tmp_path)
    for a, b in zip(loose, tight, strict=True):
        assert b["privacy"]["noise_multiplier"] > a["privacy"]["noise_multiplier"]
        assert b["privacy"]["epsilon"] <= 1.0 + 1e-6


@pytest.mark.parametrize("changes,message", [
    ({"target_epsilon": None}, r"give exactly one of target_epsilon and noise_multiplier"),
    ({"noise_multiplier": 1.0}, r"give exactly one of target_epsilon and noise_multiplier"),
    ({"augment": True}, r"augment.*must be false"),
    ({"max_grad_norm": 0.0}, r"max_grad_norm"),
])
def test_bad_params_name_the_key(changes: dict, message: str) -> None:
    from dataclasses import replace

    with pytest.raises((ParamsError, ValueError), match=message):
        replace(CFG, **changes).validate("transfer.dp_finetune")


def test_the_report_lists_the_privacy_spent_beside_the_accuracy() -> None:
    from transferlab.reporting.helped import privacy_blocks

    assert privacy_blocks({}) == []
    ev = {"privacy": {"src/dp_finetune": {"3": {"epsilon": 7.991, "dp_delta": 1 / 30,
                                                "noise_multiplier": 0.58}},
                      "src/dp_noiseless": {"all": {"epsilon": None, "dp_delta": 1 / 30,
                                                   "noise_multiplier": 0.0},
                                           "3": {"epsilon": None, "dp_delta": 1 / 30,
                                                 "noise_multiplier": 0.0}}},
          "summary": {"src/dp_finetune": {"3": {"accuracy": {"mean": 0.41, "ci_low": 0.35,
                                                             "ci_high": 0.47}}}}}
    text, table = privacy_blocks(ev)
    assert "fixed schedule" in text
    assert table.rows == (("src/dp_finetune", "3", "7.991", "0.0333", "0.580",
                           "0.410 [0.350, 0.470]"),
                          ("src/dp_noiseless", "3", "∞ (no noise)", "0.0333", "0.000",
                           "n/a [n/a, n/a]"),  # budgets in their order, "all" last
                          ("src/dp_noiseless", "all", "∞ (no noise)", "0.0333", "0.000",
                           "n/a [n/a, n/a]"))


def test_the_private_linear_probe_trains_the_head_alone(
        target: TargetData, source_path: Path, source: nn.Module, tmp_path: Path) -> None:
    from dataclasses import replace

    probe = replace(CFG, train="head")
    runs, states = run_and_load("dp_finetune", probe, source_path, target, tmp_path)
    src = source.state_dict()
    for run, (name, state) in zip(runs, states.items(), strict=True):
        assert 0 < run["privacy"]["epsilon"] <= CFG.target_epsilon + 1e-6
        backbone = {k: v for k, v in state.items() if not k.startswith("head.")}
        assert states_equal(backbone, {k: src[k] for k in backbone}), name
        assert run["trainable_params"] == sum(v.numel() for k, v in state.items()
                                              if k.startswith("head.")), name
