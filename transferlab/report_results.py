"""The report's results sections: which curve to use at each label budget, accuracy and transfer
gain per curve and budget, label efficiency, transferability scores, and what transfer costs.

Each function returns one section's blocks (see :mod:`transferlab.render`), built from evaluate's
outputs and the params alone; nothing is recomputed here. The budget and curve helpers are shared
with the rest of the report in :mod:`transferlab.report`.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from transferlab import figures
from transferlab.params import STRATEGIES, Params
from transferlab.render import (
    NA,
    Block,
    Bullets,
    Image,
    Subheading,
    Table,
    ci,
    f3,
    flops,
    integer,
    number,
    percent,
    seconds,
)

MISSING = "—"  # no run at this curve and budget
VERDICT_MARKERS = {"positive transfer": "▲", "negative transfer": "▼",
                   "no detectable effect": "○"}


# --------------------------------------------------------------------------------- helpers
def _curve_key(curve: str) -> tuple:
    if curve == "scratch":
        return ("",)
    source, _, strategy = curve.partition("/")
    return (source, STRATEGIES.index(strategy) if strategy in STRATEGIES else 99, strategy)


def ordered_curves(curves: Any) -> list[str]:
    """Scratch first (the baseline), then by source, then strategies from least to most trained."""
    return sorted(set(curves), key=_curve_key)


def budget_keys(params: Params) -> list[str]:
    """The label budgets as evaluate's keys ("2", "all"), smallest first."""
    return [str(b) for b in params.prepare.budgets]


def _all_labels_per_class(target: dict) -> float | None:
    classes, train = target.get("class_names") or [], target.get("counts", {}).get("train", {})
    return sum(train.values()) / len(classes) if classes and train else None


def budget_label(budget: str, target: dict) -> str:
    """A budget in words ("2 labels per class", "all labels (... per class on average)")."""
    if budget == "all":
        lpc = _all_labels_per_class(target)
        return "all labels" + (f" ({lpc:.1f} per class on average)" if lpc else "")
    return f"{budget} label{'' if budget == '1' else 's'} per class"


def confidence_level(params: Params) -> str:
    """The confidence level of every interval, as a percentage ("95%")."""
    return f"{params.evaluate.confidence:.0%}"


def _scores_in_order(keys: Any) -> list[str]:
    keys = set(keys)
    return [s for s in figures.SCORE_LABELS if s in keys] + sorted(keys - set(figures.SCORE_LABELS))


# -------------------------------------------------------------------------------- sections
# Each takes evaluate's metrics (``ev``), the params and ``fig`` ({figure key: file name}) as needed
def recommendations(ev: dict, target: dict, params: Params, fig: dict) -> list[Block]:
    """Per budget: the best curve, its margin over the runner-up, negative transfer, and the
    source each transferability score would have picked."""
    blocks: list[Block] = [
        "Per label budget, the curve (`<source>/<strategy>` or `scratch`) with the highest mean "
        f"test accuracy over seeds. Accuracy intervals are {confidence_level(params)} Student t "
        "intervals over seeds (with few seeds they can reach beyond [0, 1]); the comparison "
        "with the runner-up is a paired bootstrap over seeds and test examples."]
    for budget in budget_keys(params):
        r = ev["recommendations"].get(budget)
        if r is None:
            continue
        acc = r.get("accuracy") or {}
        items = [f"Best: `{r.get('best')}` with accuracy **{f3(acc.get('mean'))}**, CI "
                 f"{ci(acc.get('ci_low'), acc.get('ci_high'))} (n = {integer(acc.get('n'))} "
                 "seeds)."]
        if r.get("runner_up"):
            v = r.get("vs_runner_up") or {}
            better = "significantly" if r.get("significantly_better") else "not significantly"
            items.append(f"Against the runner-up `{r['runner_up']}`: difference "
                         f"{f3(v.get('diff'), signed=True)}, CI "
                         f"{ci(v.get('ci_low'), v.get('ci_high'))}, bootstrap p = "
                         f"{f3(v.get('p_value'))}: {better} better.")
        else:
            items.append("No runner-up: only one curve ran at this budget.")
        negative = r.get("negative_transfer") or []
        items.append("Negative transfer: " + (", ".join(f"`{c}`" for c in negative)
                                              if negative else "none found") + ".")
        right, picks = r.get("best_source_by_finetune"), r.get("score_picks") or {}
        chosen = []
        for score in _scores_in_order(picks):
            pick = picks[score] or {}
            verdict = ("right" if pick.get("correct") else "wrong") if right else NA
            chosen.append(f"{figures.SCORE_LABELS.get(score, score)} → "
                          + (f"`{pick['source']}` ({verdict})" if pick.get("source") else NA))
        items.append("Source picked by each transferability score (best source by realised "
                     f"finetune accuracy: {f'`{right}`' if right else NA}): "
                     f"{', '.join(chosen) or NA}.")
        blocks += [Subheading(budget_label(budget, target)), Bullets(tuple(items))]
    largest = budget_keys(params)[-1]
    best = ev["recommendations"].get(largest, {}).get("best", NA)
    blocks.append(Image(fig["confusion"], f"Confusion matrix of `{best}`, first seed, "
                        f"trained with {budget_label(largest, target)}: counts, coloured by "
                        "fraction of the actual class."))
    return blocks


