"""What the prompting strategies (``zero_shot``, ``in_context``) share: their prompt knobs, the
template encoded once per stage, and the classifier a prompt makes of a causal LM.

A private module (its name starts with ``_``, so the package does not import it as a strategy).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from transferlab.config.typed import fail
from transferlab.core.errors import ParamsError
from transferlab.models.nets import Passthrough, TransferNet
from transferlab.models.prompting import CONTENT_FREE, Prompt, PromptedLM, Template

TEMPLATE = "Review:\n{text}\nSentiment:"


@dataclass(frozen=True)
class PromptParams:
    """How a causal LM is asked for a class."""

    # the prompt around each text; it has exactly one {text}, and the label word follows it
    template: str = TEMPLATE
    # class name -> its label word (one token of the model's vocabulary, e.g. " positive")
    label_words: dict[str, str] = field(default_factory=dict)
    calibrate: bool = True  # contextual calibration (Zhao et al. 2021) with content_free inputs
    # texts without content, for calibration ("" is the empty text: Literal lets it pass the
    # loader's non-empty check for strings)
    content_free: tuple[Literal[""] | str, ...] = CONTENT_FREE

    def check_prompt(self, key: str) -> None:
        if self.template.count("{text}") != 1:
            fail(f"{key}.template", f"needs exactly one {{text}}, got {self.template!r}")
        if self.calibrate and not self.content_free:
            fail(f"{key}.content_free", "calibration needs at least one content-free input")


def label_words(cfg: PromptParams, class_names: tuple[str, ...], key: str) -> list[str]:
    """The label word of each class index, from ``cfg.label_words``.

    Raises:
        ParamsError: naming ``<key>.label_words`` where a class has no word or a word names no
            class of the target.
    """
    if not class_names:
        fail(f"{key}.label_words", "the target records no class names to map")
    missing = [c for c in class_names if c not in cfg.label_words]
    extra = sorted(set(cfg.label_words) - set(class_names))
    if missing or extra:
        fail(f"{key}.label_words", f"needs exactly the target's classes {list(class_names)}; "
             f"missing {missing}, unknown {extra}")
    return [cfg.label_words[c] for c in class_names]


def encode(cfg: PromptParams, arch: str, class_names: tuple[str, ...], key: str,
           separator: str = "") -> Template:
    """The template, label words and content-free inputs as token ids of the model's own
    tokenizer (``arch``, ``llm:<...>``): once per stage, in :meth:`Strategy.setup`."""
    from transferlab.data.checkpoints import load_causal_tokenizer
    from transferlab.models.prompting import encode_template

    tokenizer = load_causal_tokenizer(arch, "pretrain.arch")
    try:
        return encode_template(tokenizer, cfg.template, label_words(cfg, class_names, key),
                               separator, cfg.content_free, key)
    except ValueError as err:  # e.g. a label word of several tokens; the message names the key
        raise ParamsError(str(err)) from None


def text_ids(x: torch.Tensor, drop: tuple[int, ...]) -> list[int]:
    """The real tokens of one stored text (2, L), without the tokenizer's added specials."""
    ids, mask = x[0], x[1].bool()
    return [int(i) for i in ids[mask] if int(i) not in drop]


def prompted_model(source: TransferNet, prompt: Prompt, content_free: tuple | None
                   ) -> TransferNet:
    """The classifier a prompt makes of the causal LM in ``source``: its logits are the
    (calibrated, with ``content_free`` token ids) label-word log-probabilities, behind an
    identity head. Its ``arch_config`` records the prompt, so a checkpoint rebuilds it."""
    prompted = PromptedLM(source.backbone, prompt)
    if content_free is not None:
        prompted.calibrate([list(c) for c in content_free])
    classes = prompted.num_classes
    with torch.random.fork_rng(devices=[]):  # the head's draw is overwritten: keep global RNG
        model = TransferNet(Passthrough(), prompted, classes, classes,
                            {**source.arch_config, "prompt": prompt.to_dict()})
    with torch.no_grad():
        model.head.weight.copy_(torch.eye(classes))
        model.head.bias.zero_()
    model.head.requires_grad_(False)
    return model.eval()


def setup_template(strategy: Any, separator: str = "") -> dict:
    """``Strategy.setup`` of a prompting strategy: the template's ids in ``ctx.shared``.
    Returns what ``runs.json`` records of the prompt."""
    key = f"transfer.{strategy.name}"
    arch = (strategy.ctx.source_config or {}).get("arch") or strategy.ctx.arch["arch"]
    template = encode(strategy.cfg, arch, strategy.ctx.target.class_names, key, separator)
    strategy.ctx.shared["template"] = template
    return {"prompt": {"template": strategy.cfg.template,
                       "label_tokens": list(template.labels),
                       "calibrated": strategy.cfg.calibrate}}


def zero_shot_model(strategy: Any) -> TransferNet:
    """The zero-shot classifier of a prompting strategy's source: its template without
    demonstrations, calibrated with its content-free inputs where ``cfg.calibrate``
    (``zero_shot``'s model, and ``lora_prompt``'s starting point)."""
    template = strategy.ctx.shared["template"]
    return prompted_model(strategy.ctx.source, template.zero_shot(),
                          template.content_free if strategy.cfg.calibrate else None)
