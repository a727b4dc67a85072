"""``dann``: domain-adversarial fine-tuning with a gradient reversal layer.

Ganin, Ustinova, Ajakan, Germain, Larochelle, Laviolette, Marchand and Lempitsky (2016),
"Domain-Adversarial Training of Neural Networks". A domain discriminator learns to tell source
images from target images by their backbone features; between the backbone and the
discriminator a gradient reversal layer (identity forward, ``-lambda * grad`` backward) makes the
backbone learn features the discriminator cannot separate, while the label loss keeps them
discriminative for the target classes.

Implemented here, on top of ``finetune`` (same head, optimiser and backbone lr):

- the label loss is the cross-entropy on the budget's labels that ``fit`` computes;
- the extra loss term, every step: ``domain_weight * BCE(discriminator(GRL(features)))`` on a
  batch of source training images (domain 0) and a batch of target pool images without their
  labels (domain 1), each as large as the labelled batch, drawn with replacement from a
  generator seeded from the replicate's seed; both pass through the SAME backbone
  (``model.features``), concatenated into one forward pass, as reference implementations do;
- the GRL coefficient follows the paper's schedule ``2 / (1 + exp(-10 p)) - 1`` over training
  progress ``p`` in [0, 1]: (epochs done + steps done in this epoch / steps per epoch) /
  ``epochs``, steps per epoch counted as ceil(labelled examples / batch size). A refit replays
  the choosing run's schedule up to its chosen epoch;
- the discriminator is an MLP on the pooled features (one hidden ReLU layer of ``disc_hidden``
  units, one logit), new for every run, initialised from the replicate's seed, trained at
  ``lr`` in the same optimiser, and discarded after training;
- BatchNorm: the mixed source+target batch is normalised with its own batch statistics but does
  NOT update the running statistics (``track_running_stats`` off for that pass), so the trained
  model's statistics come from the labelled target batches alone, as in ``finetune``. Hence
  ``domain_weight: 0`` gives exactly the ``finetune`` model.

Simplifications: no augmentation of the domain batches; the paper's annealed learning rate
``mu_0 / (1 + 10 p)^0.75`` is not used (the shared optimiser's constant lr is).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from transferlab.adapt.strategies.base import LossTerm, Strategy
from transferlab.adapt.strategies.finetune import FinetuneParams, head_and_backbone_groups
from transferlab.adapt.strategies.registry import register
from transferlab.config.typed import check_range
from transferlab.models.nets import TransferNet


@dataclass(frozen=True)
class DANNParams(FinetuneParams):
    domain_weight: float = 0.1  # weight of the domain classification loss (0: plain finetune)
    disc_hidden: int = 100  # hidden units of the domain discriminator's one hidden layer

    def validate(self, key: str) -> None:
        super().validate(key)
        check_range(f"{key}.domain_weight", self.domain_weight, 0, 100)
        check_range(f"{key}.disc_hidden", self.disc_hidden, 1, 65_536)


class GradReverse(torch.autograd.Function):
    """Identity forward; the gradient times ``-coeff`` backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, coeff: float) -> torch.Tensor:
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.coeff * grad, None


def grad_reverse(x: torch.Tensor, coeff: float) -> torch.Tensor:
    """The gradient reversal layer: ``x`` forward, ``-coeff * grad`` backward."""
    return GradReverse.apply(x, coeff)


def grl_coefficient(progress: float) -> float:
    """The paper's schedule ``2 / (1 + exp(-10 p)) - 1``: 0 at p=0, rising towards 1."""
    return 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0


def discriminator(feature_dim: int, hidden: int, seed: int) -> nn.Module:
    """features (B, D) -> domain logit (B, 1), initialised from ``seed`` alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(feature_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))


@contextlib.contextmanager
def running_statistics_untouched(model: nn.Module) -> Iterator[None]:
    """BatchNorm layers in train mode normalise with batch statistics without updating their
    running statistics (nor ``num_batches_tracked``); eval-mode layers use theirs as usual."""
    layers = [m for m in model.modules()
              if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in layers:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in layers:
            m.track_running_stats = True


def domain_loss(model: TransferNet, disc: nn.Module, source_x: torch.Tensor,
                target_x: torch.Tensor, coeff: float) -> torch.Tensor:
    """BCE of the discriminator telling source (0) from target (1) images, through the GRL.

    Both batches pass through ``model``'s backbone together, without touching its BatchNorm
    running statistics."""
    with running_statistics_untouched(model):
        features = model.features(torch.cat([source_x, target_x]))  # (Bs + Bt, D)
    logits = disc(grad_reverse(features, coeff)).squeeze(1).float()
    domains = torch.cat([torch.zeros(len(source_x)), torch.ones(len(target_x))])
    return F.binary_cross_entropy_with_logits(logits, domains.to(logits.device))


@register
class DANN(Strategy):
    name = "dann"
    Params = DANNParams
    uses_unlabeled = True
    uses_source_data = True
    style = ("-.", "P")
    rank = 48

    def before_fit(self, model: TransferNet, train: tuple[torch.Tensor, torch.Tensor],
                   cfg: DANNParams, generator: torch.Generator) -> TransferNet:
        self.steps_per_epoch = max(math.ceil(len(train[0]) / cfg.batch_size), 1)
        self.epoch, self.step = 1, 0
        return model

    def trainable(self, model: TransferNet, cfg: DANNParams) -> tuple[nn.Module, list[dict]]:
        # new for every run (each candidate and the refit), so each replays from the start;
        # seeds apart from ctx.seed's, which draws the head and the batch order
        self.disc = discriminator(model.feature_dim, cfg.disc_hidden,
                                  self.ctx.seed + 1).to(self.ctx.device)
        self.domain_generator = torch.Generator().manual_seed(self.ctx.seed + 2)
        groups = head_and_backbone_groups(model, cfg.lr, cfg.lr * cfg.backbone_lr_mult)
        return model, [*groups, {"params": list(self.disc.parameters()), "lr": cfg.lr}]

    def on_epoch(self, model: TransferNet, epoch: int, cfg: DANNParams) -> None:
        self.epoch, self.step = epoch, 0

    def progress(self, cfg: DANNParams) -> float:
        """Training progress p in [0, 1] of the step about to be taken."""
        done = self.epoch - 1 + min(self.step / self.steps_per_epoch, 1.0)
        return min(done / max(cfg.epochs, 1), 1.0)

    def loss_term(self, model: TransferNet, cfg: DANNParams) -> LossTerm:
        source_x = self.ctx.source_data[0]
        pool_x = self.ctx.target.pool_x

        def term(features: torch.Tensor, logits: torch.Tensor, inputs: torch.Tensor,
                 labels: torch.Tensor) -> torch.Tensor:
            size = (len(inputs),)  # as many of each domain as the labelled batch
            xs = source_x[torch.randint(len(source_x), size, generator=self.domain_generator)]
            xt = pool_x[torch.randint(len(pool_x), size, generator=self.domain_generator)]
            coeff = grl_coefficient(self.progress(cfg))
            self.step += 1
            return cfg.domain_weight * domain_loss(model, self.disc, xs.to(inputs.device),
                                                   xt.to(inputs.device), coeff)

        return term
