"""``scratch``: the same architecture, randomly initialised, trained on target data only.

The baseline: every transfer gain is this curve subtracted from another at the same budget and
seed.

``model_config`` makes it a smaller model of the same family: keys of an ``hf:`` or ``llm:``
architecture's model config (``{num_hidden_layers: 2, hidden_size: 128, ...}``), the tokenizer
and pooled feature unchanged. From random weights, a 135M-parameter causal LM trained on a few
dozen labels costs as much as fine-tuning the pretrained one and learns no more than a small
one; "what the labels alone give" is then asked of a model sized to them
(``scenarios/llm_text.yaml``). Empty (the default): the source architecture as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from transferlab.adapt.strategies.base import Strategy, TransferTrainParams
from transferlab.adapt.strategies.registry import register
from transferlab.config.typed import fail
from transferlab.models.nets import TransferNet, build_model


@dataclass(frozen=True)
class ScratchParams(TransferTrainParams):
    normalization: Literal["source", "target"] = "target"
    # keys of the architecture's model config to change (hf: and llm: models); {}: as it is
    model_config: dict[str, Any] = field(default_factory=dict)

    def validate(self, key: str) -> None:
        super().validate(key)
        if self.normalization != "target":
            fail(f"{key}.normalization", "scratch has no source; normalization must be target")


@register
class Scratch(Strategy):
    name = "scratch"
    Params = ScratchParams
    uses_source = False
    roles = frozenset({"baseline"})
    style = ("-", "o")
    rank = 1000

    def initial_model(self) -> TransferNet:
        norm, arch = self.ctx.target.normalization, self.ctx.arch
        return build_model(arch["arch"], self.ctx.target.num_classes, norm["mean"], norm["std"],
                           self.ctx.seed, arch["width"], pooling=arch.get("pooling"),
                           model_config=self.cfg.model_config,
                           key=f"transfer.{self.name}.model_config")
