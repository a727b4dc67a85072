"""``partial_finetune``: the first N backbone blocks frozen; the rest and a new head train."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from transferlab.adapt.strategies.base import Strategy, TransferTrainParams
from transferlab.adapt.strategies.registry import register
from transferlab.config.typed import check_range
from transferlab.models.nets import TransferNet, block_names, freeze


@dataclass(frozen=True)
class PartialFinetuneParams(TransferTrainParams):
    frozen_blocks: int = 2  # the first N backbone blocks keep their source weights
    freeze_bn_stats: bool = True  # frozen blocks keep BatchNorm running statistics too

    def validate(self, key: str) -> None:
        super().validate(key)
        check_range(f"{key}.frozen_blocks", self.frozen_blocks, 1, 64)


@register
class PartialFinetune(Strategy):
    name = "partial_finetune"
    Params = PartialFinetuneParams
    style = ("--", "^")
    rank = 20

    def trainable(self, model: TransferNet, cfg: PartialFinetuneParams
                  ) -> tuple[nn.Module, list[dict]]:
        names = block_names(model)
        if cfg.frozen_blocks >= len(names):
            raise ValueError(f"transfer.{self.name}.frozen_blocks: {cfg.frozen_blocks} would "
                             f"freeze every block; the backbone has {len(names)}: "
                             + ", ".join(names))
        freeze(model, names[:cfg.frozen_blocks], bn_stats=cfg.freeze_bn_stats)
        return model, [{"params": [p for p in model.parameters() if p.requires_grad]}]
