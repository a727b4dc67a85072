"""The report's results sections: which curve to use at each label budget, accuracy and transfer
gain per curve and budget, label efficiency, transferability scores, and what transfer costs.

Each function returns one section's blocks (see :mod:`transferlab.reporting.render`), built from
evaluate's
outputs and the params alone; nothing is recomputed here. The budget and curve helpers are shared
with the rest of the report in :mod:`transferlab.reporting.report`.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from transferlab.adapt import strategies
from transferlab.config.params import Params, seeds_at
from transferlab.core import tasks
from transferlab.data import modalities
from transferlab.reporting import figures
from transferlab.reporting.render import (
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
)

MISSING = "—"  # no run at this curve and budget
VERDICT_MARKERS = {"positive transfer": "▲", "negative transfer": "▼",
                   "no detectable effect": "○"}


# --------------------------------------------------------------------------------- helpers
def verdict_words(g: dict, headroom: float | None = None,
                  null: str = "no detectable effect") -> str:
    """A gain's verdict in words; beside a null one (``null``), what the design could have
    detected (its ``mde``; beyond ``headroom``, the largest gain the metric allows over the
    baseline, no possible gain was), and † where the unadjusted interval excludes 0 all the
    same."""
    words = g.get("verdict", NA)
    if words == null:
        mde = number(g.get("mde"))
        if mde is not None and headroom is not None and mde > headroom:
            words += f" (could detect no possible gain: it would take ≥ {f3(mde, signed=True)})"
        else:
            words += (f" (could detect ≥ {f3(mde, signed=True)})" if mde is not None
                      else f" ({g['mde_note']})" if g.get("mde_note") else "")
        if g.get("interval_excludes_zero"):
            words += " †"
    return words


def verdict_marker(g: dict) -> str:
    """The verdict's marker (▲ ▼ ○); a null one followed by its ``mde`` (≥ +0.098)."""
    mark = VERDICT_MARKERS.get(g.get("verdict"), "?")
    mde = number(g.get("mde")) if g.get("verdict") == "no detectable effect" else None
    return mark + (f" ≥{f3(mde, signed=True)}" if mde is not None else "")


def metric_of(ev: dict) -> figures.Metric:
    """The headline metric of evaluate's output: accuracy, or a regression's R² (its ``task``
    block; absent: classification)."""
    name = (ev.get("task") or {}).get("name")
    if not name:
        return figures.ACCURACY
    task = tasks.get(name)
    return figures.Metric(task.headline, task.headline_words, task.bounded, task.group)


def group_of(target: dict) -> str:
    """What a budget counts labels per: ``class``, or a regression's ``stratum``."""
    return tasks.of(target).group


def _curve_key(curve: str) -> tuple:
    if curve == figures.SCRATCH:
        return ("",)
    source, _, strategy = curve.partition("/")
    known = strategies.names()
    return (source, known.index(strategy) if strategy in known else len(known), strategy)


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
    """A budget in words ("2 labels per class", "all labels (... per class on average)"; a
    regression counts per stratum)."""
    group = group_of(target)
    if budget == "all":
        lpc = _all_labels_per_class(target)
        return "all labels" + (f" ({lpc:.1f} per {group} on average)" if lpc else "")
    return f"{budget} label{'' if budget == '1' else 's'} per {group}"


def confidence_level(params: Params) -> str:
    """The confidence level of every interval, as a percentage ("95%")."""
    return f"{params.evaluate.confidence:.0%}"


MULTIPLICITY_TEXT = {
    "holm": "Holm's step-down method, which keeps the family-wise error rate (the chance of any "
            "false verdict in the family) at most α",
    "bh": "the Benjamini-Hochberg method, which keeps the false discovery rate (the expected "
          "share of false verdicts among the positive and negative ones) at most α",
    "none": "no multiplicity adjustment: each verdict alone keeps its error rate α, the family "
            "does not",
}
MULTIPLICITY_SHORT = {"holm": "Holm", "bh": "BH", "none": "unadjusted"}


def multiplicity(ev: dict, params: Params) -> str:
    """The multiplicity method evaluate used (its statistics block; the params if absent)."""
    return (ev.get("statistics") or {}).get("multiplicity") or params.evaluate.multiplicity


