"""The pipeline's report: what was run, what to use at each label budget and why, what transfer
costs, and where every number came from.

Every number is read from evaluate's outputs, the source models' metrics, the manifests or the
params; nothing is recomputed here. The sections are built once as plain blocks (paragraphs,
tables, figures) and rendered twice: to Markdown and to one self-contained HTML file.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from transferlab import figures
from transferlab.datasets import DataError
from transferlab.params import STRATEGIES, Params

TITLE = "Transfer learning report"
SECTIONS = ("What was run", "Recommendation per label budget", "Accuracy per curve and budget",
            "Transfer gain over scratch", "Label efficiency", "Transferability",
            "What transfer costs and breaks", "Source models", "Skipped runs", "Provenance")
NA = "n/a"
MISSING = "—"  # no run at this curve and budget
VERDICT_MARKERS = {"positive transfer": "▲", "negative transfer": "▼",
                   "no detectable effect": "○"}
PLOT_COLUMNS = {
    "learning_curves": ("curve", "budget", "labels_per_class", "accuracy", "ci_low", "ci_high"),
    "gain": ("curve", "budget", "labels_per_class", "gain", "ci_low", "ci_high"),
    "confusion": ("actual", "predicted"),
    "reliability": ("curve", "lower", "upper", "count", "confidence", "accuracy"),
    "per_curve": ("curve", "accuracy", "shifted_accuracy", "shift_gap", "ece", "brier",
                  "log_loss", "forgetting", "trainable_params", "train_flops"),
    "transferability": ("source", "budget", "score", "value", "finetune_accuracy"),
}
EVALUATE_KEYS = ("summary", "label_efficiency", "transferability", "recommendations")


class ReportInputError(DataError):
    """A report input is missing or malformed; the message names the path."""


# ---------------------------------------------------------------------------------- blocks
@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Image:
    name: str  # file name under figures/
    caption: str


@dataclass(frozen=True)
class Code:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Subheading:
    text: str


Block = str | Table | Image | Code | Bullets | Subheading


@dataclass(frozen=True)
class Section:
    title: str
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class ReportInputs:
    evaluate: dict  # metrics/evaluate.json
    runs: pd.DataFrame  # metrics/runs.csv
    compute: dict  # metrics/compute.json
    plots: dict[str, pd.DataFrame]  # plots/<name>.csv
    models: dict[str, dict]  # source -> models/<source>/metrics.json
    target: dict  # data/prepared/target/manifest.json
    sources: dict[str, dict]  # source -> data/prepared/sources/<source>/manifest.json


# ---------------------------------------------------------------------------------- inputs
def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise ReportInputError(f"{path}: report input not found")
    try:  # NaN (older evaluate outputs) and null both load; both print as n/a
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ReportInputError(f"{path}: not valid JSON ({err})") from None


def _read_csv(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    if not path.is_file():
        raise ReportInputError(f"{path}: report input not found")
    try:  # budgets mix numbers and "all"; class names stay names
        df = pd.read_csv(path, dtype={"budget": str, "actual": str, "predicted": str})
    except pd.errors.EmptyDataError:  # a table with no rows is written as an empty file
        return pd.DataFrame(columns=list(columns))
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ReportInputError(f"{path}: missing column(s) {', '.join(missing)}")
    return df


def load_inputs(metrics: str | Path, runs_table: str | Path, compute: str | Path,
                plots: str | Path, models: str | Path, data: str | Path,
                sources: Sequence[str]) -> ReportInputs:
    """Read every file the report draws from, failing with the path of the first missing one.

    Args:
        metrics, runs_table, compute: evaluate's JSON metrics, per-run CSV and wall-time JSON.
        plots: evaluate's directory of plot CSVs.
        models: the source models' root (``<source>/metrics.json``).
        data: the prepared data root (``target/`` and ``sources/<source>/`` manifests).
        sources: the source names from ``prepare.sources``.
    Returns:
        The loaded :class:`ReportInputs`.
    Raises:
        ReportInputError: naming the missing or malformed file.
    """
    evaluate = _read_json(Path(metrics))
    absent = [k for k in EVALUATE_KEYS if k not in evaluate]
    if absent:
        raise ReportInputError(f"{metrics}: missing key(s) {', '.join(absent)}")
    return ReportInputs(
        evaluate=evaluate,
        runs=_read_csv(Path(runs_table), ("source", "strategy", "budget", "seed", "curve")),
        compute=_read_json(Path(compute)),
        plots={n: _read_csv(Path(plots) / f"{n}.csv", c) for n, c in PLOT_COLUMNS.items()},
        models={s: _read_json(Path(models) / s / "metrics.json") for s in sorted(sources)},
        target=_read_json(Path(data) / "target" / "manifest.json"),
        sources={s: _read_json(Path(data) / "sources" / s / "manifest.json")
                 for s in sorted(sources)},
    )


# ------------------------------------------------------------------------------ formatting
def number(x: Any) -> float | None:
    """``x`` as a finite float, or None for null, NaN, infinities and non-numbers."""
    if x is None or isinstance(x, (bool, str)):
        return None
    value = float(x)
    return value if math.isfinite(value) else None


def f3(x: Any, signed: bool = False) -> str:
    """Accuracies, differences, p-values, calibration errors: three decimals (n/a if undefined)."""
    v = number(x)
    if v is None:
        return NA
    v = round(v, 3) + 0.0  # + 0.0 turns -0.0 into 0.0
    return f"{v:+.3f}" if signed else f"{v:.3f}"


def ci(low: Any, high: Any) -> str:
    return NA if number(low) is None and number(high) is None else f"[{f3(low)}, {f3(high)}]"


def seconds(x: Any) -> str:
    """Wall time in seconds: three decimals, like every other measured quantity."""
    v = number(x)
    return NA if v is None else f"{v:.3f}"


def flops(x: Any) -> str:
    """FLOPs: three significant digits in scientific notation (0 stays 0)."""
    v = number(x)
    return NA if v is None else "0" if v == 0 else f"{v:.2e}"


def integer(x: Any) -> str:
    v = number(x)
    return NA if v is None else f"{int(v):,}"


def _curve_key(curve: str) -> tuple:
    if curve == "scratch":
        return ("",)
    source, _, strategy = curve.partition("/")
    return (source, STRATEGIES.index(strategy) if strategy in STRATEGIES else 99, strategy)


def ordered_curves(curves: Any) -> list[str]:
    """Scratch first (the baseline), then by source, then strategies from least to most trained."""
    return sorted(set(curves), key=_curve_key)


def _budgets(params: Params) -> list[str]:
    return [str(b) for b in params.prepare.budgets]


# ------------------------------------------------------------------------------- rendering
def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(sections: Sequence[Section]) -> str:
    """The report as Markdown; figures are referenced as ``figures/<name>``."""
    out = [f"# {TITLE}", ""]
    for section in sections:
        out += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Table):
                out.append("| " + " | ".join(map(_md_cell, block.header)) + " |")
                out.append("|" + "---|" * len(block.header))
                out += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in block.rows]
            elif isinstance(block, Image):
                out += [f"![{block.caption}](figures/{block.name})", "", f"*{block.caption}*"]
            elif isinstance(block, Code):
                out += ["```yaml", block.text.rstrip("\n"), "```"]
            elif isinstance(block, Bullets):
                out += [f"- {item}" for item in block.items]
            elif isinstance(block, Subheading):
                out.append(f"### {block.text}")
            else:
                out.append(block)
            out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def _inline(text: str) -> str:
    """Escape, then the two inline Markdown forms the report uses: `code` and **bold**."""
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


_CSS = """body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:72rem;
margin:2rem auto;padding:0 1rem;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:0.5rem 0 1rem;font-size:0.85rem}
th,td{border:1px solid #ccc;padding:0.2rem 0.5rem;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f2f2f2}
figure{margin:1rem 0}img{max-width:100%}figcaption{font-style:italic;color:#555}
pre{background:#f6f6f6;padding:0.6rem;overflow-x:auto;font-size:0.8rem}
code{background:#f3f3f3;padding:0 0.2rem}nav a{margin-right:0.8rem}"""


def _anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def render_html(sections: Sequence[Section], figure_dir: str | Path) -> str:
    """The report as one HTML file: inline CSS, figures embedded as base64 PNG data URIs."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(TITLE)}</title><style>{_CSS}</style></head><body>",
           f"<h1>{html.escape(TITLE)}</h1>", "<nav>" + "".join(
               f'<a href="#{_anchor(s.title)}">{html.escape(s.title)}</a>' for s in sections)
           + "</nav>"]
    for section in sections:
        out.append(f'<h2 id="{_anchor(section.title)}">{html.escape(section.title)}</h2>')
        for block in section.blocks:
            if isinstance(block, Table):
                out.append("<table><thead><tr>" + "".join(
                    f"<th>{_inline(h)}</th>" for h in block.header) + "</tr></thead><tbody>")
                out += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>"
                        for row in block.rows]
                out.append("</tbody></table>")
            elif isinstance(block, Image):
                data = base64.b64encode((Path(figure_dir) / block.name).read_bytes()).decode()
                out.append(f'<figure><img alt="{html.escape(block.caption.replace("`", ""))}" '
                           f'src="data:image/png;base64,{data}">'
                           f"<figcaption>{_inline(block.caption)}</figcaption></figure>")
            elif isinstance(block, Code):
                out.append(f"<pre><code>{html.escape(block.text)}</code></pre>")
            elif isinstance(block, Bullets):
                out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in block.items)
                           + "</ul>")
            elif isinstance(block, Subheading):
                out.append(f"<h3>{_inline(block.text)}</h3>")
            else:
                out.append(f"<p>{_inline(block)}</p>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------- driver
def write_report(out_dir: str | Path, inputs: ReportInputs, params: Params,
                 provenance: dict) -> dict[str, Path]:
    """Draw the figures and write ``report.md``, ``report.html`` and ``figures/*.png``.

    Args:
        out_dir: the report directory (created if absent).
        inputs: from :func:`load_inputs`.
        params: the validated params the pipeline ran with.
        provenance: from :func:`transferlab.provenance.collect_provenance`.
    Returns:
        {"markdown": path, "html": path, "figures": figures directory}.
    """
    out = Path(out_dir)
    figure_dir = out / "figures"
    sections = build_sections(inputs, params, provenance, draw_figures(inputs, params,
                                                                       figure_dir))
    md, page = out / "report.md", out / "report.html"
    md.write_text(render_markdown(sections), encoding="utf-8")
    page.write_text(render_html(sections, figure_dir), encoding="utf-8")
    return {"markdown": md, "html": page, "figures": figure_dir}


def draw_figures(inputs: ReportInputs, params: Params, folder: Path) -> dict[str, str]:
    """Every figure of the report, drawn into ``folder``; returns {key: file name}."""
    plots, largest = inputs.plots, _budgets(params)[-1]
    styles = figures.curve_styles(
        list(plots["learning_curves"]["curve"]) + list(plots["per_curve"]["curve"]))
    best = inputs.evaluate["recommendations"].get(largest, {}).get("best", NA)
    transfer = plots["transferability"]
    drawn = {
        "learning_curves": figures.learning_curves(plots["learning_curves"],
                                                   folder / "learning_curves.png", styles),
        "gain": figures.transfer_gain(plots["gain"], folder / "gain.png", styles),
        "confusion": figures.confusion_matrix(
            plots["confusion"], folder / "confusion.png",
            f"{best}, first seed, {_budget_label(largest, inputs.target)}",
            inputs.target.get("class_names")),
        "transferability": figures.transferability(
            transfer[transfer["budget"] == largest],
            inputs.evaluate["transferability"].get("agreement", {}).get(largest, {}),
            folder / "transferability.png"),
        "reliability": figures.reliability(plots["reliability"], folder / "reliability.png"),
        "shift": figures.shift(plots["per_curve"], folder / "shift.png"),
        "compute": figures.compute(plots["per_curve"], folder / "compute.png", styles),
    }
    return {key: path.name for key, path in drawn.items()}


# -------------------------------------------------------------------------------- sections
def build_sections(inputs: ReportInputs, params: Params, provenance: dict,
                   figure_names: dict[str, str]) -> tuple[Section, ...]:
    """The report's sections in order, titled as in :data:`SECTIONS`."""
    ev, fig = inputs.evaluate, figure_names
    contents = (
        _what_was_run(inputs, params),
        _recommendations(ev, inputs.target, params, fig),
        _accuracy(ev, params, fig),
        _gain(ev, params, fig),
        _label_efficiency(ev, params),
        _transferability(ev, inputs.compute, params, fig),
        _costs(inputs, params, fig),
        _source_models(inputs, params),
        _skipped(ev),
        _provenance(provenance),
    )
    return tuple(Section(title, tuple(blocks)) for title, blocks in zip(SECTIONS, contents,
                                                                        strict=True))


def _join(items: Any) -> str:
    items = list(items)
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else "".join(items)


def _all_labels_per_class(target: dict) -> float | None:
    classes, train = target.get("class_names") or [], target.get("counts", {}).get("train", {})
    return sum(train.values()) / len(classes) if classes and train else None


def _budget_label(budget: str, target: dict) -> str:
    if budget == "all":
        lpc = _all_labels_per_class(target)
        return "all labels" + (f" ({lpc:.1f} per class on average)" if lpc else "")
    return f"{budget} label{'' if budget == '1' else 's'} per class"


def _confidence(params: Params) -> str:
    return f"{params.evaluate.confidence:.0%}"


def _scores_in_order(keys: Any) -> list[str]:
    keys = set(keys)
    return [s for s in figures.SCORE_LABELS if s in keys] + sorted(keys - set(figures.SCORE_LABELS))


def _what_was_run(inputs: ReportInputs, params: Params) -> list[Block]:
    p, t = params.prepare, inputs.target
    counts = t.get("counts", {})
    sources = []
    for name in sorted(p.sources):
        manifest, kind = inputs.sources[name], p.sources[name].kind
        if kind == "none":
            sources.append(f"`{name}` (no source data: the untrained network)")
        else:
            aligned = ", classes aligned with the target's" if manifest.get("aligned") else ""
            sources.append(f"`{name}` ({kind}, {len(manifest.get('class_names', []))} "
                           f"classes{aligned})")
    budgets = [_budget_label(b, t).removesuffix(" per class").removesuffix(" labels")
               .removesuffix(" label") for b in _budgets(params)]
    return [
        f"Target: `{p.target.kind}` ({len(t.get('class_names', []))} classes, "
        f"{'×'.join(map(str, t.get('image_shape', [])))} pixels; a labelled pool of "
        f"{sum(counts.get('train', {}).values()):,} training images, "
        f"{sum(counts.get('test', {}).values()):,} test images). Candidate sources: "
        f"{_join(sources)}. Each source network ({params.pretrain.arch}, width "
        f"{params.pretrain.width}, init {params.pretrain.init}) is transferred with "
        f"{_join(f'`{s}`' for s in STRATEGIES if s != 'scratch')}, and compared with `scratch`,"
        f" the same network trained on the target alone. Label budgets (labels per class): "
        f"{_join(budgets)}; seeds {_join(map(str, params.common.seeds))}. The runs table holds "
        f"{len(inputs.runs):,} evaluated runs over {inputs.runs['curve'].nunique()} curves. "
        f"Intervals are {_confidence(params)} confidence intervals; transfer gains are paired by"
        f" seed and bootstrapped over seeds and test examples ({params.evaluate.n_boot:,} "
        f"replicates)."
    ]


def _recommendations(ev: dict, target: dict, params: Params, fig: dict) -> list[Block]:
    blocks: list[Block] = [
        "Per label budget, the curve (`<source>/<strategy>` or `scratch`) with the highest mean "
        f"test accuracy over seeds. Accuracy intervals are {_confidence(params)} Student t "
        "intervals over seeds (with few seeds they can reach beyond [0, 1]); the comparison "
        "with the runner-up is a paired bootstrap over seeds and test examples."]
    for budget in _budgets(params):
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
        blocks += [Subheading(_budget_label(budget, target)), Bullets(tuple(items))]
    largest = _budgets(params)[-1]
    best = ev["recommendations"].get(largest, {}).get("best", NA)
    blocks.append(Image(fig["confusion"], f"Confusion matrix of `{best}`, first seed, "
                        f"trained with {_budget_label(largest, target)}: counts, coloured by "
                        "fraction of the actual class."))
    return blocks


def _accuracy(ev: dict, params: Params, fig: dict) -> list[Block]:
    summary, budgets = ev["summary"], _budgets(params)
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
                  f"class (log scale), {_confidence(params)} CI bands clipped to [0, 1].")]


def _gain(ev: dict, params: Params, fig: dict) -> list[Block]:
    rows = []
    for curve in ordered_curves(ev["summary"]):
        for budget in _budgets(params):
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
        Table(("Curve", "Budget", "Gain", f"{_confidence(params)} CI", "p (bootstrap)",
               "p (paired t)", "Verdict"), tuple(rows)),
        Image(fig["gain"], "Transfer gain over scratch with its CI, per curve and budget."),
    ]


def _label_efficiency(ev: dict, params: Params) -> list[Block]:
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


def _transferability(ev: dict, compute: dict, params: Params, fig: dict) -> list[Block]:
    t, budgets = ev["transferability"], _budgets(params)
    scores = t.get("scores") or {}
    names = _scores_in_order({s for by_b in scores.values() for v in by_b.values() for s in v})
    labels = [figures.SCORE_LABELS.get(s, s) for s in names]
    score_rows = tuple((src, b, *(f3(scores[src][b].get(s)) for s in names))
                       for src in sorted(scores) for b in budgets if b in scores[src])
    agree_rows = []
    for b in budgets:
        for s in _scores_in_order((t.get("agreement") or {}).get(b, {})):
            a = t["agreement"][b][s]
            agree_rows.append((b, figures.SCORE_LABELS.get(s, s), *(
                f3((a.get(strategy) or {}).get(k)) for strategy in ("finetune", "linear_probe")
                for k in ("kendall_tau", "weighted_tau", "pearson_r"))))
    fractions = compute.get("transferability_fraction_of_finetune") or {}
    cost_rows = tuple((src, *(f3((fractions.get(src) or {}).get(b)) for b in budgets))
                      for src in sorted(params.prepare.sources))
    return [
        "Mean score per source and budget over seeds (higher predicts better transfer); n/a "
        "where a score is undefined for the source.",
        Table(("Source", "Budget", *labels), score_rows),
        "Rank agreement of each score with the sources' realised accuracy (finetune and linear "
        "probe); n/a where undefined (fewer than two sources with both a score and an accuracy, "
        "or a constant side).",
        Table(("Budget", "Score", "Kendall τ (finetune)", "weighted τ (finetune)",
               "Pearson r (finetune)", "Kendall τ (linear probe)", "weighted τ (linear probe)",
               "Pearson r (linear probe)"), tuple(agree_rows)),
        "Time to compute the four scores, as a fraction of one finetune run at the same budget and "
        "seed (n/a where the source has no finetune run).",
        Table(("Source", *budgets), cost_rows),
        Image(fig["transferability"], "Score against realised finetune accuracy, largest "
              f"budget ({budgets[-1]}); Kendall τ in each panel's title."),
    ]


def _costs(inputs: ReportInputs, params: Params, fig: dict) -> list[Block]:
    e, per_curve = params.evaluate, inputs.plots["per_curve"].set_index("curve")
    timing = inputs.compute.get("curves") or {}
    rows = []
    for curve in ordered_curves(per_curve.index):
        r = per_curve.loc[curve]
        rows.append((curve, f3(r["accuracy"]), f3(r["shifted_accuracy"]), f3(r["shift_gap"]),
                     f3(r["forgetting"]), f3(r["ece"]), f3(r["brier"]), f3(r["log_loss"]),
                     integer(r["trainable_params"]), flops(r["train_flops"]),
                     seconds((timing.get(curve) or {}).get("seconds_per_run"))))
    return [
        f"At the largest budget: {_budget_label(_budgets(params)[-1], inputs.target)}; means over"
        " seeds. Shifted: the test set with Gaussian pixel noise (std "
        f"{e.shift_noise_std:g}), blur (sigma {e.shift_blur_sigma:g} px) and rotation (up to "
        f"{e.shift_rotation_deg:g}°); shift gap = accuracy - shifted accuracy. Forgetting: source"
        " test accuracy before minus after transfer, adapted backbone under the source head "
        "(positive = the source task got worse; n/a where no source backbone was adapted). NLL "
        "is the log loss. Wall time per run comes from metrics/compute.json and is not "
        "reproducible.",
        Table(("Curve", "Accuracy", "Shifted accuracy", "Shift gap", "Forgetting", "ECE",
               "Brier", "NLL", "Trainable params", "Train FLOPs", "Seconds per run"),
              tuple(rows)),
        Image(fig["shift"], "In-distribution against shifted test accuracy per curve."),
        Image(fig["reliability"], "Reliability diagrams: accuracy per confidence bin (seeds "
              "pooled); the dashed diagonal is perfect calibration."),
        Image(fig["compute"], "Accuracy against training FLOPs per run."),
    ]


def _source_models(inputs: ReportInputs, params: Params) -> list[Block]:
    pretrain = inputs.compute.get("pretrain") or {}
    rows = []
    for name in sorted(params.prepare.sources):
        m = inputs.models[name]
        trained = m.get("trained", True)
        accuracy = f3((m.get("test") or {}).get("accuracy")) if trained else "untrained"
        rows.append((name, params.prepare.sources[name].kind, integer(m.get("num_classes")),
                     accuracy, seconds(pretrain.get(name))))
    return ["Each source network on its own test split, after pretraining.",
            Table(("Source", "Kind", "Classes", "Test accuracy", "Pretraining seconds"),
                  tuple(rows))]


def _skipped(ev: dict) -> list[Block]:
    skipped = ev.get("skipped") or {}
    if not skipped:
        return ["No run was skipped."]
    return [f"{len(skipped)} curve(s) were not run:",
            Bullets(tuple(f"`{k}`: {v}" for k, v in sorted(skipped.items())))]


def _provenance(prov: dict) -> list[Block]:
    git, params = prov["git"], prov["params"]
    commit = f"`{git['commit']}`" if git.get("commit") else f"none ({git.get('note')})"
    dirty = {True: "yes (tracked files differ from the commit)", False: "no"}.get(
        git.get("dirty"), NA)
    data = tuple((d["dataset"], d["file"], f"`{d['sha256']}`",
                  "yes" if d["matches_file"] else "**no**") for d in prov["data"])
    return [
        Bullets((f"Git commit: {commit}; uncommitted changes: {dirty}",
                 f"Device: {prov['device']}", f"Python: {prov['python']}",
                 f"Params file: `{params['path']}` (sha256 `{params['sha256']}`)")),
        Table(("Package", "Version"), tuple(sorted(prov["packages"].items()))),
        "Data: the sha256 each manifest records for its arrays, and whether the file on disk "
        "still matches it.",
        Table(("Dataset", "File", "sha256", "Matches file"), data),
        "The full params file:",
        Code(params["text"]),
        f"To reproduce: {prov['reproduce']}",
    ]
