"""``llrd``: fine-tuning with layer-wise learning-rate decay (discriminative fine-tuning).

Howard and Ruder (2018), "Universal Language Model Fine-tuning for Text Classification" (ACL),
discriminative fine-tuning; in the layer-wise decay form of Clark, Luong, Le and Manning (2020),
"ELECTRA: Pre-training Text Encoders as Discriminators Rather Than Generators" (ICLR). Lower
layers hold more general features, so they move less.

What is implemented: everything trains, in one optimizer group per backbone block. The new head
trains at ``lr``, the last backbone block (of :func:`~transferlab.models.nets.block_names`: blocks
that hold parameters, so a parameterless pooling block does not count) at ``lr * decay``, the
one before at ``lr * decay**2``, and so on down to the first block. A parameter outside the
blocks and the head (none in this repo's architectures) joins the first block's group, the
lowest rate. ``decay = 1`` is :class:`~transferlab.adapt.strategies.finetune.Finetune` with
``backbone_lr_mult = 1``: the same parameters, in the same order, at the same rate.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from transferlab.adapt.strategies.base import Strategy, TransferTrainParams
from transferlab.adapt.strategies.registry import register
from transferlab.config.typed import check_range
from transferlab.models.nets import TransferNet, block_names


@dataclass(frozen=True)
class LlrdParams(TransferTrainParams):
    decay: float = 0.5  # lr factor per block below the head: the last block at lr * decay

    def validate(self, key: str) -> None:
        super().validate(key)
        check_range(f"{key}.decay", self.decay, 0, 1, low_open=True)


def layerwise_groups(model: TransferNet, lr: float, decay: float) -> list[dict]:
    """Optimizer groups from the first backbone block to the head: block ``i`` of ``n`` (1-based)
    at ``lr * decay ** (n + 1 - i)``, the head at ``lr``. Every parameter is in exactly one
    group; one outside the blocks and the head joins the first block's group."""
    names = block_names(model)
    blocks = [list(model.backbone.get_submodule(name).parameters()) for name in names]
    head = list(model.head.parameters())
    placed = {id(p) for group in (*blocks, head) for p in group}
    rest = [p for p in model.parameters() if id(p) not in placed]
    if rest:
        blocks = [rest + blocks[0], *blocks[1:]] if blocks else [rest]
    groups = [{"params": params, "lr": lr * decay ** (len(blocks) - i)}
              for i, params in enumerate(blocks)]
    return [*groups, {"params": head, "lr": lr}]


@register
class Llrd(Strategy):
    name = "llrd"
    Params = LlrdParams
    style = ("-.", "<")
    rank = 32

    def trainable(self, model: TransferNet, cfg: LlrdParams) -> tuple[nn.Module, list[dict]]:
        return model, layerwise_groups(model, cfg.lr, cfg.decay)
