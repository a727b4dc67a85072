"""``lwf``: fine-tuning that keeps the source classifier's answers on the target images.

Li and Hoiem (2017), "Learning without Forgetting" (TPAMI). Implemented: the paper's
knowledge-distillation term on the old task's outputs, added to the target cross-entropy:

    distill_weight * T^2 * KL(softmax(y_source / T) || softmax(y_old / T)),

averaged over the batch, where ``y_source`` are the logits of a frozen copy of the source
network (with its source head) on the same training batch, and ``y_old`` the frozen source head
applied to the training model's features. The T^2 factor keeps the gradient scale independent
of the temperature (Hinton et al. 2015); KL differs from the paper's cross-entropy with the
recorded soft labels by the teachers' entropy, a constant, so the gradients are the same.

Differences from the paper, and why:

- The old head is a frozen copy of the source head; the paper trains it jointly with the
  backbone. The loop returns only the target network, so the old head would be thrown away; a
  frozen one makes the term a pure anchor of the features, zero at the start.
- The teacher's logits are computed on the fly on each (augmented) batch, not recorded once
  before training, so they match the augmented inputs the student sees.
- The frozen source network runs in the training model's BatchNorm mode (batch statistics while
  training, as the student does) and with the training model's input normalisation, so the two
  compute the same function at the start and the term is exactly zero there.

Otherwise it trains exactly as ``finetune``; ``distill_weight = 0`` gives bitwise the
``finetune`` model. It needs a source with a trained classifier (``needs_source_head``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from transferlab.adapt.strategies._reference import frozen_copy, run_like
from transferlab.adapt.strategies.base import LossTerm
from transferlab.adapt.strategies.finetune import Finetune, FinetuneParams
from transferlab.adapt.strategies.registry import register
from transferlab.config.typed import check_range
from transferlab.models.nets import TransferNet


@dataclass(frozen=True)
class LwFParams(FinetuneParams):
    distill_weight: float = 1.0  # lambda_o: weight of the distillation term on the source head
    temperature: float = 2.0  # T: softmax temperature of teacher and student (the paper's 2)

    def validate(self, key: str) -> None:
        super().validate(key)
        check_range(f"{key}.distill_weight", self.distill_weight, 0, 1e4)
        check_range(f"{key}.temperature", self.temperature, 0, 100, low_open=True)


def distillation(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                 temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), averaged over the batch (B, C)."""
    t = float(temperature)
    student = F.log_softmax(student_logits.float() / t, dim=1)
    teacher = F.log_softmax(teacher_logits.float() / t, dim=1)
    return t * t * F.kl_div(student, teacher, reduction="batchmean", log_target=True)


@register
class LwF(Finetune):
    name = "lwf"
    Params = LwFParams
    roles = frozenset()
    needs_source_head = True
    style = ("--", "*")
    rank = 46

    def initial_model(self) -> TransferNet:
        # the loop's initial model replaces the head on ctx.source itself: keep the source's
        # head first
        self.source_head = copy.deepcopy(self.ctx.source.head)
        return super().initial_model()

    def loss_term(self, model: TransferNet, cfg: LwFParams) -> LossTerm:
        # the source network as the student starts: this run's starting backbone (and input
        # normalisation) with the source head, all frozen
        teacher = frozen_copy(model)
        teacher.head = frozen_copy(self.source_head)
        old_head = teacher.head  # applied to the student's features; frozen, it trains nothing

        def term(features: torch.Tensor, logits: torch.Tensor, inputs: torch.Tensor,
                 labels: torch.Tensor) -> torch.Tensor:
            run_like(teacher, model, inputs.device)
            with torch.no_grad():
                teacher_logits = teacher(inputs)  # (B, source classes)
            return cfg.distill_weight * distillation(old_head(features), teacher_logits,
                                                     cfg.temperature)

        return term
