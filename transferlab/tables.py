"""Flat tables (pandas) built from evaluate's results: the CSVs that ``dvc plots`` renders and
the report draws. Pure functions of their inputs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from transferlab.analysis import JUDGES, SCORES, SCRATCH, budget_value, curve_name
from transferlab.metrics import expected_calibration_error


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
        summary: evaluate's summary after :func:`transferlab.analysis.control_family`.
        budgets: budget keys in order.
        all_lpc: labels per class of the ``all`` budget.
    Returns:
        Columns curve, budget, labels_per_class, gain, ci_low, ci_high, n, p_value, p_adjusted,
        verdict.
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
                             "verdict": gain.get("verdict", "")})
    return pd.DataFrame(rows)


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
    against predicted) where a classification has ``confusion.csv`` and ``reliability.csv``."""
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
    save("transferability.csv", transferability_table(report["transferability"], summary,
                                                      headline))
