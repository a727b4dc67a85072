"""Shared pieces of the regularizers that anchor the training model to its starting point.

A private module (its name starts with ``_``, so the package does not import it as a strategy):
``l2_sp``, ``delta`` and ``lwf`` use it.
"""

from __future__ import annotations

import copy
from typing import TypeVar

import torch
from torch import nn

from transferlab.models.nets import TransferNet

M = TypeVar("M", bound=nn.Module)


def frozen_copy(model: M) -> M:
    """A copy of ``model`` (a network or a head) that never changes: no gradients, BatchNorm
    momentum 0.

    Run it with :func:`run_like`, in the training model's mode: with batch statistics while the
    training model uses them (momentum 0 keeps the copy's running statistics as they are), so
    both networks compute the very same function until the training model's weights move.
    """
    reference = copy.deepcopy(model)
    reference.requires_grad_(False)
    for module in reference.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = 0.0
    return reference


def run_like(reference: TransferNet, model: nn.Module, device: torch.device) -> TransferNet:
    """``reference`` on ``device`` in the mode of ``model`` (train or eval; frozen BatchNorm
    layers follow ``reference.frozen_bn``, copied from the model)."""
    return reference.to(device).train(model.training)


def head_l2(model: TransferNet) -> torch.Tensor:
    """1/2 ||w_head||^2 over the head's weight and bias: the L2 term on the new layer."""
    return 0.5 * sum(p.float().pow(2).sum() for p in model.head.parameters())


def backbone_parameters(model: TransferNet) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of every parameter outside the head, in ``named_parameters`` order.

    BatchNorm running statistics and the input normalisation are buffers, not parameters.
    """
    return [(n, p) for n, p in model.named_parameters() if not n.startswith("head.")]
