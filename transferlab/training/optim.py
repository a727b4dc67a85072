"""AdamW whose CPU bits are the same on Intel and AMD.

torch's CPU ``sqrt`` calls MKL's vector math (``vsSqrt``), which is not correctly rounded and
rounds differently on Intel and AMD CPUs, whatever ``MKL_CBWR`` says: on the fingerprint's fixed
inputs, 3,094 of 18,432 results differ from the correctly rounded square root on an Intel Xeon
under MKL's ``COMPATIBLE`` branch, and the AMD EPYC golden's hash matches neither
(``tests/data/golden``, key ``opt_sqrt``). ``torch.optim.AdamW`` takes that square root at every
step, so every model trained with it parted between the two vendors from its second step on.

:class:`AdamW` is torch's single-tensor AdamW (decoupled weight decay, no amsgrad), the same
operations in the same order, with one change: on the CPU the square root is numpy's, whose SIMD
loop is the ``sqrtps`` instruction, correctly rounded by IEEE 754 on every x86-64 CPU
(:func:`exact_sqrt`). Every other kernel of the step (``lerp_``, ``mul_``, ``addcmul_``,
``div``, ``add_``, ``addcdiv_``) already gives the same bits on both vendors under the project's
CPU pins, as the goldens show. Its state dict has torch's layout (``step``, ``exp_avg``,
``exp_avg_sq``). ``tests/training/test_optim.py`` checks it against ``torch.optim.AdamW`` with
torch's square root swapped back in (bit for bit) and :func:`exact_sqrt` against a correctly
rounded reference; ``benchmarks/optimizer_step.py`` measures its cost.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
import torch

NUMPY_SQRT_DTYPES = (torch.float32, torch.float64)


def exact_sqrt(t: torch.Tensor) -> torch.Tensor:
    """The correctly rounded square root of ``t``, elementwise: the same bits on any CPU.

    CPU tensors of float32/float64 go through numpy (IEEE ``sqrt``); others (a GPU's, whose
    ``sqrt`` is IEEE already, or half precision) through ``torch.sqrt``.
    """
    if t.device.type != "cpu" or t.dtype not in NUMPY_SQRT_DTYPES or t.requires_grad:
        return t.sqrt()
    return torch.from_numpy(np.sqrt(t.contiguous().numpy()))


class AdamW(torch.optim.Optimizer):
    """Decoupled-weight-decay Adam (Loshchilov & Hutter), torch's update with an exact sqrt.

    Args:
        params: parameters or parameter groups (a group may carry its own ``lr``,
            ``weight_decay``, ``betas`` or ``eps``).
        lr: learning rate (> 0); schedulers change each group's ``lr`` as with torch's.
        betas: the moment averages' coefficients, each in [0, 1).
        eps: added to the denominator (>= 0).
        weight_decay: decoupled weight decay (>= 0).
    """

    sqrt: Callable[[torch.Tensor], torch.Tensor] = staticmethod(exact_sqrt)

    def __init__(self, params: Iterable, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2) -> None:
        if not lr > 0:
            raise ValueError(f"AdamW: lr must be > 0, got {lr}")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"AdamW: betas must be in [0, 1), got {betas}")
        if eps < 0 or weight_decay < 0:
            raise ValueError(f"AdamW: eps and weight_decay must be >= 0, got {eps}, "
                             f"{weight_decay}")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps,
                                  "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """One update of every parameter that has a gradient; returns ``closure()``'s loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, weight_decay, eps = group["lr"], group["weight_decay"], group["eps"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                if grad.is_sparse:
                    raise RuntimeError("AdamW does not support sparse gradients")
                state = self.state[param]
                if not state:  # torch's layout, so checkpoints load in either optimizer
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(
                        param, memory_format=torch.preserve_format)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                state["step"] += 1
                step = state["step"].item()
                if weight_decay != 0:
                    param.mul_(1 - lr * weight_decay)
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                bias_correction1 = 1 - beta1**step
                bias_correction2_sqrt = math.sqrt(1 - beta2**step)
                denom = (self.sqrt(exp_avg_sq) / bias_correction2_sqrt).add_(eps)
                param.addcdiv_(exp_avg, denom, value=-(lr / bias_correction1))
        return loss
