"""``lp_ft``: linear probing, then fine-tuning (LP-FT).

Kumar, Raghunathan, Jones, Ma and Liang (2022), "Fine-Tuning can Distort Pretrained Features and
Underperform Out-of-Distribution" (ICLR). Fine-tuning from a random head lets the head's large
early gradients distort the pretrained features; training the head first on frozen features
(the linear probe) and only then fine-tuning everything from that head distorts them less.

What is implemented: :meth:`LpFt.before_fit` trains only the new head on the run's training
labels. The backbone's features of those examples are computed once, in eval mode under
``torch.inference_mode`` (so no BatchNorm running statistic moves), and the head takes
``probe_epochs`` full-batch AdamW steps at ``probe_lr`` on them (weight decay: the block's
``weight_decay``). No early stopping: the probe sees only the run's training labels, and the
held-out labels stay for the main fit. The main fit is then :class:`Finetune` from the probed
head (head at ``lr``, backbone at ``lr * backbone_lr_mult``).

Simplifications: the probe uses the un-augmented training images and draws no randomness (full
batch). Its head steps are not in the record's ``steps`` (the main fit's optimizer steps); its
FLOPs (one backbone forward per example, then the head steps) are in ``train_flops``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from transferlab.adapt.strategies.finetune import Finetune, FinetuneParams
from transferlab.adapt.strategies.registry import register
from transferlab.config.typed import check_range
from transferlab.core import tasks
from transferlab.models.nets import TransferNet
from transferlab.training.loop import extract_features
from transferlab.training.optim import AdamW


@dataclass(frozen=True)
class LpFtParams(FinetuneParams):
    probe_epochs: int = 50  # full-batch AdamW steps on the head alone before fine-tuning
    probe_lr: float = 0.01  # learning rate of those head-only steps

    def validate(self, key: str) -> None:
        super().validate(key)
        check_range(f"{key}.probe_epochs", self.probe_epochs, 0, 100_000)
        check_range(f"{key}.probe_lr", self.probe_lr, 0, 10, low_open=True)


def probe_head(model: TransferNet, train: tuple[torch.Tensor, torch.Tensor], steps: int,
               lr: float, weight_decay: float, device: torch.device,
               task: tasks.Task = tasks.CLASSIFICATION) -> TransferNet:
    """Train ``model.head`` alone on the frozen backbone's features of ``train``.

    Args:
        model: the network; its backbone and BatchNorm statistics are left bitwise unchanged.
        train: (inputs (N, ...), labels (N,)) on CPU.
        steps: full-batch AdamW steps (0: the head is left as it is).
        lr, weight_decay: of those steps.
        device: where the features and the head steps are computed.
        task: the target's task: its loss trains the head (cross-entropy; a regression's MSE of
            the standardised target).
    Returns:
        ``model``, its head trained in place.
    """
    if steps == 0:
        return model
    # eval mode and inference mode: no BatchNorm statistic moves, no graph through the backbone;
    # clone(): inference-mode tensors cannot enter autograd when the head trains on them
    features = extract_features(model, train[0], device).clone().to(device)  # (N, D)
    labels = train[1].to(device)
    head = model.head.to(device)
    optimizer = AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        loss = task.loss(head(features), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model


@register
class LpFt(Finetune):
    name = "lp_ft"
    Params = LpFtParams
    roles = frozenset()  # not the reference (Finetune's role): that stays plain finetune
    style = ("--", "h")
    rank = 34

    def before_fit(self, model: TransferNet, train: tuple[torch.Tensor, torch.Tensor],
                   cfg: LpFtParams, generator: torch.Generator) -> TransferNet:
        return probe_head(model, train, cfg.probe_epochs, cfg.probe_lr, cfg.weight_decay,
                          self.ctx.device, self.target_task())
