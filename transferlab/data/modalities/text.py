"""``text``: tokenized text stored as int32 (N, 2, L): token ids, then the attention mask.

``prepare`` tokenizes once (:mod:`transferlab.data.text`), so no stage after it loads a
tokenizer. Every sequence starts with the tokenizer's first special token ([CLS]) and is padded
to ``L`` with its pad id (mask 0). Inputs are int64 tensors of the same layout.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from transferlab.core.errors import DataError
from transferlab.data.modalities import Modality, register

HASH_BUCKETS = 1024  # cleaning: token ids are hashed into this many count buckets


@register
class Text(Modality):
    name = "text"
    features = "hashed token counts"
    noun = "texts"

    def check(self, examples: np.ndarray) -> None:
        if examples.ndim != 3 or examples.shape[1] != 2 or examples.dtype != np.int32:
            raise DataError(f"tokenized text must be (N, 2, L) int32 (ids, mask), got "
                            f"{examples.shape} {examples.dtype}")

    def to_inputs(self, examples: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(examples.astype(np.int64))

    def example_input(self, manifest: dict) -> np.ndarray:
        """One (1, 2, L) int64 input: [CLS] [SEP] then padding."""
        tok = manifest["tokenizer"]
        out = np.full((1, 2, manifest["max_length"]), tok["pad_id"], dtype=np.int64)
        out[0, 0, :2] = (tok["cls_id"], tok["sep_id"])
        out[0, 1] = 0
        out[0, 1, :2] = 1
        return out

    def normalization(self, manifest: dict) -> dict[str, float]:
        return {"mean": 0.0, "std": 1.0}  # token ids are not scaled (models.Normalize: passthrough)

    def shifted(self, x: torch.Tensor, p: Any, seed: int, manifest: dict) -> torch.Tensor:
        """Each word token (not [CLS], [SEP] or padding) is replaced by [UNK] with probability
        ``p.shift_token_drop``, drawn from ``seed``: typos, rare words and out-of-vocabulary
        terms a deployed model meets."""
        tok = manifest["tokenizer"]
        ids, mask = x[:, 0].clone(), x[:, 1]
        special = torch.zeros_like(mask, dtype=torch.bool)
        for key in ("cls_id", "sep_id", "pad_id"):
            special |= ids == tok[key]
        g = torch.Generator().manual_seed(seed)
        drop = (torch.rand(ids.shape, generator=g) < p.shift_token_drop) & ~special & mask.bool()
        ids[drop] = tok["unk_id"]
        return torch.stack([ids, mask], 1)

    def cleaning_arrays(self, examples: np.ndarray) -> np.ndarray:
        """(N, 1, HASH_BUCKETS) uint8 token counts (ids modulo the buckets, special tokens
        included, counts capped at 255): equal texts give equal rows, near-equal near rows."""
        ids, mask = examples[:, 0], examples[:, 1].astype(bool)
        out = np.zeros((len(examples), HASH_BUCKETS), dtype=np.int64)
        rows = np.repeat(np.arange(len(examples)), mask.sum(1))
        np.add.at(out, (rows, ids[mask] % HASH_BUCKETS), 1)
        return np.minimum(out, 255).astype(np.uint8)[:, None, :]

    def describe(self, manifest: dict) -> str:
        return f"text, at most {manifest['max_length']} tokens"

    def shift_description(self, p: Any) -> str:
        return (f"each word token replaced by [UNK] with probability {p.shift_token_drop:g}")

    def manifest_fields(self, train: np.ndarray, extra: dict[str, Any]) -> dict[str, Any]:
        lengths = train[:, 1].sum(1)
        return {"modality": "text", "max_length": int(train.shape[2]),
                "tokens_per_example": {"mean": float(lengths.mean()) if len(lengths) else 0.0,
                                       "truncated": int((lengths == train.shape[2]).sum())}}
