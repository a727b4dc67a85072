"""Flat tables (pandas) built from evaluate's results: the CSVs that ``dvc plots`` renders and
the report draws, and the small headline summary that ``dvc metrics show`` displays. Pure
functions of their inputs.

``metrics/headline/<curve>.json`` (:func:`headline_metrics`) holds, per curve and budget, the mean
headline metric over seeds (``accuracy``; a regression's ``r2``) and, for every curve but scratch,
its ``gain`` over scratch (the mean paired difference of the headline metric) and the gain's
``verdict`` as a number (:data:`VERDICT_CODES`): +1 positive transfer, -1 negative transfer,
0 no detectable effect, and beside a 0 the gain that would have been detected (``mde``). A value
that is not finite (no paired seed) is left out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from transferlab.core.metrics import expected_calibration_error
from transferlab.evaluation.analysis import JUDGES, SCORES, SCRATCH, budget_value, curve_name

#: A gain's verdict (:func:`transferlab.evaluation.stats.verdict`) as the number that
#: ``metrics/headline/<curve>.json`` holds: ``dvc metrics diff`` shows a flipped verdict as a sign.
VERDICT_CODES = {"positive transfer": 1, "negative transfer": -1, "no detectable effect": 0}
#: Decimals of every float in ``metrics/headline/<curve>.json``.
HEADLINE_DIGITS = 4


def runs_table(results: Sequence) -> pd.DataFrame:
    """One row per (source, strategy, budget, seed) with every test metric."""
    rows = [{**r.key, "curve": curve_name(r.key["source"], r.key["strategy"]), **r.metrics}
            for r in results]
    return pd.DataFrame(rows).sort_values(["curve", "budget", "seed"], kind="stable")


def learning_curves(summary: dict, budgets: Sequence[str], all_lpc: float,
                    headline: str = "accuracy") -> pd.DataFrame:
    """Mean headline metric (accuracy; a regression's R², column ``r2``) per curve and budget,
    with its CI over seeds."""
    rows = []
    for curve, by_budget in sorted(summary.items()):
        for b in budgets:
            if b in by_budget:
                acc = by_budget[b][headline]
                rows.append({"curve": curve, "budget": b,
                             "labels_per_class": budget_value(b, all_lpc),
                             headline: acc["mean"], "ci_low": acc["ci_low"],
                             "ci_high": acc["ci_high"]})
    return pd.DataFrame(rows)


def gain_table(summary: dict, budgets: Sequence[str], all_lpc: float) -> pd.DataFrame:
    """One row per curve x budget with a gain over scratch: the paired difference (curve minus
    scratch), its unadjusted t interval, paired seeds, raw and adjusted p-value and verdict.

    Args:
        summary: evaluate's summary after :func:`transferlab.evaluation.analysis.control_family`.
        budgets: budget keys in order.
        all_lpc: labels per class of the ``all`` budget.
    Returns:
        Columns curve, budget, labels_per_class, gain, ci_low, ci_high, n, p_value, p_adjusted,
        verdict, mde (the minimum detectable effect beside a null verdict, else nan).
    """
    rows = []
    for curve, by_budget in sorted(summary.items()):
        for b in budgets:
            gain = by_budget.get(b, {}).get("gain")
            if gain and "diff" in gain:
                rows.append({"curve": curve, "budget": b,
                             "labels_per_class": budget_value(b, all_lpc),
                             "gain": gain["diff"], "ci_low": gain["ci_low"],
                             "ci_high": gain["ci_high"], "n": gain.get("n"),
                             "p_value": gain["p_value"],
                             "p_adjusted": gain.get("p_adjusted", np.nan),
                             "verdict": gain.get("verdict", ""),
                             "mde": gain.get("mde", np.nan)})
    return pd.DataFrame(rows)


def headline_metrics(summary: dict, budgets: Sequence[str],
                     headline: str = "accuracy") -> dict[str, dict[str, dict[str, float | int]]]:
    """The few numbers ``dvc metrics show`` displays: per curve and budget the mean headline
    metric and, where the curve has one, its gain over scratch and the verdict as a number.

    At most ``len(budgets) * (4 * curves - 3)`` numbers: one per curve and budget, plus a gain
    and a verdict for every curve but scratch, and beside a null verdict (0) its minimum
    detectable effect ``mde`` (:data:`transferlab.evaluation.analysis.MDE_RULE`).

    Args:
        summary: evaluate's summary after :func:`transferlab.evaluation.analysis.control_family`.
        budgets: budget keys in order; a curve without an entry at a budget has none here.
        headline: the task's headline metric (``accuracy``, or ``r2`` for a regression).
    Returns:
        ``{curve: {budget: {headline: mean, "gain": diff, "verdict": -1 | 0 | 1, "mde"}}}``,
        floats rounded to :data:`HEADLINE_DIGITS` decimals, non-finite values left out.
    Raises:
        KeyError: an entry has no ``headline`` metric (naming curve, budget and metric).
        ValueError: a gain's verdict is not one of :data:`VERDICT_CODES` (naming where).
    """
    out: dict[str, dict[str, dict[str, float | int]]] = {}
    for curve, by_budget in sorted(summary.items()):
        for b in (b for b in budgets if b in by_budget):
            entry = by_budget[b]
            if headline not in entry:
                raise KeyError(f"summary[{curve!r}][{b!r}] has no {headline!r}; it has "
                               f"{', '.join(sorted(entry))}")
            values: dict[str, float | int] = {}
            _put_finite(values, headline, entry[headline]["mean"])
            gain = entry.get("gain") or {}
            _put_finite(values, "gain", gain.get("diff", np.nan))
            if "verdict" in gain:
                values["verdict"] = _verdict_code(gain["verdict"], f"{curve}/{b}")
            _put_finite(values, "mde", gain.get("mde", np.nan))
            if values:
                out.setdefault(curve, {})[b] = values
    return out


def write_headline(folder: Path, headline: dict[str, dict]) -> list[Path]:
    """One small JSON per curve, ``<folder>/<source>/<strategy>.json`` (``scratch.json``):
    ``dvc metrics show`` prints a file per row and a budget's numbers per column, so the
    headline fits on one screen where one nested file would be one row thousands of
    characters wide."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for curve, by_budget in headline.items():
        path = folder / f"{curve}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(by_budget, indent=2, sort_keys=False) + "\n")
        written.append(path)
    return written


def _put_finite(values: dict[str, float | int], key: str, value: float | None) -> None:
    """``values[key] = value`` rounded to :data:`HEADLINE_DIGITS`, unless None/NaN/inf."""
    if value is not None and np.isfinite(value):
        values[key] = round(float(value), HEADLINE_DIGITS)


def _verdict_code(verdict: str, where: str) -> int:
    if verdict not in VERDICT_CODES:
        raise ValueError(f"unknown verdict {verdict!r} of the gain at {where}; expected one of "
                         f"{', '.join(VERDICT_CODES)}")
    return VERDICT_CODES[verdict]


def confusion_table(results: Sequence, curve: str, budget: str,
                    class_names: Sequence[str], labels: np.ndarray) -> pd.DataFrame:
    """Per-example (actual, predicted) rows of one curve's first-seed run at ``budget``."""
    runs = sorted((r for r in results if curve_name(r.key["source"], r.key["strategy"]) == curve
                   and r.key["budget"] == budget), key=lambda r: r.key["seed"])
    pred = runs[0].proba.argmax(1)
    names = np.asarray(class_names)
    return pd.DataFrame({"actual": names[labels], "predicted": names[pred]})


def reliability_table(results: Sequence, budget: str, labels: np.ndarray,
                      bins: int) -> pd.DataFrame:
    """Reliability-diagram bins per curve at ``budget``, pooling the seeds' predictions."""
    rows = []
    curves = sorted({curve_name(r.key["source"], r.key["strategy"]) for r in results})
    for curve in curves:
        runs = [r for r in results if curve_name(r.key["source"], r.key["strategy"]) == curve
                and r.key["budget"] == budget]
        if not runs:
            continue
        proba = np.concatenate([r.proba for r in runs])
        y = np.concatenate([labels] * len(runs))
        for row in expected_calibration_error(y, proba, bins)["bins"]:
            if row["count"]:
                rows.append({"curve": curve, **row})
    return pd.DataFrame(rows)


def per_curve_table(summary: dict, budget: str, headline: str = "accuracy") -> pd.DataFrame:
    """The headline metric in distribution and under shift, calibration (classification),
    forgetting and compute, per curve. A regression has MSE and MAE where a classification has
    ECE, Brier score and log loss."""
    rows = []
    extra = ("ece", "brier", "log_loss") if headline == "accuracy" else ("mse", "mae")
    for curve, by_budget in sorted(summary.items()):
        entry = by_budget.get(budget)
        if not entry:
            continue
        rows.append({
            "curve": curve, headline: entry[headline]["mean"],
            f"shifted_{headline}": entry[f"shifted_{headline}"]["mean"],
            "shift_gap": entry["shift_gap"]["mean"],
            **{k: entry[k]["mean"] for k in extra},
            "forgetting": entry.get("forgetting", {}).get("mean", np.nan),
            "trainable_params": entry["trainable_params"],
            "train_flops": entry["train_flops"],
        })
    return pd.DataFrame(rows)


def transferability_table(transfer: dict, summary: dict,
                          headline: str = "accuracy") -> pd.DataFrame:
    """Score against the realised headline metric, one row per source x budget x score."""
    rows = []
    for source, by_budget in sorted(transfer["scores"].items()):
        for budget, scores in by_budget.items():
            realised = {f"{s}_{headline}": summary.get(f"{source}/{s}", {}).get(budget, {})
                        .get(headline, {}).get("mean", np.nan) for s in JUDGES}
            for score in SCORES:
                rows.append({"source": source, "budget": budget, "score": score,
                             "value": scores[score], **realised})
    return pd.DataFrame(rows)


def transferability_by_score(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """:func:`transferability_table` split into one table per score (the ``score`` column
    dropped), so ``dvc plots show`` draws each score on its own scale.

    Args:
        table: from :func:`transferability_table`; an empty table gives empty tables.
    Returns:
        {score: rows of that score} for every score of
        :data:`transferlab.evaluation.analysis.SCORES`.
    """
    if table.empty:
        return {score: pd.DataFrame() for score in SCORES}
    return {score: table[table["score"] == score].drop(columns="score").reset_index(drop=True)
            for score in SCORES}


def predictions_table(results: Sequence, curve: str, budget: str,
                      targets: np.ndarray) -> pd.DataFrame:
    """A regression's (actual, predicted) rows of one curve's first-seed run at ``budget``."""
    runs = sorted((r for r in results if curve_name(r.key["source"], r.key["strategy"]) == curve
                   and r.key["budget"] == budget), key=lambda r: r.key["seed"])
    return pd.DataFrame({"actual": targets, "predicted": runs[0].proba.reshape(-1)})


def write_plots(folder, results: Sequence, summary: dict, report: dict, budgets: Sequence[str],
                all_lpc: float, test_labels: np.ndarray, class_names: Sequence[str],
                bins: int, headline: str = "accuracy") -> None:
    """Write every plot CSV that dvc.yaml declares into ``folder``. A regression
    (``headline`` r2, ``test_labels`` its numeric targets) has ``predictions.csv`` (actual
    against predicted) where a classification has ``confusion.csv`` and ``reliability.csv``.
    ``transferability.csv`` (every score, the report's) is also split into
    ``transferability_<score>.csv``, one ``dvc plots`` plot per score."""
    folder.mkdir(parents=True, exist_ok=True)
    largest = budgets[-1]
    # the confusion matrix shows the recommended curve; scratch where nothing is recommended
    best = report["recommendations"][largest]["best"] or SCRATCH

    def save(name: str, df: pd.DataFrame) -> None:
        df.to_csv(folder / name, index=False, float_format="%.6g")

    save("learning_curves.csv", learning_curves(summary, budgets, all_lpc, headline))
    save("gain.csv", gain_table(summary, budgets, all_lpc))
    if headline == "accuracy":
        save("confusion.csv", confusion_table(results, best, largest, class_names, test_labels))
        save("reliability.csv", reliability_table(results, largest, test_labels, bins))
    else:
        save("predictions.csv", predictions_table(results, best, largest, test_labels))
    save("per_curve.csv", per_curve_table(summary, largest, headline))
    transfer = transferability_table(report["transferability"], summary, headline)
    save("transferability.csv", transfer)  # the report's table
    for score, rows in transferability_by_score(transfer).items():  # dvc plots: one per score
        save(f"transferability_{score}.csv", rows)
