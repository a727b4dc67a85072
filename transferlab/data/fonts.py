"""Deterministic synthetic printed characters rendered from matplotlib's bundled fonts.

Only the TrueType files shipped under ``matplotlib.get_data_path()/fonts/ttf`` are used
(no system fonts, no network), sorted by file name. A font qualifies for a set of characters
when every character maps through the font's charmap to a real, inked glyph whose PostScript
glyph name (when the font has names) decodes, per the Adobe Glyph List, back to that
character, and the font does not re-encode any other ASCII letter or digit slot. This rejects
symbol fonts that reuse ASCII code points (cmsy10, cmex10, cmmi10 with its old-style figures),
the Last Resort font and glyph-less subsets (STIX size variants, DejaVu *Display*) without a
hard-coded list of names.
"""

from __future__ import annotations

import math
import numbers
import string
from pathlib import Path

import matplotlib
import numpy as np
from fontTools import agl  # hard dependency of matplotlib
from matplotlib.ft2font import FaceFlags, FT2Font, LoadFlags
from scipy import ndimage

__all__ = ["available_fonts", "render_glyphs"]

_MIN_RENDER_PX = 64  # em size (pixels) of the master rasterisation
_FILL = 0.8  # fraction of the canvas the glyph's longer side spans at scale 1


def _font_dir() -> Path:
    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def _has_glyph(font: FT2Font, cmap: dict[int, int], ch: str) -> bool:
    """True when *ch* maps to a real, inked glyph that is named (if named) as *ch*."""
    gid = cmap.get(ord(ch), 0)
    if gid == 0:
        return False
    if FaceFlags.GLYPH_NAMES in font.face_flags and agl.toUnicode(font.get_glyph_name(gid)) != ch:
        return False
    glyph = font.load_char(ord(ch), flags=LoadFlags.NO_HINTING)
    return glyph.width > 0 and glyph.height > 0


def _reencoded(font: FT2Font, cmap: dict[int, int]) -> bool:
    """True for symbol fonts whose ASCII letter/digit slots hold other glyphs (cmsy10, cmmi10)."""
    if FaceFlags.GLYPH_NAMES not in font.face_flags:
        return False
    return any(
        agl.toUnicode(font.get_glyph_name(cmap[ord(ch)])) != ch
        for ch in string.ascii_letters + string.digits
        if cmap.get(ord(ch), 0)
    )


def _font_coverage(chars: str) -> list[tuple[Path, list[bool]]]:
    """For every bundled .ttf (sorted by name), which chars of *chars* it really has."""
    out = []
    for path in sorted(_font_dir().glob("*.ttf"), key=lambda p: p.name):
        font = FT2Font(str(path))
        font.set_size(_MIN_RENDER_PX, 72)
        cmap = font.get_charmap()
        if _reencoded(font, cmap):
            out.append((path, [False] * len(chars)))
            continue
        has = [_has_glyph(font, cmap, ch) for ch in chars]
        # Distinct chars must not share one glyph (e.g. Last Resort style placeholder fonts).
        gids = [cmap.get(ord(ch), 0) for ch, ok in zip(chars, has, strict=True) if ok]
        if len(set(gids)) != len(gids):
            has = [False] * len(chars)
        out.append((path, has))
    return out


def _check_chars(chars: str) -> None:
    if not isinstance(chars, str):
        raise TypeError(f"chars must be a str, got {type(chars).__name__}")
    if not chars:
        raise ValueError("chars must be a non-empty string")
    dups = sorted({c for c in chars if chars.count(c) > 1})
    if dups:
        raise ValueError(f"chars must not contain duplicates, got repeated {dups!r}")


def available_fonts(chars: str) -> list[Path]:
    """Bundled matplotlib .ttf files with a real glyph for every char in *chars*, sorted."""
    _check_chars(chars)
    return [path for path, has in _font_coverage(chars) if all(has)]


