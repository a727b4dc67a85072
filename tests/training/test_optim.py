"""The project's AdamW: torch's update, bit for bit, with a correctly rounded square root."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import torch

from transferlab.training.optim import AdamW, exact_sqrt


class _TorchSqrtAdamW(AdamW):
    sqrt = staticmethod(torch.sqrt)


def _round_to_float32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


def test_exact_sqrt_is_correctly_rounded() -> None:
    """Against Python's math.sqrt (IEEE double) rounded to float32: for a square root, rounding
    twice (53 bits, then 24) is exact, since 53 >= 2 * 24 + 2."""
    rng = np.random.default_rng(0)
    values = np.concatenate([
        rng.random(20000, dtype=np.float32) * 1e-3,  # exp_avg_sq's typical range
        np.abs(rng.standard_normal(20000).astype(np.float32)) * 10.0,
        np.array([0.0, 1e-45, 1e-38, 1.0, 2.0, 3.4e38], dtype=np.float32),
    ])
    got = exact_sqrt(torch.from_numpy(values)).numpy()
    want = np.array([_round_to_float32(math.sqrt(float(v))) for v in values], dtype=np.float32)
    assert got.dtype == np.float32
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


def test_exact_sqrt_takes_any_layout_and_keeps_the_shape() -> None:
    t = torch.rand(6, 4, dtype=torch.float64).t()  # not contiguous
    assert torch.equal(exact_sqrt(t), torch.from_numpy(np.sqrt(t.numpy())))
    assert exact_sqrt(t).shape == (4, 6)
    half = torch.rand(8).half()  # numpy has no path for it: torch's own
    assert torch.equal(exact_sqrt(half), half.sqrt())


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))


def _train(opt_class: type, steps: int = 12) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = _model()
    groups = [{"params": model[0].parameters(), "lr": 1e-3},
              {"params": model[2].parameters(), "weight_decay": 0.0}]
    opt = opt_class(groups, lr=3e-3, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    g = torch.Generator().manual_seed(1)
    for step in range(steps):
        x, y = torch.randn(32, 8, generator=g), torch.randint(0, 3, (32,), generator=g)
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        if step % 5 == 4:
            model[2].bias.grad = None  # a parameter without a gradient is left alone
        opt.step()
        sched.step()
    return model, opt


def test_with_torchs_sqrt_it_is_torchs_adamw_bit_for_bit() -> None:
    ours, ours_opt = _train(_TorchSqrtAdamW)
    theirs, theirs_opt = _train(lambda g, **kw: torch.optim.AdamW(g, foreach=False, **kw))
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(ours_opt.state.values(), theirs_opt.state.values(), strict=True):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_its_state_loads_into_torchs_adamw_and_back() -> None:
    model = _model()
    opt = AdamW(model.parameters(), lr=3e-3)
    for _ in range(3):
        model(torch.ones(2, 8)).sum().backward()
        opt.step()
    theirs = torch.optim.AdamW(model.parameters(), lr=3e-3)
    theirs.load_state_dict(opt.state_dict())
    again = AdamW(model.parameters(), lr=3e-3)
    again.load_state_dict(theirs.state_dict())
    assert again.state_dict()["state"][0]["step"].item() == 3.0
    w = model[0].weight
    assert torch.equal(again.state[w]["exp_avg"], opt.state[w]["exp_avg"])


def test_the_exact_sqrt_moves_training_only_in_the_last_bits() -> None:
    ours, _ = _train(AdamW)
    theirs, _ = _train(_TorchSqrtAdamW)
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kwargs", [{"lr": 0.0}, {"betas": (0.9, 1.0)}, {"eps": -1.0},
                                    {"weight_decay": -0.1}])
def test_bad_hyperparameters_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        AdamW(_model().parameters(), **kwargs)
