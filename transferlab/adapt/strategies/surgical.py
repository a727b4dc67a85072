"""``surgical``: fine-tune one backbone block (and the new head), the block chosen on held-out
labels.

Lee, Chen, Tajwar, Kumar, Yao, Liang and Finn (2023), "Surgical Fine-Tuning Improves Adaptation
to Distribution Shifts" (ICLR). Which layers to tune depends on the shift: input-level shifts
(corruptions) favour the first block, feature-level shifts a middle one, label-level shifts the
last; tuning that one block alone can beat fine-tuning everything.

What is implemented: the backbone block ``block`` (a name of
:func:`~transferlab.models.nets.block_names`, checked when the model is built, since the names
depend
on the architecture) trains at ``lr * backbone_lr_mult``; every other block is frozen with its
BatchNorm running statistics. The paper tunes a block of a network whose head already fits the
label space; ours is new for the target's classes and cannot stay random, so the head trains
too, at ``lr``. The block is chosen as the paper does, on held-out labels: the in-stage search
``search: {block: [block1, block2, block3]}`` trains one candidate per block and keeps the best
held-out accuracy (ties: the lower held-out loss, then the first listed); each block's score is
in the record's ``search`` entry. Where nothing is held out (a fixed schedule) the loop runs the
search's first candidate, so list ``block``'s own value first.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from transferlab.adapt.strategies.finetune import Finetune, FinetuneParams
from transferlab.adapt.strategies.registry import register
from transferlab.models.nets import TransferNet, block_names, freeze


@dataclass(frozen=True)
class SurgicalParams(FinetuneParams):
    block: str = "block1"  # the one backbone block that trains (a name of the architecture's)
    backbone_lr_mult: float = 1.0  # that block's lr = lr * this; the new head trains at lr


@register
class Surgical(Finetune):
    name = "surgical"
    Params = SurgicalParams
    roles = frozenset()  # not the reference (Finetune's role): that stays plain finetune
    style = ("--", "d")
    rank = 18

    def trainable(self, model: TransferNet, cfg: SurgicalParams) -> tuple[nn.Module, list[dict]]:
        names = block_names(model)
        if cfg.block not in names:
            raise ValueError(f"transfer.{self.name}.block: unknown block {cfg.block!r}; "
                             f"expected one of {', '.join(names)}")
        freeze(model, [n for n in names if n != cfg.block], bn_stats=True)
        tuned = list(model.backbone.get_submodule(cfg.block).parameters())
        return model, [{"params": tuned, "lr": cfg.lr * cfg.backbone_lr_mult},
                       {"params": list(model.head.parameters()), "lr": cfg.lr}]
