"""``finetune``: everything trains, the backbone at ``lr * backbone_lr_mult``.

The reference of "What helped": every other method's gain is measured against it.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from transferlab.adapt.strategies.base import Strategy, TransferTrainParams, check_multiplier
from transferlab.adapt.strategies.registry import register
from transferlab.models.nets import TransferNet


@dataclass(frozen=True)
class FinetuneParams(TransferTrainParams):
    backbone_lr_mult: float = 0.1  # backbone lr = lr * this; the new head gets lr

    def validate(self, key: str) -> None:
        super().validate(key)
        check_multiplier(f"{key}.backbone_lr_mult", self.backbone_lr_mult)


def non_head_parameters(model: TransferNet) -> list[nn.Parameter]:
    """Every parameter of ``model`` that is not its head's (the backbone and the input
    normalisation), in ``model.parameters()`` order."""
    head = set(map(id, model.head.parameters()))
    return [p for p in model.parameters() if id(p) not in head]


def head_and_backbone_groups(model: TransferNet, lr: float, backbone_lr: float) -> list[dict]:
    """Optimizer groups: the backbone (every non-head parameter) at ``backbone_lr``, then the
    head at ``lr``."""
    backbone = non_head_parameters(model)
    return [{"params": backbone, "lr": backbone_lr},
            {"params": list(model.head.parameters()), "lr": lr}]


@register
class Finetune(Strategy):
    name = "finetune"
    Params = FinetuneParams
    roles = frozenset({"reference"})
    style = ("-", "o")
    rank = 30

    def trainable(self, model: TransferNet, cfg: FinetuneParams) -> tuple[nn.Module, list[dict]]:
        return model, head_and_backbone_groups(model, cfg.lr, cfg.lr * cfg.backbone_lr_mult)
