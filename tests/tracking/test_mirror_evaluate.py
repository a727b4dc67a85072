"""transferlab.tracking.mirror.mirror_evaluate: what the evaluate stage mirrors beside the
summary (what transferred and the privacy spent per curve x budget, the fixed curves' verdicts),
against a recording tracker: the numbers are evaluate's, and non-finite ones are left out."""

from __future__ import annotations

import math

from transferlab.tracking.mirror import mirror_evaluate


class Recorder:
    run_id = "parent"

    def __init__(self) -> None:
        self.metrics: dict[str, dict] = {}

    def log_summary(self, summary: dict) -> dict:
        return {(c, b): f"{c}@{b}" for c, by_budget in summary.items() for b in by_budget}

    def log_metrics(self, run_id: str, metrics: dict) -> None:
        self.metrics.setdefault(run_id, {}).update(metrics)


def _mean(v: float) -> dict:
    return {"mean": v}


REPORT = {
    "summary": {"src/finetune": {"3": {}}, "src/dp_finetune": {"3": {}}, "scratch": {"3": {}}},
    "label_efficiency": {"auc": 0.5},
    "what_transferred": {"curves": {"src/finetune": {"3": {
        "block1": {"cka": _mean(0.97), "drift": _mean(0.02)},
        "block2": {"cka": _mean(math.nan), "drift": _mean(0.3)}}}}},
    "privacy": {"src/dp_finetune": {"3": {"epsilon": 4.2, "dp_delta": 1e-3,
                                          "noise_multiplier": 1.1}}},
    "fixed_predictions": {
        "curves": {"lm/zero_shot": {"accuracy": 0.73, "p_adjusted": 0.01}},
        "pairs": [{"a": "lm/zero_shot", "b": "lm/zero_shot_raw", "p_adjusted": 0.04}]},
}


def test_what_transferred_privacy_and_fixed_verdicts_are_mirrored() -> None:
    tracker = Recorder()
    ids = mirror_evaluate(tracker, REPORT)
    assert ids[("src/finetune", "3")] == "src/finetune@3"
    assert tracker.metrics["src/finetune@3"] == {"what_transferred.block1.cka": 0.97,
                                                 "what_transferred.block1.drift": 0.02,
                                                 "what_transferred.block2.drift": 0.3}
    assert tracker.metrics["src/dp_finetune@3"] == {"privacy.epsilon": 4.2,
                                                    "privacy.dp_delta": 1e-3,
                                                    "privacy.noise_multiplier": 1.1}
    assert "scratch@3" not in tracker.metrics
    parent = tracker.metrics["parent"]
    assert parent["label_efficiency"] == {"auc": 0.5}
    assert parent["fixed.lm/zero_shot.accuracy"] == 0.73
    assert parent["fixed.lm/zero_shot.vs_chance_p_adjusted"] == 0.01
    assert parent["fixed.lm/zero_shot.vs.lm/zero_shot_raw.p_adjusted"] == 0.04


def test_an_infinite_epsilon_is_left_to_the_report() -> None:
    tracker = Recorder()
    report = {**REPORT, "privacy": {"src/dp_finetune": {"3": {
        "epsilon": math.inf, "dp_delta": 1e-3, "noise_multiplier": 0.0}}}}
    mirror_evaluate(tracker, report)
    assert "privacy.epsilon" not in tracker.metrics["src/dp_finetune@3"]
    assert tracker.metrics["src/dp_finetune@3"]["privacy.noise_multiplier"] == 0.0