def accuracy(ev: dict, params: Params, fig: dict) -> list[Block]:
    """Mean accuracy per curve and budget, marked with the verdict on its gain over scratch."""
    summary, budgets = ev["summary"], budget_keys(params)
    rows = []
    for curve in ordered_curves(summary):
        cells = [curve]
        for budget in budgets:
            entry = summary[curve].get(budget)
            if not entry:
                cells.append(MISSING)
                continue
            acc = entry.get("accuracy") or {}
            cell = f"{f3(acc.get('mean'))} ± {f3(acc.get('std'))}"
            if curve != "scratch":
                cell += " " + VERDICT_MARKERS.get((entry.get("gain") or {}).get("verdict"), "?")
            cells.append(cell)
        rows.append(tuple(cells))
    legend = ("Mean test accuracy ± standard deviation over seeds; columns are labels per class. "
              "Marker: the gain over scratch at the same budget and seeds (paired bootstrap CI): "
              f"{VERDICT_MARKERS['positive transfer']} positive transfer, "
              f"{VERDICT_MARKERS['negative transfer']} negative transfer, "
              f"{VERDICT_MARKERS['no detectable effect']} no detectable effect; {MISSING} not run.")
    return [legend, Table(("Curve", *budgets), tuple(rows)),
            Image(fig["learning_curves"], "Learning curves: mean accuracy against labels per "
                  f"class (log scale), {confidence_level(params)} CI bands clipped to [0, 1].")]


def gain(ev: dict, params: Params, fig: dict) -> list[Block]:
    """Transfer gain over scratch per curve and budget, with CI, p-values and verdict."""
    rows = []
    for curve in ordered_curves(ev["summary"]):
        for budget in budget_keys(params):
            g = ev["summary"][curve].get(budget, {}).get("gain")
            if curve == "scratch" or not g:
                continue
            verdict = g.get("verdict", NA) + (f" ({g['note']})" if g.get("note") else "")
            rows.append((curve, budget, f3(g.get("diff"), signed=True),
                         ci(g.get("ci_low"), g.get("ci_high")), f3(g.get("p_value")),
                         f3(g.get("t_p_value")), verdict))
    return [
        "Accuracy of the curve minus that of scratch at the same budget, paired by seed. CI and "
        "p-value from the paired bootstrap over seeds and test examples, which also gives the "
        "verdict; the paired t-test over seeds is shown beside it.",
        Table(("Curve", "Budget", "Gain", f"{confidence_level(params)} CI", "p (bootstrap)",
               "p (paired t)", "Verdict"), tuple(rows)),
        Image(fig["gain"], "Transfer gain over scratch with its CI, per curve and budget."),
    ]


