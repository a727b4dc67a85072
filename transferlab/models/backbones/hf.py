"""``hf:<checkpoint directory or package>``: a Hugging Face text encoder
(:mod:`transferlab.models.text`), reading the token ids ``prepare`` wrote."""

from __future__ import annotations

from typing import Any

from transferlab.config.params import check_hf
from transferlab.models.backbones.registry import Built, HFConfigBackbone, register


@register
class HuggingFace(HFConfigBackbone):
    name = "hf:"
    prefix = True
    usage = "hf:<checkpoint directory or package>"
    modality = "text"
    traits = frozenset()  # no BatchNorm, no channel maps
    rank = 50

    def check(self, key: str, arch: str) -> None:
        check_hf(key, arch)

    def arch_config(self, arch: str, recorded: dict[str, Any] | None,
                    pooling: str | None = None) -> dict[str, Any]:
        from transferlab.models import text as text_backbone

        if recorded is not None:
            return recorded
        return {"hf_config": text_backbone.config_dict(arch),
                "pooling": text_backbone.pooling(text_backbone.resolve(arch))}

    def build(self, arch: str, width: int, arch_config: dict[str, Any] | None) -> Built:
        from transferlab.models import text as text_backbone

        blocks, dim = text_backbone.build_backbone(arch_config["hf_config"],
                                                   arch_config["pooling"])
        return Built(blocks, dim, channels=None, arch_config=arch_config)
