"""The pipeline's report: what was run, what to use at each label budget and why, what transfer
costs, and where every number came from.

Every number is read from evaluate's outputs, the source models' metrics, the manifests or the
params; nothing is recomputed here. This module loads those inputs, draws the figures and builds
the sections as plain blocks; the results sections are built in :mod:`transferlab.reporting.results`
and every section is rendered twice, to Markdown and to one self-contained HTML file, by
:mod:`transferlab.reporting.render`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from transferlab.config.params import Params, source_arch
from transferlab.core.errors import DataError
from transferlab.data import modalities
from transferlab.reporting import figures, results, similarity
from transferlab.reporting.helped import helped_figure, helped_section
from transferlab.reporting.render import (
    NA,
    Block,
    Bullets,
    Code,
    Section,
    Table,
    f3,
    integer,
    render_html,
    render_markdown,
)

SECTIONS = ("What was run", "Recommendation per label budget", "Accuracy per curve and budget",
            "Transfer gain over scratch", "What helped", "What transferred", "Label efficiency",
            "Transferability", "What transfer costs and breaks", "Data hygiene", "Source models",
            "Skipped runs", "Provenance")
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


def plot_columns(headline: str = "accuracy") -> dict[str, tuple[str, ...]]:
    """The plot tables the report reads and their columns: :data:`PLOT_COLUMNS`, or a
    regression's (``headline`` r2: predictions in place of the confusion and reliability
    tables, MSE and MAE in place of calibration)."""
    if headline == "accuracy":
        return PLOT_COLUMNS
    return {
        "learning_curves": ("curve", "budget", "labels_per_class", headline, "ci_low",
                            "ci_high"),
        "gain": PLOT_COLUMNS["gain"],
        "predictions": ("actual", "predicted"),
        "per_curve": ("curve", headline, f"shifted_{headline}", "shift_gap", "mse", "mae",
                      "forgetting", "trainable_params", "train_flops"),
        "transferability": ("source", "budget", "score", "value", f"finetune_{headline}"),
    }


class ReportInputError(DataError):
    """A report input is missing or malformed; the message names the path."""


@dataclass(frozen=True)
class ReportInputs:
    evaluate: dict  # metrics/evaluate.json
    runs: pd.DataFrame  # metrics/runs.csv
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


def load_inputs(metrics: str | Path, runs_table: str | Path, plots: str | Path,
                models: str | Path, data: str | Path, sources: Sequence[str]) -> ReportInputs:
    """Read every file the report draws from, failing with the path of the first missing one.

    Args:
        metrics, runs_table: evaluate's JSON metrics and per-run CSV.
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
        plots={n: _read_csv(Path(plots) / f"{n}.csv", c) for n, c in plot_columns(
            results.metric_of(evaluate).key).items()},
        models={s: _read_json(Path(models) / s / "metrics.json") for s in sorted(sources)},
        target=_read_json(Path(data) / "target" / "manifest.json"),
        sources={s: _read_json(Path(data) / "sources" / s / "manifest.json")
                 for s in sorted(sources)},
    )