def _alpha(ev: dict, params: Params) -> str:
    alpha = (ev.get("statistics") or {}).get("alpha", 1.0 - params.evaluate.confidence)
    return f"{alpha:.3g}"


def seeds_words(params: Params) -> str:
    """The replicate seeds, e.g. ``seeds 0, 1, 2, 3`` or, with ``prepare.seeds_per_budget``,
    ``seeds 0, 1, 2, 3 at every budget; 8 seeds (0 to 7) at budget 1``."""
    base = list(params.common.seeds)
    words = f"seeds {', '.join(map(str, base))}"
    more = [(b, s) for b, s in seeds_at(params).items() if len(s) > len(base)]
    if more:
        words += " at every budget; " + "; ".join(
            f"{len(s)} seeds ({', '.join(map(str, s))}) at budget {b}" for b, s in more)
    return words


def statistics_text(ev: dict, params: Params) -> str:
    """The methods paragraph on verdicts: unit of inference, test, multiplicity, what "no
    detectable effect" means."""
    stats, method = ev.get("statistics") or {}, multiplicity(ev, params)
    m = metric_of(ev)
    counts = sorted({len(v) for v in seeds_at(params).values()})
    seeds = " to ".join(map(str, (counts[0], counts[-1]) if len(counts) > 1 else counts))
    size = stats.get("family_size")
    family = (f"The {integer(size)} verdicts of this report" if size is not None
              else "The verdicts of this report")
    return (
        "The seed is the unit of inference: a transfer gain (and the recommended curve's margin "
        f"over its runner-up) is the per-seed test-{m.words} difference, paired by seed, with a "
        f"paired t test and t interval on S - 1 degrees of freedom (S = {seeds} seeds). {family} "
        "(every gain over scratch and every recommended curve against its runner-up"
        + (", and every head-to-head contrast" if ev.get("contrasts") else "") + ") form one "
        f"family, adjusted with {MULTIPLICITY_TEXT.get(method, method)}; α = "
        f"{_alpha(ev, params)}. A verdict is positive or negative transfer where the adjusted "
        "p-value is below α, by the sign of the mean difference; the intervals shown are not "
        "adjusted. \"No detectable effect\" means these seeds cannot tell the curve from "
        "scratch, not that the two are equal: with few seeds only large, seed-consistent "
        "differences are detected; the gain table says, beside each, what could have been."
        + (" At the `all` budget every seed trains on the whole pool, so its intervals carry "
           "the variance of initialisation and training order only, not that of drawing a "
           "labelled subset." if "all" in budget_keys(params) else ""))


def _scores_in_order(keys: Any) -> list[str]:
    keys = set(keys)
    return [s for s in figures.SCORE_LABELS if s in keys] + sorted(keys - set(figures.SCORE_LABELS))


def unstable_refits(ev: dict, params: Params) -> list[Block]:
    """The curves and budgets where a seed's refit on the whole budget ended on a training-loss
    spike (``selection.refit_loss_ratio``), with the seeds' spread of the test metric."""
    m = metric_of(ev)
    flagged = []
    for curve, by_budget in ev["summary"].items():
        for budget in budget_keys(params):
            u = (by_budget.get(budget) or {}).get("unstable_refits")
            if u:
                flagged.append(f"`{curve}` at {budget}: seed(s) {', '.join(map(str, u['seeds']))}"
                               f" of {u['n']}; test {m.words} SD over seeds {f3(u['sd'])}")
    if not flagged:
        return []
    return [Subheading("Unstable refits"),
            f"A refit whose last epoch's training loss is above "
            f"{params.selection.refit_loss_ratio:g} times the chosen epoch's (in the run that "
            "chose it) ended on a spike: its model is not the one the held-out labels scored. "
            "Read these curves' means with their spread.",
            Bullets(tuple(flagged))]


