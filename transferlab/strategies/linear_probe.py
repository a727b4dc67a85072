"""``linear_probe``: the backbone frozen, a new linear head trained on features cached once.

The backbone's features of the whole pool and validation set are computed once per source
(:meth:`LinearProbe.setup`) and reused by every budget and seed; ``evaluate`` reuses the cached
pool features for the transferability scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from transferlab.models import TransferNet, block_names, freeze
from transferlab.strategies.base import Strategy, TransferTrainParams
from transferlab.strategies.registry import register
from transferlab.typed_config import fail


@dataclass(frozen=True)
class LinearProbeParams(TransferTrainParams):
    epochs: int = 200
    lr: float = 0.01
    augment: bool | str = False
    patience: int = 20

    def validate(self, key: str) -> None:
        super().validate(key)
        if self.augment not in (False, "none"):
            fail(f"{key}.augment", "linear_probe trains on cached features; augment must be false")
        if self.normalization != "source":
            fail(f"{key}.normalization", "linear_probe reuses the source's cached features; "
                 "normalization must be source")


@register
class LinearProbe(Strategy):
    name = "linear_probe"
    Params = LinearProbeParams
    roles = frozenset({"feature_probe"})
    style = ("-.", "s")
    rank = 10

    def setup(self) -> dict:
        from transferlab.adaptation import cached_features, save_pool_features

        features, seconds = cached_features(self.ctx.source, self.ctx.target, self.ctx.device)
        self.ctx.shared["features"] = features
        self.ctx.shared["timing"] = {"feature_extraction_seconds": seconds}
        return {"pool_features": save_pool_features(features[0], self.ctx.shared["out_dir"])}

    def inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ctx.shared["features"]

    def trainable(self, model: TransferNet, cfg: LinearProbeParams
                  ) -> tuple[nn.Module, list[dict]]:
        freeze(model, block_names(model), bn_stats=True)
        return model.head, [{"params": list(model.head.parameters())}]
