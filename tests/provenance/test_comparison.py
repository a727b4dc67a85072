"""transferlab.provenance.comparison: the labels and the first differing key/row/line that the
audit reports
for JSON, CSV, report and binary outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from transferlab.provenance.comparison import (
    DIFFERENT,
    IDENTICAL,
    WITHIN,
    Diff,
    compare_csv,
    compare_file,
    compare_json,
    compare_report,
    html_as_markdown,
    worst,
)

# -- JSON and CSV ----------------------------------------------------------------------------


def test_json_within_tolerance_names_the_first_key() -> None:
    recorded = {"b": {"x": 0.5, "y": 1.0}, "a": [1, 2.0]}
    rerun = {"b": {"x": 0.5000009, "y": 1.0}, "a": [1, 2.0]}
    diff = compare_json(recorded, rerun, tol=1e-6, file="m.json")
    assert (diff.label, diff.file, diff.key, diff.recorded, diff.rerun) == (
        WITHIN, "m.json", "b.x", 0.5, 0.5000009)
    assert compare_json(recorded, recorded, tol=0).label == IDENTICAL
    # one unit of the 6th decimal (the files' rounding) is within 1e-6 despite float error
    assert compare_json({"v": 0.123457}, {"v": 0.123456}, tol=1e-6).label == WITHIN


def test_json_over_tolerance_names_the_first_differing_key_in_sorted_order() -> None:
    recorded = {"z": 1.0, "summary": {"scratch": {"all": {"accuracy": {"mean": 0.9}}}}}
    rerun = {"z": 2.0, "summary": {"scratch": {"all": {"accuracy": {"mean": 0.91}}}}}
    diff = compare_json(recorded, rerun, tol=1e-3, file="metrics/evaluate.json")
    assert diff.label == DIFFERENT
    assert (diff.key, diff.recorded, diff.rerun) == ("summary.scratch.all.accuracy.mean", 0.9,
                                                    0.91)
    assert "metrics/evaluate.json: summary.scratch.all.accuracy.mean" in diff.describe()


@pytest.mark.parametrize(("rerun", "key"), [
    ({"a": 1.0}, "b"),                 # a key is missing
    ({"a": 1.0, "b": "y"}, "b"),       # a string changed
    ({"a": [1.0], "b": "x"}, "a"),     # a type changed
    ({"a": 1.0, "b": "x", "c": 0}, "c"),  # a key was added
])
def test_json_structural_changes_are_different(rerun: dict, key: str) -> None:
    diff = compare_json({"a": 1.0, "b": "x"}, rerun, tol=1.0)
    assert (diff.label, diff.key) == (DIFFERENT, key)


def test_json_has_no_expected_differences_any_more() -> None:
    """Every DVC output is deterministic (wall time lives in timing/): seconds are numbers too."""
    timing = {"seconds": 3.1, "history": [{"epoch": 1, "loss": 0.5}]}
    diff = compare_json(timing, {**timing, "seconds": 9.9}, 0)
    assert (diff.label, diff.key) == (DIFFERENT, "seconds")
    changed = {**timing, "history": [{"epoch": 1, "loss": 0.6}]}
    assert compare_json(timing, changed, 0).key == "history[0].loss"


def test_csv_within_and_over_tolerance_names_row_and_column() -> None:
    recorded = "curve,budget,accuracy\nscratch,1,0.5\nscratch,all,0.9\n"
    assert compare_csv(recorded, recorded, 0).label == IDENTICAL
    close = compare_csv(recorded, recorded.replace("0.9\n", "0.9000004\n"), 1e-6, "r.csv")
    assert (close.label, close.key) == (WITHIN, "row 2, column accuracy")
    far = compare_csv(recorded, recorded.replace("0.9\n", "0.95\n"), 1e-6, "r.csv")
    assert (far.label, far.key, far.recorded, far.rerun) == (
        DIFFERENT, "row 2, column accuracy", "0.9", "0.95")
    assert compare_csv(recorded, recorded.replace(",1,", ",3,"), 0).key == "row 1, column budget"
    assert compare_csv(recorded, recorded + "scratch,x,0.1\n", 0).key == "number of rows"
    assert compare_csv(recorded, recorded.replace("accuracy", "acc"), 0).key == "header"


# -- reports ---------------------------------------------------------------------------------

REPORT = """# Transfer learning report

## Accuracy

| Curve | Accuracy | Trainable params |
|---|---|---|
| scratch | 0.987 | 1,234 |

## Provenance