# -------------------------------------------------------------------------------- sections
# Each takes evaluate's metrics (``ev``), the params and ``fig`` ({figure key: file name}) as needed
def recommendations(ev: dict, target: dict, params: Params, fig: dict) -> list[Block]:
    """Per budget: the curve chosen by selection score (or why none is), its test accuracy, its
    margin over the runner-up, negative transfer, and the source each transferability score would
    have picked."""
    short = MULTIPLICITY_SHORT.get(multiplicity(ev, params), multiplicity(ev, params))
    m = metric_of(ev)
    bounds = " (with few seeds they can reach beyond [0, 1])" if m.bounded else ""
    blocks: list[Block] = [
        "Per label budget, the curve (`<source>/<strategy>` or `scratch`) with the highest mean "
        f"selection score over seeds: {m.words} on labels held out of that budget, so the test "
        "split plays no part in the choice. Curves whose mean selection score is within one "
        "standard error of the highest (of their per-seed difference, paired by seed: the "
        "one-standard-error rule) cannot be told apart on held-out labels; they are listed, "
        "and the cheapest of them is recommended (fewer trainable parameters, then fewer "
        f"training FLOPs, then the name). Its test {m.words} is measured once, after the choice. "
        f"{m.words[0].upper() + m.words[1:]} intervals are {confidence_level(params)} Student t "
        f"intervals over seeds{bounds}; the comparison with the runner-up (the best other curve "
        f"by selection score) is a paired t test over seeds on test {m.words}, its p-value "
        f"adjusted ({short}) together with every other verdict of the report."]
    for budget in budget_keys(params):
        r = ev["recommendations"].get(budget)
        if r is None:
            continue
        if r.get("best") is None:
            items = [f"No recommendation: {r.get('reason') or NA}."]
        else:
            acc, sel = r.get(m.key) or {}, r.get("selection_score") or {}
            items = [f"Best: `{r['best']}` with {m.words} **{f3(acc.get('mean'))}**, CI "
                     f"{ci(acc.get('ci_low'), acc.get('ci_high'))} (n = {integer(acc.get('n'))} "
                     f"seeds); chosen by selection score {f3(sel.get('mean'))} (mean over "
                     f"{integer(sel.get('n'))} seeds)."]
            tied = r.get("indistinguishable") or []
            if tied:
                items.append("Indistinguishable on held-out labels: "
                             + ", ".join(f"`{c}` ({f3(_sel_mean(ev, c, budget))})" for c in tied)
                             + f"; `{r['best']}` is the cheapest of them.")
            items.append(_runner_up(r, short))
            sa = r.get("selection_accuracy")
            if sa:
                verdict = ("it is the best on test" if sa["hit"] else
                           f"the best on test was `{sa['best_on_test']}`, "
                           f"{f3(sa['regret'])} higher")
                items.append(f"Selection accuracy (an audit on test, after the choice): among "
                             f"{sa['candidates']} scored curves {verdict}; per seed, the "
                             f"labels chose the seed's best curve in {sa['seed_hits']} of "
                             f"{sa['seeds']} seeds.")
            among = r.get("chosen_among")
            if among:
                items.append("Chosen among the curves with a selection score here only: "
                             f"{', '.join(f'`{c}`' for c in among)}. A curve that reads no "
                             "target label (the source as it is, AdaBN with the source head) "
                             "is scored on every label of the budget; a trained one needs "
                             f"{params.selection.min_labels_to_split} labels per class to hold "
                             "some out.")
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
                     f"finetune {m.words}: {f'`{right}`' if right else NA}): "
                     f"{', '.join(chosen) or NA}.")
        blocks += [Subheading(budget_label(budget, target)), Bullets(tuple(items))]
    audits = [r["selection_accuracy"] for r in ev["recommendations"].values()
              if r.get("selection_accuracy")]
    if audits:
        seeds = sum(a["seeds"] for a in audits)
        blocks.append(
            f"Selection accuracy over the budgets: the recommended curve was the best on test "
            f"at {sum(a['hit'] for a in audits)} of {len(audits)} budgets; per seed, "
            f"{sum(a['seed_hits'] for a in audits)} of {seeds} choices"
            + (f" ({sum(a['seed_hits'] for a in audits) / seeds:.0%})" if seeds else "")
            + f"; the mean shortfall of the recommended curve's test {m.words} below the best "
            f"was {f3(sum(a['regret'] for a in audits) / len(audits))} (0 where it hit).")
    blocks += unstable_refits(ev, params)
    largest = budget_keys(params)[-1]
    best = ev["recommendations"].get(largest, {}).get("best")
    shown = f"`{best}`" if best else "`scratch` (no curve is recommended at this budget)"
    if "predictions" in fig:  # a regression
        blocks.append(Image(fig["predictions"], f"Predicted against actual test targets of "
                            f"{shown}, first seed, trained with {budget_label(largest, target)}; "
                            "dashed: perfect prediction."))
        return blocks
    blocks.append(Image(fig["confusion"], f"Confusion matrix of {shown}, first seed, "
                        f"trained with {budget_label(largest, target)}: counts, coloured by "
                        "fraction of the actual class."))
    return blocks


