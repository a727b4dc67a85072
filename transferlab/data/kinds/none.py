"""``none``: the null source, no data: a randomly initialised network (``prepare`` writes a
manifest that copies the target's input fields)."""

from __future__ import annotations

from transferlab.data.kinds.registry import DatasetKind, register


@register
class NoData(DatasetKind):
    name = "none"
    modality = None
    rank = 90
