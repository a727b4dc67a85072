"""``l2_sp``: fine-tuning with the L2-SP penalty, a pull of the backbone towards its source weights.

Li, Grandvalet, Davoine (2018), "Explicit Inductive Bias for Transfer Learning with
Convolutional Networks" (ICML). Implemented: the paper's L2-SP regulariser

    Omega(w) = alpha / 2 * ||w_backbone - w_source||^2 + beta / 2 * ||w_head||^2,

added to the mean cross-entropy of each batch, as TLlib's ``SPRegularization`` plus
``L2Regularization`` do. ``w_source`` is copied at the start of every run (candidate or refit)
from the model the loop hands over: the source backbone with the new head attached. Every
backbone parameter counts (convolutions and BatchNorm scales and shifts); BatchNorm running
statistics and the input normalisation are buffers, not weights. ``w_head`` is the new head's
weight and bias. Otherwise it trains exactly as ``finetune`` (the backbone at
``lr * backbone_lr_mult``); ``alpha = beta = 0`` gives bitwise the ``finetune`` model.

``weight_decay``: the paper replaces weight decay by this penalty (decay pulls towards 0, L2-SP
towards the source weights, and the two fight). AdamW's decoupled decay still acts on every
parameter, so set ``weight_decay: 0`` in this block. Under AdamW the penalty's gradient is
rescaled per parameter like any other gradient (the paper used SGD, where it is plain L2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from transferlab.adapt.strategies._reference import backbone_parameters, head_l2
from transferlab.adapt.strategies.base import LossTerm
from transferlab.adapt.strategies.finetune import Finetune, FinetuneParams
from transferlab.adapt.strategies.registry import register
from transferlab.config.typed import check_range
from transferlab.models.nets import TransferNet


@dataclass(frozen=True)
class L2SPParams(FinetuneParams):
    alpha: float = 0.01  # strength of the pull of the backbone towards its source weights
    beta: float = 0.01  # strength of the plain L2 penalty on the new head

    def validate(self, key: str) -> None:
        super().validate(key)
        check_range(f"{key}.alpha", self.alpha, 0, 1e4)
        check_range(f"{key}.beta", self.beta, 0, 1e4)


def squared_distance(params: Sequence[nn.Parameter], reference: Sequence[torch.Tensor]
                     ) -> torch.Tensor:
    """sum_i ||params_i - reference_i||^2 (the references on the parameters' device)."""
    return sum((p.float() - r).pow(2).sum() for p, r in zip(params, reference, strict=True))


@register
class L2SP(Finetune):
    name = "l2_sp"
    Params = L2SPParams
    roles = frozenset()
    style = ("--", "X")
    rank = 40

    def loss_term(self, model: TransferNet, cfg: L2SPParams) -> LossTerm:
        # w_source: copied now, before fit moves the model (and trains it)
        source = [p.detach().float().clone() for _, p in backbone_parameters(model)]

        def term(features: torch.Tensor, logits: torch.Tensor, inputs: torch.Tensor,
                 labels: torch.Tensor) -> torch.Tensor:
            nonlocal source
            params = [p for _, p in backbone_parameters(model)]
            if source[0].device != params[0].device:
                source = [s.to(params[0].device) for s in source]
            return (cfg.alpha / 2 * squared_distance(params, source)
                    + cfg.beta * head_l2(model))

        return term
