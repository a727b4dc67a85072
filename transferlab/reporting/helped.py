"""The report's "What helped" section: each adaptation method's gain over the plain reference
adaptation of the same source, per label budget, what the held-out labels chose, and what each
method's in-stage search saw. Every number comes from the ``what_helped`` block of
``metrics/evaluate.json`` (:mod:`transferlab.evaluation.helped`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from transferlab.adapt import strategies
from transferlab.adapt.strategies.base import config_label
from transferlab.config.params import budget_order
from transferlab.reporting import figures
from transferlab.reporting.render import (
    NA,
    Block,
    Image,
    Subheading,
    Table,
    ci,
    f3,
    integer,
    number,
)

MARK = {"helped": "▲", "hurt": "▼", "no detectable difference": "○"}


@figures._styled
def helped_figure(block: dict, budgets: list[str], path: str | Path,
                  m: figures.Metric = figures.ACCURACY) -> Path:
    """Gain over the reference with its CI, per method and budget, one panel per source."""
    sources = [s for s, by_b in block.get("sources", {}).items()
               if any(e["methods"] for e in by_b.values())]
    if not sources:
        return figures._empty(path, "no method beside the reference adaptation was run")
    import matplotlib

    colours = matplotlib.colormaps["tab20"]  # 20 distinct colours: one per method
    fig, axes = figures._grid(len(sources), 1, (7.5, 3.2))
    for ax, source in zip(axes, sources, strict=True):
        by_budget = block["sources"][source]
        methods = sorted({m for e in by_budget.values() for m in e["methods"]}, key=_rank)
        for i, method in enumerate(methods):
            xs, ys, lo, hi = [], [], [], []
            for j, budget in enumerate(budgets):
                g = by_budget.get(budget, {}).get("methods", {}).get(method, {}).get("gain")
                if not g or g.get("diff") is None:
                    continue
                xs.append(j + (i - (len(methods) - 1) / 2) * 0.8 / max(len(methods), 1))
                ys.append(g["diff"])
                lo.append(max(0.0, g["diff"] - g["ci_low"]) if g.get("ci_low") is not None
                          else 0.0)
                hi.append(max(0.0, g["ci_high"] - g["diff"]) if g.get("ci_high") is not None
                          else 0.0)
            ls, marker = strategies.get(method).style if method in strategies.names() else (
                "-", "v")
            ax.errorbar(xs, ys, yerr=np.array([lo, hi]), capsize=3, marker=marker,
                        linestyle="none", label=method, color=colours(i % colours.N))
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(budgets)), budgets)
        ax.set(title=source, xlabel=f"labels per {m.group}",
               ylabel=f"{m.words} gain over {block['reference']}")
        figures._outside_legend(ax)
    return figures._save(fig, path)


def _rank(strategy: str) -> tuple:
    known = strategies.names()
    return (known.index(strategy) if strategy in known else len(known), strategy)


def _gain_cell(g: dict | None) -> str:
    if not g or g.get("diff") is None:
        return NA
    mde = number(g.get("mde")) if g.get("verdict") == "no detectable difference" else None
    return (f"{f3(g['diff'], signed=True)} {ci(g.get('ci_low'), g.get('ci_high'))} "
            f"{MARK.get(g.get('verdict'), '?')}" + (f" ≥{f3(mde, signed=True)}" if mde is not None
                                                     else "")
            + (" †" if mde is not None and g.get("interval_excludes_zero") else ""))


def helped_section(ev: dict, budgets: list[str], figure: str | None,
                   m: figures.Metric = figures.ACCURACY) -> list[Block]:
    """The blocks of the "What helped" section (``m``: the headline metric, accuracy or R²)."""
    block = ev.get("what_helped") or {}
    if not block.get("sources"):
        return ["No source ran the reference adaptation, so there is nothing to measure the "
                "methods against."]
    ref, stats = block["reference"], block["statistics"]
    out: list[Block] = [
        f"Each method's test {m.words} minus that of `{ref}` on the same source, budget and "
        f"seeds: the mean paired difference, its {1 - stats['alpha']:.0%} t interval over seeds "
        f"(not adjusted) and the verdict after {stats['multiplicity']} adjustment over this "
        f"family ({stats['family_size']} comparisons; α = {stats['alpha']:g}): "
        f"{MARK['helped']} helped, {MARK['hurt']} hurt, {MARK['no detectable difference']} no "
        "detectable difference, followed by the smallest gain this family would have called "
        f"with {round(100 * stats.get('power', 0.8))} % power (≥ +x), and † where the "
        "unadjusted interval excludes 0 all the same. A method that does not help is shown as "
        "such: the point of this table is to say where a method does not pay off. A variant "
        "of a method (its own params block with `strategy: <method>`, e.g. the source head "
        "kept) has a second row, `variant − method`: its gain over the method it varies, in "
        "the same family.",
        Image(figure, f"Gain over {ref} per method and budget, {1 - stats['alpha']:.0%} "
              "intervals over seeds."),
    ]
    for source, by_budget in block["sources"].items():
        methods = sorted({m for e in by_budget.values() for m in e["methods"]}, key=_rank)
        if not methods:
            continue
        out.append(Subheading(source))
        rows = [(f"{ref} (test {m.words})", *(f3((by_budget.get(b) or {}).get(
            f"reference_{m.key}", {}).get("mean")) for b in budgets), NA)]
        for method in methods:
            cells = [_gain_cell((by_budget.get(b) or {}).get("methods", {}).get(method, {})
                                .get("gain")) for b in budgets]
            params = next((e["methods"][method]["trainable_params"] for e in by_budget.values()
                           if method in e["methods"]), None)
            rows.append((method, *cells, integer(params)))
            against = [(by_budget.get(b) or {}).get("methods", {}).get(method, {}).get(
                "vs_base") for b in budgets]
            base = next((a["base"] for a in against if a), None)
            if base:  # a variant, against the strategy it varies (e.g. a fresh head)
                rows.append((f"{method} − {base}", *(_gain_cell(a) for a in against), NA))
        out.append(Table(("Method", *budgets, "Trainable params"), tuple(rows)))
        chosen_rows = []
        for b in budgets:
            e = by_budget.get(b)
            if not e:
                continue
            c = e.get("chosen")
            if not c:
                chosen_rows.append((b, "none", NA, NA, e.get("reason") or NA))
                continue
            configs = sorted({config_label(v) for v in c["configs"].values()})
            tied = [t for t in c.get("indistinguishable", []) if t != c["strategy"]]
            chosen_rows.append((b, c["strategy"] + (f" (tied with {', '.join(tied)}: the "
                                                    "cheapest)" if tied else ""),
                                f3(c["selection_score"].get("mean")),
                                f3(c[m.key].get("mean")), "; ".join(configs)))
        out += ["What the labels held out of each budget choose among this source's methods "
                "(mean selection score over seeds; methods within one standard error of the "
                "best tie, and the cheapest of them is chosen), the configuration its search "
                "chose per "
                f"seed, and its test {m.words}, read once after the choice.",
                Table(("Budget", "Chosen", "Selection score", f"Test {m.words}",
                       "Configuration(s)"), tuple(chosen_rows))]
        search_rows = []
        for method in methods:
            for b in budgets:
                s = (by_budget.get(b) or {}).get("methods", {}).get(method, {}).get("search")
                if s and len(s) > 1:
                    search_rows.append((method, b, "; ".join(f"{k}: {f3(v)}"
                                                             for k, v in sorted(s.items()))))
        if search_rows:
            out += [f"Held-out {m.words} of every candidate of each method's in-stage search "
                    "(mean over seeds): where a method tunes one block at a time, this shows "
                    "where the shift lives.",
                    Table(("Method", "Budget", "Candidates"), tuple(search_rows))]
    return out + privacy_blocks(ev)


def privacy_blocks(ev: dict) -> list[Block]:
    """The privacy that private runs spent (evaluate's ``privacy``) beside their test accuracy:
    the largest ε over seeds per curve and budget, at δ, with the noise multiplier, and the mean
    accuracy over seeds with its interval (accuracy against ε per budget); nothing when no run
    was private. A run without noise spent no privacy it could bound: ε is ∞."""
    block = ev.get("privacy") or {}
    if not block:
        return []
    summary = ev.get("summary") or {}

    def accuracy(curve: str, budget: str) -> str:
        acc = (summary.get(curve, {}).get(budget) or {}).get("accuracy") or {}
        return f"{f3(acc.get('mean'))} [{f3(acc.get('ci_low'))}, {f3(acc.get('ci_high'))}]"

    def epsilon(e: dict) -> str:
        return "∞ (no noise)" if number(e["epsilon"]) is None else f3(e["epsilon"])

    rows = tuple((curve, budget, epsilon(e), f"{e['dp_delta']:.3g}", f3(e["noise_multiplier"]),
                  accuracy(curve, budget))
                 for curve, by_budget in sorted(block.items())
                 for budget, e in sorted(by_budget.items(), key=lambda kv: budget_order(kv[0])))
    return ["Private runs (DP-SGD on the target labels): the privacy each spent, the largest ε "
            "over seeds at δ = 1 / the budget's labels, the noise multiplier it took, and its "
            "mean test accuracy over seeds with its interval. "
            "They choose nothing on the private labels (a fixed schedule), so their held-out "
            "score is undefined and they are never recommended on it; their gain over the "
            "non-private reference above is the cost of privacy at that ε.",
            Table(("Curve", "Budget", "ε", "δ", "Noise multiplier", "Test accuracy"), rows)]
