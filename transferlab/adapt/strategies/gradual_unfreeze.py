"""``gradual_unfreeze``: fine-tuning that unfreezes the backbone one block at a time, from the top.

Howard and Ruder (2018), "Universal Language Model Fine-tuning for Text Classification" (ACL),
gradual unfreezing: first only the last layer trains, then the layer below joins, and so on, so
the new head's early errors do not wash out the general features of the lower layers.

What is implemented: at epoch 1 only the new head trains; after every ``epochs_per_block``
epochs one more backbone block (of :func:`~transferlab.models.nets.block_names`) joins, the last
block first: with ``epochs_per_block = 2`` and blocks ``block1..block3``, epochs 1-2 train the
head, 3-4 also ``block3``, 5-6 also ``block2``, 7 onwards everything. Every parameter is in the
optimizer from the start (head at ``lr``, backbone at ``lr * backbone_lr_mult``, as in
:class:`~transferlab.adapt.strategies.finetune.Finetune`); a frozen one has no gradient, so AdamW
skips it (no step, no weight decay) and its moments start when it thaws. A frozen block keeps its
BatchNorm running statistics too (``TransferNet.frozen_bn``) until it thaws.

Simplifications: ULMFiT's discriminative rates and slanted triangular schedule are not part of
this strategy (``llrd`` has the former). Early stopping may stop before every block has thawed
(keep ``patience`` above ``epochs_per_block``), and the refit replays the same schedule for the
chosen number of epochs. The record's ``trainable_params`` are those that train in the last
epoch; ``train_flops`` counts every epoch's steps at that epoch's configuration.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from transferlab.adapt.strategies.finetune import Finetune, FinetuneParams, head_and_backbone_groups
from transferlab.adapt.strategies.registry import register
from transferlab.config.typed import check_range
from transferlab.models.nets import TransferNet, block_names, freeze


@dataclass(frozen=True)
class GradualUnfreezeParams(FinetuneParams):
    epochs_per_block: int = 2  # epochs between thawing one more backbone block, from the top

    def validate(self, key: str) -> None:
        super().validate(key)
        check_range(f"{key}.epochs_per_block", self.epochs_per_block, 1, 100_000)


def thawed_blocks(names: list[str], epoch: int, epochs_per_block: int) -> list[str]:
    """The blocks of ``names`` (forward order) that train in 1-based ``epoch``: the last
    ``(epoch - 1) // epochs_per_block`` of them."""
    n = min(len(names), (epoch - 1) // epochs_per_block)
    return names[len(names) - n:]


def unfreeze(model: TransferNet, blocks: list[str]) -> None:
    """Let backbone ``blocks`` train again: gradients on, BatchNorm statistics no longer kept."""
    prefixes = tuple(f"backbone.{block}." for block in blocks)
    for block in blocks:
        model.backbone.get_submodule(block).requires_grad_(True)
    model.frozen_bn = tuple(n for n in model.frozen_bn if not n.startswith(prefixes))
    model.train(model.training)


@register
class GradualUnfreeze(Finetune):
    name = "gradual_unfreeze"
    Params = GradualUnfreezeParams
    roles = frozenset()  # not the reference (Finetune's role): that stays plain finetune
    style = (":", ">")
    rank = 25

    def trainable(self, model: TransferNet, cfg: GradualUnfreezeParams
                  ) -> tuple[nn.Module, list[dict]]:
        freeze(model, block_names(model), bn_stats=True)
        return model, head_and_backbone_groups(model, cfg.lr, cfg.lr * cfg.backbone_lr_mult)

    def on_epoch(self, model: TransferNet, epoch: int, cfg: GradualUnfreezeParams) -> None:
        unfreeze(model, thawed_blocks(block_names(model), epoch, cfg.epochs_per_block))