def _rasterise(path: Path, ch: str, em_px: int) -> np.ndarray:
    """Glyph *ch* of font *path* at *em_px*: float in [0, 1], cropped to ink, padded square."""
    font = FT2Font(str(path))
    font.set_size(em_px, 72)
    font.set_text(ch, 0.0, flags=LoadFlags.NO_HINTING)
    font.draw_glyphs_to_bitmap(antialiased=True)
    img = np.asarray(font.get_image(), dtype=np.float64) / 255.0
    rows, cols = np.nonzero(img > 0)
    img = img[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    side = max(img.shape) + 2
    sq = np.zeros((side, side))
    r0, c0 = (side - img.shape[0]) // 2, (side - img.shape[1]) // 2
    sq[r0 : r0 + img.shape[0], c0 : c0 + img.shape[1]] = img
    return sq


def _is_int(x: object) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _check_args(
    n_per_class: int,
    image_size: int,
    seed: int,
    max_rotation_deg: float,
    max_shear: float,
    scale_range: tuple[float, float],
    max_shift_frac: float,
    stroke_range: tuple[int, int],
    noise_std: float,
) -> None:
    for name, val, lo in (
        ("n_per_class", n_per_class, 1),
        ("image_size", image_size, 8),
        ("seed", seed, 0),
    ):
        if not _is_int(val):
            raise TypeError(f"{name} must be an int, got {type(val).__name__}")
        if val < lo:
            raise ValueError(f"{name} must be >= {lo}, got {val}")
    for name, val, hi in (
        ("max_rotation_deg", max_rotation_deg, 180.0),
        ("max_shear", max_shear, 1.0),
        ("max_shift_frac", max_shift_frac, 0.5),
        ("noise_std", noise_std, math.inf),
    ):
        if not (isinstance(val, numbers.Real) and 0.0 <= float(val) <= hi and math.isfinite(val)):
            raise ValueError(f"{name} must be a finite number in [0, {hi}], got {val!r}")
    if not (
        len(scale_range) == 2
        and all(isinstance(v, numbers.Real) for v in scale_range)
        and 0.0 < scale_range[0] <= scale_range[1] <= 2.0
    ):
        raise ValueError(
            f"scale_range must be (lo, hi) with 0 < lo <= hi <= 2, got {scale_range!r}"
        )
    if not (
        len(stroke_range) == 2
        and all(_is_int(v) for v in stroke_range)
        and -3 <= stroke_range[0] <= stroke_range[1] <= 3
    ):
        raise ValueError(
            f"stroke_range must be integers (lo, hi) with -3 <= lo <= hi <= 3, got {stroke_range!r}"
        )


def render_glyphs(
    chars: str,
    n_per_class: int,
    image_size: int,
    seed: int,
    *,
    max_rotation_deg: float = 12.0,
    max_shear: float = 0.2,
    scale_range: tuple[float, float] = (0.75, 1.0),
    max_shift_frac: float = 0.1,
    stroke_range: tuple[int, int] = (-1, 1),
    noise_std: float = 0.05,
) -> tuple[np.ndarray, np.ndarray]:
    """Render ``n_per_class`` randomly distorted samples of every char in *chars*.

    Returns ``(images, labels)``: images uint8 ``(len(chars) * n_per_class, image_size,
    image_size)`` with bright ink (up to 255) on a black (0) background, like
    ``sklearn.datasets.load_digits``; labels int64 in class-major order (all of class 0
    first). Each sample uses a uniformly drawn qualifying font, a random rotation
    (+-max_rotation_deg), horizontal shear (+-max_shear), scale (scale_range, relative to
    80% of the frame), shift (+-max_shift_frac of the frame) and stroke change (integer in
    stroke_range: dilation > 0, erosion < 0, 3x3 steps on the large canvas), then
    block-average down-sampling, peak normalisation and Gaussian noise of ``noise_std``.
    All randomness comes from ``np.random.default_rng(seed)``.
    """
    _check_chars(chars)
    _check_args(
        n_per_class,
        image_size,
        seed,
        max_rotation_deg,
        max_shear,
        scale_range,
        max_shift_frac,
        stroke_range,
        noise_std,
    )
    coverage = _font_coverage(chars)
    for i, ch in enumerate(chars):
        if not any(has[i] for _, has in coverage):
            raise ValueError(f"chars: no bundled font has a glyph for {ch!r}")
    fonts = [path for path, has in coverage if all(has)]
    if not fonts:
        raise ValueError(f"chars: no single bundled font has glyphs for all of {chars!r}")

    n_cls, n = len(chars), len(chars) * n_per_class
    k = max(1, math.ceil(_MIN_RENDER_PX / image_size))  # down-sampling block size
    canvas = k * image_size
    em_px = max(_MIN_RENDER_PX, canvas)
    labels = np.repeat(np.arange(n_cls, dtype=np.int64), n_per_class)

    rng = np.random.default_rng(seed)
    font_idx = rng.integers(0, len(fonts), size=n)
    theta = np.deg2rad(rng.uniform(-max_rotation_deg, max_rotation_deg, size=n))
    shear = rng.uniform(-max_shear, max_shear, size=n)
    scale = rng.uniform(scale_range[0], scale_range[1], size=n)
    shift = rng.uniform(-max_shift_frac, max_shift_frac, size=(n, 2)) * canvas
    stroke = rng.integers(stroke_range[0], stroke_range[1] + 1, size=n)
    noise = rng.normal(0.0, 1.0, size=(n, image_size, image_size)) * noise_std

    cache: dict[tuple[int, int], np.ndarray] = {}
    c_out = np.full(2, (canvas - 1) / 2.0)
    images = np.empty((n, image_size, image_size), dtype=np.uint8)
    for i in range(n):
        key = (int(font_idx[i]), int(labels[i]))
        if key not in cache:
            cache[key] = _rasterise(fonts[key[0]], chars[key[1]], em_px)
        src = cache[key]
        c, s = math.cos(theta[i]), math.sin(theta[i])
        # Forward map in (row, col) coordinates: scale * rotation @ shear (col -= shear * row).
        fwd = (_FILL * canvas / src.shape[0] * scale[i]) * (
            np.array([[c, -s], [s, c]]) @ np.array([[1.0, 0.0], [-shear[i], 1.0]])
        )
        inv = np.linalg.inv(fwd)
        c_in = np.full(2, (src.shape[0] - 1) / 2.0)
        big = ndimage.affine_transform(
            src,
            inv,
            offset=c_in - inv @ (c_out + shift[i]),
            output_shape=(canvas, canvas),
            order=1,
            cval=0.0,
        )
        for _ in range(abs(int(stroke[i]))):
            if stroke[i] > 0:
                big = ndimage.grey_dilation(big, size=(3, 3))
            else:
                thinner = ndimage.grey_erosion(big, size=(3, 3))
                if thinner.sum() < 0.5 * big.sum():  # keep thin (hairline) fonts visible
                    break
                big = thinner
        small = big.reshape(image_size, k, image_size, k).mean(axis=(1, 3))
        peak = small.max()
        if peak > 0:
            small = small / peak
        images[i] = np.rint(np.clip(small + noise[i], 0.0, 1.0) * 255.0).astype(np.uint8)
    return images, labels
