"""Tests for transferlab.selection: the within-budget protocol, and that the test split never
chooses (permuting the test labels leaves every checkpoint, recommendation and champion)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import ROOT, shrunk_params
from transferlab.params import SelectionParams, TrainParams
from transferlab.selection import (
    EXTERNAL,
    FIXED,
    HOLDOUT,
    holdout_count,
    labels_per_class_used,
    plan_selection,
)
from transferlab.training import fit
from transferlab.workspace import copy_worktree

LABELS = np.repeat(np.arange(4), 12)  # a pool of 4 classes x 12


def _budget(per_class: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(np.equal(LABELS, c)))[:per_class]
                                   for c in range(4)]))


@pytest.mark.parametrize(("n", "fraction", "want"), [
    (2, 0.34, 1), (3, 0.34, 1), (10, 0.34, 3), (30, 0.34, 10), (2, 0.9, 1), (5, 0.5, 3),
    (100, 0.01, 1)])
def test_holdout_count(n: int, fraction: float, want: int) -> None:
    assert holdout_count(n, fraction) == want


@pytest.mark.parametrize("per_class", [2, 3, 10])
def test_holdout_split_is_a_per_class_partition_of_the_budget(per_class: int) -> None:
    budget = _budget(per_class)
    plan = plan_selection(budget, LABELS, SelectionParams(), seed=7)
    assert plan.method == HOLDOUT
    assert np.intersect1d(plan.train_idx, plan.choose_on).size == 0
    assert np.array_equal(np.union1d(plan.train_idx, plan.choose_on), budget)
    held = holdout_count(per_class, 0.34)
    assert np.array_equal(np.bincount(LABELS[plan.choose_on], minlength=4), [held] * 4)
    assert np.array_equal(np.bincount(LABELS[plan.train_idx], minlength=4),
                          [per_class - held] * 4)
    assert np.array_equal(plan.refit_idx, budget)
    assert plan.record() == {"selection_method": "holdout",
                             "fit_examples": 4 * (per_class - held),
                             "holdout_examples": 4 * held, "refit": True}


def test_holdout_split_is_seeded() -> None:
    budget = _budget(10)
    a, b = (plan_selection(budget, LABELS, SelectionParams(), seed=s) for s in (1, 1))
    c = plan_selection(budget, LABELS, SelectionParams(), seed=2)
    assert np.array_equal(a.choose_on, b.choose_on)
    assert not np.array_equal(a.choose_on, c.choose_on)


def test_one_label_per_class_uses_a_fixed_schedule() -> None:
    budget = _budget(1)
    plan = plan_selection(budget, LABELS, SelectionParams(), seed=0)
    assert (plan.method, plan.choose_on, plan.refit_idx) == (FIXED, None, None)
    assert np.array_equal(plan.train_idx, budget)
    # a higher threshold turns the 3-label budget into a fixed schedule too
    plan = plan_selection(_budget(3), LABELS, SelectionParams(min_labels_to_split=4), seed=0)
    assert plan.method == FIXED


def test_no_refit_trains_on_the_fit_part_only() -> None:
    plan = plan_selection(_budget(10), LABELS, SelectionParams(refit=False), seed=0)
    assert plan.method == HOLDOUT and plan.refit_idx is None and plan.record()["refit"] is False


def test_external_val_trains_on_the_whole_budget_and_counts_the_val_labels() -> None:
    budget = _budget(3)
    plan = plan_selection(budget, LABELS, SelectionParams(protocol="external_val"), seed=0)
    assert (plan.method, plan.choose_on, plan.refit_idx) == (EXTERNAL, None, None)
    assert np.array_equal(plan.train_idx, budget)
    assert labels_per_class_used(3, "external_val", 10) == 13
    assert labels_per_class_used(3, "within_budget", 10) == 3


def test_fit_without_validation_runs_the_fixed_schedule_and_keeps_the_last_epoch() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    x, y = torch.randn(8, 4), torch.tensor([0, 1] * 4)
    summary = fit(model, (x, y), None, TrainParams(epochs=5, batch_size=4, patience=1),
                  [{"params": list(model.parameters())}], torch.Generator().manual_seed(0),
                  torch.device("cpu"), augment=False)
    assert (summary["epochs_run"], summary["best_epoch"], summary["steps"]) == (5, 5, 10)
    assert summary["best_val_accuracy"] is None and summary["best_val_loss"] is None
    assert all(set(row) == {"epoch", "train_loss"} for row in summary["history"])


# ------------------------------------------------------------------ the test split never chooses
def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _choices(repo: Path, params: dict) -> dict:
    """Every choice the pipeline made: checkpoints (by hash), recommendations, champions."""
    from transferlab.evaluation import champion_checkpoints, discover_runs

    metrics = json.loads((repo / "metrics" / "evaluate.json").read_text())
    recs = metrics["recommendations"]
    methods = params["grid"]["methods"]
    runs = discover_runs(repo / "runs", list(params["prepare"]["sources"]),
                         params["grid"]["strategies"],
                         [(s, m) for s in methods["sources"] for m in methods["strategies"]])
    champions = champion_checkpoints(recs, runs)
    return {
        "checkpoints": {str(p.relative_to(repo)): _sha(p)
                        for p in sorted((repo / "runs").rglob("*.pt"))},
        "recommended": {b: (r.get("best"), r.get("runner_up")) for b, r in recs.items()},
        "champions": {b: (c, str(path.relative_to(repo))) for b, (c, path) in champions.items()},
        "test_accuracy": {b: (r.get("accuracy") or {}).get("mean") for b, r in recs.items()},
    }


def _permute_test_labels(target: Path, seed: int) -> None:
    """Shuffle the target's test labels in place and re-record their sha256."""
    path = target / "test_y.npy"
    labels = np.load(path)
    np.save(path, np.random.default_rng(seed).permutation(labels), allow_pickle=False)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["sha256"]["test_y.npy"] = _sha(path)
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2))


