"""The report's figures, drawn from evaluate's plot tables with matplotlib's Agg canvas.

Every function takes tables (pandas) or dicts and an output path, writes one PNG and returns the
path. Nothing touches pyplot's global state, and the PNG bytes are a function of the inputs only
(no software tag or date in the file; fixed fonts, sizes and hash salt).
"""

from __future__ import annotations

import functools
import math
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from transferlab.adapt import strategies

SCRATCH = strategies.by_role("baseline")
REFERENCE = strategies.by_role("reference")  # its realised accuracy judges the source ranking
STRATEGY_STYLE = {name: strategies.get(name).style for name in strategies.names()
                  if name != SCRATCH}  # strategy -> (line style, marker)
SCORE_LABELS = {"logme": "LogME", "leep": "LEEP", "nce": "NCE", "hscore": "H-score"}


@dataclass(frozen=True)
class Metric:
    """The headline metric a figure plots (:mod:`transferlab.core.tasks`)."""

    key: str  # its column in the plot tables
    words: str  # axis labels
    bounded: bool  # lies in [0, 1]: axes and CI bands are clipped there
    group: str  # what a budget counts labels per


ACCURACY = Metric("accuracy", "accuracy", True, "class")
_RC = {
    "svg.hashsalt": "transferlab",
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 7,
    "figure.dpi": 100,
}


def curve_styles(curves: Iterable[str]) -> dict[str, dict]:
    """Line style per curve: colour by source, dash and marker by strategy, scratch in black.

    Call it once with every curve so that all figures of a report agree on the colours.
    """
    curves = sorted(set(curves))
    sources = sorted({c.split("/")[0] for c in curves if c != SCRATCH})
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
               "#17becf", "#bcbd22", "#7f7f7f"]
    colour = {s: palette[i % len(palette)] for i, s in enumerate(sources)}
    styles = {}
    for c in curves:
        if c == SCRATCH:
            styles[c] = {"color": "black", "linestyle": "-", "marker": "D"}
        else:
            source, strategy = c.split("/", 1)
            ls, marker = STRATEGY_STYLE.get(strategy, ("-", "v"))
            styles[c] = {"color": colour[source], "linestyle": ls, "marker": marker}
    return styles


def _styled(draw: Callable[..., Path]) -> Callable[..., Path]:
    """Run a drawing function under the report's fixed rc settings (fonts, sizes, hash salt)."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs) -> Path:
        import matplotlib

        with matplotlib.rc_context(_RC):
            return draw(*args, **kwargs)

    return wrapper


def _figure(width: float, height: float):
    # Import here: the library must have no side effects at import time, and the Agg canvas
    # (not pyplot) keeps figures out of any global registry.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=110, metadata={"Software": None})
    return path


def _grid(n: int, cols: int, panel: tuple[float, float] = (3.2, 2.6)):
    cols = max(1, min(cols, n))
    rows = max(1, math.ceil(n / cols))
    fig = _figure(panel[0] * cols, panel[1] * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _empty(path: str | Path, message: str) -> Path:
    fig, (ax,) = _grid(1, 1, (5, 2))
    ax.text(0.5, 0.5, message, ha="center", va="center")
    ax.set_axis_off()
    return _save(fig, path)


def _by_source(curves: Sequence[str]) -> dict[str, list[str]]:
    """Panels of curves: one per source, each with scratch as its reference line."""
    sources = sorted({c.split("/")[0] for c in curves if c != SCRATCH})
    panels = {s: [c for c in curves if c.startswith(f"{s}/")] for s in sources}
    for s in panels:
        panels[s] += [SCRATCH] if SCRATCH in curves else []
    return panels or {SCRATCH: [SCRATCH]}


def _budget_ticks(ax, values: pd.Series) -> None:
    """Ticks at the budgets themselves (labels per class), not at powers of ten."""
    ticks = sorted(set(values.dropna()))
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()


def _outside_legend(ax) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


@_styled
def learning_curves(df: pd.DataFrame, path: str | Path, styles: dict | None = None,
                    metric: Metric = ACCURACY) -> Path:
    """Accuracy (``metric``) against labels per class (log x), one panel per source, CI bands
    clipped to [0, 1] where the metric is bounded. ``df`` has columns curve, labels_per_class,
    the metric's key, ci_low, ci_high."""
    key = metric.key
    if df.empty:
        return _empty(path, "no learning-curve data")
    styles = styles or curve_styles(df["curve"])
    panels = _by_source(sorted(df["curve"].unique()))
    fig, axes = _grid(len(panels), 2, (5.2, 3.2))
    for ax, (source, curves) in zip(axes, panels.items(), strict=True):
        for curve in curves:
            d = df[df["curve"] == curve].sort_values("labels_per_class")
            st = styles[curve]
            ax.plot(d["labels_per_class"], d[key], label=curve.split("/")[-1], **st)
            low, high = d["ci_low"], d["ci_high"]
            if metric.bounded:
                low, high = low.clip(0, 1), high.clip(0, 1)
            low, high = low.fillna(d[key]), high.fillna(d[key])
            ax.fill_between(d["labels_per_class"], low, high, color=st["color"], alpha=0.07,
                            linewidth=0)
        ax.set(xscale="log", title=source, xlabel=f"labels per {metric.group}",
               ylabel=f"test {metric.words}")
        ax.set_ylim(0 if metric.bounded else None, 1.02)
        _budget_ticks(ax, df["labels_per_class"])
        _outside_legend(ax)
    return _save(fig, path)


