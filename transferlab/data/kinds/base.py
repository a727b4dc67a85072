"""What the image kinds and the text kinds share: text kinds return a table (texts, labels)
and this base tokenizes it once; image kinds return a :class:`~transferlab.data.raw.RawDataset`.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from transferlab.config.params import BIG
from transferlab.config.typed import check_range, fail
from transferlab.core.errors import DataError
from transferlab.data.kinds.registry import DatasetKind, DatasetSpec, LoadContext
from transferlab.data.raw import RawDataset, one_line
from transferlab.data.store import ExampleSet, regression_set


class ImageKind(DatasetKind):
    """A kind of grayscale images; :meth:`load` returns uint8 (N, image_size, image_size)."""

    modality: ClassVar[str | None] = "image"


@dataclass(frozen=True, kw_only=True)
class TextSpec(DatasetSpec):
    """Keys every text kind takes."""

    limit_per_class: int | None = None  # keep at most this many examples per class

    def validate(self, key: str) -> None:
        if self.limit_per_class is not None:
            check_range(f"{key}.limit_per_class", self.limit_per_class, 2, BIG)
        super().validate(key)
        if self.limit_per_class is not None and self.task_name == "regression":
            fail(f"{key}.limit_per_class", "counts examples per class; a regression target has "
                 "no classes")


def package_dir(package: str) -> Path:
    """The folder of an installed package, found without importing it.

    Raises:
        DataError: when the package is not installed.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"package {package!r} is not installed; `make setup` installs the pinned "
                        "data packages (requirements-data.txt)")
    return Path(next(iter(spec.submodule_search_locations)))


def read_csv(path: Path, key: str, **kwargs: Any) -> Any:
    """``pandas.read_csv`` whose failures (a missing, unreadable or corrupt file) are one
    DataError line naming ``key`` and the file."""
    import pandas as pd

    try:
        return pd.read_csv(path, **kwargs)
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{key}: cannot read {path}: {one_line(err)}") from None


def tokenize(texts: list[str], tokenizer: object, max_length: int) -> np.ndarray:
    """(N, 2, max_length) int32: token ids (padded with the pad id) and attention mask."""
    enc = tokenizer(texts, truncation=True, max_length=max_length, padding="max_length",
                    return_attention_mask=True)
    ids = np.asarray(enc["input_ids"], dtype=np.int32).reshape(len(texts), max_length)
    mask = np.asarray(enc["attention_mask"], dtype=np.int32).reshape(len(texts), max_length)
    return np.stack([ids, mask], 1)


class TextKind(DatasetKind):
    """A kind of labelled text. A subclass implements :meth:`frame`; the base keeps the two
    columns, drops empty rows, applies ``limit_per_class`` and tokenizes.

    Labels are strings; the classes are their sorted distinct values. Rows with an empty text or
    label are dropped. ``limit_per_class`` keeps the first N rows of each class in file order.
    """

    modality: ClassVar[str | None] = "text"
    Spec: ClassVar[type[DatasetSpec]] = TextSpec

    def frame(self, spec: Any, key: str) -> tuple[Any, str, str]:
        """(pandas DataFrame, text column, label column) of the dataset, in file order."""
        raise NotImplementedError

    def texts(self, spec: Any, key: str) -> tuple[list[str], list[str]]:
        """(texts, string labels), in file order."""
        frame, text_col, label_col = self.frame(spec, key)
        for column, field in ((text_col, "text_column"), (label_col, "label_column")):
            if column not in frame.columns:
                raise DataError(f"{key}.{field}: no column {column!r}; the data has "
                                + ", ".join(map(str, frame.columns)))
        frame = frame[[text_col, label_col]].dropna()
        texts = frame[text_col].astype(str).str.strip()
        labels = frame[label_col].astype(str).str.strip()
        keep_rows = (texts != "") & (labels != "")
        texts, labels = texts[keep_rows].tolist(), labels[keep_rows].tolist()
        if spec.limit_per_class is not None:
            seen: dict[str, int] = {}
            rows = []
            for i, label in enumerate(labels):
                seen[label] = seen.get(label, 0) + 1
                if seen[label] <= spec.limit_per_class:
                    rows.append(i)
            texts, labels = [texts[i] for i in rows], [labels[i] for i in rows]
        if len(set(labels)) < 2:
            raise DataError(f"{key}: needs at least 2 classes, found {sorted(set(labels))}")
        return texts, labels

    def load(self, spec: Any, ctx: LoadContext) -> RawDataset:
        """Tokenized: classes are the sorted distinct labels (a regression target: the label
        column's numbers, stratified by :func:`~transferlab.data.store.regression_set`)."""
        key = ctx.key
        texts, labels = self.texts(spec, key)
        if spec.task_name == "regression":
            import pandas as pd

            values = pd.to_numeric(pd.Series(labels), errors="coerce")
            if values.isna().any():
                bad = labels[int(np.flatnonzero(values.isna().to_numpy())[0])]
                raise DataError(f"{key}.label_column: {spec.label_column!r} holds {bad!r}, not "
                                "a number; task: regression needs numeric labels")
            return RawDataset(regression_set(tokenize(texts, ctx.tokenizer, ctx.max_length),
                                             values.to_numpy(np.float64), spec.strata, "text"))
        names = tuple(sorted(set(labels)))
        index = {n: i for i, n in enumerate(names)}
        return RawDataset(ExampleSet(tokenize(texts, ctx.tokenizer, ctx.max_length),
                                     np.array([index[label] for label in labels],
                                              dtype=np.int64),
                                     names, "text"))