def design_blocks(ev: dict, params: Params) -> list[Block]:
    """What this design can detect per budget, and the seeds a target gain would take."""
    design = (ev.get("statistics") or {}).get("design") or {}
    rows = tuple((b, integer(d["seeds"]), f3(d["median_sd"]), f3(d["mde"], signed=True),
                  integer(d["seeds_for_target"]) if d.get("seeds_for_target") else "> 10,000")
                 for b in budget_keys(params) if (d := design.get(b)))
    if not rows:
        return []
    target = f3(next(iter(design.values()))["target_effect"], signed=True)
    return [f"What this design can detect: per budget, the median over its gains of the "
            "standard deviation of the per-seed differences, the gain detectable at that spread "
            f"with {power_words(ev, params)} power at the family's marginal level "
            f"({_level_words(ev)}), and the seeds that would detect a gain of {target} so "
            "(`evaluate.target_effect`; the seeds of a budget are the design's cheapest "
            "lever where its runs are cheap).",
            Table(("Budget", "Seeds", "Median seed sd of a gain", "Detectable gain",
                   f"Seeds to detect {target}"), rows)]


def _level_words(ev: dict) -> str:
    """The family's marginal level and how many verdicts were made, e.g. ``α' = 0.0012, 3 of
    40 verdicts made``."""
    st = ev.get("statistics") or {}
    level = number(st.get("marginal_level"))
    return (f"α' = {level:.2g}, {st.get('rejected')} of {st.get('family_size')} verdicts made"
            if level is not None else NA)


def power_words(ev: dict, params: Params) -> str:
    """The power at which the minimum detectable effects are stated, e.g. ``80 %``."""
    power = (ev.get("statistics") or {}).get("power", params.evaluate.power)
    return f"{round(100 * power)} %"


def _sel_mean(ev: dict, curve: str, budget: str) -> Any:
    return ((ev["summary"].get(curve, {}).get(budget) or {}).get("selection_score") or {}).get(
        "mean")


def _runner_up(r: dict, short: str) -> str:
    if not r.get("runner_up"):
        return "No runner-up: only one curve has a selection score at this budget."
    v = r.get("vs_runner_up") or {}
    said = {"better": "significantly better", "worse": "significantly worse"}.get(
        v.get("verdict"), "no detectable difference")
    if number(v.get("mde")) is not None:
        said += f" (could detect ≥ {f3(v['mde'], signed=True)})"
    sel = (r.get("runner_up_selection_score") or {}).get("mean")
    note = f" ({v['note']})" if v.get("note") else ""
    return (f"Against the runner-up `{r['runner_up']}` (selection score {f3(sel)}): test "
            f"difference {f3(v.get('diff'), signed=True)}, CI "
            f"{ci(v.get('ci_low'), v.get('ci_high'))}, p = {f3(v.get('p_value'))}, adjusted p "
            f"({short}) = {f3(v.get('p_adjusted'))}: {said}{note}.")


