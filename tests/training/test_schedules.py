"""Tests for transferlab.training.schedules: hand-computed lrs, torch's own schedulers as
reference."""

from __future__ import annotations

import copy
import math
import pickle
import warnings

import pytest
import torch

from transferlab.training.schedules import SCHEDULES, lr_factor, make_scheduler


def _optimizer(*lrs: float) -> torch.optim.Optimizer:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lr} for lr in lrs]
    return torch.optim.SGD(groups, lr=lrs[0], momentum=0.9)


def _run(schedule: str, total: int, warmup: int, *lrs: float,
         steps: int | None = None) -> list[list[float]]:
    """The lr of every group at each optimizer step 0 .. steps - 1 (default ``total``)."""
    opt = _optimizer(*lrs)
    sched = make_scheduler(opt, schedule, total, warmup)
    seen = []
    for _ in range(total if steps is None else steps):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    return seen


def test_cosine_hand_computed_values() -> None:
    base, total, warmup = 0.1, 20, 4
    lrs = [row[0] for row in _run("cosine", total, warmup, base)]
    assert lrs[0] == pytest.approx(base / 5)  # (0 + 1) / (4 + 1)
    assert lrs[3] == pytest.approx(base * 4 / 5)
    assert lrs[4] == pytest.approx(base)  # warmup over: the base lr
    assert lrs[12] == pytest.approx(base / 2)  # halfway through the 16 cosine steps
    assert lrs[8] == pytest.approx(base * 0.5 * (1 + math.cos(math.pi / 4)))
    assert lrs[19] == pytest.approx(base * 0.5 * (1 + math.cos(math.pi * 15 / 16)))
    assert lrs[19] < 0.01 * base  # the last step is nearly 0
    assert all(a < b for a, b in zip(lrs[:4], lrs[1:5], strict=True))  # rises during warmup
    assert all(a > b for a, b in zip(lrs[4:], lrs[5:], strict=False))  # then only falls


def test_cosine_reaches_zero_at_total_and_stays() -> None:
    lrs = [row[0] for row in _run("cosine", 10, 2, 0.5, steps=14)]
    assert lrs[10:] == [0.0] * 4


def test_cosine_without_warmup_starts_at_base() -> None:
    lrs = [row[0] for row in _run("cosine", 10, 0, 0.3)]
    assert lrs[0] == 0.3
    assert lrs[5] == pytest.approx(0.15)


def test_constant_without_warmup_is_exactly_constant() -> None:
    assert _run("constant", 50, 0, 0.01, 0.003, steps=60) == [[0.01, 0.003]] * 60


def test_constant_with_warmup() -> None:
    lrs = [row[0] for row in _run("constant", 30, 3, 0.2)]
    assert lrs[:3] == pytest.approx([0.05, 0.1, 0.15])
    assert lrs[3:] == [0.2] * 27


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_param_groups_keep_their_ratio(schedule: str) -> None:
    for head, backbone in _run(schedule, 25, 5, 0.1, 0.01):
        assert backbone == pytest.approx(head / 10, rel=1e-12)


@pytest.mark.parametrize(("total", "warmup"), [(20, 0), (20, 4), (7, 3), (100, 10)])
def test_cosine_matches_torchs_linear_then_cosine_annealing(total: int, warmup: int) -> None:
    """Reference: SequentialLR(LinearLR, CosineAnnealingLR), torch's own pieces."""
    opt = _optimizer(0.1, 0.02)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total - warmup, eta_min=0.0)
    if warmup:
        linear = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / (warmup + 1),
                                                   end_factor=1.0, total_iters=warmup)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = torch.optim.lr_scheduler.SequentialLR(opt, [linear, cosine], [warmup])
    else:
        ref = cosine
    expected = []
    for _ in range(total):
        expected.append([g["lr"] for g in opt.param_groups])
        opt.step()
        ref.step()
    ours = _run("cosine", total, warmup, 0.1, 0.02)
    for got, want in zip(ours, expected, strict=True):
        assert got == pytest.approx(want, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_warmup_longer_than_run_is_all_warmup(schedule: str) -> None:
    lrs = [row[0] for row in _run(schedule, 5, 9, 1.0)]
    assert lrs == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert [row[0] for row in _run(schedule, 5, 5, 1.0)] == pytest.approx(
        [1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6])


def test_unknown_schedule_names_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown schedule 'linear'; expected one of "
                                         "constant, cosine"):
        make_scheduler(_optimizer(0.1), "linear", 10, 0)
    with pytest.raises(ValueError, match="unknown schedule 'step'"):
        lr_factor(0, "step", 10, 0)


@pytest.mark.parametrize(("total", "warmup", "key"), [(0, 0, "total_steps"),
                                                      (10, -1, "warmup_steps")])
def test_bad_step_counts(total: int, warmup: int, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        make_scheduler(_optimizer(0.1), "cosine", total, warmup)


def test_state_dict_resume_and_pickle() -> None:
    opt = _optimizer(0.1)
    sched = make_scheduler(opt, "cosine", 20, 4)
    for _ in range(7):
        opt.step()
        sched.step()
    state = copy.deepcopy(sched.state_dict())
    pickle.dumps(sched)  # no closures inside
    opt2 = _optimizer(0.1)
    sched2 = make_scheduler(opt2, "cosine", 20, 4)
    sched2.load_state_dict(state)
    opt2.step()
    sched2.step()
    opt.step()
    sched.step()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