def label_efficiency(ev: dict, params: Params) -> list[Block]:
    """Labels per class each curve needs to reach the target accuracy, and its AULC."""
    le = ev["label_efficiency"]
    target = f3(le.get("target_accuracy"))
    rows = []
    for curve in ordered_curves(le.get("curves", {})):
        c = le["curves"][curve]
        labels = number(c.get("labels_to_reach"))
        reach = ("more than the largest budget" if not c.get("reached")
                 else NA if labels is None else f"{labels:.1f}")
        rows.append((curve, reach, f3(c.get("aulc"))))
    return [
        f"Labels per class each curve needs to reach accuracy **{target}** "
        f"({params.evaluate.reach_fraction:g} of scratch's mean accuracy at the largest budget), "
        "interpolated linearly in log labels per class. AULC: area under the learning curve "
        "over log10 labels per class, divided by that range (so in accuracy units).",
        Table(("Curve", f"Labels per class to reach {target}", "AULC"), tuple(rows)),
    ]


def _with_ci(a: dict, stat: str) -> str:
    """``tau [low, high]``, or ``tau`` alone where the interval is undefined."""
    interval = ci(a.get(f"{stat}_ci_low"), a.get(f"{stat}_ci_high"))
    return f3(a.get(f"{stat}_tau")) + ("" if interval == NA else f" {interval}")


def transferability(ev: dict, compute: dict, params: Params, fig: dict) -> list[Block]:
    """Transferability scores, their rank agreement with realised accuracy, and their cost."""
    t, budgets = ev["transferability"], budget_keys(params)
    scores = t.get("scores") or {}
    names = _scores_in_order({s for by_b in scores.values() for v in by_b.values() for s in v})
    labels = [figures.SCORE_LABELS.get(s, s) for s in names]
    score_rows = tuple((src, b, *(f3(scores[src][b].get(s)) for s in names))
                       for src in sorted(scores) for b in budgets if b in scores[src])
    agree_rows = []
    for b in budgets:
        for s in _scores_in_order((t.get("agreement") or {}).get(b, {})):
            a = t["agreement"][b][s]
            ft = a.get("finetune") or {}
            trust = ft.get("trusted")
            agree_rows.append((b, figures.SCORE_LABELS.get(s, s), integer(ft.get("n_sources")),
                               NA if trust is None else "yes" if trust
                               else f"no: {ft.get('untrusted_reason')}", *(
                _with_ci(x, k) for x in (ft, a.get("linear_probe") or {})
                for k in ("kendall", "weighted"))))
    alone = compute.get("transferability_fraction_of_finetune") or {}
    with_features = compute.get("transferability_fraction_with_features") or {}
    cached = compute.get("transferability_features_cached") or {}
    cost_rows = tuple(
        (src, "linear probe's cache" if cached.get(src) else "own pass",
         *(f"{percent((alone.get(src) or {}).get(b))} / "
           f"{percent((with_features.get(src) or {}).get(b))}" for b in budgets))
        for src in sorted(params.prepare.sources))
    return [
        "Mean score per source and budget over seeds (higher predicts better transfer); n/a "
        "where a score is undefined for the source.",
        Table(("Source", "Budget", *labels), score_rows),
        "Rank agreement of each score with the sources' realised mean accuracy (finetune and "
        f"linear probe), with {confidence_level(params)} intervals over sources: Kendall τ by "
        "Fieller-Hartley-Pearson (var atanh τ = 0.437 / (n - 4)), weighted τ by a jackknife "
        "over sources (approximate, conservative at n ≈ 9); n/a with fewer than 5 sources or "
        "a constant side. The unit is the source: n sources give n points whatever the seeds. "
        "Trusted: whether the score can rank at this budget at all. Every score needs 2 labels "
        "in every class (with one, no two examples share a label and the score is blind to the "
        "labels: it rewards sources that merely spread the inputs apart, as an untrained "
        "network does); H-score also needs more examples than feature dimensions + 1 (below, "
        "the features fit any labelling). An untrusted τ is shown but is no evidence.",
        Table(("Budget", "Score", "Sources", "Trusted", "Kendall τ (finetune)",
               "weighted τ (finetune)", "Kendall τ (linear probe)",
               "weighted τ (linear probe)"), tuple(agree_rows)),
        Image(fig["ranking_tau"], "Kendall and weighted τ against finetune accuracy per budget "
              "with their intervals over sources; hollow markers: the score cannot be trusted "
              "there; dotted: TLlib's published mean weighted τ."),
        "For comparison (published, not measured here): TLlib's model-selection benchmark reports "
        "a mean weighted τ of 0.665 for LogME, 0.67 for H-score, 0.50 for NCE and 0.29 for LEEP "
        "(against finetuned accuracy). Compare them with the "
        "weighted τ against finetune at trusted budgets, and mind the intervals.",
        "Time to compute the four scores, as a fraction of one finetune run at the same budget and "
        "seed: the scores on the cached backbone features / the same plus the budget's share of "
        "the one backbone pass over the pool that computed them (n/a where the source has no "
        "finetune run). The linear probe caches those features for its own training, so the "
        "first figure is what the scores add to the pipeline.",
        Table(("Source", "Features from", *budgets), cost_rows),
        Image(fig["transferability"], "Score against realised finetune accuracy, largest "
              f"budget ({budgets[-1]}); Kendall τ in each panel's title."),
    ]


