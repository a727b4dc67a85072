"""``source_only``: the source model as it is, its head rows re-ordered to the target classes.

Runs only where every target class has a source class (aligned label spaces). It trains
nothing: the one model serves every budget and seed, and each replicate only scores it on the
same held-out labels as the trained strategies.
"""

from __future__ import annotations

from transferlab.adapt.strategies.base import Strategy, UntrainedParams, source_head_model
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
        return source_head_model(self.ctx.source, self.ctx.source_config["source_classes"],
                                 self.ctx.mapping, self.ctx.target.num_classes).eval()
