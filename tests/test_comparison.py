"""transferlab.comparison: the labels and the first differing key/row/line that the audit reports
for JSON, CSV, report and binary outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from transferlab.comparison import (
    DIFFERENT,
    IDENTICAL,
    PROVENANCE,
    TIMING,
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


def test_json_wall_clock_keys_are_expected_but_the_rest_must_match() -> None:
    timing = {"seconds": 3.1, "peak_bytes": 10, "history": [{"epoch": 1, "loss": 0.5}]}
    slower = {**timing, "seconds": 9.9, "peak_bytes": 12}
    ignore = frozenset({"seconds", "peak_bytes"})
    assert compare_json(timing, slower, 0, ignore).label == TIMING
    changed = {**slower, "history": [{"epoch": 1, "loss": 0.6}]}
    diff = compare_json(timing, changed, 0, ignore)
    assert (diff.label, diff.key) == (DIFFERENT, "history[0].loss")


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

| Curve | Accuracy | Seconds per run | Peak memory (MB) |
|---|---|---|---|
| scratch | 0.987 | 1.939 | 917.4 |

Time to compute the four scores, as a fraction of one finetune run.

| Source | 1 | all |
|---|---|---|
| printed_digits | 0.184 | 0.085 |

## Provenance

- Git commit: `abc`; uncommitted changes: no
"""


def test_report_differences_are_labelled_by_where_they_are() -> None:
    assert compare_report(REPORT, REPORT).label == IDENTICAL
    provenance = REPORT.replace("`abc`", "`def`")
    assert compare_report(REPORT, provenance).label == PROVENANCE
    timed = REPORT.replace("1.939", "2.500").replace("0.184", "0.200").replace("917.4", "920")
    assert compare_report(REPORT, timed).label == TIMING
    diff = compare_report(REPORT, REPORT.replace("0.987", "0.988"), "reports/report.md")
    assert (diff.label, diff.recorded, diff.rerun) == (
        DIFFERENT, "| scratch | 0.987 | <wall-clock> | <wall-clock> |",
        "| scratch | 0.988 | <wall-clock> | <wall-clock> |")
    assert diff.key.startswith("line 7")


def test_html_report_is_compared_like_the_markdown() -> None:
    html = ('<h2 id="accuracy">Accuracy</h2>\n<table><thead><tr><th>Curve</th><th>Accuracy</th>'
            "<th>Seconds per run</th></tr></thead><tbody>\n<tr><td>scratch</td><td>0.987</td>"
            '<td>1.939</td></tr>\n</tbody></table>\n<h2 id="provenance">Provenance</h2>\n'
            "<ul><li>Git commit: <code>abc</code></li></ul>\n")
    assert html_as_markdown(html).splitlines()[:2] == ["## Accuracy",
                                                       "| Curve | Accuracy | Seconds per run |"]
    label = lambda other: compare_report(html_as_markdown(html), html_as_markdown(other)).label  # noqa: E731
    assert label(html.replace("1.939", "3.000")) == TIMING
    assert label(html.replace("abc", "def")) == PROVENANCE
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

    assert label("metrics/compute.json", '{"s": 1}', '{"s": 2}').label == TIMING
    assert label("runs/x/timing.json", '{"seconds": 1}', '{"seconds": 2}').label == TIMING
    assert label("metrics/evaluate.json", '{"a": 1}', '{"a": 1.5}').key == "a"
    binary = label("runs/x/0_1.pt", b"\x00\x01", b"\x00\x02")
    assert (binary.label, binary.file) == (DIFFERENT, "runs/x/0_1.pt")
    assert label("plots/a.png", b"same", b"same").label == IDENTICAL
    assert label("m.json", "{", "}").label == DIFFERENT  # unreadable is never explained
    missing = compare_file("gone.csv", tmp_path / "nope", tmp_path / "nope2", 0)
    assert (missing.label, missing.recorded) == (DIFFERENT, "missing")


def test_worst_prefers_unexplained_then_tolerance_then_expected() -> None:
    diffs = [Diff(IDENTICAL, "a"), Diff(TIMING, "b"), Diff(WITHIN, "c"), Diff(DIFFERENT, "d"),
             Diff(DIFFERENT, "e")]
    assert worst(diffs).file == "d"
    assert worst(diffs[:3]).file == "c"
    assert worst(diffs[:2]).label == TIMING
    assert worst([]).label == IDENTICAL