def accuracy(ev: dict, params: Params, fig: dict) -> list[Block]:
    """Mean accuracy per curve and budget, marked with the verdict on its gain over scratch."""
    summary, budgets = ev["summary"], budget_keys(params)
    short = MULTIPLICITY_SHORT.get(multiplicity(ev, params), multiplicity(ev, params))
    m = metric_of(ev)
    rows = []
    for curve in ordered_curves(summary):
        cells = [curve]
        for budget in budgets:
            entry = summary[curve].get(budget)
            if not entry:
                cells.append(MISSING)
                continue
            acc = entry.get(m.key) or {}
            cell = f"{f3(acc.get('mean'))} ± {f3(acc.get('std'))}"
            if curve != figures.SCRATCH:
                cell += " " + verdict_marker(entry.get("gain") or {})
            cells.append(cell)
        rows.append(tuple(cells))
    legend = (f"Mean test {m.words} ± standard deviation over seeds; columns are labels per "
              f"{m.group}. "
              "Marker: the verdict on the gain over scratch at the same budget and seeds (paired t "
              f"over seeds, {short}-adjusted p against α = {_alpha(ev, params)}): "
              f"{VERDICT_MARKERS['positive transfer']} positive transfer, "
              f"{VERDICT_MARKERS['negative transfer']} negative transfer, "
              f"{VERDICT_MARKERS['no detectable effect']} no detectable effect, followed by the "
              f"smallest true gain this design would have called positive with "
              f"{power_words(ev, params)} power (≥ +x: a gain of x or more; docs/statistics.md); "
              f"{MISSING} not run.")
    return [legend, Table(("Curve", *budgets), tuple(rows)),
            Image(fig["learning_curves"], f"Learning curves: mean {m.words} against labels per "
                  f"{m.group} (log scale), {confidence_level(params)} CI bands"
                  + (" clipped to [0, 1]." if m.bounded else ".")),
            *contrast_blocks(ev, params)]


def contrast_blocks(ev: dict, params: Params) -> list[Block]:
    """The head-to-head questions (``evaluate.contrasts``): curve A minus curve B per budget,
    paired by seed, judged in the report's family."""
    if not ev.get("contrasts"):
        return []
    short = MULTIPLICITY_SHORT.get(multiplicity(ev, params), multiplicity(ev, params))
    m = metric_of(ev)
    rows = []
    for t in ev["contrasts"]:
        words = verdict_words(t, null="no detectable difference")
        rows.append((f"`{t['a']}`", f"`{t['b']}`", t["budget"], f3(t.get("diff"), signed=True),
                     ci(t.get("ci_low"), t.get("ci_high")), integer(t.get("n")),
                     f3(t.get("p_value")), f3(t.get("p_adjusted")),
                     words + (f" ({t['note']})" if t.get("note") else "")))
    return [
        Subheading("Head to head"),
        f"The questions this study asks of two curves (`evaluate.contrasts`): test {m.words} of "
        f"A minus that of B at the same budget, paired by seed; the {confidence_level(params)} "
        f"t interval is unadjusted, the verdict follows the {short}-adjusted p-value in the "
        "report's family. Beside 'no detectable difference', the difference the same design "
        f"would have found with {power_words(ev, params)} power.",
        Table(("A", "B", "Budget", "A − B", f"{confidence_level(params)} CI (unadjusted)",
               "Seeds", "p", f"p ({short})", "Verdict on A"), tuple(rows)),
    ]