@pytest.mark.slow
def test_permuting_the_test_labels_changes_no_choice(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    copy_worktree(ROOT, repo)
    params = shrunk_params()
    params["prepare"]["sources"] = {"printed_digits": params["prepare"]["sources"]
                                    ["printed_digits"]}
    params["prepare"]["budgets"] = [1, 5, "all"]
    params["grid"]["strategies"] = ["source_only", "linear_probe", "finetune"]
    # methods that choose on held-out labels: after the fit (wise_ft's alpha), by an in-stage
    # search (l2_sp's alpha), or that read the unlabeled pool (adabn)
    params["grid"]["methods"]["strategies"] = ["wise_ft", "l2_sp", "adabn"]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / "dvc.lock").unlink(missing_ok=True)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")

    def dvc(*args: str) -> None:
        proc = subprocess.run(["dvc", *args], cwd=repo, capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr

    dvc("repro")
    before = _choices(repo, params)
    _permute_test_labels(repo / "data" / "prepared" / "target", seed=1)
    # rerun everything downstream of the data, on the permuted test labels, without `prepare`
    methods = [f"methods@printed_digits-{m}" for m in params["grid"]["methods"]["strategies"]]
    for stage in ("transfer@printed_digits-source_only", "transfer@printed_digits-linear_probe",
                  "transfer@printed_digits-finetune", *methods, "scratch", "evaluate"):
        dvc("repro", "--force", "--single-item", stage)
    after = _choices(repo, params)
    assert after["checkpoints"] == before["checkpoints"]
    assert after["recommended"] == before["recommended"]
    assert after["champions"] == before["champions"]
    # ... while the test split did change what evaluate measured (the permutation took effect)
    assert after["test_accuracy"] != before["test_accuracy"]
    # 1 label per class: nothing can be held out, so no choice is made there
    assert before["recommended"]["1"][0] is None
    assert before["recommended"]["5"][0] is not None
