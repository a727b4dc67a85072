"""End to end on a regression target: the real `dvc repro` of a shrunk
``scenarios/regression.yaml``, with MLflow mirroring to a local SQLite store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import ROOT, scenario_params
from transferlab.core.workspace import copy_worktree

pytestmark = pytest.mark.slow


def regression_params() -> dict:
    """The regression scenario shrunk: 2 seeds, budgets 2 and 20 per stratum, few epochs."""
    p = scenario_params("regression")
    p["common"].update(seeds=[0, 1], device="cpu")
    p["prepare"].update(budgets=[2, 20], test_per_class=30, val_per_class=5)
    p["prepare"]["sources"] = {
        "printed_digits": {"kind": "fonts", "chars": "0123456789", "n_per_class": 60},
        "random_init": {"kind": "none"},
    }
    p["pretrain"].update(epochs=3, batch_size=32, width=8)
    p["grid"]["methods"] = {"sources": ["printed_digits"], "strategies": ["wise_ft", "delta"]}
    for name, block in p["transfer"].items():
        if "epochs" in block:
            block["epochs"] = 40 if name == "linear_probe" else 4
    return p


def test_regression_scenario_runs_end_to_end(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    copy_worktree(ROOT, repo)
    (repo / "params.yaml").write_text(yaml.safe_dump(regression_params(), sort_keys=False))
    (repo / "dvc.lock").unlink(missing_ok=True)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               MLFLOW_TRACKING_URI=uri, DVC_NO_ANALYTICS="1")
    for cmd in (["git", "add", "-A"], ["git", "-c", "user.email=t@t", "-c", "user.name=t",
                                       "commit", "-qm", "regression", "--allow-empty"]):
        subprocess.run(cmd, cwd=repo, check=True, capture_output=True)
    proc = subprocess.run(["dvc", "repro"], cwd=repo, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    target = json.loads((repo / "data/prepared/target/manifest.json").read_text())
    assert target["task"] == "regression" and len(target["class_names"]) == 4
    assert set(target["counts"]["test"].values()) == {30}
    record = json.loads((repo / "runs/printed_digits/finetune/runs.json").read_text())["runs"][0]
    assert {"best_val_r2", "target_scale"} <= set(record) and "best_val_accuracy" not in record
    delta = json.loads((repo / "runs/printed_digits/delta/runs.json").read_text())
    assert "regression" in delta["skipped"]
    wise = json.loads((repo / "runs/printed_digits/wise_ft/runs.json").read_text())["runs"]
    held_out = [r for r in wise if r["budget"] == "20"]  # alpha chosen on held-out R²
    assert held_out and all(isinstance(r["best_val_r2"], float) for r in held_out)
    assert all("val_r2_by_alpha" in r["search"]["candidates"][0]["diagnostics"]
               for r in held_out)

    ev = json.loads((repo / "metrics/evaluate.json").read_text())
    assert ev["task"] == {"name": "regression", "headline": "r2"}
    cell = ev["summary"]["printed_digits/finetune"]["20"]
    assert {"r2", "mse", "mae", "rmse", "shifted_r2", "shift_gap", "gain"} <= set(cell)
    assert "accuracy" not in cell and "ece" not in cell
    assert cell["gain"]["n"] == 2 and "verdict" in cell["gain"]
    assert cell["mse"]["mean"] > 0 and cell["r2"]["mean"] <= 1
    scores = ev["transferability"]["scores"]["printed_digits"]["20"]
    assert pd.notna(scores["logme"]) and pd.isna(scores["leep"])
    assert "target_r2" in ev["label_efficiency"]
    assert ev["recommendations"]["20"]["best"] is not None
    assert "r2" in ev["recommendations"]["20"]
    assert ev["skipped"]["printed_digits/delta"].startswith("defined for classification")
    runs = pd.read_csv(repo / "metrics/runs.csv")
    assert {"r2", "mse", "mae", "shifted_r2"} <= set(runs.columns)
    preds = pd.read_csv(repo / "plots/predictions.csv")
    assert len(preds) == 120 and preds["actual"].abs().max() <= 45
    assert not (repo / "plots/confusion.csv").exists()

    md = (repo / "reports/report.md").read_text()
    assert "## R² per curve and budget" in md and "labels per stratum" in md
    assert "a regression: a numeric target" in md and "Confusion" not in md
    assert (repo / "reports/figures/predictions.png").is_file()

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("transferlab")
    evaluate = client.search_runs([exp.experiment_id], "tags.`transferlab.stage` = 'evaluate'")
    logged = {r.info.run_name: r.data.metrics for r in evaluate}
    mirrored = logged["printed_digits/finetune b=20"]
    # evaluate.json keeps 6 significant digits; MLflow the float
    assert mirrored["r2.mean"] == pytest.approx(cell["r2"]["mean"], rel=1e-5)
    assert mirrored["mse.mean"] == pytest.approx(cell["mse"]["mean"], rel=1e-5)
    assert "accuracy.mean" not in mirrored
    # the champion predicts in degrees: its model is wrapped in models.TargetScaled
    version = client.get_model_version_by_alias("transferlab-20", "champion")
    import mlflow.pytorch

    mlflow.set_tracking_uri(uri)
    champion = mlflow.pytorch.load_model(f"models:/transferlab-20/{version.version}")
    assert type(champion).__name__ == "TargetScaled"
