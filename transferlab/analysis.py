"""Aggregation over seeds: confidence intervals, transfer gain and its verdict, label
efficiency, transferability rankings and the per-budget recommendation. Pure: dicts in, dicts out.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from transferlab.params import EvaluateParams
from transferlab.source_ranking import judge_ranking
from transferlab.stats import (
    area_under_learning_curve,
    labels_to_reach,
    mean_ci,
    paired_bootstrap_diff,
    paired_t_test,
    verdict,
)
from transferlab.transferability import trusted

SCORES = ("logme", "leep", "nce", "hscore")
REPORTED = ("accuracy", "balanced_accuracy", "f1_macro", "log_loss", "brier", "ece",
            "shifted_accuracy", "shift_gap", "forgetting")
SCRATCH = "scratch"


def curve_name(source: str, strategy: str) -> str:
    """``<source>/<strategy>``, or ``scratch`` for the source-free baseline."""
    return SCRATCH if strategy == SCRATCH else f"{source}/{strategy}"


def budget_value(budget: str, all_labels_per_class: float) -> float:
    """Labels per class as a number (``all`` = the pool's mean labels per class)."""
    return all_labels_per_class if budget == "all" else float(budget)


def _group(results: Sequence) -> dict[str, dict[str, list]]:
    groups: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        groups[curve_name(r.key["source"], r.key["strategy"])][r.key["budget"]].append(r)
    for curve in groups.values():
        for runs in curve.values():
            runs.sort(key=lambda r: r.key["seed"])
    return groups


def summarize(results: Sequence, budgets: Sequence[str], all_labels_per_class: float,
              p: EvaluateParams) -> dict:
    """Per curve and budget: mean / std / CI of each metric and the paired gain over scratch.

    Gain = curve accuracy - scratch accuracy at the same budget and seed. Its CI and p-value
    come from a paired bootstrap over seeds x test examples; a paired t-test over seeds is
    reported beside it. The verdict follows the bootstrap CI.
    """
    groups = _group(results)
    if SCRATCH not in groups:
        raise ValueError("no scratch runs: scratch is the baseline of every transfer gain")
    out: dict[str, dict] = {}
    for curve, by_budget in sorted(groups.items()):
        out[curve] = {}
        for budget in budgets:
            runs = by_budget.get(budget)
            if not runs:
                continue
            entry = {m: mean_ci([r.metrics[m] for r in runs], p.confidence)
                     for m in REPORTED if m in runs[0].metrics}
            entry["trainable_params"] = runs[0].metrics["trainable_params"]
            entry["train_flops"] = float(np.mean([r.metrics["train_flops"] for r in runs]))
            if curve != SCRATCH:
                entry["gain"] = _gain(runs, groups[SCRATCH].get(budget, []), p)
            out[curve][budget] = entry
    return out


def _gain(runs: list, base: list, p: EvaluateParams) -> dict:
    seeds = [r.key["seed"] for r in runs]
    base_by_seed = {r.key["seed"]: r for r in base}
    if not base or any(s not in base_by_seed for s in seeds):
        return {"verdict": "no detectable effect", "note": "no scratch run at these seeds"}
    a = np.stack([r.correct for r in runs]).astype(float)  # (S, N)
    b = np.stack([base_by_seed[s].correct for s in seeds]).astype(float)
    boot = paired_bootstrap_diff(a, b, n_boot=p.n_boot, confidence=p.confidence, seed=0)
    t = paired_t_test(a.mean(1), b.mean(1), confidence=p.confidence)
    return {"diff": boot["diff"], "ci_low": boot["ci_low"], "ci_high": boot["ci_high"],
            "p_value": boot["p_value"], "t_p_value": t["p_value"],
            "verdict": verdict(boot["ci_low"], boot["ci_high"])}


def label_efficiency(summary: dict, budgets: Sequence[str], all_labels_per_class: float,
                     reach_fraction: float) -> dict:
    """Labels per class to reach ``reach_fraction`` of scratch@largest-budget accuracy, and the
    area under the learning curve (log budget axis), for every curve."""
    largest = budgets[-1]
    target = reach_fraction * summary[SCRATCH][largest]["accuracy"]["mean"]
    out = {"target_accuracy": target, "curves": {}}
    for curve, by_budget in sorted(summary.items()):
        xs = [budget_value(b, all_labels_per_class) for b in budgets if b in by_budget]
        ys = [by_budget[b]["accuracy"]["mean"] for b in budgets if b in by_budget]
        reach = labels_to_reach(xs, ys, target)
        out["curves"][curve] = {
            "labels_to_reach": reach if math.isfinite(reach) else None,
            "reached": math.isfinite(reach),
            "aulc": area_under_learning_curve(xs, ys),
        }
    return out


def transferability_summary(score_rows: list[dict], summary: dict, budgets: Sequence[str],
                            confidence: float = 0.95) -> dict:
    """Mean score per source and budget, and how well each score ranks the sources against
    their realised finetune and linear-probe accuracy, judged over sources.

    Args:
        score_rows: from :func:`transferlab.evaluation.transferability_scores` (one per source,
            budget and seed, with n_examples, feature_dim, min_per_class, source_classes).
        summary: from :func:`summarize`.
        budgets: the budget keys in order.
        confidence: the level of the intervals over sources.

    Returns:
        {"scores": {source: {budget: {score: mean}}}, "agreement": {budget: {score:
        {strategy: judge_ranking(...) + trusted, untrusted_reason}}}, "trusted": {budget:
        {score: bool}}, "picks": {budget: {score: source}}}. A score is trusted at a budget
        when :func:`transferability.trusted` holds for every source and seed scored there.
    """
    scores: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    trust: dict[str, dict[str, list[str]]] = {b: {s: [] for s in SCORES} for b in budgets}
    for source in sorted({r["source"] for r in score_rows}):
        for budget in budgets:
            rows = [r for r in score_rows if r["source"] == source and r["budget"] == budget]
            if rows:
                scores[source][budget] = {s: _nanmean([r[s] for r in rows]) for s in SCORES}
            for r, s in ((r, s) for r in rows for s in SCORES if "n_examples" in r):
                ok, why = trusted(s, r["n_examples"], r["feature_dim"], r["min_per_class"],
                                  r["source_classes"])
                if not ok and why != "no source head":  # such a source is left out, not wrong
                    trust[budget][s].append(why)
    agreement: dict[str, dict] = {}
    picks: dict[str, dict] = {}
    flags: dict[str, dict] = {}
    sources = sorted(scores)
    for budget in budgets:
        agreement[budget], picks[budget], flags[budget] = {}, {}, {}
        for s in SCORES:
            values = [scores[src].get(budget, {}).get(s, math.nan) for src in sources]
            finite = [(v, src) for v, src in zip(values, sources, strict=True) if math.isfinite(v)]
            picks[budget][s] = max(finite)[1] if finite else None
            reasons = sorted(set(trust[budget][s]))
            flags[budget][s] = not reasons
            agreement[budget][s] = {}
            for strategy in ("finetune", "linear_probe"):
                acc = [summary.get(f"{src}/{strategy}", {}).get(budget, {})
                       .get("accuracy", {}).get("mean", math.nan) for src in sources]
                agreement[budget][s][strategy] = {
                    **judge_ranking(values, acc, confidence), "trusted": not reasons,
                    "untrusted_reason": "; ".join(reasons)}
    return {"scores": dict(scores), "agreement": agreement, "trusted": flags, "picks": picks}


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def recommend(summary: dict, results: Sequence, budgets: Sequence[str],
              transfer: dict, p: EvaluateParams) -> dict:
    """Per budget: the best curve with its CI, whether it beats the runner-up significantly
    (paired bootstrap), every negative-transfer finding, and whether the transferability
    scores' source pick matched the realised best source (by finetune accuracy)."""
    groups = _group(results)
    out = {}
    for budget in budgets:
        ranked = sorted((c for c in summary if budget in summary[c]),
                        key=lambda c: (-summary[c][budget]["accuracy"]["mean"], c))
        best, runner = ranked[0], (ranked[1] if len(ranked) > 1 else None)
        entry = {"best": best, "accuracy": summary[best][budget]["accuracy"]}
        if runner:
            cmp = _gain(groups[best][budget], groups[runner][budget], p)
            entry["runner_up"] = runner
            entry["vs_runner_up"] = {k: cmp.get(k) for k in ("diff", "ci_low", "ci_high",
                                                              "p_value")}
            entry["significantly_better"] = bool(cmp.get("ci_low", 0) > 0)
        entry["negative_transfer"] = sorted(
            c for c in summary if budget in summary[c]
            and summary[c][budget].get("gain", {}).get("verdict") == "negative transfer")
        realised = {c.split("/")[0]: summary[c][budget]["accuracy"]["mean"]
                    for c in summary if c.endswith("/finetune") and budget in summary[c]}
        right = max(realised, key=lambda s: (realised[s], s)) if realised else None
        entry["best_source_by_finetune"] = right
        entry["score_picks"] = {s: {"source": pick, "correct": pick is not None and pick == right}
                                for s, pick in transfer["picks"].get(budget, {}).items()}
        out[budget] = entry
    return out
