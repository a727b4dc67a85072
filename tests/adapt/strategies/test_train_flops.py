"""A run's ``train_flops`` against an exact count of everything the run computed.

``fit`` counts one step exactly and scales it (and counts a block's thawing again), and the
loop counts the phases before and after the fit; the reference here is FlopCounterMode around
the whole stage call, which sees every operation of every run. The two must agree exactly, for
every registered strategy that trains: probes, teachers, discriminators, domain batches,
held-out scoring and statistics passes included.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tests.adapt.strategies.helpers import (
    run_into,
)
from transferlab.adapt.strategies import get, names, parse_blocks
from transferlab.adapt.target import TargetData
from transferlab.training.loop import counted_flops

# on the image source these tests build; in_context asks for a causal LM's next-token logits
# and trains nothing (tests/adapt/strategies/test_strategy_prompting.py)
TRAINED = [n for n in names() if get(n).trains and "next_token" not in get(n).needs_backbone]
# short runs; a search of two points for one strategy, and a thaw every epoch for gradual_unfreeze
SHORT = {"epochs": 2, "batch_size": 4, "patience": 5}
BLOCKS = {"linear_probe": {"epochs": 2, "patience": 5},
          "finetune": {**SHORT, "search": {"lr": [0.003, 0.01]}},
          "gradual_unfreeze": {**SHORT, "epochs_per_block": 1},
          "lp_ft": {**SHORT, "probe_epochs": 5},
          "wise_ft": {**SHORT, "probe_epochs": 5},
          "delta": {**SHORT, "attention_steps": 5}}


def test_every_trained_strategy_is_covered() -> None:
    assert {"finetune", "lp_ft", "wise_ft", "dann", "adabn", "lwf", "delta", "lora",
            "gradual_unfreeze", "linear_probe"} <= set(TRAINED)


@pytest.fixture(scope="module")
def one_seed(target: TargetData) -> TargetData:
    """Seed 0's two budgets: 2 labels per class (held out, then refit) and all 10 (batches of
    4 and a smaller last one)."""
    return replace(target, budgets={"0": target.budgets["0"]})


@pytest.mark.parametrize("name", TRAINED)
def test_train_flops_are_what_the_runs_computed(name: str, one_seed: TargetData,
                                                source_path: Path, source_data: Path,
                                                mapping: dict, tmp_path: Path) -> None:
    cfg = parse_blocks({name: BLOCKS.get(name, SHORT)})[name]
    source = None if not get(name).uses_source else source_path
    with counted_flops() as exact:
        result = run_into(name, cfg, source, one_seed, tmp_path, mapping=mapping,
                          source_data=source_data)
    assert result["skipped"] is None
    runs = result["runs"]
    assert len(runs) == 2 and all(r["train_flops"] > 0 for r in runs)
    assert result["setup_flops"] + sum(r["train_flops"] for r in runs) == exact.total
    if name in ("linear_probe", "adabn"):  # the pool's backbone pass, shared by every run
        assert result["setup_flops"] > 0
    else:
        assert result["setup_flops"] == 0


def test_counting_leaves_training_bitwise_unchanged() -> None:
    def steps(count: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4),
                                    torch.nn.ReLU(), torch.nn.Flatten(),
                                    torch.nn.Linear(4 * 14 * 14, 3))
        opt = torch.optim.AdamW(model.parameters(), lr=0.01)
        x, y = torch.rand(8, 1, 16, 16), torch.arange(8) % 3
        for _ in range(3):
            if count:
                with counted_flops():
                    loss = torch.nn.functional.cross_entropy(model(x), y)
                    opt.zero_grad()
                    loss.backward()
            else:
                loss = torch.nn.functional.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
            opt.step()
        return {k: v.clone() for k, v in model.state_dict().items()}

    plain, counted = steps(False), steps(True)
    assert all(torch.equal(plain[k], counted[k]) for k in plain)


def test_counted_flops_counts_a_known_product() -> None:
    a, b = torch.rand(3, 5), torch.rand(5, 7)
    with counted_flops() as tally:
        a @ b
    assert tally.total == 2 * 3 * 5 * 7
