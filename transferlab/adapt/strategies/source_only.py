"""``source_only``: the source model as it is, its head rows re-ordered to the target classes.

Runs only where every target class has a source class (aligned label spaces). It trains
nothing: the one model serves every budget and seed, and each replicate only scores it on the
same held-out labels as the trained strategies.
"""

from __future__ import annotations

import torch
from torch import nn

from transferlab.adapt.strategies.base import Strategy, UntrainedParams
from transferlab.adapt.strategies.registry import register
from transferlab.models.nets import TransferNet


@register
class SourceOnly(Strategy):
    name = "source_only"
    tasks = frozenset({"classification"})  # its own code scores class logits
    Params = UntrainedParams
    trains = False
    needs_source_head = True
    needs_aligned_labels = True
    style = (":", "x")
    rank = 0

    def untrained_model(self) -> TransferNet:
        """The source model with its head rows picked and ordered by the source->target
        mapping."""
        source, classes = self.ctx.source, self.ctx.source_config["source_classes"]
        num_classes = self.ctx.target.num_classes
        rows = [0] * num_classes
        for s_name, t_idx in self.ctx.mapping["source_to_target"].items():
            rows[t_idx] = classes.index(s_name)
        with torch.random.fork_rng(devices=[]):  # its init is overwritten: keep global RNG
            head = nn.Linear(source.feature_dim, num_classes)
        with torch.no_grad():
            head.weight.copy_(source.head.weight[rows])
            head.bias.copy_(source.head.bias[rows])
        source.head = head
        return source.eval()
