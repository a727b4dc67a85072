"""``llm:<checkpoint directory, .gguf file or package>``: a causal language model
(:mod:`transferlab.models.causal_lm`), reading the token ids ``prepare`` wrote.

A model that a prompting strategy made (``zero_shot``, ``in_context``) records its prompt in
``arch_config["prompt"]``; it is rebuilt as a
:class:`~transferlab.models.prompting.PromptedLM` around the causal LM, so its checkpoint
scores texts as it did when it was saved.
"""

from __future__ import annotations

from typing import Any

from transferlab.config.typed import fail
from transferlab.models.backbones.registry import Built, HFConfigBackbone, register


@register
class CausalLM(HFConfigBackbone):
    name = "llm:"
    prefix = True
    usage = "llm:<checkpoint directory, .gguf file or package>"
    modality = "text"
    traits = frozenset({"next_token"})  # no BatchNorm, no channel maps; prompts (zero_shot)
    rank = 60
    poolings = ("mean", "last")  # transferlab.models.causal_lm.POOLING, the default first

    def check(self, key: str, arch: str) -> None:
        if not arch[len(self.name):]:
            fail(key, f"expected {self.usage}, got {arch!r}")

    def arch_config(self, arch: str, recorded: dict[str, Any] | None,
                    pooling: str | None = None) -> dict[str, Any]:
        from transferlab.models import causal_lm

        if recorded is not None:
            return recorded
        return causal_lm.arch_config(arch, pooling or self.poolings[0])

    def build(self, arch: str, width: int, arch_config: dict[str, Any] | None) -> Built:
        from transferlab.models import causal_lm, prompting

        lm, dim = causal_lm.build_backbone(arch_config["hf_config"], arch_config["pooling"])
        if arch_config.get("prompt") is None:
            return Built(lm, dim, channels=None, arch_config=arch_config)
        prompted = prompting.PromptedLM(lm, prompting.Prompt.from_dict(arch_config["prompt"]))
        return Built(prompted, prompted.num_classes, channels=None, arch_config=arch_config)
