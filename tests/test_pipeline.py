"""End to end: the real `dvc repro` in a temporary clone, on the shrunk config."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import GIT_ID, ROOT, VENV_ENV, run, shrunk_params
from transferlab.core.runtime import sha256_file
from transferlab.core.workspace import copy_worktree

pytestmark = pytest.mark.slow


def ran_stages(log: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", log))


def pipeline_params() -> dict:
    """The shrunk params, plus l2_sp: a method whose in-stage search chooses on held-out labels
    (the forced rerun checks that no choice reads the test labels)."""
    params = shrunk_params()
    params["grid"]["methods"]["strategies"].append("l2_sp")
    params["transfer"]["l2_sp"]["epochs"] = 2  # 2 search points and a refit per replicate
    return params


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A fresh git+dvc clone of the tracked tree with shrunk params, and its environment."""
    repo = tmp_path_factory.mktemp("clone") / "repo"
    copy_worktree(ROOT, repo)  # what is on disk, uncommitted edits included
    (repo / "params.yaml").write_text(yaml.safe_dump(pipeline_params(), sort_keys=False))
    (repo / "dvc.lock").unlink(missing_ok=True)
    env = dict(VENV_ENV, MLFLOW_TRACKING_URI=f"sqlite:///{repo / 'mlflow.db'}")
    run(["git", "add", "-A"], repo)
    run(["git", *GIT_ID, "commit", "-qm", "shrunk",
         "--allow-empty"], repo)
    return repo, env


@pytest.fixture(scope="module")
def first_run(workspace: tuple[Path, dict]) -> str:
    repo, env = workspace
    return run(["dvc", "repro"], repo, env)


def test_every_declared_output_exists(workspace, first_run: str) -> None:
    repo, _ = workspace
    stages = run(["dvc", "stage", "list", "--name-only"], repo).split()
    assert stages and ran_stages(first_run) == set(stages)
    for rel in ["data/prepared/target/manifest.json", "data/prepared/target/budgets.json",
                "data/prepared/sources/printed_digits/train_x.npy",
                "data/prepared/sources/random_init/manifest.json",
                "models/printed_digits/model.pt", "models/printed_digits/metrics.json",
                "models/random_init/model.pt", "runs/scratch/runs.json",
                "runs/printed_digits/finetune/0_all.pt", "runs/printed_digits/source_only/model.pt",
                "metrics/evaluate.json", "metrics/runs.csv", "models/printed_digits/history.json",
                "plots/learning_curves.csv", "plots/confusion.csv", "plots/gain.csv",
                "reports/report.md", "reports/report.html"]:
        assert (repo / rel).is_file(), rel
    assert "not in cache" not in run(["dvc", "status"], repo)
    # wall time and memory: beside the outputs, never DVC outputs
    for rel in ["timing/models/printed_digits.json", "timing/runs/scratch.json",
                "timing/runs/printed_digits/finetune.json", "timing/metrics/evaluate.json"]:
        assert (repo / rel).is_file(), rel
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    outs = [o["path"] for entry in lock["stages"].values() for o in entry.get("outs", [])]
    assert outs and not [p for p in outs if "timing" in p]


def test_plausible_numbers(workspace, first_run: str) -> None:
    repo, _ = workspace
    runs = pd.read_csv(repo / "metrics" / "runs.csv", dtype={"budget": str})
    source_only = runs[(runs.source == "printed_digits") & (runs.strategy == "source_only")]
    assert source_only.accuracy.min() > 0.3  # chance is 0.1: printed digits transfer as is
    scratch_all = runs[(runs.strategy == "scratch") & (runs.budget == "all")]
    assert scratch_all.accuracy.mean() >= 0.9
    methods = len(pipeline_params()["grid"]["methods"]["strategies"])  # on printed_digits
    # seeds x budgets x curves (scratch; printed_digits: 4 + the methods; random_init: 3)
    assert len(runs) == 2 * 3 * (1 + 4 + methods + 3)
    report = json.loads((repo / "metrics" / "evaluate.json").read_text())
    assert report["skipped"] == {
        "random_init/source_only": "the source has no trained classifier (null source)"}

