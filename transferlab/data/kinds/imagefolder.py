"""``imagefolder``: a class-per-folder tree of image files (``root/<class>/*.png``), or a
``root/train`` and ``root/test`` pair of such trees (the test part is then predefined)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transferlab.core.errors import DataError
from transferlab.data.kinds.base import ImageKind
from transferlab.data.kinds.registry import DatasetSpec, LoadContext, register
from transferlab.data.raw import RawDataset, one_line, to_gray_uint8
from transferlab.data.store import ExampleSet


@dataclass(frozen=True, kw_only=True)
class ImageFolderSpec(DatasetSpec):
    root: str  # the directory on disk


def read_image(path: str, loader: object, image_size: int, key: str) -> np.ndarray:
    """One image file, grayscale at ``image_size``; a corrupt or unreadable file is one
    DataError line naming ``key`` and the file."""
    try:
        return to_gray_uint8(loader(path), image_size)
    except (OSError, ValueError, SyntaxError) as err:  # PIL.UnidentifiedImageError is an OSError
        raise DataError(f"{key}: cannot read image {path}: {one_line(err)}") from None


def imagefolder(root: Path, image_size: int, key: str) -> RawDataset:
    from torchvision.datasets import ImageFolder

    if not root.is_dir():
        raise DataError(f"{key}.root: directory {root} does not exist")
    has_split = (root / "train").is_dir() and (root / "test").is_dir()
    parts = {"train": root / "train", "test": root / "test"} if has_split else {"train": root}
    loaded: dict[str, ExampleSet] = {}
    for part, folder in parts.items():
        class_dirs = sorted(p.name for p in folder.iterdir() if p.is_dir())
        if len(class_dirs) < 2:
            raise DataError(f"{key}.root: {folder} needs one sub-directory per class "
                            f"(at least 2), found {class_dirs or 'none'}")
        try:
            ds = ImageFolder(str(folder), allow_empty=False)
        except FileNotFoundError as err:
            raise DataError(f"{key}.root: {folder}: {err}") from None
        images = np.stack([read_image(path, ds.loader, image_size, f"{key}.root")
                           for path, _ in ds.samples])
        loaded[part] = ExampleSet(images, np.array(ds.targets, dtype=np.int64), tuple(ds.classes))
    if has_split and loaded["train"].class_names != loaded["test"].class_names:
        raise DataError(f"{key}.root: {root}/train and {root}/test have different classes: "
                        f"{loaded['train'].class_names} vs {loaded['test'].class_names}")
    return RawDataset(loaded["train"], loaded.get("test"))


@register
class ImageFolderKind(ImageKind):
    name = "imagefolder"
    Spec = ImageFolderSpec
    rank = 40

    def load(self, spec: ImageFolderSpec, ctx: LoadContext) -> RawDataset:
        return imagefolder(Path(spec.root), ctx.image_size, ctx.key)
