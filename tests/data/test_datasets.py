"""User data: ImageFolder trees and torchvision datasets, from files written under tmp_path."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferlab.core.errors import DataError
from transferlab.data.images import load_dataset, resize
from transferlab.data.kinds import DatasetSpec


def spec(**kw) -> DatasetSpec:
    s = DatasetSpec(**kw)
    s.validate("test")
    return s


def write_tree(root: Path, classes: dict[str, int], size: int = 20, rgb: bool = True) -> None:
    rng = np.random.default_rng(0)
    for name, n in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shape = (size, size, 3) if rgb else (size, size)
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(
                root / name / f"{i}.png")


def test_imagefolder_single_dir(tmp_path: Path) -> None:
    write_tree(tmp_path / "data", {"cat": 4, "dog": 3})
    raw = load_dataset(spec(kind="imagefolder", root=str(tmp_path / "data")), 12, 0, "t")
    assert raw.test is None
    assert raw.train.examples.shape == (7, 12, 12) and raw.train.examples.dtype == np.uint8
    assert raw.train.class_names == ("cat", "dog")
    assert raw.train.labels.tolist() == [0, 0, 0, 0, 1, 1, 1]


def test_imagefolder_train_test(tmp_path: Path) -> None:
    write_tree(tmp_path / "d" / "train", {"a": 3, "b": 2}, rgb=False)
    write_tree(tmp_path / "d" / "test", {"a": 1, "b": 2})
    raw = load_dataset(spec(kind="imagefolder", root=str(tmp_path / "d")), 16, 0, "t")
    assert len(raw.train.labels) == 5 and len(raw.test.labels) == 3
    assert raw.test.examples.shape[1:] == (16, 16)


def test_imagefolder_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"t\.root: directory .*nope does not exist"):
        load_dataset(spec(kind="imagefolder", root=str(tmp_path / "nope")), 16, 0, "t")


def test_imagefolder_empty_dir(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(DataError, match="needs one sub-directory per class"):
        load_dataset(spec(kind="imagefolder", root=str(tmp_path / "d")), 16, 0, "t")


def test_imagefolder_empty_class(tmp_path: Path) -> None:
    write_tree(tmp_path / "d", {"a": 2})
    (tmp_path / "d" / "b").mkdir()
    with pytest.raises(DataError, match="t.root"):
        load_dataset(spec(kind="imagefolder", root=str(tmp_path / "d")), 16, 0, "t")


def test_imagefolder_class_mismatch(tmp_path: Path) -> None:
    write_tree(tmp_path / "d" / "train", {"a": 2, "b": 2})
    write_tree(tmp_path / "d" / "test", {"a": 1, "c": 1})
    with pytest.raises(DataError, match="different classes"):
        load_dataset(spec(kind="imagefolder", root=str(tmp_path / "d")), 16, 0, "t")


def _write_idx(path: Path, array: np.ndarray) -> None:
    """The IDX format MNIST ships in (big-endian header), gzip-free."""
    dims = array.shape
    header = struct.pack(">HBB", 0, 0x08, len(dims)) + struct.pack(f">{len(dims)}I", *dims)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_torchvision_mnist_from_local_files(tmp_path: Path) -> None:
    raw_dir = tmp_path / "MNIST" / "raw"
    raw_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 10)):
        _write_idx(raw_dir / f"{prefix}-images-idx3-ubyte", rng.integers(0, 255, (n, 28, 28)))
        _write_idx(raw_dir / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    raw = load_dataset(spec(kind="torchvision", name="MNIST", root=str(tmp_path),
                            download=False), 16, 0, "t")
    assert raw.train.examples.shape == (30, 16, 16)
    assert raw.test.examples.shape == (10, 16, 16)
    assert raw.train.labels.tolist() == [i % 10 for i in range(30)]
    assert raw.train.class_names[0].startswith("0")


def test_torchvision_missing_files_do_not_download(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="could not be loaded .*set download: true"):
        load_dataset(spec(kind="torchvision", name="MNIST", root=str(tmp_path),
                          download=False), 16, 0, "t")


def test_torchvision_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"t\.name: unknown torchvision dataset 'MNISTT'.*MNIST"):
        load_dataset(spec(kind="torchvision", name="MNISTT", root=str(tmp_path)), 16, 0, "t")


def test_sklearn_digits_subset_relabels() -> None:
    raw = load_dataset(spec(kind="sklearn_digits", classes=[5, 6, 7, 8, 9]), 16, 0, "t")
    assert raw.train.class_names == ("5", "6", "7", "8", "9")
    assert set(raw.train.labels.tolist()) == {0, 1, 2, 3, 4}
    assert raw.train.examples.max() > 200  # 0..16 was brought to 0..255


def test_resize_keeps_range() -> None:
    x = np.zeros((2, 8, 8), np.uint8)
    x[:, 2:6, 2:6] = 255
    y = resize(x, 16)
    assert y.shape == (2, 16, 16) and y.dtype == np.uint8 and y.max() == 255


def test_fonts_kind() -> None:
    raw = load_dataset(spec(kind="fonts", chars="AB", n_per_class=3), 16, 0, "t")
    assert raw.train.class_names == ("A", "B") and raw.train.examples.shape == (6, 16, 16)
