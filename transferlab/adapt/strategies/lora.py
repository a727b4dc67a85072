"""``lora``: low-rank adapters on every backbone convolution and linear layer, and a new head.

Hu, Shen, Wallis, Allen-Zhu, Li, Wang, Wang and Chen (2022), "LoRA: Low-Rank Adaptation of
Large Language Models". Each frozen weight ``W`` gains a trainable update ``(alpha / rank) B A``
with ``B`` zero at init, so training starts exactly at the source model; after training the
update is merged into ``W`` and the result is a plain :class:`~transferlab.models.nets.TransferNet`.

Implemented with ``peft`` (``LoraConfig``, ``get_peft_model``, ``merge_and_unload``):

- every ``nn.Conv2d`` and ``nn.Linear`` inside ``model.backbone`` is a LoRA target. For a
  ``k x k`` convolution peft's ``A`` is a ``k x k`` convolution to ``rank`` channels and ``B`` a
  ``1 x 1`` convolution back: ``rank * (in * k * k + out)`` parameters; for a linear layer
  ``rank * (in + out)``. No dropout on the adapters' input (``lora_dropout`` 0).
- the new head trains fully (peft's ``modules_to_save``); the adapters and the head share ``lr``.
- BatchNorm is part of the frozen backbone: its affine parameters do not train and its running
  statistics stay the source's (``freeze(..., bn_stats=True)``), so the merged model normalises
  exactly as the trained adapter model did.
- the adapters' ``A`` is initialised by peft from global RNG state; it runs under
  ``torch.random.fork_rng`` seeded from the replicate's seed.

Simplification: no per-layer rank or alpha; grouped (depthwise) convolutions are not supported
by peft's merge, so a backbone that has them is refused with an error naming the layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from transferlab.adapt.strategies.base import Strategy, TransferTrainParams
from transferlab.adapt.strategies.registry import register
from transferlab.config.typed import check_range
from transferlab.models.nets import TransferNet, block_names, freeze


@dataclass(frozen=True)
class LoraParams(TransferTrainParams):
    rank: int = 4  # r: inner dimension of every adapter's B A
    alpha: float = 8.0  # lora_alpha: the update is scaled by alpha / rank
    lr: float = 0.01  # adapters and the new head; higher than finetune's (few, zero-init params)

    def validate(self, key: str) -> None:
        super().validate(key)
        check_range(f"{key}.rank", self.rank, 1, 4096)
        check_range(f"{key}.alpha", self.alpha, 0, 1e6, low_open=True)


def lora_targets(model: TransferNet) -> list[str]:
    """Full names of every ``nn.Conv2d`` and ``nn.Linear`` inside the backbone.

    Raises:
        ValueError: naming a grouped convolution (peft cannot merge its adapter).
    """
    names = []
    for name, module in model.backbone.named_modules():
        if isinstance(module, nn.Conv2d) and module.groups > 1:
            raise ValueError(f"lora: backbone.{name} is a grouped convolution "
                             f"(groups={module.groups}); its adapter cannot be merged")
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            names.append(f"backbone.{name}")
    return names


def wrap(model: TransferNet, rank: int, alpha: float, seed: int) -> nn.Module:
    """The peft model around ``model`` (modified in place): the backbone and its BatchNorm
    statistics frozen, LoRA adapters on every backbone conv/linear, the head trainable."""
    freeze(model, block_names(model), bn_stats=True)
    return adapters(model, lora_targets(model), rank, alpha, seed, ["head"])


def adapters(model: nn.Module, targets: list[str], rank: int, alpha: float, seed: int,
             modules_to_save: list[str] | None = None) -> nn.Module:
    """peft's model around ``model``: LoRA adapters of rank ``rank`` (scaled by alpha / rank,
    no dropout) on the ``targets`` (full module names), ``modules_to_save`` training whole.
    The adapters' ``A`` is drawn from ``seed``, the global RNG left as it was."""
    import peft  # ~10 s cold: only stages that run LoRA pay for it

    config = peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0,
                             target_modules=targets, modules_to_save=modules_to_save)
    with torch.random.fork_rng(devices=[]):  # peft draws A's init from global RNG
        torch.manual_seed(seed)
        return peft.get_peft_model(model, config)


@register
class Lora(Strategy):
    name = "lora"
    Params = LoraParams
    style = ("--", "H")
    rank = 15

    def trainable(self, model: TransferNet, cfg: LoraParams) -> tuple[nn.Module, list[dict]]:
        net = wrap(model, cfg.rank, cfg.alpha, self.ctx.seed)
        return net, [{"params": [p for p in net.parameters() if p.requires_grad], "lr": cfg.lr}]

    def after_fit(self, model: TransferNet, net: nn.Module,
                  val: tuple[torch.Tensor, torch.Tensor] | None, cfg: LoraParams,
                  chosen: dict | None) -> tuple[TransferNet, dict]:
        merged = net.merge_and_unload()  # W + (alpha / rank) B A; the trained head back in place
        return merged, {}
