"""``scratch``: the same architecture, randomly initialised, trained on target data only.

The baseline: every transfer gain is this curve subtracted from another at the same budget and
seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from transferlab.adapt.strategies.base import Strategy, TransferTrainParams
from transferlab.adapt.strategies.registry import register
from transferlab.config.typed import fail
from transferlab.models.nets import TransferNet, build_model


@dataclass(frozen=True)
class ScratchParams(TransferTrainParams):
    normalization: Literal["source", "target"] = "target"

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
                           self.ctx.seed, arch["width"], pooling=arch.get("pooling"))
