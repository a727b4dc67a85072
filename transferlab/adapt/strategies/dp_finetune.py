"""``dp_finetune``: fine-tuning under differential privacy of the target labels (DP-SGD).

Abadi, Chu, Goodfellow, McMahan, Mironov, Talwar and Zhang (2016), "Deep Learning with
Differential Privacy", through Opacus (:mod:`transferlab.training.private`): Poisson-sampled
batches of expected size ``batch_size``, each example's gradient clipped to ``max_grad_norm``,
Gaussian noise of ``noise_multiplier * max_grad_norm`` added to their sum, and the privacy spent
accounted in Rényi DP and reported as (ε, δ) per run (the run record's ``privacy``).

- **Noise:** ``target_epsilon`` (the smallest noise that reaches it at ``delta`` after
  ``epochs``) or ``noise_multiplier`` with ``max_grad_norm``; exactly one of the two.
  ``delta`` null: 1 / the run's training examples.
- **Nothing is chosen on the private labels.** Scoring a candidate or an epoch on held-out
  budget labels would spend privacy the reported ε does not count, so this strategy runs a fixed
  schedule of ``epochs`` under ``selection.protocol: within_budget`` (the budget is all
  training labels) and ignores ``search``; under ``external_val`` the fixed validation set is
  public, but the schedule stays fixed too.
- **BatchNorm** cannot run under per-example gradients: ``batchnorm: freeze`` keeps the
  source's statistics and affine parameters, ``groupnorm`` replaces each BatchNorm by a trained
  GroupNorm (the source's BatchNorm parameters are dropped; a checkpoint then records a
  different architecture, so only ``freeze`` is supported inside the pipeline).
- ``train: all`` trains the backbone at ``lr * backbone_lr_mult`` and the new head at ``lr``;
  ``train: head`` is the **private linear probe**: the whole backbone is frozen (its BatchNorm
  layers are in both modes, under ``batchnorm: freeze``), so only the head's per-example
  gradients are clipped and noised. Both use the optimizer of ``optimizer``; ``augment`` must
  be false (the private loop does not augment).
- The sampling and the noise are drawn from generators seeded by the replicate: a run repeats
  bit for bit, and Opacus's ``secure_mode`` is off (docs/strategies.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from transferlab.adapt.strategies.base import Strategy, TransferTrainParams, check_multiplier
from transferlab.adapt.strategies.finetune import head_and_backbone_groups, non_head_parameters
from transferlab.adapt.strategies.registry import register
from transferlab.config.typed import check_range, fail
from transferlab.models.nets import TransferNet


@dataclass(frozen=True)
class DpFinetuneParams(TransferTrainParams):
    target_epsilon: float | None = 8.0  # ε to reach at delta after epochs; null: noise_multiplier
    noise_multiplier: float | None = None  # σ, the noise's standard deviation / max_grad_norm
    max_grad_norm: float = 1.0  # each example's gradient is clipped to this L2 norm
    delta: float | None = None  # δ of (ε, δ); null: 1 / the run's training examples
    batchnorm: Literal["freeze"] = "freeze"  # BatchNorm keeps the source's statistics
    backbone_lr_mult: float = 1.0  # backbone lr = lr * this; the new head trains at lr
    train: Literal["all", "head"] = "all"  # head: the private linear probe (a frozen backbone)
    augment: bool = False  # the private loop does not augment
    chooses_on_labels: ClassVar[bool] = False  # a fixed schedule: no choice on private labels

    def validate(self, key: str) -> None:
        super().validate(key)
        if (self.target_epsilon is None) == (self.noise_multiplier is None):
            fail(f"{key}.target_epsilon", "give exactly one of target_epsilon and "
                 "noise_multiplier (set the other to null)")
        if self.target_epsilon is not None:
            check_range(f"{key}.target_epsilon", self.target_epsilon, 0, 1e4, low_open=True)
        if self.noise_multiplier is not None:
            check_range(f"{key}.noise_multiplier", self.noise_multiplier, 0, 1e4)
        check_range(f"{key}.max_grad_norm", self.max_grad_norm, 0, 1e9, low_open=True)
        if self.delta is not None:
            check_range(f"{key}.delta", self.delta, 0, 0.5, low_open=True)
        check_multiplier(f"{key}.backbone_lr_mult", self.backbone_lr_mult)
        if self.augment:
            fail(f"{key}.augment", "must be false: the private loop does not augment")


@register
class DpFinetune(Strategy):
    name = "dp_finetune"
    Params = DpFinetuneParams
    tasks = frozenset({"classification"})
    style = ("--", "P")
    rank = 32

    def trainable(self, model: TransferNet, cfg: DpFinetuneParams
                  ) -> tuple[nn.Module, list[dict]]:
        if cfg.train == "all":
            return model, head_and_backbone_groups(model, cfg.lr, cfg.lr * cfg.backbone_lr_mult)
        for p in non_head_parameters(model):
            p.requires_grad_(False)
        return model, [{"params": list(model.head.parameters()), "lr": cfg.lr}]

    def fit(self, net: nn.Module, train: tuple[torch.Tensor, torch.Tensor],
            val: tuple[torch.Tensor, torch.Tensor] | None, cfg: DpFinetuneParams,
            groups: list[dict], generator: torch.Generator, label: str,
            **hooks: Any) -> dict:
        """DP-SGD for ``cfg.epochs`` epochs; the summary of the shared loop's fit (no
        validation: nothing is chosen) plus ``privacy``."""
        from transferlab.training.loop import counted_flops, make_optimizer
        from transferlab.training.private import dp_fit

        delta = cfg.delta if cfg.delta is not None else 1.0 / len(train[1])
        seed = int(torch.randint(0, 2 ** 31 - 1, (), generator=generator))
        with counted_flops() as tally:
            _, info = dp_fit(net, train, epochs=cfg.epochs, batch_size=cfg.batch_size,
                             optimizer=make_optimizer(groups, cfg),
                             max_grad_norm=cfg.max_grad_norm, delta=delta,
                             noise_multiplier=cfg.noise_multiplier,
                             target_epsilon=cfg.target_epsilon, seed=seed,
                             device=self.ctx.device, batchnorm=cfg.batchnorm)
        privacy = {k: info[k] for k in ("epsilon", "dp_delta", "noise_multiplier",
                                        "max_grad_norm", "sample_rate", "steps")}
        return {"best_epoch": cfg.epochs, "epochs_run": cfg.epochs, "steps": info["steps"],
                "best_val_accuracy": None, "best_val_loss": None, "history": info["history"],
                "flops": tally.total, "privacy": privacy}
