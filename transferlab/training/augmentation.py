"""Augmentation presets for image batches, built on ``torchvision.transforms.v2``.

A v2 transform applied to a batch tensor draws its random parameters once for the whole batch;
:func:`augment` applies the preset image by image, so every image gets its own draw. All the
randomness comes from the ``torch.Generator`` passed in: one seed is drawn from it per batch, and
the transforms run on CPU under a forked CPU RNG seeded with it, so the global RNG state (CPU and
CUDA) is untouched and a seeded generator gives bit-identical batches.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

PRESETS = ("none", "light", "strong")
# bilinear, not v2's default nearest: on 16x16 glyphs nearest turns most small rotations into
# the same few pixel shuffles (translations are whole pixels in v2 either way)
_BILINEAR = v2.InterpolationMode.BILINEAR


def _pipeline(preset: str) -> v2.Transform:
    """The per-image transform of a preset (not ``none``) for (C, H, W) floats in [0, 1]."""
    if preset == "light":
        # small geometric jitter; fill=0 is the background of the dark-ground glyph images
        return v2.RandomAffine(degrees=8, translate=(0.08, 0.08), scale=(0.92, 1.08),
                               interpolation=_BILINEAR)
    # strong: larger affine, photometric jitter valid for 1 channel, a small erased patch, noise
    return v2.Compose([
        v2.RandomAffine(degrees=15, translate=(0.12, 0.12), scale=(0.85, 1.15),
                        interpolation=_BILINEAR),
        v2.ColorJitter(brightness=0.3, contrast=0.3),  # clamps to [0, 1]
        v2.RandomErasing(p=0.5, scale=(0.02, 0.08), ratio=(0.5, 2.0), value=0.0),
        v2.GaussianNoise(mean=0.0, sigma=0.04, clip=True),
    ])


def augment(x: torch.Tensor, preset: str, generator: torch.Generator) -> torch.Tensor:
    """Augment a batch, one independent random draw per image.

    Args:
        x: (B, C, H, W) floating-point images in [0, 1], on any device.
        preset: one of :data:`PRESETS`. ``none`` returns ``x`` itself and draws nothing.
        generator: a CPU generator; exactly one number is drawn from it per call (not ``none``).
    Returns:
        A new (B, C, H, W) tensor of the same dtype and device, values in [0, 1].
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown augmentation preset {preset!r}; expected one of "
                         f"{', '.join(PRESETS)}")
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"augment expects a (B, C, H, W) float batch, got shape "
                         f"{tuple(x.shape)} and dtype {x.dtype}")
    if preset == "none":
        return x
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    transform = _pipeline(preset)
    # CPU only, so that noise and erasing values never draw from a CUDA generator; seeding the
    # default CPU generator (not torch.manual_seed) leaves the CUDA generators alone as well.
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        out = torch.stack([transform(image) for image in x.detach().cpu()])
    return out.to(device=x.device, dtype=x.dtype)
