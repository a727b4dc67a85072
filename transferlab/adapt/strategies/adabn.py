"""``adabn``: BatchNorm statistics re-estimated on the unlabeled target pool, then kept fixed.

Li, Wang, Shi, Liu and Hou (2016/2018), "Revisiting Batch Normalization For Practical Domain
Adaptation" (AdaBN). The paper's Algorithm 1: for every BatchNorm neuron, the mean and variance
of its responses over all target images replace the source statistics; nothing else changes.

Implemented exactly as Algorithm 1 states it, in
:func:`transferlab.models.batchnorm.recalibrate_batchnorm` (which the training loop's precise
BatchNorm shares): layer by layer in forward order over the
whole target pool (its images only, no labels), in eval mode, in float64; the running variance
is stored unbiased, as BatchNorm stores it. (The common shortcut, one pass in train mode with
``momentum=None``, averages per-batch statistics instead: later layers then see inputs
normalised with batch statistics, and the averaged variance misses the spread of the batch
means, so it depends on the batch size.)

The recalibrated statistics then stay frozen (they are the method) while a new head trains:

- ``then: probe``: the head only, the backbone frozen (the paper's setting: a source classifier
  whose statistics are swapped; here the target's classes need a new head);
- ``then: all``: every weight trains (the backbone at ``lr * backbone_lr_mult``,
  BatchNorm's affine parameters included), the running statistics stay the recalibrated ones.
- ``then: none``: nothing trains; the source's own head is kept, its rows ordered to the target
  classes (the paper's setting exactly). It needs no label, so it has a result at every budget,
  and it runs only where every target class has a source class (as ``source_only``): the
  zero-label baseline beside ``source_only``. It is a model per stage, not a search point.
  ``then: all`` with ``head_init: source`` is AdaBN followed by fine-tuning from the source head.

The statistics depend only on the source and the pool, not on the seed or budget: they are
computed once per stage and input normalisation, and reused by every replicate.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import nn

from transferlab.adapt.strategies.base import Strategy, source_head_model
from transferlab.adapt.strategies.finetune import FinetuneParams, head_and_backbone_groups
from transferlab.adapt.strategies.registry import register
from transferlab.config.typed import fail
from transferlab.models.batchnorm import batchnorm_layers, recalibrate_batchnorm
from transferlab.models.nets import TransferNet, block_names, freeze


@dataclass(frozen=True)
class AdaBNParams(FinetuneParams):
    # after recalibration: the head only | all weights | nothing (the source head, no labels)
    then: Literal["probe", "all", "none"] = "probe"
    # backbone_lr_mult (from finetune): then=all only; backbone lr = lr * this

    def validate(self, key: str) -> None:
        super().validate(key)
        if "none" in self.search.get("then", ()):
            fail(f"{key}.search.then", "none trains nothing and needs no label: it is its own "
                 "curve, not a search point (set then: none in the block instead)")
        if self.then == "none" and self.search:
            fail(f"{key}.search", f"then: none trains nothing; there is nothing to search "
                 f"(got {', '.join(self.search)})")


def freeze_batchnorm_statistics(model: TransferNet) -> None:
    """Keep every BatchNorm layer's running statistics fixed in train mode too."""
    model.frozen_bn = tuple(dict.fromkeys(model.frozen_bn + tuple(
        name for name, _ in batchnorm_layers(model))))
    model.train(model.training)


@register
class AdaBN(Strategy):
    name = "adabn"
    Params = AdaBNParams
    needs_backbone = frozenset({"batchnorm"})
    uses_unlabeled = True
    style = (":", "v")
    rank = 12

    @classmethod
    def trains_with(cls, cfg: AdaBNParams) -> bool:
        return cfg.then != "none"

    @classmethod
    def needs_aligned_labels_with(cls, cfg: AdaBNParams) -> bool:
        return cfg.then == "none"  # it keeps the source head

    @classmethod
    def skip_reason(cls, source_config: dict | None, mapping: dict | None,
                    cfg: AdaBNParams | None = None) -> str | None:
        if cfg is not None and cfg.then == "none" and (
                not source_config or not source_config.get("source_classes")):
            return "then: none keeps the source head; the source has no trained classifier"
        return super().skip_reason(source_config, mapping, cfg)

    def untrained_model(self) -> TransferNet:
        """``then: none``: the source with its head in target order and its BatchNorm
        statistics recalibrated on the target pool."""
        model = self.initial_model()  # the input normalisation the block asks for
        model.head = copy.deepcopy(self.ctx.source_head)
        model = source_head_model(model, self.ctx.source_config["source_classes"],
                                  self.ctx.mapping, self.ctx.target.num_classes)
        return self.before_fit(model, (self.ctx.target.pool_x[:0], self.ctx.target.pool_y[:0]),
                               self.cfg, torch.Generator()).eval()

    def setup(self) -> dict:
        # once per stage, for each input normalisation the search can give: every replicate
        # then copies them (and the stage's setup_flops, not each run's, carry their cost)
        for _, cfg in self.cfg.search_grid():
            fresh = replace(self.ctx, source=copy.deepcopy(self.ctx.source))
            self._statistics(type(self)(cfg, fresh).initial_model())
        return {}

    def _statistics(self, model: TransferNet) -> dict[str, tuple[torch.Tensor, ...]]:
        """The recalibrated statistics for the model's input normalisation (computed on a
        copy, once per stage and normalisation; a replicate trained outside a stage computes
        them itself)."""
        cache = self.ctx.shared.setdefault("adabn_statistics", {})
        key = (float(model.normalize.mean), float(model.normalize.std))
        if key not in cache:
            cache[key] = recalibrate_batchnorm(copy.deepcopy(model), self.ctx.target.pool_x,
                                               self.ctx.device)
        return cache[key]

    def before_fit(self, model: TransferNet, train: tuple[torch.Tensor, torch.Tensor],
                   cfg: AdaBNParams, generator: torch.Generator) -> TransferNet:
        layers = dict(batchnorm_layers(model))
        with torch.no_grad():
            for name, (mean, var) in self._statistics(model).items():
                layers[name].running_mean.copy_(mean)
                layers[name].running_var.copy_(var)
        freeze_batchnorm_statistics(model)
        return model

    def trainable(self, model: TransferNet, cfg: AdaBNParams) -> tuple[nn.Module, list[dict]]:
        if cfg.then == "probe":
            freeze(model, block_names(model), bn_stats=True)
            return model, [{"params": list(model.head.parameters()), "lr": cfg.lr}]
        return model, head_and_backbone_groups(model, cfg.lr, cfg.lr * cfg.backbone_lr_mult)
