"""What helped: each adaptation method's gain over the plain reference adaptation of the same
source (the strategy with the ``reference`` role: ``finetune``), per label budget.

- Every gain is a paired t over seeds of the method's test accuracy minus the reference's, at
  the same budget, source and seeds. All of them form one family, adjusted by
  ``evaluate.multiplicity`` (its own family: a different question from transfer vs scratch).
- Per source and budget, the method that the labels held out of the budget choose (highest
  mean selection score, ties to fewer trainable parameters, then fewer FLOPs, then name: the
  rule of :mod:`transferlab.evaluation.analysis`), the configuration its in-stage search chose per
  seed,
  and its test accuracy, looked up once the choice is made. At budgets too small to hold
  labels out nothing is chosen.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

from transferlab.adapt import strategies
from transferlab.adapt.strategies.base import config_label
from transferlab.config.params import EvaluateParams
from transferlab.evaluation.analysis import (
    _group,
    choose,
    curve_name,
    detectable,
    paired_difference,
)
from transferlab.evaluation.stats import adjust_p_values, marginal_level, verdict

WORDS = {"positive transfer": "helped", "negative transfer": "hurt",
         "no detectable effect": "no detectable difference"}


def what_helped(results: Sequence, summary: dict, budgets: Sequence[str],
                p: EvaluateParams, headline: str = "accuracy") -> dict:
    """The ``what_helped`` block of ``metrics/evaluate.json``.

    Args:
        results: :class:`transferlab.evaluation.evaluate.RunResult` s (``search``: a run's in-stage
            search record, or None).
        summary: from :func:`transferlab.evaluation.analysis.summarize`.
        budgets: budget keys in order.
        p: the evaluate block (confidence, multiplicity).
        headline: the test metric (:mod:`transferlab.core.tasks`; a regression's ``r2``, whose key
            then stands where ``accuracy`` does below).
    Returns:
        {"reference", "statistics", "sources": {source: {budget: {"reference_accuracy",
        "methods": {strategy: {"gain" (paired t, p_adjusted, verdict), "accuracy",
        "selection_score", "trainable_params", "search": {candidate: mean held-out accuracy
        over seeds} where the method searched, "vs_base": {"base", paired t, p_adjusted,
        verdict} where the method is a variant and its base ran}}, "chosen": {"strategy",
        "selection_score", "accuracy", "configs": {seed: search choice}} or None,
        "reason"}}}}. Sources without a reference curve are left out: there is nothing to
        measure against.
    """
    reference = strategies.by_role("reference")
    groups = _group(results)
    by_source: dict[str, list[str]] = {}
    for curve in summary:
        source, _, strategy = curve.partition("/")
        if strategy:
            by_source.setdefault(source, []).append(strategy)
    family, sources = [], {}
    for source, members in sorted(by_source.items()):
        ref_curve = curve_name(source, reference)
        if reference not in members:
            continue
        sources[source] = {}
        for budget in budgets:
            ref_runs = groups[ref_curve].get(budget)
            if not ref_runs:
                continue
            methods = {}
            for strategy in sorted(members, key=_rank):
                curve = curve_name(source, strategy)
                if strategy == reference or budget not in summary[curve]:
                    continue
                entry = summary[curve][budget]
                methods[strategy] = {
                    "gain": paired_difference(groups[curve][budget], ref_runs, p),
                    headline: entry[headline], "selection_score": entry["selection_score"],
                    "trainable_params": entry["trainable_params"]}
                searched = search_scores(groups[curve][budget], headline)
                if searched:
                    methods[strategy]["search"] = searched
                family.append(methods[strategy]["gain"])
                base = _base(strategy)  # (a variant of the reference: its gain above is it)
                base_runs = groups.get(curve_name(source, base), {}).get(budget) \
                    if base and base != reference else None
                if base_runs:  # a variant (e.g. head_init: source) against its base
                    methods[strategy]["vs_base"] = {
                        "base": base, **paired_difference(groups[curve][budget], base_runs, p)}
                    family.append(methods[strategy]["vs_base"])
            local = {curve_name(source, s): summary[curve_name(source, s)] for s in members}
            ranked, tied = choose(local, groups, budget)  # the recommendation's own rule
            chosen, reason = None, None
            if ranked:
                best = ranked[0]
                chosen = {"strategy": best.partition("/")[2],
                          "indistinguishable": [c.partition("/")[2] for c in tied],
                          "selection_score": local[best][budget]["selection_score"],
                          headline: local[best][budget][headline],
                          "configs": {str(r.key["seed"]): (r.search or {}).get("chosen", {})
                                      for r in groups[best][budget]}}
            else:
                reason = "no held-out labels at this budget: nothing can be chosen"
            sources[source][budget] = {
                f"reference_{headline}": summary[ref_curve][budget][headline],
                "methods": methods, "chosen": chosen, "reason": reason}
    alpha = 1.0 - p.confidence
    adjusted = adjust_p_values([g["p_value"] for g in family], p.multiplicity)
    for gain, q in zip(family, adjusted, strict=True):
        gain["p_adjusted"] = q
        gain["verdict"] = WORDS[verdict(gain["diff"], q, alpha)]
        gain["interval_excludes_zero"] = bool(gain["ci_low"] > 0 or gain["ci_high"] < 0)
    size = int(sum(math.isfinite(q) for q in adjusted))
    rejected = int(sum(q < alpha for q in adjusted if math.isfinite(q)))
    level = marginal_level(p.multiplicity, alpha, size, rejected) if rejected < size else alpha
    for gain in family:  # what a null verdict could have detected (analysis.MDE_RULE)
        if gain["verdict"] == WORDS["no detectable effect"]:
            gain.update(detectable(gain, level, p.power))
    return {"reference": reference, "sources": sources, "statistics": {
        "rejected": rejected, "marginal_level": level, "power": p.power,
        "unit": "seed", "test": "paired t over seeds, S-1 df", "multiplicity": p.multiplicity,
        "alpha": alpha, "family_size": int(sum(math.isfinite(g["p_value"]) for g in family)),
        "family": f"every method's gain over {reference} of the same source (methods x "
                  "sources x budgets), and every variant's over its base strategy"}}


def _base(strategy: str) -> str | None:
    """The strategy a variant was made from (``registry.variant``), or None."""
    return strategies.get(strategy).variant_of if strategy in strategies.names() else None


def search_scores(runs: Sequence, headline: str = "accuracy") -> dict[str, float]:
    """Mean held-out accuracy (a regression: R²) of each search candidate over the seeds that
    scored it (what a user reads to see, e.g., which block surgical fine-tuning would tune)."""
    key = f"best_val_{headline}"
    scores: dict[str, list[float]] = {}
    for r in runs:
        for cand in (r.search or {}).get("candidates", []):
            if cand.get(key) is not None:
                scores.setdefault(config_label(cand["config"]), []).append(cand[key])
    return {k: sum(v) / len(v) for k, v in scores.items()}


def _rank(strategy: str) -> tuple:
    known = strategies.names()
    return (known.index(strategy) if strategy in known else len(known), strategy)


def helped_rows(block: dict, headline: str = "accuracy") -> list[dict]:
    """One flat row per (source, budget, method) for tables and figures (the headline metric
    in the ``accuracy`` column: a regression's R²)."""
    rows = []
    for source, by_budget in block["sources"].items():
        for budget, entry in by_budget.items():
            for strategy, m in entry["methods"].items():
                g = copy.deepcopy(m["gain"])
                rows.append({"source": source, "budget": budget, "strategy": strategy,
                             "gain": g.get("diff"), "ci_low": g.get("ci_low"),
                             "ci_high": g.get("ci_high"), "p_adjusted": g.get("p_adjusted"),
                             "verdict": g.get("verdict"), "accuracy": m[headline]["mean"],
                             "trainable_params": m["trainable_params"]})
    return rows
