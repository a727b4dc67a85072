"""The whole built-in default, as `make repro` runs it: the real `dvc repro` of params.yaml,
unshrunk, with tracking on (the stages journal, the mirror stage writes MLflow once). The one
whole-pipeline run of `make test`; the shrunk variants with forced reruns are in
test_pipeline.py (slow)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import GIT_ID, ROOT, VENV_ENV, run
from transferlab.adapt.strategies import grid_strategies
from transferlab.config.params import load_params
from transferlab.core.run_context import EXECUTION_ENV
from transferlab.core.workspace import copy_worktree

EXECUTION = "default-pipeline"


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """(the repo, the dvc repro log, the MLflow store's URI) of one `dvc repro` from nothing."""
    root = tmp_path_factory.mktemp("default")
    repo = root / "repo"
    copy_worktree(ROOT, repo)
    (repo / "dvc.lock").unlink(missing_ok=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    env = dict(VENV_ENV, MLFLOW_TRACKING_URI=uri, **{EXECUTION_ENV: EXECUTION})
    run(["git", "add", "-A"], repo)
    run(["git", *GIT_ID, "commit", "-qm", "default", "--allow-empty"], repo)
    return repo, run(["dvc", "repro"], repo, env), uri


def test_every_stage_ran_and_every_declared_output_exists(default_run) -> None:
    repo, log, _ = default_run
    stages = run(["dvc", "stage", "list", "--name-only"], repo).split()
    assert set(re.findall(r"Running stage '([^']+)'", log)) == set(stages)
    assert "mirror" in stages
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    for entry in lock.values():
        for out in entry.get("outs", []):
            assert (repo / out["path"]).exists(), out["path"]
    assert "Data and pipelines are up to date" in run(["dvc", "status"], repo)
    assert not list((repo / ".tracking-journal").glob("*"))  # every journal was replayed
    # bytecode Python writes into a package folder a stage depends on (where
    # PYTHONDONTWRITEBYTECODE is unset, as for most users) changes nothing (.dvcignore)
    cache = repo / "transferlab" / "data" / "kinds" / "__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "fonts.cpython-311.pyc").write_bytes(b"bytecode")
    assert "Data and pipelines are up to date" in run(["dvc", "status"], repo)


def test_a_progress_line_per_replicate(default_run) -> None:
    repo, log, _ = default_run
    params = load_params(repo / "params.yaml")
    total = len(params.common.seeds) * len(params.prepare.budgets)
    lines = re.findall(r"^transfer printed_digits/finetune b=\w+ seed \d+ \((\d+)/(\d+)\) "
                       r"selection (?:n/a|\d\.\d{3})$", log, flags=re.M)
    assert [int(done) for done, _ in lines] == list(range(1, total + 1))
    assert {int(n) for _, n in lines} == {total}


def test_metrics_show_fits_on_one_screen(default_run) -> None:
    repo, _, _ = default_run
    shown = run(["dvc", "metrics", "show"], repo).rstrip("\n").splitlines()
    assert len(shown) <= 25 and max(len(line) for line in shown) <= 200, "\n".join(shown)
    assert any("metrics/headline/printed_digits/finetune.json" in line for line in shown)
    headline = json.loads((repo / "metrics/headline/printed_digits/finetune.json").read_text())
    budgets = [str(b) for b in load_params(repo / "params.yaml").prepare.budgets]
    assert set(headline) == set(budgets)
    # a null verdict (0) also carries the gain it could have detected (mde; none where every
    # seed gave the same difference), a decided one does not
    for values in headline.values():
        assert {"accuracy", "gain", "verdict"} <= set(values) <= {
            "accuracy", "gain", "verdict", "mde"}, values
        assert "mde" not in values or values["verdict"] == 0, values
    assert any("mde" in v for f in (repo / "metrics/headline").rglob("*.json")
               for v in json.loads(f.read_text()).values())
    assert sum(len(v) for f in (repo / "metrics/headline").rglob("*.json")
               for v in json.loads(f.read_text()).values()) <= 150


def test_the_mlflow_tree_is_complete(default_run) -> None:
    repo, _, uri = default_run
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("transferlab")
    runs = client.search_runs([exp.experiment_id], max_results=5000)
    ours = [r for r in runs if r.data.tags.get("transferlab.execution") == EXECUTION]
    (pipeline,) = [r for r in ours if r.data.tags.get("transferlab.kind") == "pipeline"]
    # one run per stage, and per strategy of a transfer@<source> stage
    stages = {(r.data.tags["dvc.stage"], r.data.tags.get("transferlab.strategy")): r
              for r in ours if "dvc.stage" in r.data.tags
              and r.data.tags.get("mlflow.parentRunId") == pipeline.info.run_id}
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    tracked = {s for s in lock if s.split("@")[0] not in ("prepare", "report", "mirror")}
    assert {stage for stage, _ in stages} == tracked
    params = load_params(repo / "params.yaml")
    for source in params.prepare.sources:
        assert {st for s, st in stages if s == f"transfer@{source}"} == \
            set(grid_strategies(params.grid, source))
    replicates = len(params.common.seeds) * len(params.prepare.budgets)
    finetune = stages[("transfer@printed_digits", "finetune")]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == finetune.info.run_id]
    assert len(children) == replicates
    assert all(r.info.status == "FINISHED" for r in [*stages.values(), *children])
    assert finetune.data.params and finetune.data.tags["dvc.lock.synced"] == "true"
    assert finetune.data.tags.get("transferlab.source_run_id") == \
        stages[("pretrain@printed_digits", None)].info.run_id
    # the champions of the budgets that have one are registered
    top = params.prepare.budgets[-1]  # the largest budget has a recommended curve
    assert MlflowClient(uri).get_model_version_by_alias(f"transferlab-{top}", "champion").run_id
