"""``in_context``: a causal LM given ``shots`` labelled examples per class in its prompt.

Brown et al. (2020), "Language Models are Few-Shot Learners". The demonstrations are drawn
from the run's training labels (the budget's training part; held-out labels are never shown),
each written as the template with its label word, joined by ``separator``, before the query's
template; the classes are scored as in ``zero_shot`` (label words' next-token log-probabilities,
calibrated with content-free inputs in the same prompt, Zhao et al. 2021). The whole prompt
before the query's text is the same for every text: its key/value cache is computed once per
replicate (:class:`~transferlab.models.prompting.PromptedLM`) and reused for every text.

Nothing trains (``epochs`` is 0). ``shots``, ``order`` and ``template`` are chosen as every
strategy chooses: ``search`` lists candidates, each is scored on the budget's held-out labels
(:meth:`InContext.after_fit`), and the choice is refit, i.e. its demonstrations are drawn again
from the whole budget with the refit's generator.

Simplification: where a class has fewer training labels than ``shots``, all of them are used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from transferlab.adapt.strategies._prompting import (
    PromptParams,
    encode,
    prompted_model,
    setup_template,
    text_ids,
)
from transferlab.adapt.strategies.base import Strategy, TransferTrainParams
from transferlab.adapt.strategies.registry import register
from transferlab.config.typed import check_range, fail
from transferlab.models.nets import TransferNet
from transferlab.training.loop import predict_logits


@dataclass(frozen=True)
class InContextParams(TransferTrainParams, PromptParams):
    epochs: int = 0  # nothing trains: the demonstrations are the adaptation
    augment: bool | str = False  # texts are shown as they are
    shots: int = 2  # demonstrations per class, from the run's training labels
    # the demonstrations' order: shuffled (drawn from the run's seed) | interleaved (one of
    # each class in turn, classes in index order)
    order: Literal["shuffled", "interleaved"] = "shuffled"
    separator: str = "\n\n"  # between two demonstrations, and before the query

    def validate(self, key: str) -> None:
        super().validate(key)
        self.check_prompt(key)
        if self.epochs != 0:
            fail(f"{key}.epochs", f"in_context trains nothing; epochs must be 0, got {self.epochs}")
        check_range(f"{key}.shots", self.shots, 1, 1024)
        if self.augment not in (False, "none"):
            fail(f"{key}.augment", "in_context shows texts as they are; augment must be false")


def demonstrations(labels: torch.Tensor, shots: int, order: str,
                   generator: torch.Generator) -> list[int]:
    """Row indices of the demonstrations: ``shots`` per class (all where a class has fewer),
    drawn with ``generator``, in ``order``."""
    per_class = []
    for c in torch.unique(labels).tolist():
        rows = torch.nonzero(labels == c).flatten()
        per_class.append(rows[torch.randperm(len(rows), generator=generator)][:shots].tolist())
    if order == "interleaved":
        return [rows[i] for i in range(shots) for rows in per_class if i < len(rows)]
    flat = [r for rows in per_class for r in rows]
    return [flat[i] for i in torch.randperm(len(flat), generator=generator).tolist()]


@register
class InContext(Strategy):
    name = "in_context"
    Params = InContextParams
    needs_backbone = frozenset({"next_token"})
    tasks = frozenset({"classification"})
    style = (":", "d")
    rank = 2

    def setup(self) -> dict:
        return setup_template(self, self.cfg.separator)

    def initial_model(self) -> TransferNet:
        return self.ctx.source  # the causal LM as it is; before_fit makes the prompt

    def before_fit(self, model: TransferNet, train: tuple[torch.Tensor, torch.Tensor],
                   cfg: InContextParams, generator: torch.Generator) -> TransferNet:
        template = self.ctx.shared["template"]
        if (cfg.template, cfg.separator) != (self.cfg.template, self.cfg.separator):
            searched = self.ctx.shared.setdefault("searched_templates", {})
            if (cfg.template, cfg.separator) not in searched:  # encoded once per stage
                arch = (self.ctx.source_config or {}).get("arch") or self.ctx.arch["arch"]
                searched[cfg.template, cfg.separator] = encode(
                    cfg, arch, self.ctx.target.class_names, f"transfer.{self.name}",
                    cfg.separator)
            template = searched[cfg.template, cfg.separator]
        x, y = train
        rows = demonstrations(y, cfg.shots, cfg.order, generator)
        prompt = template.in_context([(text_ids(x[r], template.drop), int(y[r])) for r in rows])
        return prompted_model(model, prompt, template.content_free if cfg.calibrate else None)

    def trainable(self, model: TransferNet, cfg: InContextParams) -> tuple[nn.Module, list[dict]]:
        return model, [{"params": []}]  # nothing trains (epochs 0)

    def after_fit(self, model: TransferNet, net: nn.Module,
                  val: tuple[torch.Tensor, torch.Tensor] | None, cfg: InContextParams,
                  chosen: dict | None) -> tuple[TransferNet, dict]:
        if val is None:
            return model, {}
        task = self.target_task()
        logits = predict_logits(model, val[0], self.ctx.device)
        return model, {"selection": {task.val_key: task.val_score(logits, val[1]),
                                     "best_val_loss": float(task.loss(logits, val[1]))}}
