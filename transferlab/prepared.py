"""The prepared-data store: arrays on disk, each dataset with a ``manifest.json``.

Layout under the prepare stage's output directory::

    target/{train,val,test}_{x,y}.npy  budgets.json  manifest.json
    sources/<name>/{train,val,test}_{x,y}.npy  manifest.json      (kind none: manifest only)

A manifest holds the class names and counts per class, the sha256 of every array, the
normalisation statistics, and (for sources) the source->target label mapping. Every read checks
the array's sha256 against its manifest, so a corrupt or hand-edited file is caught before use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transferlab.datasets import DataError, ImageSet, RawDataset, load_dataset
from transferlab.params import Params
from transferlab.runtime import dumps_json, sha256_file
from transferlab.splits import fraction_split, nested_budgets, per_class_split

SPLITS = ("train", "val", "test")


def normalization_stats(images: np.ndarray) -> dict[str, float]:
    """Pixel mean and std of uint8 images, in [0, 1] units."""
    x = images.astype(np.float64) / 255.0
    return {"mean": float(x.mean()), "std": float(max(x.std(), 1e-6))}


def _write_split(folder: Path, split: str, data: ImageSet) -> dict[str, str]:
    hashes = {}
    for suffix, arr in (("x", data.images), ("y", data.labels)):
        path = folder / f"{split}_{suffix}.npy"
        np.save(path, np.ascontiguousarray(arr), allow_pickle=False)
        hashes[path.name] = sha256_file(path)
    return hashes


def _subset(data: ImageSet, idx: np.ndarray) -> ImageSet:
    return ImageSet(data.images[idx], data.labels[idx], data.class_names)


def _counts(data: ImageSet) -> dict[str, int]:
    counts = np.bincount(data.labels, minlength=len(data.class_names))
    return {name: int(n) for name, n in zip(data.class_names, counts)}


def label_mapping(source_names: tuple[str, ...], target_names: tuple[str, ...]) -> dict:
    """Map source classes to target classes by name; ``aligned`` when every target class has one.

    ``source_only`` runs only where the label spaces are aligned.
    """
    index = {n: i for i, n in enumerate(target_names)}
    mapping = {s: index[s] for s in source_names if s in index}
    missing = [t for t in target_names if t not in mapping]
    return {"source_to_target": mapping, "aligned": not missing and bool(mapping),
            "unmapped_target_classes": missing}


def _write_dataset(folder: Path, splits: dict[str, ImageSet], extra: dict) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    first = next(iter(splits.values()))
    manifest = {
        "class_names": list(first.class_names),
        "image_shape": list(first.images.shape[1:]),
        "counts": {s: _counts(d) for s, d in splits.items()},
        "sha256": {},
        "normalization": normalization_stats(splits["train"].images),
        **extra,
    }
    for split, data in splits.items():
        manifest["sha256"].update(_write_split(folder, split, data))
    (folder / "manifest.json").write_text(dumps_json(manifest))
    return manifest


def prepare_all(params: Params, out_dir: Path) -> dict[str, dict]:
    """Build the target and every source dataset into ``out_dir``.

    Args:
        params: validated params (reads ``prepare`` and ``common.seeds``).
        out_dir: the (empty) output directory.
    Returns:
        {"target": manifest, "sources/<name>": manifest, ...}.
    """
    p = params.prepare
    target_raw = load_dataset(p.target, p.image_size, p.seed, "prepare.target")
    target = _target_splits(target_raw, p.test_per_class, p.val_per_class, p.seed)
    names = target["train"].class_names
    budgets = {str(seed): nested_budgets(target["train"].labels, p.budgets, seed, names)
               for seed in params.common.seeds}
    manifests = {"target": _write_dataset(out_dir / "target", target, {"kind": p.target.kind})}
    (out_dir / "target" / "budgets.json").write_text(dumps_json(budgets))
    for i, (name, spec) in enumerate(sorted(p.sources.items())):
        folder = out_dir / "sources" / name
        key = f"prepare.sources.{name}"
        if spec.kind == "none":
            folder.mkdir(parents=True, exist_ok=True)
            manifest = {"kind": "none", "class_names": [], "sha256": {},
                        "image_shape": manifests["target"]["image_shape"],
                        "normalization": manifests["target"]["normalization"],
                        "normalization_from": "target train pool",
                        **label_mapping((), names)}
            (folder / "manifest.json").write_text(dumps_json(manifest))
        else:
            raw = load_dataset(spec, p.image_size, p.seed + 1000 * (i + 1), key)
            splits = _source_splits(raw, p.source_test_fraction, p.source_val_fraction, p.seed)
            manifest = _write_dataset(folder, splits, {"kind": spec.kind, **label_mapping(
                splits["train"].class_names, names)})
        manifests[f"sources/{name}"] = manifest
    return manifests


def _target_splits(raw: RawDataset, test_pc: int, val_pc: int, seed: int) -> dict[str, ImageSet]:
    data = raw.train
    if raw.test is None:
        test_idx, val_idx, pool_idx = per_class_split(data.labels, [test_pc, val_pc], seed,
                                                      data.class_names)
        test = _subset(data, test_idx)
    else:
        val_idx, pool_idx = per_class_split(data.labels, [val_pc], seed, data.class_names)
        test = raw.test
    return {"train": _subset(data, pool_idx), "val": _subset(data, val_idx), "test": test}


def _source_splits(raw: RawDataset, test_frac: float, val_frac: float,
                   seed: int) -> dict[str, ImageSet]:
    data = raw.train
    if raw.test is None:
        test_idx, val_idx, train_idx = fraction_split(data.labels, [test_frac, val_frac], seed)
        test = _subset(data, test_idx)
    else:
        val_idx, train_idx = fraction_split(data.labels, [val_frac], seed)
        test = raw.test
    return {"train": _subset(data, train_idx), "val": _subset(data, val_idx), "test": test}


# --------------------------------------------------------------------------------------------
# reading


@dataclass(frozen=True)
class PreparedDataset:
    """A verified view of one prepared dataset directory."""

    folder: Path
    manifest: dict

    @classmethod
    def open(cls, folder: str | Path) -> PreparedDataset:
        folder = Path(folder)
        path = folder / "manifest.json"
        if not path.is_file():
            raise DataError(f"{path}: manifest not found; run `dvc repro prepare` first")
        return cls(folder, json.loads(path.read_text()))

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.manifest["class_names"])

    @property
    def has_data(self) -> bool:
        return self.manifest.get("kind") != "none"

    def load(self, split: str) -> ImageSet:
        """Load one split after checking both arrays against the manifest's sha256."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if not self.has_data:
            raise DataError(f"{self.folder}: the null source holds no data")
        arrays = []
        for suffix in ("x", "y"):
            path = self.folder / f"{split}_{suffix}.npy"
            expected = self.manifest["sha256"].get(path.name)
            if not path.is_file():
                raise DataError(f"{path}: missing; rerun `dvc repro prepare`")
            if sha256_file(path) != expected:
                raise DataError(f"{path}: sha256 does not match {self.folder}/manifest.json "
                                "(corrupt or edited file); rerun `dvc repro --force prepare`")
            arrays.append(np.load(path, allow_pickle=False))
        return ImageSet(arrays[0], arrays[1], self.class_names)

    def example_input(self) -> np.ndarray:
        """A zero input batch (1, 1, H, W) float32, e.g. for model signatures."""
        return np.zeros((1, 1, *self.manifest["image_shape"]), dtype=np.float32)

    def budgets(self) -> dict[str, dict[str, list[int]]]:
        """{seed: {budget: pool indices}} as drawn by prepare (target only)."""
        return json.loads((self.folder / "budgets.json").read_text())
