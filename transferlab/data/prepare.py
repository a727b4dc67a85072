"""Building the prepared data from params: load each dataset, split it, draw the nested label
budgets, map source labels to target labels, and write everything to the prepared store."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from transferlab.config.params import Params, seeds_at, source_arch
from transferlab.core.errors import DataError
from transferlab.core.runtime import dumps_json
from transferlab.data import kinds
from transferlab.data.kinds import DatasetSpec, LoadContext
from transferlab.data.raw import RawDataset
from transferlab.data.splits import fraction_split, nested_budgets, per_class_split
from transferlab.data.store import ExampleSet, write_dataset

# manifest keys a null source copies from the target (image: shape and statistics; text: the
# tokenizer and length), so a model built for it reads the target's inputs
SHARED_WITH_NULL_SOURCE = ("image_shape", "normalization", "modality", "max_length", "tokenizer")


def _subset(data: ExampleSet, idx: np.ndarray) -> ExampleSet:
    return data.subset(idx)


def label_mapping(source_names: tuple[str, ...], target_names: tuple[str, ...]) -> dict:
    """Map source classes to target classes by name; ``aligned`` when every target class has one.

    ``source_only`` runs only where the label spaces are aligned.
    """
    index = {n: i for i, n in enumerate(target_names)}
    mapping = {s: index[s] for s in source_names if s in index}
    missing = [t for t in target_names if t not in mapping]
    return {"source_to_target": mapping, "aligned": not missing and bool(mapping),
            "unmapped_target_classes": missing}


def prepare_all(params: Params, out_dir: Path) -> dict[str, dict]:
    """Build the target and every source dataset into ``out_dir``.

    Args:
        params: validated params (reads ``prepare`` and ``common.seeds``: the budgets of every
            seed of :func:`transferlab.config.params.seeds_at`); its dataset blocks
            are typed by their kinds here (:func:`transferlab.data.kinds.resolve`).
        out_dir: the (empty) output directory.
    Returns:
        {"target": manifest, "sources/<name>": manifest, ...}.
    """
    p = kinds.resolve_prepare(params.prepare)
    text = p.target.modality == "text"
    tokenizers: dict[str, tuple[object, dict]] = {}  # tokenizer spec -> (tokenizer, info)

    def tokenizer_of(spec: str | None) -> tuple[object | None, dict]:
        """The tokenizer of ``spec`` (loaded once) and the manifest's record of it."""
        if spec is None:
            return None, {}
        if spec not in tokenizers:  # transformers (seconds to import) only for text
            from transferlab.data.checkpoints import load_tokenizer
            from transferlab.data.text import tokenizer_info

            tokenizer = load_tokenizer(spec)
            tokenizers[spec] = tokenizer, {"tokenizer": tokenizer_info(tokenizer, spec)}
        return tokenizers[spec]

    def load(spec: DatasetSpec, seed: int, key: str, tokenizer: str | None) -> RawDataset:
        """The kind's loader (the registry's dispatch), text tokenized by ``tokenizer``."""
        return spec.kind_info.load(spec, LoadContext(key=key, image_size=p.image_size, seed=seed,
                                                     tokenizer=tokenizer_of(tokenizer)[0],
                                                     max_length=p.max_length))

    primary = p.tokenizer if text else None
    target = _target_splits(load(p.target, p.seed, "prepare.target", primary),
                            p.test_per_class, p.val_per_class, p.seed)
    names = target["train"].class_names
    at = seeds_at(params)  # a seed beyond common.seeds runs only at the budgets that ask for it
    seeds = sorted({s for listed in at.values() for s in listed})
    budgets = {str(seed): nested_budgets(target["train"].labels,
                                         [b for b in p.budgets if seed in at[str(b)]], seed, names)
               for seed in seeds}
    # a text source whose init names another text model reads the target in its tokenizer's
    # encoding: the same texts, splits and budgets (they depend on labels and seeds alone)
    archs = {name: source_arch(primary, spec.init, text) if text else None
             for name, spec in p.sources.items()}
    encodings = {a: f"encodings/{_slug(a)}" for a in sorted({*archs.values()} - {primary})}
    manifests = {"target": write_dataset(out_dir / "target", target, {
        "kind": p.target.kind, **tokenizer_of(primary)[1],
        **({"encodings": encodings} if encodings else {})})}
    (out_dir / "target" / "budgets.json").write_text(dumps_json(budgets))
    encoded = {primary: manifests["target"]}
    for arch, folder in encodings.items():
        splits = _target_splits(load(p.target, p.seed, "prepare.target", arch),
                                p.test_per_class, p.val_per_class, p.seed)
        for split, data in splits.items():
            if not np.array_equal(data.labels, target[split].labels):
                raise DataError(f"prepare.target: tokenized by {arch!r}, the {split} split holds "
                                f"other examples than by {primary!r}; a text kind must load the "
                                "same texts in the same order whatever the tokenizer")
        encoded[arch] = write_dataset(out_dir / "target" / folder, splits,
                                      {"kind": p.target.kind, **tokenizer_of(arch)[1]})
        (out_dir / "target" / folder / "budgets.json").write_text(dumps_json(budgets))
    for i, (name, spec) in enumerate(sorted(p.sources.items())):
        folder = out_dir / "sources" / name
        key = f"prepare.sources.{name}"
        if not spec.kind_info.has_data:
            folder.mkdir(parents=True, exist_ok=True)
            # the null source reads what the target holds, as its architecture encodes it
            shared = {k: encoded[archs[name]][k] for k in SHARED_WITH_NULL_SOURCE
                      if k in encoded[archs[name]]}
            manifest = {"kind": spec.kind, "class_names": [], "sha256": {}, **shared,
                        "normalization_from": "target train pool",
                        **label_mapping((), names)}
            (folder / "manifest.json").write_text(dumps_json(manifest))
        else:
            raw = load(spec, p.seed + 1000 * (i + 1), key, archs[name])
            splits = _source_splits(raw, p.source_test_fraction, p.source_val_fraction, p.seed)
            manifest = write_dataset(folder, splits, {
                "kind": spec.kind, **tokenizer_of(archs[name])[1],
                **label_mapping(splits["train"].class_names, names)})
        manifests[f"sources/{name}"] = manifest
    return manifests


def _slug(spec: str) -> str:
    """A folder name for a tokenizer spec (``hf:all-MiniLM-L6-v2`` -> ``hf_all-MiniLM-L6-v2``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", spec).strip("_")


def _target_splits(raw: RawDataset, test_pc: int, val_pc: int, seed: int) -> dict[str, ExampleSet]:
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
                   seed: int) -> dict[str, ExampleSet]:
    data = raw.train
    if raw.test is None:
        test_idx, val_idx, train_idx = fraction_split(data.labels, [test_frac, val_frac], seed)
        test = _subset(data, test_idx)
    else:
        val_idx, train_idx = fraction_split(data.labels, [val_frac], seed)
        test = raw.test
    return {"train": _subset(data, train_idx), "val": _subset(data, val_idx), "test": test}