def gain(ev: dict, params: Params, fig: dict) -> list[Block]:
    """Transfer gain over scratch per curve and budget: t interval, raw and adjusted p, verdict."""
    short = MULTIPLICITY_SHORT.get(multiplicity(ev, params), multiplicity(ev, params))
    m = metric_of(ev)
    rows = []
    for curve in ordered_curves(ev["summary"]):
        for budget in budget_keys(params):
            g = ev["summary"][curve].get(budget, {}).get("gain")
            if curve == figures.SCRATCH or not g:
                continue
            base = number(((ev["summary"].get(figures.SCRATCH, {}).get(budget) or {})
                           .get(m.key) or {}).get("mean"))
            headroom = 1.0 - base if m.bounded and base is not None else None
            verdict = verdict_words(g, headroom) + (f" ({g['note']})" if g.get("note") else "")
            rows.append((curve, budget, f3(g.get("diff"), signed=True),
                         ci(g.get("ci_low"), g.get("ci_high")), integer(g.get("n")),
                         f3(g.get("p_value")), f3(g.get("p_adjusted")), verdict))
    return [
        f"Test {m.words} of the curve minus that of scratch at the same budget, paired by seed. "
        + ("(R² of two models on one test set differ by their MSE difference divided by the "
           "test targets' variance: the same verdict as on MSE, with the sign reversed.) "
           if m.key == "r2" else "") +
        f"The {confidence_level(params)} t interval (S - 1 degrees of freedom, not adjusted) and "
        f"the paired t p-value treat the seed as the unit; the adjusted p-value ({short}) over "
        "the report's family of verdicts gives the verdict. So an interval can exclude 0 where "
        "the adjusted verdict finds nothing: such rows are marked †. Beside each 'no "
        "detectable effect', the gain the same design would have called positive with "
        f"{power_words(ev, params)} power, from the observed spread of the per-seed "
        f"differences at the family's marginal level ({_level_words(ev)}): an estimate, as the "
        "spread is.",
        Table(("Curve", "Budget", "Gain", f"{confidence_level(params)} CI (unadjusted)",
               "Seeds", "p", f"p ({short})", "Verdict"), tuple(rows)),
        *design_blocks(ev, params),
        Image(fig["gain"], "Transfer gain over scratch with its unadjusted t interval, per curve "
              "and budget; hollow markers: no detectable effect after the adjustment, †: the "
              "unadjusted interval excludes 0 where the adjusted verdict does not."),
        *fixed_blocks(ev),
    ]


def fixed_blocks(ev: dict) -> list[Block]:
    """Curves with the same predictions for every seed and budget (evaluate's
    ``fixed_predictions``): each against chance and against each other, per test example."""
    fx = ev.get("fixed_predictions")
    if not fx:
        return []
    short = MULTIPLICITY_SHORT.get(fx["multiplicity"], fx["multiplicity"])
    rows = [(f"`{c}`", "chance (the most frequent test class)", f3(t["accuracy"]),
             f3(t["chance"]), f3(t["diff"], signed=True), NA, f3(t["p_value"]),
             f3(t["p_adjusted"]), t["verdict"]) for c, t in fx["curves"].items()]
    rows += [(f"`{t['a']}`", f"`{t['b']}`", f3(fx["curves"][t["a"]]["accuracy"]),
              f3(fx["curves"][t["b"]]["accuracy"]), f3(t["diff"], signed=True),
              f"{t['only_a']} / {t['only_b']}", f3(t["p_value"]), f3(t["p_adjusted"]),
              t["verdict"]) for t in fx["pairs"]]
    return [
        "Curves whose test predictions are the same for every seed and budget (a prompt that "
        "reads no label, a source model as it is): "
        + ", ".join(f"`{c}`" for c in fx["curves"]) + ". Their per-seed differences have no "
        "spread, so the seed-paired test above cannot judge them against each other; here the "
        f"unit is the test example ({fx['n']} of them), and the question is about this model "
        "on texts like the test set: an exact binomial test against chance, McNemar's exact "
        "test between two of them (only A right / only B right: the discordant pairs), the "
        f"p-values adjusted ({short}) as one family apart from the seed-level one, at α = "
        f"{fx['alpha']:.2f}.",
        Table(("Curve (A)", "Against (B)", "A", "B", "A − B", "Only A / only B right", "p",
               f"p ({short})", "Verdict on A"), tuple(rows)),
    ]


def label_efficiency(ev: dict, params: Params) -> list[Block]:
    """Labels per class each curve needs to reach the target accuracy, and its AULC."""
    le, m = ev["label_efficiency"], metric_of(ev)
    target = f3(le.get(f"target_{m.key}"))
    rows = []
    for curve in ordered_curves(le.get("curves", {})):
        c = le["curves"][curve]
        labels = number(c.get("labels_to_reach"))
        reach = ("more than the largest budget" if not c.get("reached")
                 else NA if labels is None else f"{labels:.1f}")
        rows.append((curve, reach, f3(c.get("aulc"))))
    return [
        f"Labels per {m.group} each curve needs to reach {m.words} **{target}** "
        f"({params.evaluate.reach_fraction:g} of scratch's mean {m.words} at the largest "
        f"budget), interpolated linearly in log labels per {m.group}. AULC: area under the "
        f"learning curve over log10 labels per {m.group}, divided by that range (so in "
        f"{m.words} units).",
        Table(("Curve", f"Labels per {m.group} to reach {target}", "AULC"), tuple(rows)),
    ]


