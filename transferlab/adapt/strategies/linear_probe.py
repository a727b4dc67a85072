"""``linear_probe``: the backbone frozen, a new linear head trained on features cached once.

The backbone's features of the whole pool and validation set are computed once per source
(:meth:`LinearProbe.setup`) and reused by every budget and seed; ``evaluate`` reuses the cached
pool features for the transferability scores.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from transferlab.adapt.strategies.base import Strategy, TransferTrainParams
from transferlab.adapt.strategies.registry import register
from transferlab.adapt.target import TargetData
from transferlab.config.typed import fail
from transferlab.core.runtime import sha256_file
from transferlab.data.store import load_verified
from transferlab.models.nets import TransferNet, block_names, freeze
from transferlab.training.loop import Stopwatch, extract_features


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


def cached_features(source: TransferNet, target: TargetData,
                    device: torch.device) -> tuple[tuple[torch.Tensor, torch.Tensor], float]:
    """Backbone features of the whole pool and the validation set, computed once per source.

    Every budget and seed of ``linear_probe`` reuses them. Returns ((pool, val), seconds).
    """
    with Stopwatch() as watch:
        # clone(): inference-mode tensors cannot enter autograd when the head trains on them
        feats = (extract_features(source, target.pool_x, device).clone(),
                 extract_features(source, target.val_x, device).clone())
    return feats, watch.seconds


POOL_FEATURES = "pool_features.npy"


def save_pool_features(features: torch.Tensor, out_dir: Path) -> dict:
    """Write linear_probe's cached pool features, so evaluate scores transferability from them
    without another backbone pass. Returns the runs.json entry {file, sha256, shape}."""
    path = out_dir / POOL_FEATURES
    np.save(path, features.float().numpy())
    return {"file": POOL_FEATURES, "sha256": sha256_file(path), "shape": list(features.shape)}


def load_pool_features(folder: Path, rows: int) -> np.ndarray | None:
    """The pool features a linear_probe run folder cached (sha256-verified), or None where the
    folder holds none or holds features of a pool with another size."""
    runs_json = folder / "runs.json"
    if not runs_json.is_file():
        return None
    entry = json.loads(runs_json.read_text()).get("pool_features")
    if not entry or entry["shape"][0] != rows:
        return None
    stage = f"transfer@{folder.parent.name}"
    return load_verified(folder / entry["file"], entry["sha256"], runs_json, stage)