@_styled
def transfer_gain(df: pd.DataFrame, path: str | Path, styles: dict | None = None,
                  metric: Metric = ACCURACY) -> Path:
    """Gain over scratch with its CI as error bars, per curve and budget, one panel per source.
    ``df`` has columns curve, labels_per_class, gain, ci_low, ci_high, and (optional) verdict:
    then a null verdict's marker is hollow, and † marks a bar that excludes 0 where the
    adjusted verdict is null (:data:`GAIN_KEY`, printed on the figure)."""
    if df.empty:
        return _empty(path, "no transfer-gain data (no transfer runs beside scratch)")
    styles = styles or curve_styles(df["curve"])
    panels = _by_source(sorted(df["curve"].unique()))
    fig, axes = _grid(len(panels), 2, (5.2, 3.2))
    for ax, (source, curves) in zip(axes, panels.items(), strict=True):
        curves = [c for c in curves if c != SCRATCH]
        for i, curve in enumerate(curves):
            d = df[df["curve"] == curve].sort_values("labels_per_class")
            dodge = 1.2 ** (i - (len(curves) - 1) / 2)  # spread the bars on the log axis
            err = np.vstack([(d["gain"] - d["ci_low"]).clip(lower=0),
                             (d["ci_high"] - d["gain"]).clip(lower=0)])
            st = styles[curve]
            x = d["labels_per_class"] * dodge
            ax.errorbar(x, d["gain"], yerr=err, capsize=3, label=curve.split("/")[-1],
                        color=st["color"], marker=st["marker"], linestyle="none")
            if "verdict" in d:  # hollow: no detectable effect after the family's adjustment
                null = (d["verdict"] == "no detectable effect").to_numpy()
                ax.scatter(x[null], d["gain"][null], marker=st["marker"], color="white",
                           edgecolors=st["color"], zorder=3)
                # the unadjusted bar excludes 0, the adjusted verdict does not: marked
                split = null & ((d["ci_low"] > 0) | (d["ci_high"] < 0)).to_numpy()
                for xi, yi in zip(x[split], d["ci_high"][split], strict=True):
                    ax.annotate("†", (xi, yi), ha="center", va="bottom", color=st["color"])
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set(xscale="log", title=source, xlabel=f"labels per {metric.group}",
               ylabel=f"{metric.words} gain over scratch")
        _budget_ticks(ax, df["labels_per_class"])
        _outside_legend(ax)
    fig.suptitle(textwrap.fill(GAIN_KEY, 110), fontsize=7)  # constrained layout keeps it clear
    return _save(fig, path)


