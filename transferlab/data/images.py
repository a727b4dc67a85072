"""Raw datasets brought to one format: grayscale uint8 images (N, H, W), int64 labels, names.

Kinds: synthetic printed glyphs (``fonts``), scikit-learn's bundled handwritten digits
(``sklearn_digits``), the same digits turned by a random angle that is the regression target
(``rotated_digits``), class-per-folder trees (``imagefolder``) and any
``torchvision.datasets`` classification dataset (``torchvision``). Nothing here downloads unless
a ``torchvision`` spec says ``download: true``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from transferlab.config.params import DatasetSpec
from transferlab.core.errors import DataError
from transferlab.data.store import ExampleSet, regression_set


@dataclass(frozen=True)
class RawDataset:
    """A dataset as loaded: a training part and, where the data defines one, a test part."""

    train: ExampleSet
    test: ExampleSet | None = None


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of (N, h, w) uint8 images to (N, size, size), antialiased when shrinking."""
    if images.shape[1:] == (size, size):
        return images
    x = torch.from_numpy(images.astype(np.float32))[:, None]  # (N, 1, h, w)
    shrink = size < max(images.shape[1:])
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                      antialias=shrink)
    return x[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()


def load_dataset(spec: DatasetSpec, image_size: int, seed: int, key: str) -> RawDataset:
    """Load the dataset a spec names, at ``image_size`` x ``image_size``.

    Args:
        spec: the validated dataset block.
        image_size: side of the square output images.
        seed: seed for synthetic rendering.
        key: the params key of the spec, for error messages.
    Returns:
        The raw dataset with its training part and optional predefined test part.
    """
    if spec.kind == "fonts":
        from transferlab.data.fonts import render_glyphs

        extra = {} if spec.noise_std is None else {"noise_std": spec.noise_std}
        images, labels = render_glyphs(spec.chars, spec.n_per_class, image_size, seed, **extra)
        return RawDataset(ExampleSet(images, labels, tuple(spec.chars)))
    if spec.kind == "sklearn_digits":
        return RawDataset(_sklearn_digits(spec.classes, image_size))
    if spec.kind == "rotated_digits":
        return RawDataset(rotated_digits(spec, image_size, seed))
    if spec.kind == "imagefolder":
        return _imagefolder(Path(spec.root), image_size, key)
    if spec.kind == "torchvision":
        return _torchvision(spec, image_size, key)
    raise DataError(f"{key}.kind: {spec.kind!r} holds no images")


def _sklearn_digits(classes: tuple[int, ...] | None, image_size: int) -> ExampleSet:
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


DEFAULT_MAX_ROTATION = 45.0


def rotated_digits(spec: DatasetSpec, image_size: int, seed: int) -> ExampleSet:
    """scikit-learn's handwritten digits, each turned by an angle drawn uniformly from
    [-max_rotation, max_rotation] degrees (``seed``); the target is the angle, in degrees.

    The rotation is bilinear (scipy.ndimage, float64) about the image centre, after the resize,
    so the digit's strokes keep their width at every angle.
    """
    from scipy import ndimage

    digits = _sklearn_digits(spec.classes, image_size)
    limit = DEFAULT_MAX_ROTATION if spec.max_rotation is None else spec.max_rotation
    angles = np.random.default_rng(seed).uniform(-limit, limit, len(digits.examples))
    turned = np.stack([ndimage.rotate(img.astype(np.float64), angle, reshape=False, order=1,
                                      mode="grid-constant", cval=0.0)
                       for img, angle in zip(digits.examples, angles, strict=True)])
    images = np.clip(turned, 0, 255).round().astype(np.uint8)
    return regression_set(images, angles, spec.strata)


def _to_gray_uint8(image: object, image_size: int) -> np.ndarray:
    """PIL image, tensor or array -> (image_size, image_size) uint8 grayscale."""
    from PIL import Image

    if isinstance(image, torch.Tensor):
        image = image.numpy()
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 3 and arr.shape[0] in (1, 3):  # (C, H, W) -> (H, W, C)
            arr = arr.transpose(1, 2, 0)
        if arr.dtype != np.uint8:
            arr = (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
        image = Image.fromarray(arr.squeeze())
    gray = np.asarray(image.convert("L"), dtype=np.uint8)
    return resize(gray[None], image_size)[0]


def _imagefolder(root: Path, image_size: int, key: str) -> RawDataset:
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
        images = np.stack([_to_gray_uint8(ds.loader(path), image_size) for path, _ in ds.samples])
        loaded[part] = ExampleSet(images, np.array(ds.targets, dtype=np.int64), tuple(ds.classes))
    if has_split and loaded["train"].class_names != loaded["test"].class_names:
        raise DataError(f"{key}.root: {root}/train and {root}/test have different classes: "
                        f"{loaded['train'].class_names} vs {loaded['test'].class_names}")
    return RawDataset(loaded["train"], loaded.get("test"))


def _torchvision(spec: DatasetSpec, image_size: int, key: str) -> RawDataset:
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
        items = [ds[i] for i in range(len(ds))]
        if not items:
            raise DataError(f"{key}: torchvision {spec.name} at {root} ({part}) is empty")
        images = np.stack([_to_gray_uint8(img, image_size) for img, _ in items])
        labels = np.array([int(y) for _, y in items], dtype=np.int64)
        n_classes = int(labels.max()) + 1
        names = tuple(getattr(ds, "classes", None) or (str(c) for c in range(n_classes)))
        parts[part] = ExampleSet(images, labels, tuple(str(n) for n in names))
    return RawDataset(parts["train"], parts.get("test"))
