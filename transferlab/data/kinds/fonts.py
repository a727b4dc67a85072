"""``fonts``: synthetic printed characters, one class per character
(:mod:`transferlab.data.fonts`)."""

from __future__ import annotations

from dataclasses import dataclass

from transferlab.config.params import BIG
from transferlab.config.typed import check_range, fail
from transferlab.data.kinds.base import ImageKind
from transferlab.data.kinds.registry import DatasetSpec, LoadContext, register
from transferlab.data.raw import RawDataset
from transferlab.data.store import ExampleSet


@dataclass(frozen=True, kw_only=True)
class FontsSpec(DatasetSpec):
    chars: str  # one class per character
    n_per_class: int  # images rendered per class
    noise_std: float | None = None  # pixel noise in [0, 1] units

    def validate(self, key: str) -> None:
        if len(set(self.chars)) != len(self.chars):
            fail(f"{key}.chars", f"characters must be distinct, got {self.chars!r}")
        check_range(f"{key}.n_per_class", self.n_per_class, 1, BIG)
        if self.noise_std is not None:
            check_range(f"{key}.noise_std", self.noise_std, 0, 1)
        super().validate(key)


@register
class Fonts(ImageKind):
    name = "fonts"
    Spec = FontsSpec
    rank = 10

    def load(self, spec: FontsSpec, ctx: LoadContext) -> RawDataset:
        from transferlab.data.fonts import render_glyphs

        extra = {} if spec.noise_std is None else {"noise_std": spec.noise_std}
        images, labels = render_glyphs(spec.chars, spec.n_per_class, ctx.image_size, ctx.seed,
                                       **extra)
        return RawDataset(ExampleSet(images, labels, tuple(spec.chars)))