#: The gain figure's key, printed on it: its bars are not adjusted, its markers are.
GAIN_KEY = ("Bars: unadjusted t intervals over seeds. Filled marker: a verdict (positive or "
            "negative) after the family's adjustment; hollow: no detectable effect; "
            "†: the bar excludes 0 but the adjusted verdict is no detectable effect.")


@_styled
def confusion_matrix(df: pd.DataFrame, path: str | Path, title: str,
                     class_names: Sequence[str] | None = None) -> Path:
    """Heatmap of counts (rows actual, columns predicted), colour normalised per row.
    ``df`` has one row per test example with columns actual, predicted (class names)."""
    if df.empty:
        return _empty(path, "no confusion data")
    names = [str(c) for c in class_names] if class_names else sorted(
        set(df["actual"].astype(str)) | set(df["predicted"].astype(str)))
    counts = pd.crosstab(df["actual"].astype(str), df["predicted"].astype(str))
    counts = counts.reindex(index=names, columns=names, fill_value=0).to_numpy()
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    size = max(3.5, 0.42 * len(names) + 1.5)
    fig, (ax,) = _grid(1, 1, (size + 0.8, size))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.grid(False)
    for i, j in np.ndindex(*counts.shape):
        if counts[i, j]:
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if rates[i, j] > 0.6 else "black")
    ticks = np.arange(len(names))
    ax.set_xticks(ticks, names)
    ax.set_yticks(ticks, names)
    ax.set(xlabel="predicted", ylabel="actual", title=title)
    fig.colorbar(image, ax=ax, label="fraction of the actual class", shrink=0.8)
    return _save(fig, path)


