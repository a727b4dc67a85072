"""``image``: grayscale uint8 images (N, H, W) as stored; inputs (N, 1, H, W) in [0, 1]."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from transferlab.core.errors import DataError
from transferlab.data.modalities import Modality, register


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W) uint8 -> (N, 1, H, W) float32 in [0, 1]."""
    return torch.from_numpy(images).float().div_(255.0).unsqueeze(1)


def normalization_stats(images: np.ndarray) -> dict[str, float]:
    """Pixel mean and std of uint8 images, in [0, 1] units."""
    x = images.astype(np.float64) / 255.0
    return {"mean": float(x.mean()), "std": float(max(x.std(), 1e-6))}


def shifted_copy(x: torch.Tensor, rotation_deg: float, blur_sigma: float, noise_std: float,
                 seed: int) -> torch.Tensor:
    """A distribution-shifted copy of (N, 1, H, W) inputs in [0, 1]: rotation, blur, noise.

    Every image gets its own rotation in [-max, max] degrees and its own noise, drawn from
    ``seed``; the blur is the same Gaussian for all.
    """
    g = torch.Generator().manual_seed(seed)
    angle = (torch.rand(len(x), generator=g) * 2 - 1) * math.radians(rotation_deg)
    zeros = torch.zeros_like(angle)
    theta = torch.stack([torch.stack([angle.cos(), -angle.sin(), zeros], 1),
                         torch.stack([angle.sin(), angle.cos(), zeros], 1)], 1)  # (N, 2, 3)
    out = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False),
                        align_corners=False)
    if blur_sigma > 0:
        # torchvision (about 0.5 s to import) only here, once per evaluate stage
        from torchvision.transforms.functional import gaussian_blur

        k = 2 * math.ceil(3 * blur_sigma) + 1
        out = gaussian_blur(out, [k, k], [blur_sigma, blur_sigma])
    out = out + noise_std * torch.randn(out.shape, generator=g)
    return out.clamp(0, 1)


@register
class Image(Modality):
    name = "image"
    features = "pixels"
    noun = "images"

    def check(self, examples: np.ndarray) -> None:
        if examples.ndim != 3 or examples.dtype != np.uint8:
            raise DataError(f"images must be (N, H, W) uint8, got {examples.shape} "
                            f"{examples.dtype}")

    def to_inputs(self, examples: np.ndarray) -> torch.Tensor:
        return to_tensor(examples)

    def example_input(self, manifest: dict) -> np.ndarray:
        """A zero input batch (1, 1, H, W) float32."""
        return np.zeros((1, 1, *manifest["image_shape"]), dtype=np.float32)

    def normalization(self, manifest: dict) -> dict[str, float]:
        return manifest["normalization"]

    def shifted(self, x: torch.Tensor, p: Any, seed: int, manifest: dict) -> torch.Tensor:
        return shifted_copy(x, p.shift_rotation_deg, p.shift_blur_sigma, p.shift_noise_std, seed)

    def cleaning_arrays(self, examples: np.ndarray) -> np.ndarray:
        return examples

    def describe(self, manifest: dict) -> str:
        return f"{'×'.join(map(str, manifest.get('image_shape', [])))} pixels"

    def shift_description(self, p: Any) -> str:
        return (f"Gaussian pixel noise (std {p.shift_noise_std:g}), blur (sigma "
                f"{p.shift_blur_sigma:g} px) and rotation (up to {p.shift_rotation_deg:g}°)")

    def manifest_fields(self, train: np.ndarray, extra: dict[str, Any]) -> dict[str, Any]:
        return {"image_shape": list(train.shape[1:]), "normalization": normalization_stats(train)}
