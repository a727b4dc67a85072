"""``torchvision``: any ``torchvision.datasets`` classification dataset, read from ``root``
(downloaded there only with ``download: true``)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from transferlab.core.errors import DataError
from transferlab.data.kinds.base import ImageKind
from transferlab.data.kinds.registry import DatasetSpec, LoadContext, register
from transferlab.data.raw import RawDataset, one_line, to_gray_uint8
from transferlab.data.store import ExampleSet


@dataclass(frozen=True, kw_only=True)
class TorchvisionSpec(DatasetSpec):
    name: str  # the dataset class name, e.g. MNIST
    root: str  # the directory on disk
    download: bool | None = None  # allow downloading into root


def load_torchvision(spec: TorchvisionSpec, image_size: int, key: str) -> RawDataset:
    import torchvision.datasets as tvd

    cls = getattr(tvd, spec.name, None)
    valid = sorted(n for n in tvd.__all__ if n[0].isupper())
    if not (inspect.isclass(cls) and issubclass(cls, torch.utils.data.Dataset)):
        raise DataError(f"{key}.name: unknown torchvision dataset {spec.name!r}; expected one of "
                        + ", ".join(valid))
    accepted = inspect.signature(cls.__init__).parameters
    root = Path(spec.root)
    parts = {}
    for part, train in (("train", True), ("test", False)):
        kwargs: dict[str, object] = {}
        if "root" in accepted:
            kwargs["root"] = str(root)
        if "download" in accepted:
            kwargs["download"] = bool(spec.download)
        if "train" in accepted:
            kwargs["train"] = train
        elif "split" in accepted:
            kwargs["split"] = part
        elif part == "test":
            break  # the dataset defines no test split: prepare splits the train part by seed
        try:
            ds = cls(**kwargs)
        except (RuntimeError, FileNotFoundError) as err:
            hint = "" if spec.download else " (set download: true to fetch it)"
            raise DataError(f"{key}: torchvision {spec.name} could not be loaded from {root}: "
                            f"{err}{hint}") from None
        try:
            items = [ds[i] for i in range(len(ds))]
        except (OSError, ValueError, SyntaxError) as err:  # a corrupt file inside root
            raise DataError(f"{key}.root: torchvision {spec.name} at {root} ({part}) has an "
                            f"unreadable example: {one_line(err)}") from None
        if not items:
            raise DataError(f"{key}: torchvision {spec.name} at {root} ({part}) is empty")
        images = np.stack([to_gray_uint8(img, image_size) for img, _ in items])
        labels = np.array([int(y) for _, y in items], dtype=np.int64)
        n_classes = int(labels.max()) + 1
        names = tuple(getattr(ds, "classes", None) or (str(c) for c in range(n_classes)))
        parts[part] = ExampleSet(images, labels, tuple(str(n) for n in names))
    return RawDataset(parts["train"], parts.get("test"))


@register
class Torchvision(ImageKind):
    name = "torchvision"
    Spec = TorchvisionSpec
    rank = 50

    def load(self, spec: TorchvisionSpec, ctx: LoadContext) -> RawDataset:
        return load_torchvision(spec, ctx.image_size, ctx.key)
