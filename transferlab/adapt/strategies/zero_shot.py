"""``zero_shot``: a causal LM as it is, asked for the class through a prompt.

Each class is a label word; a text's class scores are the label words' next-token
log-probabilities after the template around it (:mod:`transferlab.models.prompting`), with
contextual calibration (Zhao et al. 2021: the content-free inputs' log-prior subtracted) unless
``calibrate: false``. The LLM's ``source_only``: it trains nothing and reads no label, so one
model serves every budget and seed, and each replicate only scores it on its held-out labels.
The template's prefix is the same for every text: its key/value cache is computed once.
"""

from __future__ import annotations

from dataclasses import dataclass

from transferlab.adapt.strategies._prompting import PromptParams, setup_template, zero_shot_model
from transferlab.adapt.strategies.base import Strategy
from transferlab.adapt.strategies.registry import register
from transferlab.models.nets import TransferNet


@dataclass(frozen=True)
class ZeroShotParams(PromptParams):
    def validate(self, key: str) -> None:
        self.check_prompt(key)

    def search_grid(self, key: str = "") -> list[tuple[dict, ZeroShotParams]]:
        return [({}, self)]  # nothing to choose: no label is read


@register
class ZeroShot(Strategy):
    name = "zero_shot"
    Params = ZeroShotParams
    trains = False
    needs_backbone = frozenset({"next_token"})
    tasks = frozenset({"classification"})
    style = (":", "*")
    rank = 1

    def setup(self) -> dict:
        return setup_template(self)

    def untrained_model(self) -> TransferNet:
        return zero_shot_model(self)