@_styled
def transferability(df: pd.DataFrame, agreement: dict, path: str | Path,
                    metric: Metric = ACCURACY) -> Path:
    """Score against realised finetune accuracy, one panel per score, points labelled by source.

    Args:
        df: rows of one budget with columns source, score, value, finetune_<metric key>.
        agreement: {score: {"finetune": {"kendall_tau": ...}}} at the same budget.
        path: the PNG to write.
    """
    if df.empty:
        return _empty(path, "no transferability scores")
    realised = f"{REFERENCE}_{metric.key}"
    scores = [s for s in SCORE_LABELS if s in set(df["score"])]
    scores += sorted(set(df["score"]) - set(scores))
    fig, axes = _grid(len(scores), 4, (3.0, 2.8))
    for ax, score in zip(axes, scores, strict=True):
        d = df[df["score"] == score].sort_values("source")
        ok = d[np.isfinite(d["value"]) & np.isfinite(d[realised])]
        ax.scatter(ok["value"], ok[realised], color="#1f77b4")
        for _, row in ok.iterrows():
            ax.annotate(row["source"], (row["value"], row[realised]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        missing = sorted(set(d["source"]) - set(ok["source"]))
        if missing:
            ax.text(0.02, 0.02, "not shown (score or finetune n/a):\n" + "\n".join(missing),
                    transform=ax.transAxes, fontsize=6, va="bottom")
        tau = (agreement.get(score) or {}).get(REFERENCE, {}).get("kendall_tau")
        tau_text = "n/a" if tau is None or not math.isfinite(tau) else f"{tau:.2f}"
        ax.set(title=f"{SCORE_LABELS.get(score, score)} (Kendall τ = {tau_text})",
               xlabel="score", ylabel=f"{REFERENCE} {metric.words}")
        ax.margins(0.2)
    return _save(fig, path)


# TLlib's published mean weighted tau (against finetuned accuracy), for reference lines
PUBLISHED_WEIGHTED_TAU = {"logme": 0.665, "hscore": 0.67, "nce": 0.50, "leep": 0.29}


@_styled
def ranking_tau(agreement: dict, budgets: Sequence[str], path: str | Path,
                metric: Metric = ACCURACY) -> Path:
    """Kendall and weighted tau against finetune accuracy per budget, with their intervals over
    sources, one line per score; hollow markers where the score cannot be trusted, dotted lines
    at TLlib's published mean weighted tau.

    Args:
        agreement: evaluate's {budget: {score: {"finetune": judge_ranking + trusted}}}.
        budgets: the budget keys in order.
        path: the PNG to write.
    """
    scores = [s for s in SCORE_LABELS if any(s in agreement.get(b, {}) for b in budgets)]
    if not scores:
        return _empty(path, "no transferability scores")
    fig, axes = _grid(2, 2, (4.2, 3.0))
    x = np.arange(len(budgets))
    for ax, (stat, title) in zip(axes, (("kendall", "Kendall τ"), ("weighted", "weighted τ")),
                                 strict=True):
        for i, score in enumerate(scores):
            color = f"C{i}"
            shift = x + (i - (len(scores) - 1) / 2) * 0.08
            rows = [(agreement.get(b, {}).get(score) or {}).get(REFERENCE) or {} for b in budgets]
            est = np.array([r.get(f"{stat}_tau", np.nan) for r in rows], dtype=float)
            low = np.array([r.get(f"{stat}_ci_low", np.nan) for r in rows], dtype=float)
            high = np.array([r.get(f"{stat}_ci_high", np.nan) for r in rows], dtype=float)
            ok = np.array([bool(r.get("trusted", True)) for r in rows])
            ax.errorbar(shift, est, yerr=[est - low, high - est], color=color, capsize=2,
                        lw=1, fmt="none")
            ax.plot(shift, est, color=color, lw=1, label=SCORE_LABELS[score])
            ax.scatter(shift[ok], est[ok], color=color, zorder=3, s=18)
            ax.scatter(shift[~ok], est[~ok], facecolors="white", edgecolors=color, zorder=3, s=18)
            if stat == "weighted":
                ax.axhline(PUBLISHED_WEIGHTED_TAU[score], color=color, ls=":", lw=1)
        ax.axhline(0.0, color="0.6", lw=0.8)
        ax.set_xticks(x, budgets)
        ax.set(ylim=(-1.05, 1.05), xlabel=f"labels per {metric.group}", ylabel=title,
               title=f"{title} against {REFERENCE} {metric.words}")
    axes[0].legend(fontsize=7, loc="lower right")
    return _save(fig, path)


@_styled
def predictions(df: pd.DataFrame, path: str | Path, title: str) -> Path:
    """A regression's predicted against actual targets, one point per test example, with the
    diagonal of perfect prediction. ``df`` has columns actual, predicted (numbers)."""
    if df.empty:
        return _empty(path, "no predictions")
    actual = pd.to_numeric(df["actual"]).to_numpy()
    predicted = pd.to_numeric(df["predicted"]).to_numpy()
    fig, (ax,) = _grid(1, 1, (4.6, 4.4))
    ax.scatter(actual, predicted, s=8, alpha=0.6, color="#1f77b4", linewidth=0)
    low = float(min(actual.min(), predicted.min()))
    high = float(max(actual.max(), predicted.max()))
    ax.plot([low, high], [low, high], color="black", linewidth=0.8, linestyle="--")
    ax.set(xlabel="actual", ylabel="predicted", title=title)
    return _save(fig, path)


@_styled
def reliability(df: pd.DataFrame, path: str | Path) -> Path:
    """Reliability diagrams, one small panel per curve: accuracy per confidence bin as bars,
    with the diagonal of perfect calibration. ``df`` has columns curve, lower, upper, count,
    confidence, accuracy."""
    if df.empty:
        return _empty(path, "no reliability data")
    curves = sorted(df["curve"].unique())
    fig, axes = _grid(len(curves), 4, (2.6, 2.5))
    for ax, curve in zip(axes, curves, strict=True):
        d = df[df["curve"] == curve]
        ax.bar(d["lower"], d["accuracy"], width=d["upper"] - d["lower"], align="edge",
               color="#1f77b4", alpha=0.7, edgecolor="white", linewidth=0.5)
        ax.plot(d["confidence"], d["accuracy"], "o", color="#d62728", markersize=3)
        ax.plot([0, 1], [0, 1], color="black", linewidth=0.8, linestyle="--")
        ax.set(xlim=(0, 1), ylim=(0, 1), title=curve, xlabel="confidence", ylabel="accuracy")
    return _save(fig, path)


@_styled
def shift(df: pd.DataFrame, path: str | Path, metric: Metric = ACCURACY) -> Path:
    """In-distribution against shifted-test accuracy (``metric``) per curve, as grouped
    horizontal bars. ``df`` has columns curve, the metric's key, shifted_<key>."""
    if df.empty:
        return _empty(path, "no per-curve data")
    d = df.sort_values("curve", ascending=False)
    y = np.arange(len(d))
    fig, (ax,) = _grid(1, 1, (6.5, 0.45 * len(d) + 1.4))
    ax.barh(y + 0.2, d[metric.key], height=0.4, label="in distribution", color="#1f77b4")
    ax.barh(y - 0.2, d[f"shifted_{metric.key}"], height=0.4, label="shifted", color="#ff7f0e")
    ax.set_yticks(y, d["curve"])
    ax.set(xlabel=f"test {metric.words}")
    if metric.bounded:
        ax.set(xlim=(0, 1))
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=2)
    return _save(fig, path)


@_styled
def compute(df: pd.DataFrame, path: str | Path, styles: dict | None = None,
            metric: Metric = ACCURACY) -> Path:
    """Accuracy against training FLOPs (log x), one labelled point per curve; curves that train
    nothing (0 FLOPs) cannot sit on a log axis and are listed instead. ``df`` has columns
    curve, accuracy, train_flops."""
    if df.empty:
        return _empty(path, "no per-curve data")
    styles = styles or curve_styles(df["curve"])
    key = metric.key
    positive = df[df["train_flops"] > 0].sort_values(["train_flops", key])
    fig, (ax,) = _grid(1, 1, (6.5, 4.2))
    # Curves with (nearly) equal FLOPs, e.g. finetune and scratch, would overprint their labels:
    # stack the labels of each such cluster beside it, each with a leader line to its point.
    log_x = np.log10(positive["train_flops"].to_numpy())
    cluster = np.concatenate([[0], np.cumsum(np.diff(log_x) > 0.35)])
    for c in np.unique(cluster):
        members = positive[cluster == c].sort_values(key, ascending=False)
        for k, (_, row) in enumerate(members.iterrows()):
            st = styles[row["curve"]]
            ax.plot(row["train_flops"], row[key], marker=st["marker"], color=st["color"],
                    linestyle="none")
            ax.annotate(row["curve"], (row["train_flops"], row[key]), fontsize=7,
                        xytext=(12, -14 * k - 4 * (len(members) > 1)),
                        textcoords="offset points", va="center",
                        arrowprops={"arrowstyle": "-", "linewidth": 0.5, "color": "0.4"})
    zero = sorted(df.loc[~(df["train_flops"] > 0), "curve"])
    if zero:
        ax.text(0.01, 0.99, "not shown (0 training FLOPs): " + ", ".join(zero),
                transform=ax.transAxes, fontsize=7, va="top")
    ax.set(xscale="log", xlabel="training FLOPs per run (log scale)",
           ylabel=f"test {metric.words}")
    ax.set_ylim(0 if metric.bounded else None, 1.05)
    ax.margins(x=0.25)
    return _save(fig, path)