def _megabytes(x: Any, decimals: int = 0) -> str:
    return NA if x is None else f"{float(x) / 2**20:.{decimals}f}"


def costs(per_curve: pd.DataFrame, compute: dict, target: dict, params: Params,
          fig: dict) -> list[Block]:
    """Shift robustness, forgetting, calibration and compute per curve at the largest budget."""
    e, by_curve = params.evaluate, per_curve.set_index("curve")
    timing = compute.get("curves") or {}
    rows = []
    for curve in ordered_curves(by_curve.index):
        r, t = by_curve.loc[curve], timing.get(curve) or {}
        rows.append((curve, f3(r["accuracy"]), f3(r["shifted_accuracy"]), f3(r["shift_gap"]),
                     f3(r["forgetting"]), f3(r["ece"]), f3(r["brier"]), f3(r["log_loss"]),
                     integer(r["trainable_params"]), flops(r["train_flops"]),
                     seconds(t.get("seconds_per_run")), _megabytes(t.get("peak_bytes")),
                     _megabytes(t.get("peak_added_bytes"), 1)))
    return [
        f"At the largest budget: {budget_label(budget_keys(params)[-1], target)}; means over"
        " seeds. Shifted: the test set with Gaussian pixel noise (std "
        f"{e.shift_noise_std:g}), blur (sigma {e.shift_blur_sigma:g} px) and rotation (up to "
        f"{e.shift_rotation_deg:g}°); shift gap = accuracy - shifted accuracy. Forgetting: source"
        " test accuracy before minus after transfer, adapted backbone under the source head "
        "(positive = the source task got worse; n/a where no source backbone was adapted). NLL "
        "is the log loss. Wall time and memory come from metrics/compute.json and are not "
        "reproducible. Peak memory is the largest over the curve's runs of the process's peak "
        "resident memory during one run on CPU (Linux; elsewhere the process's lifetime "
        "peak), the peak allocated GPU memory on CUDA; on CPU most of it is the process itself "
        "(Python, torch, the data). Memory added is that peak minus the memory in use when the "
        "run started, the median over the curve's runs: what one run itself needed (on CPU, "
        "memory that an earlier run freed and this one reused does not count again).",
        Table(("Curve", "Accuracy", "Shifted accuracy", "Shift gap", "Forgetting", "ECE",
               "Brier", "NLL", "Trainable params", "Train FLOPs", "Seconds per run",
               "Peak memory (MB)", "Memory added (MB)"),
              tuple(rows)),
        Image(fig["shift"], "In-distribution against shifted test accuracy per curve."),
        Image(fig["reliability"], "Reliability diagrams: accuracy per confidence bin (seeds "
              "pooled); the dashed diagonal is perfect calibration."),
        Image(fig["compute"], "Accuracy against training FLOPs per run."),
    ]
