"""``hf_disk``: a Hugging Face ``datasets`` folder written by ``save_to_disk`` (a ``Dataset``,
or a ``DatasetDict`` and its ``split``), read with ``datasets.load_from_disk``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transferlab.core.errors import DataError
from transferlab.data.kinds.base import TextKind, TextSpec
from transferlab.data.kinds.registry import register
from transferlab.data.raw import one_line


@dataclass(frozen=True, kw_only=True)
class HfDiskSpec(TextSpec):
    root: str  # the folder save_to_disk wrote
    text_column: str  # the column holding the text
    label_column: str  # the column holding the label
    split: str | None = None  # the split of a saved DatasetDict (default: train)


@register
class HfDisk(TextKind):
    name = "hf_disk"
    Spec = HfDiskSpec
    numeric_labels = True
    rank = 80

    def frame(self, spec: HfDiskSpec, key: str) -> tuple[Any, str, str]:
        root = Path(spec.root)
        if not root.is_dir():
            raise DataError(f"{key}.root: directory {root} does not exist")
        import datasets

        try:
            loaded = datasets.load_from_disk(str(root))
        except Exception as err:  # noqa: BLE001 (arrow, json and fs errors of a corrupt folder)
            raise DataError(f"{key}.root: cannot read {root}: {one_line(err)}") from None
        if isinstance(loaded, datasets.DatasetDict):
            split = spec.split or "train"
            if split not in loaded:
                raise DataError(f"{key}.split: {root} has no split {split!r}; it has "
                                + ", ".join(loaded))
            loaded = loaded[split]
        elif spec.split is not None:
            raise DataError(f"{key}.split: {root} holds one Dataset, not a DatasetDict; "
                            "remove split")
        return loaded.to_pandas(), spec.text_column, spec.label_column