def _f3(value: float, signed: bool = False) -> str:
    value = round(value, 3) + 0.0
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def test_report_has_every_section_and_its_numbers_match_the_metrics(workspace,
                                                                    first_run: str) -> None:
    repo, _ = workspace
    report = json.loads((repo / "metrics" / "evaluate.json").read_text())
    md = (repo / "reports" / "report.md").read_text()
    html = (repo / "reports" / "report.html").read_text()
    for heading in ("Recommendation per label budget", "Accuracy per curve and budget",
                    "Transfer gain", "Label efficiency", "Transferability",
                    "What transfer costs and breaks", "What helped", "Provenance"):
        assert f"## {heading}" in md and heading in html
    for curve, by_budget in report["summary"].items():
        for budget, entry in by_budget.items():
            acc = entry["accuracy"]
            assert f"{_f3(acc['mean'])} ± {_f3(acc['std'])}" in md, (curve, budget)
            if "diff" in entry.get("gain", {}):
                assert f"| {curve} | {budget} | {_f3(entry['gain']['diff'], True)} |" in md
    for rec in report["recommendations"].values():
        if rec["best"] is None:  # no labels to hold out (1 per class): nothing is chosen
            assert "No recommendation" in md
            continue
        assert f"`{rec['best']}` with accuracy **{_f3(rec['accuracy']['mean'])}**" in md
    helped = report["what_helped"]["sources"]["printed_digits"]
    for budget, entry in helped.items():
        assert set(pipeline_params()["grid"]["methods"]["strategies"]) <= set(entry["methods"])
        for method, m in entry["methods"].items():
            assert f"{_f3(m['gain']['diff'], True)} " in md, (budget, method)
    for curve, le in report["label_efficiency"]["curves"].items():
        assert f"| {curve} |" in md and _f3(le["aulc"]) in md


def test_metrics_and_plots_commands(workspace, first_run: str) -> None:
    repo, _ = workspace
    shown = run(["dvc", "metrics", "show", "--json"], repo)
    # the headline only (per curve and budget), not every number of evaluate.json
    assert "metrics/headline/scratch.json" in shown and '"accuracy"' in shown
    assert "metrics/evaluate.json" not in shown and "recommendations" not in shown
    out = run(["dvc", "plots", "show", "-o", "dvc_plots"], repo)
    assert (repo / "dvc_plots" / "index.html").is_file(), out


def test_second_repro_is_a_noop(workspace, first_run: str) -> None:
    repo, env = workspace
    log = run(["dvc", "repro"], repo, env)
    assert ran_stages(log) == set()


def test_one_strategy_edit_reruns_only_the_stages_running_it(workspace, first_run: str) -> None:
    repo, env = workspace
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["transfer"]["finetune"]["lr"] = 0.002
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    log = run(["dvc", "repro"], repo, env)
    # the stages of the sources that run finetune (one stage per source runs all its
    # strategies); the baseline's stage reads transfer.scratch only
    assert ran_stages(log) == {"transfer@printed_digits", "transfer@random_init", "evaluate",
                               "report"}


def test_deleted_outputs_come_back_from_the_run_cache(workspace, first_run: str) -> None:
    repo, env = workspace
    checkpoint = repo / "runs" / "scratch" / "0_all.pt"
    content = checkpoint.read_bytes()
    shutil.rmtree(repo / "runs" / "scratch")
    log = run(["dvc", "repro"], repo, env)
    assert "Stage 'scratch' is cached - skipping run" in log
    assert ran_stages(log) == set()  # nothing ran: the outputs were checked out
    assert checkpoint.read_bytes() == content


def _sync(repo: Path, env: dict) -> dict[str, list[str]]:
    out = run([sys.executable, "-m", "transferlab.tracking", "sync"], repo, env)
    rows = {}
    for line in out.strip().splitlines():
        key, _count, *stages = line.split()
        rows[key] = stages
    return rows


def test_sync_rebuilds_the_mirror_idempotently(workspace, first_run: str) -> None:
    """Tracking was off for the first run: sync re-creates every tracked stage from the outputs
    on disk, tagged with dvc.lock's md5s; a second sync changes nothing."""
    repo, env = workspace
    tracked = {s for s in run(["dvc", "stage", "list", "--name-only"], repo).split()
               if s.split("@")[0] in ("pretrain", "transfer", "methods", "scratch", "evaluate")}
    first = _sync(repo, env)
    assert set(first["recreated"]) == tracked
    second = _sync(repo, env)
    assert second["recreated"] == [] and second["tagged"] == [] and second["skipped_marked"] == []
    from mlflow.tracking import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("transferlab").experiment_id
    (run_,) = client.search_runs([exp], "tags.`dvc.stage` = 'pretrain@printed_digits'")
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    model_md5 = next(o["md5"] for o in lock["pretrain@printed_digits"]["outs"]
                     if o["path"].endswith("model.pt"))
    assert run_.data.tags["dvc.out.models/printed_digits/model.pt"] == model_md5
    assert run_.data.metrics["test.accuracy"] > 0
    data_md5 = next(o["md5"] for o in lock["prepare"]["outs"])
    assert [d.dataset.digest for d in run_.inputs.dataset_inputs] == [data_md5]


