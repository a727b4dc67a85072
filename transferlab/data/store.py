"""The prepared-data store: arrays on disk, each dataset with a ``manifest.json``.

Layout under the prepare stage's output directory::

    target/{train,val,test}_{x,y}.npy  budgets.json  manifest.json
    target/{train,val,test}_t.npy      (regression only: the numeric targets; y holds strata)
    target/encodings/<tokenizer>/...  (text: the target in the tokenizer of a source whose
                                       model is another; the same files, its own manifest)
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
import torch

from transferlab.core import tasks
from transferlab.core.errors import DataError
from transferlab.core.runtime import dumps_json, sha256_file
from transferlab.data import modalities

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ExampleSet:
    """Examples in their modality's stored form (:mod:`transferlab.data.modalities`: images (N, H,
    W)
    uint8 with ink high, or tokenized text (N, 2, L) int32), labels (N,) int64 in
    [0, len(class_names)). A regression set (:mod:`transferlab.core.tasks`) also holds ``targets``
    (N,) float64; its labels are then the targets' quantile strata."""

    examples: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    modality: str = "image"
    targets: np.ndarray | None = None

    def __post_init__(self) -> None:
        modalities.get(self.modality).check(self.examples)
        if len(self.examples) != len(self.labels):
            raise DataError(f"{len(self.examples)} examples but {len(self.labels)} labels")
        if self.targets is not None:
            if self.targets.shape != self.labels.shape:
                raise DataError(f"{len(self.labels)} labels but targets of shape "
                                f"{self.targets.shape}")
            if not np.isfinite(self.targets).all():
                raise DataError("regression targets must be finite numbers")

    @property
    def task(self) -> str:
        return "classification" if self.targets is None else "regression"

    @property
    def truth(self) -> np.ndarray:
        """What a prediction is scored against: the labels, or the numeric targets."""
        return self.labels if self.targets is None else self.targets

    def subset(self, idx: np.ndarray) -> ExampleSet:
        return ExampleSet(self.examples[idx], self.labels[idx], self.class_names, self.modality,
                          None if self.targets is None else self.targets[idx])


DEFAULT_STRATA = 4


def regression_set(examples: np.ndarray, targets: np.ndarray, strata: int | None,
                   modality: str = "image") -> ExampleSet:
    """Examples with numeric targets, their labels the targets' quantile strata
    (:func:`transferlab.core.tasks.quantile_strata`; ``strata`` None: 4)."""
    targets = np.asarray(targets, dtype=np.float64)
    if not np.isfinite(targets).all():
        raise DataError("regression targets must be finite numbers")
    labels, names = tasks.quantile_strata(targets, strata or DEFAULT_STRATA)
    return ExampleSet(examples, labels, names, modality, targets)


def load_verified(path: Path, expected: str | None, index: Path, stage: str) -> np.ndarray:
    """Load an array after checking it against the sha256 that ``index`` recorded for it.

    Raises DataError naming the file, and the stage to rerun, when it is missing or differs.
    """
    if not path.is_file():
        raise DataError(f"{path}: missing; rerun `dvc repro {stage}`")
    if sha256_file(path) != expected:
        raise DataError(f"{path}: sha256 does not match {index} (corrupt or edited file); "
                        f"rerun `dvc repro --force {stage}`")
    return np.load(path, allow_pickle=False)


def _write_split(folder: Path, split: str, data: ExampleSet) -> dict[str, str]:
    hashes = {}
    arrays = [("x", data.examples), ("y", data.labels)]
    if data.targets is not None:
        arrays.append(("t", data.targets.astype(np.float64)))
    for suffix, arr in arrays:
        path = folder / f"{split}_{suffix}.npy"
        np.save(path, np.ascontiguousarray(arr), allow_pickle=False)
        hashes[path.name] = sha256_file(path)
    return hashes


def _counts(data: ExampleSet) -> dict[str, int]:
    counts = np.bincount(data.labels, minlength=len(data.class_names))
    return {name: int(n) for name, n in zip(data.class_names, counts, strict=True)}


def write_dataset(folder: Path, splits: dict[str, ExampleSet], extra: dict) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    first = next(iter(splits.values()))
    manifest = {
        "class_names": list(first.class_names),
        "counts": {s: _counts(d) for s, d in splits.items()},
        "sha256": {},
        **modalities.get(first.modality).manifest_fields(splits["train"].examples, extra),
        **({"task": first.task} if first.targets is not None else {}),
        **extra,
    }
    for split, data in splits.items():
        manifest["sha256"].update(_write_split(folder, split, data))
    (folder / "manifest.json").write_text(dumps_json(manifest))
    return manifest


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
    def modality(self) -> modalities.Modality:
        return modalities.of(self.manifest)

    @property
    def task(self) -> tasks.Task:
        return tasks.of(self.manifest)

    @property
    def has_data(self) -> bool:
        return self.manifest.get("kind") != "none"

    def load(self, split: str) -> ExampleSet:
        """Load one split after checking both arrays against the manifest's sha256."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if not self.has_data:
            raise DataError(f"{self.folder}: the null source holds no data")
        suffixes = ("x", "y", "t") if self.task.name == "regression" else ("x", "y")
        arrays = [load_verified(self.folder / f"{split}_{suffix}.npy",
                                self.manifest["sha256"].get(f"{split}_{suffix}.npy"),
                                self.folder / "manifest.json", "prepare")
                  for suffix in suffixes]
        return ExampleSet(arrays[0], arrays[1], self.class_names, self.modality.name,
                          arrays[2] if len(arrays) > 2 else None)

    def inputs(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """One split as the model reads it: (inputs (N, ...), what it is scored against: labels
        (N,) int64, or regression targets (N,) float64)."""
        data = self.load(split)
        return self.modality.to_inputs(data.examples), torch.from_numpy(data.truth)

    def example_input(self) -> np.ndarray:
        """One input batch of this modality (zero images; [CLS] [SEP]), e.g. for signatures."""
        return self.modality.example_input(self.manifest)

    def encoded_for(self, arch: str | None) -> PreparedDataset:
        """This dataset as a model of ``arch`` reads it: itself where its inputs need no
        tokenizer (images), where ``arch`` is None or its own tokenizer's; else the encoding
        ``prepare`` wrote for that architecture's tokenizer (the same texts, splits and
        budgets: ``manifest["encodings"]``).

        Raises:
            DataError: naming the folder, ``arch`` and the encodings it holds, where it holds
                none for ``arch`` (prepared before the source that needs it was configured).
        """
        own = (self.manifest.get("tokenizer") or {}).get("source")
        if arch is None or own is None or own == arch:
            return self
        encodings = self.manifest.get("encodings", {})
        if arch not in encodings:
            raise DataError(f"{self.folder}: no encoding for {arch!r}; it holds "
                            f"{', '.join(map(repr, [own, *encodings]))}. Run `dvc repro "
                            "prepare` with the params that name the source")
        return PreparedDataset.open(self.folder / encodings[arch])

    def budgets(self) -> dict[str, dict[str, list[int]]]:
        """{seed: {budget: pool indices}} as drawn by prepare (target only)."""
        return json.loads((self.folder / "budgets.json").read_text())
