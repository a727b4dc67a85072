"""``lora_prompt``: prompt-based fine-tuning of a causal LM with LoRA, through the label words.

Gao, Fisch and Chen (2021), "Making Pre-trained Language Models Better Few-shot Learners"
(LM-BFF): instead of a new head, the classifier is the LM behind a prompt (the template around
the text, one label word per class, as in ``zero_shot``), and fine-tuning trains the LM so that
the right label word wins. The class logits are the label words' next-token log-probabilities
renormalised over the label words; the loss is the cross-entropy on them. Training moves the LM
through LoRA adapters (Hu et al. 2022, with ``peft`` as in ``lora``) on every linear layer of
the decoder blocks (attention and MLP projections); the embeddings, the final norm and the LM
head (often tied to the embeddings) stay the source's. After training the adapters are merged
into the weights, so the model is a plain prompted LM again.

No new head: the prompt's label words are the head (its identity map stays frozen), so training
starts exactly at the zero-shot classifier. Without calibration by default (``calibrate:
false``): training learns the label words' bias, which contextual calibration would otherwise
remove; with it, the content-free prior measured on the source LM is subtracted throughout.

Simplification: one prompt (the first template and label words), no demonstrations in the
prompt (LM-BFF's demonstrations are ``in_context``'s), and LoRA rather than every weight.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from transferlab.adapt.strategies._prompting import PromptParams, setup_template, zero_shot_model
from transferlab.adapt.strategies.base import Strategy
from transferlab.adapt.strategies.lora import LoraParams, adapters
from transferlab.adapt.strategies.registry import register
from transferlab.config.typed import fail
from transferlab.models.nets import TransferNet

_DECODER = re.compile(r"^lm\.layer\d+\.")  # PromptedLM.lm's decoder blocks (causal_lm's names)


@dataclass(frozen=True)
class LoraPromptParams(LoraParams, PromptParams):
    calibrate: bool = False  # training learns the label words' bias (see the module docstring)
    augment: bool | str = False  # texts are read as they are
    lr: float = 0.001

    def validate(self, key: str) -> None:
        super().validate(key)
        self.check_prompt(key)
        if self.head != "linear" or self.head_init != "fresh":
            fail(f"{key}.head", "lora_prompt has no new head (the label words are the head); "
                 "head and head_init keep their defaults")


def decoder_linears(model: TransferNet) -> list[str]:
    """Full names of every ``nn.Linear`` in the prompted LM's decoder blocks.

    Raises:
        ValueError: where the backbone is not a prompted LM with decoder blocks.
    """
    names = [f"backbone.{name}" for name, m in model.backbone.named_modules()
             if isinstance(m, nn.Linear) and _DECODER.match(name)]
    if not names:
        raise ValueError("lora_prompt: the prompted model has no linear layer in decoder "
                         "blocks (lm.layer<k>) to adapt")
    return names


def wrap(model: TransferNet, rank: int, alpha: float, seed: int) -> nn.Module:
    """The peft model around the prompted ``model`` (modified in place): every weight frozen,
    LoRA adapters on the decoder blocks' linear layers, nothing else trainable."""
    model.requires_grad_(False)
    return adapters(model, decoder_linears(model), rank, alpha, seed)


@register
class LoraPrompt(Strategy):
    name = "lora_prompt"
    Params = LoraPromptParams
    needs_backbone = frozenset({"next_token"})
    tasks = frozenset({"classification"})
    style = ("-.", "D")
    rank = 16

    def setup(self) -> dict:
        return setup_template(self)

    def initial_model(self) -> TransferNet:
        return zero_shot_model(self)

    def trainable(self, model: TransferNet, cfg: LoraPromptParams
                  ) -> tuple[nn.Module, list[dict]]:
        net = wrap(model, cfg.rank, cfg.alpha, self.ctx.seed)
        return net, [{"params": [p for p in net.parameters() if p.requires_grad], "lr": cfg.lr}]

    def after_fit(self, model: TransferNet, net: nn.Module,
                  val: tuple[torch.Tensor, torch.Tensor] | None, cfg: LoraPromptParams,
                  chosen: dict | None) -> tuple[TransferNet, dict]:
        merged = net.merge_and_unload()  # W + (alpha / rank) B A in every adapted layer
        return merged.eval(), {}