# ---------------------------------------------------------------------------------- driver
def write_report(out_dir: str | Path, inputs: ReportInputs, params: Params,
                 provenance: dict) -> dict[str, Path]:
    """Draw the figures and write ``report.md``, ``report.html`` and ``figures/*.png``.

    Args:
        out_dir: the report directory (created if absent).
        inputs: from :func:`load_inputs`.
        params: the validated params the pipeline ran with.
        provenance: from :func:`transferlab.provenance.record.collect_provenance`.
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
    plots, largest = inputs.plots, results.budget_keys(params)[-1]
    m = results.metric_of(inputs.evaluate)
    styles = figures.curve_styles(
        list(plots["learning_curves"]["curve"]) + list(plots["per_curve"]["curve"]))
    best = inputs.evaluate["recommendations"].get(largest, {}).get("best") or figures.SCRATCH
    transfer = plots["transferability"]
    title = f"{best}, first seed, {results.budget_label(largest, inputs.target)}"
    drawn = {
        "learning_curves": figures.learning_curves(plots["learning_curves"],
                                                   folder / "learning_curves.png", styles, m),
        "gain": figures.transfer_gain(plots["gain"], folder / "gain.png", styles, m),
        "transferability": figures.transferability(
            transfer[transfer["budget"] == largest],
            inputs.evaluate["transferability"].get("agreement", {}).get(largest, {}),
            folder / "transferability.png", m),
        "ranking_tau": figures.ranking_tau(inputs.evaluate["transferability"].get("agreement", {}),
                                           results.budget_keys(params), folder / "ranking_tau.png",
                                           m),
        "shift": figures.shift(plots["per_curve"], folder / "shift.png", m),
        "compute": figures.compute(plots["per_curve"], folder / "compute.png", styles, m),
    }
    if "confusion" in plots:
        drawn["confusion"] = figures.confusion_matrix(
            plots["confusion"], folder / "confusion.png", title, inputs.target.get("class_names"))
        drawn["reliability"] = figures.reliability(plots["reliability"],
                                                   folder / "reliability.png")
    else:  # a regression
        drawn["predictions"] = figures.predictions(plots["predictions"],
                                                   folder / "predictions.png", title)
    helped = inputs.evaluate.get("what_helped") or {}
    if helped.get("sources"):  # a run with methods beside the reference
        drawn["helped"] = helped_figure(helped, results.budget_keys(params),
                                        folder / "helped.png", m)
    if (inputs.evaluate.get("what_transferred") or {}).get("curves"):
        drawn["what_transferred"] = similarity.heat_map(
            inputs.evaluate["what_transferred"], results.budget_keys(params),
            folder / "what_transferred.png")
    return {key: path.name for key, path in drawn.items()}


# -------------------------------------------------------------------------------- sections
def build_sections(inputs: ReportInputs, params: Params, provenance: dict,
                   figure_names: dict[str, str]) -> tuple[Section, ...]:
    """The report's sections in order, titled as in :data:`SECTIONS`."""
    ev, fig = inputs.evaluate, figure_names
    m = results.metric_of(ev)
    contents = (
        _what_was_run(inputs, params),
        results.recommendations(ev, inputs.target, params, fig),
        results.accuracy(ev, params, fig),
        results.gain(ev, params, fig),
        helped_section(ev, results.budget_keys(params), fig.get("helped"), m),
        similarity.section(ev, results.budget_keys(params), fig.get("what_transferred")),
        results.label_efficiency(ev, params),
        results.transferability(ev, params, fig),
        results.costs(inputs.plots["per_curve"], inputs.target, params, fig, m),
        _data_hygiene(ev, inputs.target, m.words),
        _source_models(inputs, params),
        _skipped(ev),
        _provenance(provenance),
    )
    titles = [t.replace("Accuracy", m.words[0].upper() + m.words[1:]) for t in SECTIONS]
    return tuple(Section(title, tuple(blocks)) for title, blocks in zip(titles, contents,
                                                                        strict=True))


def _data_hygiene(ev: dict, target: dict, words: str = "accuracy") -> list[Block]:
    """Copies across the target's splits and label-noise candidates (evaluate's
    ``data_hygiene``); it describes the data and chooses nothing."""
    h = ev.get("data_hygiene")
    if not h:
        return ["No data-hygiene check was recorded."]
    rows = tuple((pair, integer(d["exact"]), integer(d["near"]))
                 for pair, d in h["duplicates"].items())
    issues = h["label_issues"]
    listed = ", ".join(map(str, issues["indices"][:10])) or "none"
    modality = modalities.of(target)
    noun = modality.noun
    vectors = "pixel vectors" if modality.features == "pixels" else modality.features
    return [
        f"{noun.capitalize()} of the second split with an exact or near copy (L2 distance of "
        f"{vectors} at most {f3(h['near_threshold'])}) in the first. A copy of a test "
        f"{noun[:-1]} in the training pool inflates test {words}.",
        Table(("Splits", "Exact copies", "Near copies"), rows),
        f"Label-noise candidates in the training pool: {integer(issues['count'])} "
        f"({issues['method']}); the least confident first: {listed}. Nothing is removed: "
        "these are for a person to look at.",
    ]


def _join(items: Any) -> str:
    items = list(items)
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else "".join(items)


