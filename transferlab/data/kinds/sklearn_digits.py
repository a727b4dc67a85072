"""``sklearn_digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transferlab.config.typed import check_range, fail
from transferlab.data.kinds.base import ImageKind
from transferlab.data.kinds.registry import DatasetSpec, LoadContext, register
from transferlab.data.raw import RawDataset, resize
from transferlab.data.store import ExampleSet


def check_digits(key: str, classes: tuple[int, ...] | None) -> None:
    if classes is None:
        return
    if len(classes) < 2 or len(set(classes)) != len(classes):
        fail(key, f"need at least 2 distinct digits, got {list(classes)}")
    for c in classes:
        check_range(key, c, 0, 9)


@dataclass(frozen=True, kw_only=True)
class SklearnDigitsSpec(DatasetSpec):
    classes: tuple[int, ...] | None = None  # which digits to keep (default: all ten)

    def validate(self, key: str) -> None:
        check_digits(f"{key}.classes", self.classes)
        super().validate(key)


def sklearn_digits(classes: tuple[int, ...] | None, image_size: int) -> ExampleSet:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images * (255.0 / 16.0)).round().astype(np.uint8)  # 0..16 -> 0..255
    labels = bunch.target.astype(np.int64)
    keep = tuple(range(10)) if classes is None else classes
    mask = np.isin(labels, keep)
    remap = {c: i for i, c in enumerate(keep)}
    return ExampleSet(resize(images[mask], image_size),
                    np.array([remap[c] for c in labels[mask]], dtype=np.int64),
                    tuple(str(c) for c in keep))


@register
class SklearnDigits(ImageKind):
    name = "sklearn_digits"
    Spec = SklearnDigitsSpec
    rank = 20

    def load(self, spec: SklearnDigitsSpec, ctx: LoadContext) -> RawDataset:
        return RawDataset(sklearn_digits(spec.classes, ctx.image_size))
