"""`dvc plots show` draws what dvc.yaml declares: one coloured line per curve for the long
tables (the templates in .dvc/plots/), one plot per transferability score. Runs the real DVC
on the project's plot definitions and templates in a temporary repository, with a few rows
that transferlab.evaluation.tables builds (a few seconds)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import ROOT, VENV_ENV, run
from transferlab.evaluation import analysis, tables

BUDGETS = ["1", "10"]
CURVES = ["a/finetune", "a/linear_probe", "b/finetune", "scratch"]  # 4 curves, 3 with a gain
SOURCES = ["a", "b"]
LINE_PLOTS = {"learning_curve": "learning_curves.csv", "transfer_gain": "gain.csv",
              "reliability": "reliability.csv"}


def _summary() -> dict:
    """Evaluate's summary, the keys the plot tables read: 4 curves x 2 budgets."""
    out: dict = {}
    for i, curve in enumerate(CURVES):
        for j, b in enumerate(BUDGETS):
            acc = 0.3 + 0.1 * i + 0.2 * j
            entry: dict = {"accuracy": {"mean": acc, "ci_low": acc - 0.05, "ci_high": acc + 0.05}}
            if curve != "scratch":
                entry["gain"] = {"diff": 0.1 * i - 0.1, "ci_low": -0.2, "ci_high": 0.3, "n": 3,
                                 "p_value": 0.2, "p_adjusted": 0.4,
                                 "verdict": "no detectable effect"}
            out.setdefault(curve, {})[b] = entry
    return out


def _write_plot_tables(folder: Path) -> None:
    """Every CSV dvc.yaml's plots read, with the columns evaluate writes."""
    folder.mkdir(parents=True)
    summary = _summary()

    def save(name: str, df: pd.DataFrame) -> None:
        df.to_csv(folder / name, index=False)

    save("learning_curves.csv", tables.learning_curves(summary, BUDGETS, 50.0))
    save("gain.csv", tables.gain_table(summary, BUDGETS, 50.0))
    save("reliability.csv", pd.DataFrame(
        [{"curve": c, "lower": lo, "upper": lo + 0.5, "count": 3, "confidence": lo + 0.25,
          "accuracy": lo + 0.1 * i} for i, c in enumerate(CURVES) for lo in (0.0, 0.5)]))
    save("confusion.csv", pd.DataFrame({"actual": ["x", "y", "y"], "predicted": ["x", "y", "x"]}))
    save("per_curve.csv", pd.DataFrame({"curve": CURVES, "shifted_accuracy": [0.2, 0.3, 0.4,
                                                                              0.5]}))
    transfer = {"scores": {s: {b: {score: k + 0.1 * i for k, score in enumerate(analysis.SCORES)}
                               for b in BUDGETS} for i, s in enumerate(SOURCES)}}
    for score, rows in tables.transferability_by_score(
            tables.transferability_table(transfer, summary)).items():
        save(f"transferability_{score}.csv", rows)


@pytest.fixture(scope="module")
def shown(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``dvc plots show --json`` of the project's plots section, templates and the rows above:
    {plot id: its vega spec}."""
    repo = tmp_path_factory.mktemp("plots")
    env = dict(VENV_ENV, DVC_NO_ANALYTICS="1")
    run(["dvc", "init", "--no-scm", "-q"], repo, env)
    shutil.copytree(ROOT / ".dvc" / "plots", repo / ".dvc" / "plots")
    plots = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"plots": plots}, sort_keys=False))
    _write_plot_tables(repo / "plots")
    out = json.loads(run(["dvc", "plots", "show", "--json"], repo, env))
    assert "errors" not in out, out["errors"]
    specs = {}
    for plot_id, renders in out["data"].items():
        (render,) = renders
        assert render["type"] == "vega", plot_id
        specs[plot_id] = render["content"]
    return specs


def test_every_plot_renders_with_every_anchor_filled(shown: dict) -> None:
    declared = {name for p in yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
                for name in p}
    assert set(shown) == declared
    for plot_id, spec in shown.items():
        assert "<DVC_METRIC" not in json.dumps(spec), plot_id
        assert spec["data"]["values"], plot_id


@pytest.mark.parametrize("plot_id", sorted(LINE_PLOTS))
def test_long_tables_draw_one_coloured_line_per_curve(shown: dict, plot_id: str) -> None:
    spec = shown[plot_id]
    color = spec["encoding"].get("color", {})
    assert color.get("field") == "curve" and color.get("type") == "nominal", color
    assert spec.get("mark", {}).get("type") == "line"
    expected = set(CURVES) - ({"scratch"} if plot_id == "transfer_gain" else set())
    assert {r["curve"] for r in spec["data"]["values"]} == expected  # one colour each
    # nothing else splits a curve's line (a second group field would draw several per curve)
    groups = {k: v["field"] for k, v in spec["encoding"].items()
              if k in ("color", "detail", "strokeDash", "shape") and "field" in v}
    assert set(groups.values()) <= {"curve", "rev"}


def test_one_transferability_plot_per_score(shown: dict) -> None:
    ids = {p for p in shown if p.startswith("transferability")}
    assert ids == {f"transferability_{s}" for s in analysis.SCORES}
    for k, score in enumerate(analysis.SCORES):
        spec = shown[f"transferability_{score}"]
        values = spec["data"]["values"]
        assert len(values) == len(SOURCES) * len(BUDGETS)  # this score's rows only
        assert {float(r["value"]) for r in values} == {k, k + 0.1}
        assert spec["encoding"]["x"]["field"] == "value"