def _lock_outs(repo: Path) -> dict[str, dict[str, str]]:
    """{stage: {out path: md5}} of dvc.lock."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {name: {o["path"]: o["md5"] for o in entry.get("outs", [])}
            for name, entry in lock["stages"].items()}


def _choices(repo: Path, params: dict) -> dict:
    """Every choice the pipeline made: checkpoints (by hash), recommendations, champions."""
    from transferlab.evaluation.evaluate import champion_checkpoints, discover_runs

    metrics = json.loads((repo / "metrics" / "evaluate.json").read_text())
    recs = metrics["recommendations"]
    methods = params["grid"]["methods"]
    runs = discover_runs(repo / "runs", list(params["prepare"]["sources"]),
                         params["grid"]["strategies"],
                         [(s, m) for s in methods["sources"] for m in methods["strategies"]])
    champions = champion_checkpoints(recs, runs)
    return {
        "checkpoints": {str(p.relative_to(repo)): sha256_file(p)
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
    manifest["sha256"]["test_y.npy"] = sha256_file(path)
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2))


def test_forced_rerun_is_bit_identical_and_tracking_is_a_mirror(workspace, first_run) -> None:
    """Every stage reruns, tracked, in one execution: first every stage downstream of the data on
    permuted test labels (no checkpoint, recommendation or champion may change: the test split
    never chooses), then `prepare` (which restores the labels), `evaluate` and `report`. Every
    output is the first run's, byte for byte."""
    repo, env = workspace
    env = dict(env, TRANSFERLAB_EXECUTION="forced-rerun")  # one execution, as `make repro` sets
    before = {p: (repo / p).read_bytes() for p in
              ["metrics/evaluate.json", "metrics/runs.csv", "models/printed_digits/metrics.json",
               "plots/learning_curves.csv"]}
    outs_before = _lock_outs(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    choices = _choices(repo, params)
    assert params["tracking"]["enabled"] is False  # the first run was untracked
    params["tracking"]["enabled"] = True
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _permute_test_labels(repo / "data" / "prepared" / "target", seed=1)
    order = ("pretrain", "scratch", "transfer", "methods", "evaluate", "report")
    downstream = sorted((s for s in outs_before if s != "prepare"),
                        key=lambda s: order.index(s.split("@")[0]))
    run(["dvc", "repro", "--force", "--single-item", *downstream], repo, env)
    permuted = _choices(repo, params)
    assert permuted["checkpoints"] == choices["checkpoints"]
    assert permuted["recommended"] == choices["recommended"]
    assert permuted["champions"] == choices["champions"]
    # ... while the test split did change what evaluate measured (the permutation took effect)
    assert permuted["test_accuracy"] != choices["test_accuracy"]
    # 1 label per class: nothing can be held out, so no choice is made there
    assert choices["recommended"]["1"][0] is None
    assert choices["recommended"]["10"][0] is not None
    run(["dvc", "repro", "--force", "--single-item", "prepare", "evaluate", "report"], repo, env)
    for path, content in before.items():
        assert (repo / path).read_bytes() == content, f"{path} changed on a forced rerun"
    # every out's md5 in the lock, the checkpoints included; the report is the one exception,
    # as it shows the params file, which switching tracking on has just changed
    after_outs = _lock_outs(repo)
    assert after_outs.pop("report") != outs_before.pop("report")
    assert after_outs == outs_before
    # the live runs of this execution are found by their outputs' digest, not re-created
    after = _sync(repo, env)
    assert after["recreated"] == [] and after["skipped_marked"] == []
    assert len(after["tagged"]) == len(after["tagged"] + after["ok"]) > 0
    # a later execution in which DVC skips every stage: sync marks them, linked to the producer
    later = dict(env, TRANSFERLAB_EXECUTION="later-execution")
    marked = _sync(repo, later)
    assert set(marked["skipped_marked"]) == set(after["tagged"] + after["ok"])
    assert _sync(repo, later)["skipped_marked"] == []  # idempotent
    # `make repro` ends the pipeline run (dvc repro alone leaves it RUNNING), with this
    # machine's wall time and provenance from timing/
    run([sys.executable, "-m", "transferlab.reporting.costs"], repo, env)
    run([sys.executable, "-m", "transferlab.tracking", "finish", "--status", "FINISHED"], repo,
        later)
    # each budget's champion is registered with its signature, alias `champion`
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    for budget in ("10", "all"):  # at 1 label per class nothing is chosen, so no champion
        # registered by each tracked evaluate: on the permuted labels, then on the true ones
        version = client.get_model_version_by_alias(f"transferlab-{budget}", "champion")
        assert int(version.version) == 2 and "champion" in version.aliases
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias("transferlab-1", "champion")
    exp = client.get_experiment_by_name("transferlab").experiment_id
    (pipeline,) = client.search_runs([exp], "tags.`transferlab.execution` = 'later-execution' "
                                     "and tags.`transferlab.kind` = 'pipeline'")
    assert pipeline.info.status == "FINISHED"
    assert pipeline.data.tags["transferlab.cpu.ATEN_CPU_CAPABILITY"] == "avx2"
    assert any(k.startswith("compute.curves.") for k in pipeline.data.metrics)
