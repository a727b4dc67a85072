"""Tests for transferlab.evaluation.tables: the flat tables evaluate writes for `dvc plots` and the
report."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from transferlab.config.params import EvaluateParams
from transferlab.evaluation import analysis, tables
from transferlab.evaluation.evaluate import RunResult

P = EvaluateParams(multiplicity="none")
LABELS = np.array([0, 1, 1, 0])  # four test examples


def _run(curve: str, budget: str, seed: int, pred: list[int], sel: float = math.nan) -> RunResult:
    source, strategy = ("none", "scratch") if curve == "scratch" else curve.split("/")
    pred_arr = np.asarray(pred)
    proba = np.eye(2)[pred_arr] * 0.8 + 0.1  # rows (0.9, 0.1) or (0.1, 0.9)
    correct = pred_arr == LABELS
    metrics = {"accuracy": float(correct.mean()), "balanced_accuracy": 0.5, "f1_macro": 0.5,
               "log_loss": 1.0, "brier": 0.2, "ece": 0.1, "shifted_accuracy": 0.25,
               "shift_gap": float(correct.mean()) - 0.25, "trainable_params": 10 + seed,
               "train_flops": 100.0 * (seed + 1)}
    return RunResult({"source": source, "strategy": strategy, "budget": budget, "seed": seed},
                     metrics, correct, proba, sel)


# accuracies: scratch 0.25 / 0.5 / 0.5 at budget 2 (seeds 0-2); src/finetune 1.0 / 0.75 / 1.0
RESULTS = [
    _run("src/finetune", "2", 2, [0, 1, 1, 0], 0.9),
    _run("scratch", "2", 1, [0, 1, 0, 1], 0.5),
    _run("src/finetune", "2", 0, [0, 1, 1, 0], 0.8),
    _run("scratch", "2", 0, [1, 1, 0, 1], 0.4),
    _run("src/finetune", "2", 1, [0, 1, 1, 1], 0.9),
    _run("scratch", "2", 2, [0, 0, 1, 1], 0.6),
]


def _report() -> dict:
    summary = analysis.summarize(RESULTS, ["2"], 10.0, P)
    recs = analysis.recommend(summary, RESULTS, ["2"], {"picks": {}}, P)
    out = analysis.control_family(summary, recs, P)
    return {**out, "transferability": {"scores": {}}}


def test_runs_table_one_sorted_row_per_run() -> None:
    df = tables.runs_table(RESULTS)
    assert list(zip(df["curve"], df["seed"], strict=True)) == [
        ("scratch", 0), ("scratch", 1), ("scratch", 2),
        ("src/finetune", 0), ("src/finetune", 1), ("src/finetune", 2)]
    assert list(df["accuracy"]) == [0.25, 0.5, 0.5, 1.0, 0.75, 1.0]
    assert {"source", "strategy", "budget", "trainable_params"} <= set(df.columns)


def test_gain_table_rows_carry_the_sign_and_the_adjusted_verdict() -> None:
    report = _report()
    df = tables.gain_table(report["summary"], ["2"], 10.0)
    assert len(df) == 1  # scratch has no gain over itself
    row = df.iloc[0]
    assert row["curve"] == "src/finetune" and row["labels_per_class"] == 2.0
    # per seed: 1.0 - 0.25, 0.75 - 0.5, 1.0 - 0.5 -> mean 0.5 (curve minus scratch)
    assert row["gain"] == pytest.approx(0.5)
    assert row["ci_low"] < row["gain"] < row["ci_high"] and row["n"] == 3
    gain = report["summary"]["src/finetune"]["2"]["gain"]
    assert row["p_value"] == gain["p_value"] and row["p_adjusted"] == gain["p_adjusted"]
    assert row["verdict"] == gain["verdict"]


def test_learning_curves_and_per_curve_tables() -> None:
    summary = _report()["summary"]
    lc = tables.learning_curves(summary, ["2"], 10.0)
    assert list(lc["curve"]) == ["scratch", "src/finetune"]
    assert lc["accuracy"].tolist() == pytest.approx([1.25 / 3, 2.75 / 3])
    per = tables.per_curve_table(summary, "2").set_index("curve")
    assert per.loc["src/finetune", "train_flops"] == pytest.approx(200.0)
    assert math.isnan(per.loc["scratch", "forgetting"])  # no forgetting metric: NaN, not 0


def test_confusion_table_uses_the_first_seed() -> None:
    df = tables.confusion_table(RESULTS, "scratch", "2", ["zero", "one"], LABELS)
    # scratch seed 0 predicted 1, 1, 0, 1
    assert df.to_dict("list") == {"actual": ["zero", "one", "one", "zero"],
                                  "predicted": ["one", "one", "zero", "one"]}


@pytest.mark.parametrize("best", ["src/finetune", None])
def test_write_plots_writes_every_declared_csv(tmp_path: Path, best: str | None) -> None:
    report = _report()
    assert report["recommendations"]["2"]["best"] == "src/finetune"  # sel 0.867 vs 0.5
    report["recommendations"]["2"]["best"] = best  # None: nothing recommended at this budget
    tables.write_plots(tmp_path, RESULTS, report["summary"], report, ["2"], 10.0, LABELS,
                       ["zero", "one"], 5)
    assert {p.name for p in tmp_path.iterdir()} == {
        "learning_curves.csv", "gain.csv", "confusion.csv", "reliability.csv", "per_curve.csv",
        "transferability.csv", *(f"transferability_{s}.csv" for s in analysis.SCORES)}
    confusion = pd.read_csv(tmp_path / "confusion.csv")
    # the recommended curve's first seed predicts perfectly; scratch's (the fallback) does not
    assert (confusion["actual"] == confusion["predicted"]).all() == (best is not None)


# a hand-made summary: 3 curves x 2 budgets; "b/lp" has no run at budget "10"
HAND_SUMMARY = {
    "scratch": {"1": {"accuracy": {"mean": 0.412345}}, "10": {"accuracy": {"mean": 0.8}}},
    "a/ft": {
        "1": {"accuracy": {"mean": 0.61237}, "gain": {"diff": 0.200025, "verdict":
                                                     "positive transfer"}},
        "10": {"accuracy": {"mean": 0.75}, "gain": {"diff": -0.05, "verdict":
                                                   "negative transfer"}}},
    "b/lp": {"1": {"accuracy": {"mean": 0.5}, "gain": {"diff": 0.087654, "verdict":
                                                      "no detectable effect"}}},
}


def test_headline_metrics_of_a_hand_made_summary() -> None:
    out = tables.headline_metrics(HAND_SUMMARY, ["1", "10"])
    assert out == {
        "a/ft": {"1": {"accuracy": 0.6124, "gain": 0.2, "verdict": 1},
                 "10": {"accuracy": 0.75, "gain": -0.05, "verdict": -1}},
        "b/lp": {"1": {"accuracy": 0.5, "gain": 0.0877, "verdict": 0}},
        "scratch": {"1": {"accuracy": 0.4123}, "10": {"accuracy": 0.8}},
    }
    # a mean per curve x budget present, a gain and a verdict for each non-scratch one:
    # 5 entries (2 + 2 + 1), 3 of them not scratch -> 5 + 2 * 3 numbers
    numbers = [v for by_budget in out.values() for entry in by_budget.values()
               for v in entry.values()]
    assert len(numbers) == 5 + 2 * 3
    assert all(isinstance(v, int) for e in out.values() for b in e.values()
               for k, v in b.items() if k == "verdict")


def test_headline_metrics_count_is_budgets_times_three_curves_minus_two() -> None:
    """10 curves x 3 budgets, complete: 3 * (3 * 10 - 2) = 84 numbers, within the ~150 that
    `dvc metrics show` is meant to carry."""
    budgets = ["1", "3", "10"]
    entry = {"accuracy": {"mean": 0.5}, "gain": {"diff": 0.1, "verdict": "positive transfer"}}
    summary = {"scratch": {b: {"accuracy": {"mean": 0.4}} for b in budgets},
               **{f"s/m{i}": {b: entry for b in budgets} for i in range(9)}}
    out = tables.headline_metrics(summary, budgets)
    count = sum(len(e) for by_budget in out.values() for e in by_budget.values())
    assert count == len(budgets) * (3 * len(summary) - 2) == 84


def test_headline_metrics_regression_headline_and_missing_values() -> None:
    summary = {"scratch": {"1": {"r2": {"mean": 0.3}}},
               "a/ft": {"1": {"r2": {"mean": float("nan")},  # no finite mean: left out
                              "gain": {"diff": float("nan"), "verdict": "no detectable effect"}}},
               "b/ft": {"1": {"r2": {"mean": 0.1}, "gain": {"method": "paired t over seeds"}}}}
    out = tables.headline_metrics(summary, ["1"], headline="r2")
    assert out == {"scratch": {"1": {"r2": 0.3}}, "a/ft": {"1": {"verdict": 0}},
                   "b/ft": {"1": {"r2": 0.1}}}


def test_headline_metrics_errors_name_the_bad_key() -> None:
    bad = {"a/ft": {"1": {"accuracy": {"mean": 0.5}, "gain": {"diff": 0.1, "verdict": "better"}}}}
    with pytest.raises(ValueError, match=r"'better' of the gain at a/ft/1; expected one of "
                                         r"positive transfer, negative transfer"):
        tables.headline_metrics(bad, ["1"])
    with pytest.raises(KeyError, match=r"summary\['scratch'\]\['1'\] has no 'r2'"):
        tables.headline_metrics({"scratch": {"1": {"accuracy": {"mean": 0.5}}}}, ["1"], "r2")


def test_headline_metrics_of_a_real_summary_match_the_gain_table() -> None:
    summary = _report()["summary"]
    out = tables.headline_metrics(summary, ["2"])
    gain = tables.gain_table(summary, ["2"], 10.0).iloc[0]
    assert out["src/finetune"]["2"]["gain"] == round(gain["gain"], 4)
    assert out["src/finetune"]["2"]["verdict"] == tables.VERDICT_CODES[gain["verdict"]]
    lc = tables.learning_curves(summary, ["2"], 10.0).set_index("curve")["accuracy"]
    assert out["scratch"]["2"] == {"accuracy": round(lc["scratch"], 4)}


def test_transferability_by_score_one_table_per_score() -> None:
    transfer = {"scores": {src: {"1": {s: i + 0.5 * k for k, s in enumerate(analysis.SCORES)}}
                           for i, src in enumerate(["a", "b"])}}
    summary = {"a/finetune": {"1": {"accuracy": {"mean": 0.9}}}}
    split = tables.transferability_by_score(tables.transferability_table(transfer, summary))
    assert list(split) == list(analysis.SCORES)
    for k, score in enumerate(analysis.SCORES):
        df = split[score]
        assert "score" not in df.columns and list(df["source"]) == ["a", "b"]
        assert df["value"].tolist() == [0.5 * k, 1 + 0.5 * k]
    empty = tables.transferability_by_score(pd.DataFrame())
    assert set(empty) == set(analysis.SCORES) and all(df.empty for df in empty.values())


def test_write_headline_is_one_small_file_per_curve(tmp_path: Path) -> None:
    """`dvc metrics show` prints one row per file: a curve per row, a budget's numbers per
    column."""
    import json

    headline = {"scratch": {"1": {"accuracy": 0.5}},
                "printed_digits/finetune": {"1": {"accuracy": 0.7, "gain": 0.2, "verdict": 1}}}
    written = tables.write_headline(tmp_path / "headline", headline)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == [
        "headline/printed_digits/finetune.json", "headline/scratch.json"]
    assert json.loads((tmp_path / "headline/printed_digits/finetune.json").read_text()) == \
        headline["printed_digits/finetune"]