def _what_was_run(inputs: ReportInputs, params: Params) -> list[Block]:
    p, t = params.prepare, inputs.target
    counts = t.get("counts", {})
    modality = modalities.of(t)
    network = (f"{params.pretrain.arch}, width {params.pretrain.width}, init "
               f"{params.pretrain.init}") if modality.name == "image" else (
        f"{params.pretrain.arch}, init {params.pretrain.init} unless the source says otherwise"
        + ("; a source whose init names another text model is that model, reading the target "
           "in its own tokenizer" if any(
               source_arch(params.pretrain.arch, spec.init, True) != params.pretrain.arch
               for spec in p.sources.values()) else ""))
    scratch = params.transfer.get(figures.SCRATCH)
    resized = (scratch.get("model_config") if isinstance(scratch, dict)
               else getattr(scratch, "model_config", None))
    baseline = (" the same network trained on the target alone" if not resized else
                " a smaller network of the same family ("
                + ", ".join(f"{k} {v}" for k, v in resized.items())
                + f", `transfer.{figures.SCRATCH}.model_config`) trained on the target alone")
    sources = []
    for name in sorted(p.sources):
        manifest, kind = inputs.sources[name], p.sources[name].kind
        own = p.sources[name].init
        if kind == "none" and own not in (None, "random"):
            sources.append(f"`{name}` (no source data: the network as {own} initialises it)")
        elif kind == "none":
            sources.append(f"`{name}` (no source data: the untrained network)")
        else:
            aligned = ", classes aligned with the target's" if manifest.get("aligned") else ""
            start = f", starting from {own}" if own else ""
            sources.append(f"`{name}` ({kind}, {len(manifest.get('class_names', []))} "
                           f"classes{aligned}{start})")
    group = results.group_of(t)
    budgets = [results.budget_label(b, t).removesuffix(f" per {group}").removesuffix(" labels")
               .removesuffix(" label") for b in results.budget_keys(params)]
    labels = f"{len(t.get('class_names', []))} classes"
    if group != "class":
        labels = (f"a regression: a numeric target, scored by R², MSE and MAE; budgets and "
                  f"splits stratified by its {len(t.get('class_names', []))} quantile strata")
    return [
        f"Target: `{p.target.kind}` ({labels}, "
        f"{modality.describe(t)}; a labelled pool of "
        f"{sum(counts.get('train', {}).values()):,} training {modality.noun}, "
        f"{sum(counts.get('test', {}).values()):,} test {modality.noun}). Candidate sources: "
        f"{_join(sources)}. Each source network ({network}) is transferred with "
        f"{_join(f'`{s}`' for s in params.grid.strategies)}, and compared with `scratch`,"
        f"{baseline}. Label budgets (labels per {group}): "
        f"{_join(budgets)}; {results.seeds_words(params)}. The runs table holds "
        f"{len(inputs.runs):,} evaluated runs over {inputs.runs['curve'].nunique()} curves. "
        f"Intervals are {results.confidence_level(params)} confidence intervals. "
        + results.statistics_text(inputs.evaluate, params) + _selection_text(params)
    ]


def _selection_text(params: Params) -> str:
    """The selection protocol in one sentence (README: "Selection protocol")."""
    s = params.selection
    if s.protocol == "external_val":
        return (f" Selection: a fixed external validation set of {params.prepare.val_per_class} "
                "labelled images per class, outside the label budget, chose every epoch, "
                "recommendation and champion, so label efficiency counts those labels too.")
    refit = ", then refitted on the whole budget" if s.refit else ""
    held = (f"every label of the budget, out of fold ({s.folds}-fold cross-validation within "
            "each class, fewer folds where a class has fewer labels"
            if s.scheme == "kfold" else f"labels held out of the budget "
            f"({s.holdout_fraction:.0%} of each class")
    return (f" Selection: every epoch, recommendation and champion was chosen on {held}{refit}); "
            f"below {s.min_labels_to_split} labels per class a trained run follows a fixed "
            "schedule and has no selection score, while curves that read no target label are "
            "scored on every budget label. The test split scored the choices once, after they "
            "were made.")


def _source_models(inputs: ReportInputs, params: Params) -> list[Block]:
    rows = []
    for name in sorted(params.prepare.sources):
        m = inputs.models[name]
        trained = m.get("trained", True)
        accuracy = f3((m.get("test") or {}).get("accuracy")) if trained else "untrained"
        rows.append((name, params.prepare.sources[name].kind, integer(m.get("num_classes")),
                     accuracy, integer(m.get("epochs_run")) if trained else NA))
    return ["Each source network on its own test split, after pretraining.",
            Table(("Source", "Kind", "Classes", "Test accuracy", "Epochs run"),
                  tuple(rows))]


def _skipped(ev: dict) -> list[Block]:
    skipped = ev.get("skipped") or {}
    if not skipped:
        return ["No run was skipped."]
    return [f"{len(skipped)} curve(s) were not run:",
            Bullets(tuple(f"`{k}`: {v}" for k, v in sorted(skipped.items())))]


def _provenance(prov: dict) -> list[Block]:
    params = prov["params"]
    data = tuple((d["dataset"], d["file"], f"`{d['sha256']}`",
                  "yes" if d["matches_file"] else "**no**") for d in prov["data"])
    return [
        f"Params file: `{params['path']}` (sha256 `{params['sha256']}`).",
        "Data: the sha256 each manifest records for its arrays, and whether the file on disk "
        "still matches it.",
        Table(("Dataset", "File", "sha256", "Matches file"), data),
        f"CPU kernels: `common.determinism: {prov.get('determinism', 'portable')}` ("
        + ("oneDNN and NNPACK convolutions off, so that every x86-64 machine with AVX2 and FMA "
           "computes the same bits" if prov.get("determinism", "portable") == "portable" else
           "oneDNN's convolutions, whose bits hold on the machine that ran them")
        + "), and the kernel dispatch pinned for every stage (transferlab.core.cpu_pinning):",
        Table(("Variable", "Value"), tuple(sorted(prov["cpu_pins"].items()))),
        "The full params file:",
        Code(params["text"]),
        f"To reproduce: {prov['reproduce']}",
    ]
