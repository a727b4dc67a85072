"""``rotated_digits``: scikit-learn's digits, each turned by a random angle that is the
regression target."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transferlab.config.typed import check_range
from transferlab.data.kinds.base import ImageKind
from transferlab.data.kinds.registry import DatasetSpec, LoadContext, register
from transferlab.data.kinds.sklearn_digits import check_digits, sklearn_digits
from transferlab.data.raw import RawDataset
from transferlab.data.store import ExampleSet, regression_set

DEFAULT_MAX_ROTATION = 45.0


@dataclass(frozen=True, kw_only=True)
class RotatedDigitsSpec(DatasetSpec):
    classes: tuple[int, ...] | None = None  # which digits to keep (default: all ten)
    max_rotation: float | None = None  # angles drawn from [-this, this] degrees (default 45)

    def validate(self, key: str) -> None:
        check_digits(f"{key}.classes", self.classes)
        if self.max_rotation is not None:
            check_range(f"{key}.max_rotation", self.max_rotation, 1, 180)
        super().validate(key)


def rotated_digits(spec: RotatedDigitsSpec, image_size: int, seed: int) -> ExampleSet:
    """scikit-learn's handwritten digits, each turned by an angle drawn uniformly from
    [-max_rotation, max_rotation] degrees (``seed``); the target is the angle, in degrees.

    The rotation is bilinear (scipy.ndimage, float64) about the image centre, after the resize,
    so the digit's strokes keep their width at every angle.
    """
    from scipy import ndimage

    digits = sklearn_digits(spec.classes, image_size)
    limit = DEFAULT_MAX_ROTATION if spec.max_rotation is None else spec.max_rotation
    angles = np.random.default_rng(seed).uniform(-limit, limit, len(digits.examples))
    turned = np.stack([ndimage.rotate(img.astype(np.float64), angle, reshape=False, order=1,
                                      mode="grid-constant", cval=0.0)
                       for img, angle in zip(digits.examples, angles, strict=True)])
    images = np.clip(turned, 0, 255).round().astype(np.uint8)
    return regression_set(images, angles, spec.strata)


@register
class RotatedDigits(ImageKind):
    name = "rotated_digits"
    Spec = RotatedDigitsSpec
    regression = True
    rank = 30

    def load(self, spec: RotatedDigitsSpec, ctx: LoadContext) -> RawDataset:
        return RawDataset(rotated_digits(spec, ctx.image_size, ctx.seed))
