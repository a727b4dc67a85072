"""Tests for transferlab.training.augmentation: presets, per-image draws, generator-only
randomness."""

from __future__ import annotations

import pytest
import torch

from transferlab.training.augmentation import PRESETS, augment


def _batch(n: int = 6, seed: int = 0) -> torch.Tensor:
    """(n, 1, 16, 16) images in [0, 1]: a bright off-centre bar on a dark ground plus texture."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 16, 16, generator=gen) * 0.3
    x[:, :, 3:13, 5:8] = 1.0
    return x


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_none_is_identity_and_draws_nothing() -> None:
    x = _batch()
    gen = _gen(0)
    before = gen.get_state()
    assert augment(x, "none", gen) is x
    assert torch.equal(gen.get_state(), before)


@pytest.mark.parametrize("preset", ["light", "strong"])
def test_shape_dtype_range_preserved_and_input_untouched(preset: str) -> None:
    for dtype in (torch.float32, torch.float64):
        x = _batch().to(dtype)
        copy = x.clone()
        out = augment(x, preset, _gen(1))
        assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
        assert out.min() >= 0.0 and out.max() <= 1.0
        assert not torch.equal(out, x)  # it did something
        assert torch.equal(x, copy)  # and not in place


@pytest.mark.parametrize("preset", ["light", "strong"])
def test_same_seed_bitwise_same_other_seed_differs(preset: str) -> None:
    x = _batch()
    a = augment(x, preset, _gen(7))
    b = augment(x, preset, _gen(7))
    c = augment(x, preset, _gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_successive_batches_from_one_generator_differ_and_replay() -> None:
    x = _batch()
    gen = _gen(3)
    first, second = augment(x, "light", gen), augment(x, "light", gen)
    assert not torch.equal(first, second)
    replay = _gen(3)
    assert torch.equal(augment(x, "light", replay), first)
    assert torch.equal(augment(x, "light", replay), second)


@pytest.mark.parametrize("preset", PRESETS)
def test_global_rng_untouched(preset: str) -> None:
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    augment(_batch(), preset, _gen(0))
    assert torch.equal(torch.get_rng_state(), before)


def test_global_rng_does_not_influence_the_output() -> None:
    x = _batch()
    torch.manual_seed(1)
    a = augment(x, "strong", _gen(5))
    torch.manual_seed(2)
    b = augment(x, "strong", _gen(5))
    assert torch.equal(a, b)


@pytest.mark.parametrize("preset", ["light", "strong"])
def test_each_image_gets_its_own_draw(preset: str) -> None:
    one = _batch(1)
    x = one.repeat(8, 1, 1, 1)  # eight identical images
    out = augment(x, preset, _gen(0))
    distinct = {out[i].numpy().tobytes() for i in range(len(out))}
    assert len(distinct) == len(out)


def test_strong_moves_images_more_than_light() -> None:
    x = _batch(64)
    light = (augment(x, "light", _gen(0)) - x).abs().mean()
    strong = (augment(x, "strong", _gen(0)) - x).abs().mean()
    assert strong > light > 0


def test_unknown_preset_names_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown augmentation preset 'heavy'; expected one of "
                                         "none, light, strong"):
        augment(_batch(), "heavy", _gen(0))


def test_rejects_non_batch_or_integer_input() -> None:
    with pytest.raises(ValueError, match=r"\(B, C, H, W\) float batch.*\(1, 16, 16\)"):
        augment(_batch()[0], "light", _gen(0))
    with pytest.raises(ValueError, match="torch.uint8"):
        augment((_batch() * 255).to(torch.uint8), "light", _gen(0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batch_matches_cpu_and_leaves_cuda_rng_alone() -> None:
    x = _batch()
    before = torch.cuda.get_rng_state()
    out = augment(x.cuda(), "strong", _gen(4))
    assert out.is_cuda
    assert torch.equal(out.cpu(), augment(x, "strong", _gen(4)))
    assert torch.equal(torch.cuda.get_rng_state(), before)
