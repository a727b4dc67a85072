"""Raw datasets as a dataset kind loads them, and the image helpers every image kind shares:
grayscale uint8 images (N, H, W), int64 labels, class names."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from transferlab.data.store import ExampleSet


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


def to_gray_uint8(image: object, image_size: int) -> np.ndarray:
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


def one_line(err: BaseException) -> str:
    """An exception's message on one line (what a DataError quotes of a library's error)."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
