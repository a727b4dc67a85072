"""Aggregation over seeds: confidence intervals, transfer gain and its verdict, label
efficiency, transferability rankings and the per-budget recommendation. Pure: dicts in, dicts out.

Statistics (see :mod:`transferlab.evaluation.stats` for the error rates): the seed is the unit of
inference.
A gain, and the chosen curve's margin over the runner-up, is the per-seed test-accuracy
difference paired by seed, with a t interval and p-value on S - 1 degrees of freedom. Every such
p-value in one evaluate output is one family, adjusted together by ``evaluate.multiplicity``
(:func:`control_family`); the verdict follows the adjusted p-value and the sign of the difference.

Choices never read the test split: the recommended curve per budget is the one with the highest
mean ``selection_score`` (accuracy on labels held out of the budget); its test accuracy is only
reported, after the choice.

On a regression target (:mod:`transferlab.core.tasks`) R² stands where accuracy stands: the
functions
that name the headline metric take it as ``headline`` (``"r2"``), and a run's per-example scores
average to its R², so the paired t over seeds is the same procedure.
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from transferlab.adapt import strategies
from transferlab.config.params import EvaluateParams
from transferlab.evaluation.source_ranking import judge_ranking
from transferlab.evaluation.stats import (
    adjust_p_values,
    area_under_learning_curve,
    labels_to_reach,
    marginal_level,
    mean_ci,
    minimum_detectable_effect,
    paired_t_test,
    seeds_for_power,
    verdict,
)
from transferlab.evaluation.transferability import trusted

SCORES = ("logme", "leep", "nce", "hscore")
REPORTED = ("accuracy", "balanced_accuracy", "f1_macro", "log_loss", "brier", "ece",
            "shifted_accuracy", "shift_gap", "forgetting",
            # a regression target (transferlab.core.tasks): only the keys a run has are summarised
            "r2", "mse", "mae", "rmse", "shifted_r2")
SCRATCH = strategies.by_role("baseline")  # every gain is measured against it
# the realised accuracies each transferability score is judged against
JUDGES = tuple(s for s in (strategies.by_role("reference"), strategies.by_role("feature_probe"))
               if s)


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
    """Per curve and budget: mean / std / CI of each test metric, the selection score, and the
    paired gain over scratch.

    Args:
        results: :class:`transferlab.evaluation.evaluate.RunResult` s.
        budgets: budget keys in order.
        all_labels_per_class: labels per class of the ``all`` budget (unused; kept for symmetry).
        p: the evaluate block (its ``confidence``).
    Returns:
        {curve: {budget: {metric: mean_ci, "selection_score": mean_ci over the seeds with a
        finite score ({"mean": nan, "n": 0} where none), "trainable_params", "train_flops",
        "gain" (not for scratch): :func:`paired_difference` of the curve minus scratch,
        "unstable_refits" where some seed's refit ended on a loss spike: {"seeds", "n", "sd"
        (the test headline metric's standard deviation over seeds)}}}}. The
        gains carry raw p-values only; :func:`control_family` adds adjusted p-values and
        verdicts.
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
            entry["selection_score"] = _selection_summary(runs, p.confidence)
            entry["trainable_params"] = runs[0].metrics["trainable_params"]
            entry["train_flops"] = float(np.mean([r.metrics["train_flops"] for r in runs]))
            unstable = sorted(int(r.key["seed"]) for r in runs if r.unstable_refit)
            if unstable:  # refits that ended on a loss spike, with the seeds' spread
                entry["unstable_refits"] = {"seeds": unstable, "n": len(runs), "sd": float(
                    np.std([r.metrics[headline_of(runs)] for r in runs], ddof=1))
                    if len(runs) > 1 else math.nan}
            if curve != SCRATCH:
                entry["gain"] = paired_difference(runs, groups[SCRATCH].get(budget, []), p)
            out[curve][budget] = entry
    return out


def contrasts(results: Sequence, budgets: Sequence[str], p: EvaluateParams) -> list[dict]:
    """The head-to-head questions of ``p.contrasts``: per [A, B] pair and budget where both
    curves ran, :func:`paired_difference` of A minus B, with "a", "b" and "budget"; raw
    p-values only (:func:`control_family` judges them in the family).

    Raises:
        ValueError: naming ``evaluate.contrasts[i]``, the curve no run has, and the curves
            this study has.
    """
    groups = _group(results)
    out = []
    for i, (a, b) in enumerate(p.contrasts):
        for curve in (a, b):
            if curve not in groups:
                raise ValueError(f"evaluate.contrasts[{i}]: no runs of curve {curve!r}; this "
                                 f"study has {', '.join(sorted(groups))}")
        for budget in budgets:
            if groups[a].get(budget) and groups[b].get(budget):
                out.append({"a": a, "b": b, "budget": budget,
                            **paired_difference(groups[a][budget], groups[b][budget], p)})
    return out


def headline_of(runs: Sequence) -> str:
    """The runs' headline test metric: ``accuracy``, or a regression's ``r2``."""
    return "accuracy" if "accuracy" in runs[0].metrics else "r2"


def _selection_summary(runs: list, confidence: float) -> dict:
    finite = [r.selection_score for r in runs if math.isfinite(r.selection_score)]
    return mean_ci(finite, confidence) if finite else {"mean": math.nan, "n": 0}


def paired_difference(runs_a: Sequence, runs_b: Sequence, p: EvaluateParams) -> dict:
    """Test accuracy of ``runs_a`` minus ``runs_b``, paired by seed: a paired t over seeds.

    Only seeds present on both sides are paired; the others are named in ``note``. Fewer than
    two pairs give no p-value (and so no verdict).

    Args:
        runs_a: the runs of curve A at one budget (any order).
        runs_b: the runs of baseline B at the same budget (any order).
        p: the evaluate block (its ``confidence``).
    Returns:
        {"diff" (mean per-seed A - B), "ci_low", "ci_high" (unadjusted t interval), "p_value"
        (raw, two-sided), "n" (paired seeds), "sd" (of the per-seed differences), "seeds",
        "method"} and "note" where seeds were
        unpaired.
    """
    a = {r.key["seed"]: float(np.mean(r.correct)) for r in runs_a}
    b = {r.key["seed"]: float(np.mean(r.correct)) for r in runs_b}
    seeds = sorted(set(a) & set(b))
    out: dict = {"method": "paired t over seeds", "seeds": seeds}
    if seeds:
        t = paired_t_test([a[s] for s in seeds], [b[s] for s in seeds], p.confidence)
        out.update({k: t[k] for k in ("diff", "ci_low", "ci_high", "p_value", "n", "sd")})
    else:
        out.update(diff=math.nan, ci_low=math.nan, ci_high=math.nan, p_value=math.nan, n=0,
                   sd=math.nan)
    unpaired_a, unpaired_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    notes = ([f"no baseline run at seed(s) {unpaired_a}"] if unpaired_a else []) + \
            ([f"no run at baseline seed(s) {unpaired_b}"] if unpaired_b else [])
    if len(seeds) < 2:
        notes.append(f"{len(seeds)} paired seed(s): too few for a test")
    if notes:
        out["note"] = "; ".join(notes)
    return out


def control_family(summary: dict, recommendations: dict, p: EvaluateParams,
                   head_to_head: Sequence[dict] = ()) -> dict:
    """Adjust every verdict of one evaluate output as one family, then give each its verdict.

    The family: every gain over scratch (curves x budgets), every chosen-vs-runner-up
    comparison and every head-to-head contrast (:func:`contrasts`). p-values that could not be
    computed (nan) are not counted. Each comparison keeps its raw ``p_value`` and unadjusted t
    interval and gains ``p_adjusted`` (by ``p.multiplicity``) and a verdict at alpha = 1 -
    ``p.confidence``: "positive transfer" / "negative transfer" / "no detectable effect" for
    gains; "better" / "worse" / "no detectable difference" for the chosen curve against the
    runner-up and for A against B. Each also gains
    ``interval_excludes_zero`` (of the unadjusted interval: where it is true and the verdict is
    null, interval and verdict disagree, and the report marks it), and each null verdict its
    minimum detectable effect (:data:`MDE_RULE`, :func:`detectable`).

    Args:
        summary: from :func:`summarize` (not modified).
        recommendations: from :func:`recommend` (not modified).
        p: the evaluate block.
        head_to_head: from :func:`contrasts` (not modified); their verdicts are "better" /
            "worse" / "no detectable difference" for A against B.
    Returns:
        {"summary", "recommendations" (with ``significantly_better`` and the budget's
        ``negative_transfer`` curves), "contrasts" (the judged head-to-head list),
        "statistics": the block evaluate.json records}.
    """
    summary, recommendations = copy.deepcopy(summary), copy.deepcopy(recommendations)
    head_to_head = copy.deepcopy(list(head_to_head))
    alpha = 1.0 - p.confidence
    family = [by_budget[b]["gain"] for _, by_budget in sorted(summary.items())
              for b in by_budget if "gain" in by_budget[b]]
    family += [r["vs_runner_up"] for _, r in sorted(recommendations.items())
               if r.get("vs_runner_up")]
    family += head_to_head
    adjusted = adjust_p_values([t["p_value"] for t in family], p.multiplicity)
    for test, q in zip(family, adjusted, strict=True):
        test["p_adjusted"] = q
        test["verdict"] = verdict(test["diff"], q, alpha)
        test["interval_excludes_zero"] = bool(
            test["ci_low"] > 0 or test["ci_high"] < 0)  # unadjusted: nan compares False
    size = int(sum(math.isfinite(q) for q in adjusted))
    rejected = int(sum(q < alpha for q in adjusted if math.isfinite(q)))
    level = marginal_level(p.multiplicity, alpha, size, rejected) if rejected < size else alpha
    for test in family:
        if test["verdict"] == "no detectable effect":
            test.update(detectable(test, level, p.power))
    words = {"positive transfer": "better", "negative transfer": "worse",
             "no detectable effect": "no detectable difference"}
    for test in head_to_head:
        test["verdict"] = words[test["verdict"]]
    for budget, rec in recommendations.items():
        cmp = rec.get("vs_runner_up")
        if cmp:
            cmp["verdict"] = words[cmp["verdict"]]
        rec["significantly_better"] = bool(cmp and cmp["verdict"] == "better")
        rec["negative_transfer"] = sorted(
            c for c in summary if summary[c].get(budget, {}).get("gain", {}).get("verdict")
            == "negative transfer")
    statistics = {
        "unit": "seed", "test": "paired t over seeds, S-1 df", "multiplicity": p.multiplicity,
        "alpha": alpha, "family_size": int(sum(math.isfinite(t["p_value"]) for t in family)),
        "family": "every gain over scratch (curves x budgets) and every recommended curve "
                  "against its runner-up" + (", and every head-to-head contrast "
                                            "(evaluate.contrasts x budgets)" if head_to_head
                                            else ""),
        "recommended_by": RECOMMENDATION_RULE,
        "power": p.power, "rejected": rejected, "marginal_level": level,
        "mde": MDE_RULE,
        "design": design_power(summary, level, p),
    }
    return {"summary": summary, "recommendations": recommendations, "statistics": statistics,
            **({"contrasts": head_to_head} if head_to_head else {})}


MDE_RULE = (
    "beside each 'no detectable effect': mde, the true mean gain the same design (these seeds, "
    "the family's adjustment) would call positive with probability `power`, from the observed "
    "standard deviation of the per-seed differences: a paired t at the family's marginal "
    "level (the raw level at which one more comparison would have been rejected given the "
    "others: alpha/(m-R) under Holm, alpha(R+1)/m under BH, alpha unadjusted). The observed "
    "standard deviation is itself an estimate from the seeds, so the mde is one too")


def design_power(summary: dict, level: float, p: EvaluateParams) -> dict:
    """What this design can detect, per budget: over the budget's gains over scratch, the seeds,
    the median standard deviation of their per-seed differences, the gain detectable with
    ``p.power`` at the family's marginal ``level`` at that spread (``mde``), and the seeds it
    would take to detect ``p.target_effect`` so (``seeds_for_target``; None beyond 10,000)."""
    out: dict[str, dict] = {}
    budgets = dict.fromkeys(b for by_budget in summary.values() for b in by_budget)
    for budget in budgets:
        gains = [by_budget[budget]["gain"] for c, by_budget in sorted(summary.items())
                 if c != SCRATCH and "gain" in by_budget.get(budget, {})]
        sds = [g["sd"] for g in gains if math.isfinite(g.get("sd", math.nan)) and g["sd"] > 0]
        if not sds:
            continue
        sd, n = float(np.median(sds)), int(max(g["n"] for g in gains))
        out[budget] = {"seeds": n, "gains": len(sds), "median_sd": sd,
                       "mde": minimum_detectable_effect(sd, n, level, p.power),
                       "target_effect": p.target_effect,
                       "seeds_for_target": seeds_for_power(sd, p.target_effect, level, p.power)}
    return out


def detectable(test: dict, level: float, power: float) -> dict:
    """What a comparison that found nothing could have found: ``mde`` (nan with ``mde_note``
    where no variance estimate exists) and the ``mde_level`` it was computed at."""
    n, sd = int(test.get("n") or 0), float(test.get("sd", math.nan))
    out = {"mde": minimum_detectable_effect(sd, n, level, power), "mde_level": level}
    if not math.isfinite(out["mde"]):
        out["mde_note"] = (f"{n} paired seed(s): too few to estimate a variance" if n < 2 else
                           "every seed gave the same difference (no variance estimate)"
                           if sd == 0 else "no variance estimate")
    return out


def label_efficiency(summary: dict, budgets: Sequence[str], all_labels_per_class: float,
                     reach_fraction: float, extra_labels_per_class: float = 0.0,
                     headline: str = "accuracy") -> dict:
    """Labels per class to reach ``reach_fraction`` of scratch@largest-budget accuracy, and the
    area under the learning curve (log budget axis), for every curve.

    ``extra_labels_per_class``: labelled examples per class spent outside the budget (the
    external validation set of the ``external_val`` selection protocol), counted on the axis.
    ``headline``: the metric of the curves (:mod:`transferlab.core.tasks`; a regression's
    ``r2``)."""
    largest = budgets[-1]
    target = reach_fraction * summary[SCRATCH][largest][headline]["mean"]
    out = {f"target_{headline}": target, "extra_labels_per_class": extra_labels_per_class,
           "curves": {}}
    for curve, by_budget in sorted(summary.items()):
        xs = [budget_value(b, all_labels_per_class) + extra_labels_per_class
              for b in budgets if b in by_budget]
        ys = [by_budget[b][headline]["mean"] for b in budgets if b in by_budget]
        reach = labels_to_reach(xs, ys, target)
        out["curves"][curve] = {
            "labels_to_reach": reach if math.isfinite(reach) else None,
            "reached": math.isfinite(reach),
            "aulc": area_under_learning_curve(xs, ys),
        }
    return out


def transferability_summary(score_rows: list[dict], summary: dict, budgets: Sequence[str],
                            confidence: float = 0.95, headline: str = "accuracy",
                            regression: bool = False) -> dict:
    """Mean score per source and budget, and how well each score ranks the sources against
    their realised finetune and linear-probe accuracy, judged over sources.

    Args:
        score_rows: from :func:`transferlab.evaluation.evaluate.transferability_scores` (one per
        source,
            budget and seed, with n_examples, feature_dim, min_per_class, source_classes).
        summary: from :func:`summarize`.
        budgets: the budget keys in order.
        confidence: the level of the intervals over sources.
        headline: the realised metric the scores are judged against (a regression's ``r2``).
        regression: the target is a regression (only LogME is defined).

    Returns:
        {"scores": {source: {budget: {score: mean}}}, "agreement": {budget: {score:
        {strategy: judge_ranking(...) + trusted, untrusted_reason}}}, "trusted": {budget:
        {score: bool}}, "picks": {budget: {score: source}}}. A score is trusted at a budget
        when :func:`transferability.trusted` holds for every source and seed scored there; its
        rank agreement, when moreover at least :data:`MIN_AGREEMENT_SOURCES` sources were
        ranked.
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
                                  r["source_classes"], regression)
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
            for strategy in JUDGES:
                acc = [summary.get(f"{src}/{strategy}", {}).get(budget, {})
                       .get(headline, {}).get("mean", math.nan) for src in sources]
                judged = judge_ranking(values, acc, confidence)
                why = reasons + ([f"n = {judged['n_sources']} sources: too few to test "
                                  "agreement"] if judged["n_sources"] < MIN_AGREEMENT_SOURCES
                                 else [])
                agreement[budget][s][strategy] = {
                    **judged, "trusted": not why, "untrusted_reason": "; ".join(why)}
    return {"scores": dict(scores), "agreement": agreement, "trusted": flags, "picks": picks}


#: Below this many sources no rank agreement is trusted: with 3, Kendall's tau can only be +-1 or
#: +-1/3, and tau = 1 happens once in 6 by chance; the intervals need n >= 5
#: (:mod:`transferlab.evaluation.source_ranking`).
MIN_AGREEMENT_SOURCES = 5


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


RECOMMENDATION_RULE = (
    "the one-standard-error rule on the selection score (accuracy on labels held out of the "
    "budget; the test split is not read): the curves whose mean selection score is within one "
    "standard error of the highest one's (the standard error of their per-seed difference, "
    "paired by seed) cannot be told apart on held-out labels; of them, the cheapest is "
    "recommended: fewer trainable parameters, then fewer training FLOPs, then curve name")
NO_SELECTION = ("no curve has a finite selection score at this budget (too few labels per "
                "class to hold any out of the budget), so nothing is recommended; the test split "
                "does not choose instead")


def ranked_by_selection(summary: dict, budget: str) -> list[str]:
    """The curves with a finite mean selection score at ``budget``, the highest mean first
    (equal to 12 decimals: fewer trainable parameters, then fewer training FLOPs, then name).
    :func:`choose` applies :data:`RECOMMENDATION_RULE` on it."""
    def key(curve: str) -> tuple:
        e = summary[curve][budget]
        return (-round(e["selection_score"]["mean"], 12), e["trainable_params"],
                e["train_flops"], curve)
    eligible = [c for c in summary if budget in summary[c] and math.isfinite(
        summary[c][budget].get("selection_score", {}).get("mean", math.nan))]
    return sorted(eligible, key=key)


def indistinguishable(groups: dict, ranked: list[str], budget: str) -> list[str]:
    """The curves of ``ranked`` (best mean selection score first) that the held-out labels
    cannot tell from the first: those whose mean per-seed shortfall in selection score is at
    most its standard error (paired by seed; the one-standard-error rule of Breiman et al.,
    1984). With fewer than two paired seeds only an exactly equal mean ties. The first is
    always in it."""
    def scores(curve: str) -> dict:
        return {r.key["seed"]: r.selection_score for r in groups[curve][budget]
                if math.isfinite(r.selection_score)}
    top = scores(ranked[0])
    tied = [ranked[0]]
    for curve in ranked[1:]:
        other = scores(curve)
        d = np.array([top[s] - other[s] for s in sorted(set(top) & set(other))])
        if d.size >= 2:
            close = round(float(d.mean()), 12) <= round(float(d.std(ddof=1)) / math.sqrt(
                d.size), 12)
        else:
            close = round(float(np.mean(list(top.values()))), 12) == round(
                float(np.mean(list(other.values()))), 12)
        if close:
            tied.append(curve)
    return tied


def choose(summary: dict, groups: dict, budget: str) -> tuple[list[str], list[str]]:
    """(ranked, tied): the curves with a selection score, best mean first, and the
    :func:`indistinguishable` set of the first; the recommendation (:data:`RECOMMENDATION_RULE`)
    is ``ranked[0]`` after the cheapest of the tied was moved to the front."""
    ranked = ranked_by_selection(summary, budget)
    if not ranked:
        return [], []
    tied = indistinguishable(groups, ranked, budget)

    def cost(curve: str) -> tuple:
        e = summary[curve][budget]
        return (e["trainable_params"], e["train_flops"], curve)
    best = min(tied, key=cost)
    return [best, *(c for c in ranked if c != best)], tied


def selection_accuracy(summary: dict, groups: dict, ranked: list[str], budget: str,
                       headline: str = "accuracy") -> dict:
    """How well the budget's labels chose, judged on test once the choice is made (it audits
    the choice and changes nothing). Among the curves with a selection score:

    - ``best_on_test``: the curve with the highest mean test metric, and ``hit``: whether the
      recommended curve (``ranked[0]``) is it (or ties it); ``regret``: its shortfall.
    - per seed: the curve with the highest selection score at that seed (ties: the
      recommendation rule's order) against the one with the highest test metric at that seed;
      ``seed_hits`` of ``seeds``.
    """
    means = {c: summary[c][budget][headline]["mean"] for c in ranked}
    top = max(ranked, key=lambda c: (means[c], -ranked.index(c)))
    hits = seeds = 0
    by_seed: dict[str, dict[str, tuple[float, float]]] = {}
    for c in ranked:
        for r in groups[c][budget]:
            if math.isfinite(r.selection_score):
                by_seed.setdefault(str(r.key["seed"]), {})[c] = (r.selection_score,
                                                                 r.metrics[headline])
    for scores in by_seed.values():
        if len(scores) < 2:
            continue
        chosen = max(scores, key=lambda c: (round(scores[c][0], 12), -ranked.index(c)))
        seeds += 1
        hits += scores[chosen][1] >= max(v[1] for v in scores.values())
    return {"best_on_test": top, "hit": bool(means[ranked[0]] >= means[top]),
            "regret": float(means[top] - means[ranked[0]]), "seed_hits": int(hits),
            "seeds": int(seeds), "candidates": len(ranked)}


def recommend(summary: dict, results: Sequence, budgets: Sequence[str],
              transfer: dict, p: EvaluateParams, headline: str = "accuracy") -> dict:
    """Per budget: the curve chosen by selection score, its test accuracy, the paired t of chosen
    minus runner-up on test, and whether the transferability scores' source pick matched the
    realised best source (by finetune test accuracy; this judges the scores, it chooses nothing).

    The choice (:func:`ranked_by_selection`) never reads the test split; test accuracy is looked
    up once the choice is made. Where no curve has a finite selection score, ``best`` is None
    with a ``reason``. :func:`control_family` later adds adjusted p-values and verdicts.

    Args:
        summary: from :func:`summarize`.
        results: the RunResults (for the per-seed comparison with the runner-up).
        budgets: budget keys in order.
        transfer: from :func:`transferability_summary` (its ``picks``).
        p: the evaluate block.
        headline: the test metric looked up for the choice (a regression's ``r2``).
    Returns:
        {budget: {"best", "selection_score", "accuracy" (test, of the chosen curve),
        "runner_up", "runner_up_selection_score", "vs_runner_up" (:func:`paired_difference`),
        "best_source_by_finetune", "score_picks"} or, with no choice, "best": None, "reason"}.
        Where only some curves have a selection score at a budget, "chosen_among" lists them;
        where the best could not be told apart from others on held-out labels,
        "indistinguishable" lists them all (:func:`indistinguishable`), best mean first, and
        "best" is the cheapest of them; the runner-up is then the best-ranked other curve.
    """
    groups = _group(results)
    out = {}
    for budget in budgets:
        ranked, tied = choose(summary, groups, budget)
        if not ranked:
            entry = {"best": None, "reason": NO_SELECTION, "selection_score": None,
                     headline: None, "runner_up": None, "vs_runner_up": None}
        else:
            best = ranked[0]
            entry = {"best": best, "selection_score": summary[best][budget]["selection_score"],
                     headline: summary[best][budget][headline],
                     "runner_up": ranked[1] if len(ranked) > 1 else None, "vs_runner_up": None}
            if len(tied) > 1:  # the labels could not tell these apart: the cheapest went
                entry["indistinguishable"] = tied
            run_here = [c for c in summary if budget in summary[c]]
            if len(ranked) < len(run_here):  # e.g. 1 label per class: only the curves that
                # read no target label have a score (on every budget label); say among which
                entry["chosen_among"] = ranked
            if entry["runner_up"]:
                runner = entry["runner_up"]
                entry["runner_up_selection_score"] = summary[runner][budget]["selection_score"]
                entry["vs_runner_up"] = paired_difference(groups[best][budget],
                                                          groups[runner][budget], p)
        if len(ranked) > 1:  # with one scored curve there is nothing to have chosen wrong
            entry["selection_accuracy"] = selection_accuracy(summary, groups, ranked, budget,
                                                             headline)
        realised = {c.split("/")[0]: summary[c][budget][headline]["mean"]
                    for c in summary if c.endswith(f"/{JUDGES[0]}") and budget in summary[c]}
        right = max(realised, key=lambda s: (realised[s], s)) if realised else None
        entry["best_source_by_finetune"] = right
        entry["score_picks"] = {s: {"source": pick, "correct": pick is not None and pick == right}
                                for s, pick in transfer["picks"].get(budget, {}).items()}
        out[budget] = entry
    return out
