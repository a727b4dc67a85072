"""Tests for transferlab.data.fonts."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest

from transferlab.data.fonts import available_fonts, render_glyphs

DIGITS = "0123456789"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


# ---------------------------------------------------------------- available_fonts
def test_available_fonts_digits_bundled_sorted_and_plenty() -> None:
    fonts = available_fonts(DIGITS)
    ttf_dir = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    assert len(fonts) >= 3
    assert [p.name for p in fonts] == sorted(p.name for p in fonts)
    assert all(p.parent == ttf_dir and p.suffix == ".ttf" for p in fonts)


def test_available_fonts_excludes_symbol_and_size_variant_fonts() -> None:
    names = {p.name for p in available_fonts(DIGITS + LETTERS)}
    assert "DejaVuSans.ttf" in names
    for bad in (
        "cmsy10.ttf",
        "cmex10.ttf",
        "cmmi10.ttf",
        "DejaVuSansDisplay.ttf",
        "STIXSizOneSymReg.ttf",
        "LastResortHE-Regular.ttf",
    ):
        assert bad not in names


# ---------------------------------------------------------------- render_glyphs
@pytest.mark.parametrize(("chars", "size"), [(DIGITS, 16), (LETTERS, 8), (DIGITS, 28)])
def test_shapes_dtype_and_class_major_labels(chars: str, size: int) -> None:
    n_per = 3
    images, labels = render_glyphs(chars, n_per, size, seed=0)
    assert images.shape == (len(chars) * n_per, size, size)
    assert images.dtype == np.uint8
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, np.repeat(np.arange(len(chars)), n_per))
    np.testing.assert_array_equal(np.bincount(labels), np.full(len(chars), n_per))


def test_deterministic_and_seed_dependent() -> None:
    a_img, a_lab = render_glyphs(DIGITS, 20, 16, seed=7)
    b_img, b_lab = render_glyphs(DIGITS, 20, 16, seed=7)
    assert a_img.tobytes() == b_img.tobytes()
    assert a_lab.tobytes() == b_lab.tobytes()
    np.random.seed(123)  # global RNG state must not matter
    c_img, _ = render_glyphs(DIGITS, 20, 16, seed=7)
    assert c_img.tobytes() == a_img.tobytes()
    d_img, _ = render_glyphs(DIGITS, 20, 16, seed=8)
    assert not np.array_equal(a_img, d_img)


@pytest.mark.parametrize("chars", [DIGITS, LETTERS])
def test_ink_is_bright_on_dark_background(chars: str) -> None:
    images, _ = render_glyphs(chars, 20, 16, seed=1)
    flat = images.reshape(len(images), -1)
    assert (flat > 128).sum(axis=1).min() >= 1  # every image has real ink
    assert ((flat < 64).mean(axis=1) > 0.5).all()  # background mostly dark
    assert np.median(flat) < 40
    # Ink concentrates in the centre, not along the frame border.
    border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], 1)
    assert border.mean() < images[:, 4:12, 4:12].mean()


def test_noise_free_undistorted_render_has_black_background() -> None:
    images, _ = render_glyphs(
        "08",
        2,
        16,
        seed=0,
        max_rotation_deg=0.0,
        max_shear=0.0,
        scale_range=(1.0, 1.0),
        max_shift_frac=0.0,
        stroke_range=(0, 0),
        noise_std=0.0,
    )
    assert images.max(axis=(1, 2)).min() == 255
    assert (images[:, 0, :] == 0).all() and (images[:, :, 0] == 0).all()


def test_digit_classes_are_linearly_distinguishable() -> None:
    linear_model = pytest.importorskip("sklearn.linear_model")
    x_tr, y_tr = render_glyphs(DIGITS, 300, 16, seed=0)
    x_te, y_te = render_glyphs(DIGITS, 50, 16, seed=1)
    clf = linear_model.LogisticRegression(C=0.5, max_iter=500)
    clf.fit(x_tr.reshape(len(x_tr), -1) / 255.0, y_tr)
    acc = clf.score(x_te.reshape(len(x_te), -1) / 255.0, y_te)
    assert acc > 0.8


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"chars": ""}, "chars"),
        ({"chars": "0120"}, "duplicates"),
        ({"chars": "0\u4e2d"}, "'\u4e2d'"),
        ({"chars": "1 "}, "' '"),
        ({"n_per_class": 0}, "n_per_class"),
        ({"image_size": 7}, "image_size"),
        ({"seed": -1}, "seed"),
        ({"max_rotation_deg": -1.0}, "max_rotation_deg"),
        ({"max_shear": float("nan")}, "max_shear"),
        ({"max_shift_frac": 0.6}, "max_shift_frac"),
        ({"noise_std": -0.1}, "noise_std"),
        ({"scale_range": (1.0, 0.5)}, "scale_range"),
        ({"scale_range": (0.0, 1.0)}, "scale_range"),
        ({"stroke_range": (1, -1)}, "stroke_range"),
        ({"stroke_range": (0.5, 1)}, "stroke_range"),
    ],
)
def test_validation_errors(kwargs: dict, match: str) -> None:
    args = {"chars": DIGITS, "n_per_class": 2, "image_size": 16, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=match):
        render_glyphs(**args)


def test_available_fonts_validates_chars() -> None:
    with pytest.raises(ValueError, match="chars"):
        available_fonts("")
    with pytest.raises(ValueError, match="duplicates"):
        available_fonts("AA")
    assert available_fonts("\u4e2d") == []