- Params file: `params.yaml` (sha256 `abc`).
"""


def test_report_differences_name_the_first_line_wherever_they_are() -> None:
    assert compare_report(REPORT, REPORT).label == IDENTICAL
    diff = compare_report(REPORT, REPORT.replace("0.987", "0.988"), "reports/report.md")
    assert (diff.label, diff.recorded, diff.rerun) == (
        DIFFERENT, "| scratch | 0.987 | 1,234 |", "| scratch | 0.988 | 1,234 |")
    assert diff.key == "line 7"
    provenance = compare_report(REPORT, REPORT.replace("`abc`", "`def`"))
    assert (provenance.label, provenance.key) == (DIFFERENT, "line 11")  # no longer expected
    shorter = compare_report(REPORT, REPORT.rsplit("\n", 3)[0])
    assert shorter.label == DIFFERENT and shorter.rerun == "<end>"


def test_html_report_is_compared_like_the_markdown() -> None:
    html = ('<h2 id="accuracy">Accuracy</h2>\n<table><thead><tr><th>Curve</th><th>Accuracy</th>'
            "</tr></thead><tbody>\n<tr><td>scratch</td><td>0.987</td></tr>\n</tbody></table>\n")
    assert html_as_markdown(html).splitlines()[:2] == ["## Accuracy", "| Curve | Accuracy |"]
    label = lambda other: compare_report(html_as_markdown(html), html_as_markdown(other)).label  # noqa: E731
    assert label(html) == IDENTICAL
    assert label(html.replace("0.987", "0.5")) == DIFFERENT


# -- files and labels ------------------------------------------------------------------------


def _pair(tmp_path: Path, rel: str, a: bytes | str, b: bytes | str) -> tuple[Path, Path]:
    paths = []
    for side, content in (("recorded", a), ("rerun", b)):
        path = tmp_path / side / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content)
        else:
            path.write_bytes(content)
        paths.append(path)
    return paths[0], paths[1]


def test_compare_file_classifies_by_kind(tmp_path: Path) -> None:
    def label(rel: str, a: bytes | str, b: bytes | str) -> Diff:
        return compare_file(rel, *_pair(tmp_path, rel, a, b), tol=1e-6)

    assert label("runs/x/runs.json", '{"seconds": 1}', '{"seconds": 2}').label == DIFFERENT
    assert label("metrics/evaluate.json", '{"a": 1}', '{"a": 1.5}').key == "a"
    binary = label("runs/x/0_1.pt", b"\x00\x01", b"\x00\x02")
    assert (binary.label, binary.file) == (DIFFERENT, "runs/x/0_1.pt")
    assert label("plots/a.png", b"same", b"same").label == IDENTICAL
    assert label("m.json", "{", "}").label == DIFFERENT  # unreadable is never explained
    missing = compare_file("gone.csv", tmp_path / "nope", tmp_path / "nope2", 0)
    assert (missing.label, missing.recorded) == (DIFFERENT, "missing")


def test_worst_prefers_different_then_tolerance() -> None:
    diffs = [Diff(IDENTICAL, "a"), Diff(WITHIN, "c"), Diff(DIFFERENT, "d"), Diff(DIFFERENT, "e")]
    assert worst(diffs).file == "d"
    assert worst(diffs[:2]).file == "c"
    assert worst(diffs[:1]).label == IDENTICAL
    assert worst([]).label == IDENTICAL


# -- drift against the commit (transferlab.provenance.drift)
# --------------------------------------------

EVALUATE = {"summary": {"scratch": {"1": {"accuracy": {"mean": 0.5, "ci_low": 0.4}},
                                    "all": {"accuracy": {"mean": 0.9, "ci_low": 0.85}}},
                        "a/finetune": {"1": {"accuracy": {"mean": 0.7, "ci_low": 0.6}}}},
            "recommendations": {"1": {"best": "a/finetune", "significantly_better": True}},
            "label_efficiency": {"scratch": 3}}


def test_json_drift_pools_each_metric_and_names_changed_conclusions() -> None:
    import copy

    from transferlab.provenance.drift import describe, json_drift, largest, metric_name, significant

    assert metric_name(("summary", "a/finetune", "1", "accuracy", "mean")) == (
        "summary.*.accuracy.mean")
    assert metric_name(("label_efficiency", "scratch")) == "label_efficiency.scratch"
    same = json_drift(EVALUATE, copy.deepcopy(EVALUATE))
    assert not significant(same, 0) and largest(same) is None
    moved = copy.deepcopy(EVALUATE)
    moved["summary"]["scratch"]["all"]["accuracy"]["mean"] = 0.93  # +0.03
    moved["summary"]["a/finetune"]["1"]["accuracy"]["mean"] = 0.69  # -0.01
    moved["recommendations"]["1"].update(best="scratch", significantly_better=False)
    d = json_drift(EVALUATE, moved)
    acc = d["metrics"]["summary.*.accuracy.mean"]
    assert acc["max_abs_diff"] == pytest.approx(0.03) and (acc["changed"], acc["values"]) == (2, 3)
    assert acc["at"] == "summary.scratch.all.accuracy.mean"
    assert d["metrics"]["summary.*.accuracy.ci_low"]["max_abs_diff"] == 0
    assert [(x["key"], x["committed"], x["workspace"]) for x in d["labels"]] == [
        ("recommendations.1.best", "a/finetune", "scratch"),
        ("recommendations.1.significantly_better", True, False)]
    assert significant(d, 0.05)  # conclusions changed, though no number moved by 0.05
    line = describe("metrics/evaluate.json", d, 1e-6)
    assert "summary.*.accuracy.mean max |Δ| 0.03" in line and "2 verdict(s)" in line
    assert "recommendations.1.best: 'a/finetune' -> 'scratch'" in line


def test_csv_drift_matches_rows_by_key_not_position() -> None:
    from transferlab.provenance.drift import csv_drift, significant

    old = "source,strategy,budget,seed,accuracy\na,finetune,1,0,0.5\na,finetune,1,1,0.6\n"
    new = "source,strategy,budget,seed,accuracy\na,finetune,1,1,0.6\na,finetune,1,0,0.52\n"
    d = csv_drift(old, new)
    assert d["metrics"]["accuracy"]["max_abs_diff"] == pytest.approx(0.02)
    assert d["metrics"]["accuracy"]["at"] == "row a/finetune/1/0: accuracy"
    assert d["metrics"]["accuracy"]["changed"] == 1 and not d["labels"]
    assert significant(d, 0.01) and not significant(d, 0.05)
    assert csv_drift(old, old.replace(",1,1,", ",3,1,"))["missing"] == [
        "row a/finetune/1/1", "row a/finetune/3/1"]