def _with_ci(a: dict, stat: str) -> str:
    """``tau [low, high]``, or ``tau`` alone where the interval is undefined."""
    interval = ci(a.get(f"{stat}_ci_low"), a.get(f"{stat}_ci_high"))
    return f3(a.get(f"{stat}_tau")) + ("" if interval == NA else f" {interval}")


def transferability(ev: dict, params: Params, fig: dict) -> list[Block]:
    """Transferability scores and their rank agreement with realised accuracy (their wall-clock
    cost is machine-specific: ``timing/summary.md``, :mod:`transferlab.reporting.costs`)."""
    t, budgets, m = ev["transferability"], budget_keys(params), metric_of(ev)
    scores = t.get("scores") or {}
    names = _scores_in_order({s for by_b in scores.values() for v in by_b.values() for s in v})
    labels = [figures.SCORE_LABELS.get(s, s) for s in names]
    score_rows = tuple((src, b, *(f3(scores[src][b].get(s)) for s in names))
                       for src in sorted(scores) for b in budgets if b in scores[src])
    agree_rows = []
    for b in budgets:
        for s in _scores_in_order((t.get("agreement") or {}).get(b, {})):
            a = t["agreement"][b][s]
            ft = a.get(strategies.by_role("reference")) or {}
            trust = ft.get("trusted")
            agree_rows.append((b, figures.SCORE_LABELS.get(s, s), integer(ft.get("n_sources")),
                               NA if trust is None else "yes" if trust
                               else f"no: {ft.get('untrusted_reason')}", *(
                _with_ci(x, k) for x in (ft, a.get(strategies.by_role("feature_probe")) or {})
                for k in ("kendall", "weighted"))))
    return [
        "Mean score per source and budget over seeds (higher predicts better transfer); n/a "
        "where a score is undefined for the source."
        + (" On a regression target only LogME is defined (the LogME of the numeric target, "
           "as thuml/LogME's regression mode); LEEP, NCE and H-score need class labels."
           if m.key == "r2" else ""),
        Table(("Source", "Budget", *labels), score_rows),
        f"Rank agreement of each score with the sources' realised mean {m.words} (finetune and "
        f"linear probe), with {confidence_level(params)} intervals over sources: Kendall τ by "
        "Fieller-Hartley-Pearson (var atanh τ = 0.437 / (n - 4)), weighted τ by a jackknife "
        "over sources (approximate, conservative at n ≈ 9); n/a with fewer than 5 sources or "
        "a constant side. The unit is the source: n sources give n points whatever the seeds. "
        "Trusted: whether the agreement is evidence at all. It needs 5 sources or more (with 3, "
        "τ can only be ±1 or ±1/3, and τ = 1 happens once in 6 by chance), and a score that "
        "can rank at this budget. Every score needs 2 labels "
        "in every class (with one, no two examples share a label and the score is blind to the "
        "labels: it rewards sources that merely spread the inputs apart, as an untrained "
        "network does); H-score also needs more examples than feature dimensions + 1 (below, "
        "the features fit any labelling). An untrusted τ is shown but is no evidence.",
        Table(("Budget", "Score", "Sources", "Trusted", "Kendall τ (finetune)",
               "weighted τ (finetune)", "Kendall τ (linear probe)",
               "weighted τ (linear probe)"), tuple(agree_rows)),
        Image(fig["ranking_tau"], f"Kendall and weighted τ against finetune {m.words} per budget "
              "with their intervals over sources; hollow markers: the score cannot be trusted "
              "there; dotted: TLlib's published mean weighted τ."),
        "For comparison (published, not measured here): TLlib's model-selection benchmark reports "
        "a mean weighted τ of 0.665 for LogME, 0.67 for H-score, 0.50 for NCE and 0.29 for LEEP "
        "(against finetuned accuracy). Compare them with the "
        "weighted τ against finetune at trusted budgets, and mind the intervals.",
        "The scores' time, as a fraction of one finetune run, is machine-specific: "
        "`timing/summary.md` after `make repro`.",
        Image(fig["transferability"], f"Score against realised finetune {m.words}, largest "
              f"budget ({budgets[-1]}); Kendall τ in each panel's title."),
    ]


