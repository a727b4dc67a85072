"""``csv``: any CSV file with a text column and a label column (numbers, for a regression
target)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transferlab.core.errors import DataError
from transferlab.data.kinds.base import TextKind, TextSpec, read_csv
from transferlab.data.kinds.registry import register


@dataclass(frozen=True, kw_only=True)
class CsvSpec(TextSpec):
    path: str  # the file
    text_column: str  # the column holding the text
    label_column: str  # the column holding the label


@register
class Csv(TextKind):
    name = "csv"
    Spec = CsvSpec
    numeric_labels = True
    rank = 70

    def frame(self, spec: CsvSpec, key: str) -> tuple[Any, str, str]:
        path = Path(spec.path)
        if not path.is_file():
            raise DataError(f"{key}.path: file {path} does not exist")
        return read_csv(path, f"{key}.path"), spec.text_column, spec.label_column