def costs(per_curve: pd.DataFrame, target: dict, params: Params, fig: dict,
          m: figures.Metric = figures.ACCURACY) -> list[Block]:
    """Shift robustness, forgetting, calibration (a regression: MSE and MAE) and compute per
    curve at the largest budget."""
    e, by_curve = params.evaluate, per_curve.set_index("curve")
    if m.key != "accuracy":
        return _regression_costs(by_curve, target, params, fig, m)
    rows = []
    for curve in ordered_curves(by_curve.index):
        r = by_curve.loc[curve]
        rows.append((curve, f3(r["accuracy"]), f3(r["shifted_accuracy"]), f3(r["shift_gap"]),
                     f3(r["forgetting"]), f3(r["ece"]), f3(r["brier"]), f3(r["log_loss"]),
                     integer(r["trainable_params"]), flops(r["train_flops"])))
    return [
        f"At the largest budget: {budget_label(budget_keys(params)[-1], target)}; means over"
        f" seeds. Shifted: the test set with {modalities.of(target).shift_description(e)}; "
        "shift gap = accuracy - shifted accuracy. Forgetting: source"
        " test accuracy before minus after transfer, adapted backbone under the source head "
        "(positive = the source task got worse; n/a where no source backbone was adapted). NLL "
        "is the log loss. Wall time and memory are machine-specific and not part of this report: "
        "`timing/summary.md` after `make repro`, and the MLflow `pipeline` run.",
        Table(("Curve", "Accuracy", "Shifted accuracy", "Shift gap", "Forgetting", "ECE",
               "Brier", "NLL", "Trainable params", "Train FLOPs"),
              tuple(rows)),
        Image(fig["shift"], "In-distribution against shifted test accuracy per curve."),
        Image(fig["reliability"], "Reliability diagrams: accuracy per confidence bin (seeds "
              "pooled); the dashed diagonal is perfect calibration."),
        Image(fig["compute"], "Accuracy against training FLOPs per run."),
    ]


def _regression_costs(by_curve: pd.DataFrame, target: dict, params: Params, fig: dict,
                      m: figures.Metric) -> list[Block]:
    """:func:`costs` of a regression target: R², MSE and MAE in place of calibration."""
    rows = []
    for curve in ordered_curves(by_curve.index):
        r = by_curve.loc[curve]
        rows.append((curve, f3(r[m.key]), f3(r[f"shifted_{m.key}"]), f3(r["shift_gap"]),
                     f3(r["forgetting"]), number_text(r["mse"]), number_text(r["mae"]),
                     integer(r["trainable_params"]), flops(r["train_flops"])))
    return [
        f"At the largest budget: {budget_label(budget_keys(params)[-1], target)}; means over"
        f" seeds. Shifted: the test set with "
        f"{modalities.of(target).shift_description(params.evaluate)}; shift gap = {m.words} - "
        f"shifted {m.words}. MSE and MAE are in the target's units (squared for MSE). "
        "Forgetting: source test accuracy before minus after transfer, adapted backbone under "
        "the source head (positive = the source task got worse; n/a where no source backbone "
        "was adapted). Wall time and memory are machine-specific and not part of this report: "
        "`timing/summary.md` after `make repro`, and the MLflow `pipeline` run.",
        Table(("Curve", m.words, f"Shifted {m.words}", "Shift gap", "Forgetting", "MSE", "MAE",
               "Trainable params", "Train FLOPs"), tuple(rows)),
        Image(fig["shift"], f"In-distribution against shifted test {m.words} per curve."),
        Image(fig["compute"], f"{m.words} against training FLOPs per run."),
    ]


def number_text(value: Any) -> str:
    """A positive quantity in 4 significant digits (MSE in squared target units can be large)."""
    v = number(value)
    return NA if v is None else f"{v:.4g}"
