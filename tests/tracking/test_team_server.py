"""The team's tracking server, as `make server` starts it: PostgreSQL (the pinned wheel's server)
and `mlflow server` on it, both on 127.0.0.1 and free ports, in a temporary folder, stopped by
the PID of the `serve` process, which stops both.

- 8 writers at once, each a process with the product's Tracker under one pipeline execution,
  into an experiment none of them finds: no run, metric, param or tag is lost, and the
  execution is still one run tree (one pipeline parent run).
- `make sync` and `make audit` against the server: the same run tree as against sqlite.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, BuiltPipeline
from transferlab.core.run_context import EXECUTION_ENV
from transferlab.tracking import services

VENV = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            PYTHONPATH=str(ROOT))


class TeamServer:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port, self.pg_port = services.free_port(), services.free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "transferlab.tracking.services", "serve", "--dir",
                str(folder), "--port", str(self.port), "--pg-port", str(self.pg_port),
                "--workers", "2"]
        self.service = services.Service("make server", argv, services.http_ok(
            f"{self.uri}/health"), folder.parent / "serve.log", env=VENV)

    def postmaster_pid(self) -> int:
        return int((self.folder / "postgres/data/postmaster.pid").read_text().split()[0])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def server() -> Iterator[TeamServer]:
    # under /tmp, not pytest's private folder: run as root, PostgreSQL runs as user nobody
    folder = Path(tempfile.mkdtemp(prefix="transferlab-server-"))
    folder.chmod(0o755)
    team = TeamServer(folder / "server")
    try:
        team.service.start(timeout=300)
        pg_pid = team.postmaster_pid()
        assert alive(pg_pid)
        yield team
    finally:
        team.service.stop(timeout=60)
        shutil.rmtree(folder, ignore_errors=True)
    assert not alive(pg_pid), "serve did not stop PostgreSQL"


WRITER = """
import sys
from transferlab.config.params import TrackingParams
from transferlab.tracking.tracker import Tracker, tracked
i = int(sys.argv[1])
with tracked(Tracker(TrackingParams(live=True, experiment="team"), f"writer{i}")) as t:
    t.log_metrics(t.run_id, {f"epoch_loss": 1.0 / (i + 1)})
    for j in range(10):
        t.child(f"w{i}-c{j}", {"writer": str(i), "child": str(j)}, {"j": j, "lr": 0.1 * i},
                {"accuracy": j / 10, "loss": 1 - j / 10, "writer": float(i)})
print("failures", t.failures)
"""


@pytest.mark.slow  # a second PostgreSQL test (make test keeps sync and audit): 46 s here
def test_eight_concurrent_writers_lose_nothing(server: TeamServer) -> None:
    from mlflow.tracking import MlflowClient

    env = dict(VENV, MLFLOW_TRACKING_URI=server.uri, **{EXECUTION_ENV: "team-exec"})
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(i)], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(8)]
    outs = [p.communicate(timeout=600) for p in procs]
    failed = [(i, o, e[-3000:]) for i, (p, (o, e)) in enumerate(zip(procs, outs, strict=True))
              if p.returncode]
    assert not failed, failed
    assert all(o.strip().endswith("failures 0") for o, _ in outs), outs

    client = MlflowClient(server.uri)
    exp = client.get_experiment_by_name("team")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    by_name = {r.info.run_name: r for r in runs}
    assert len(runs) == len(by_name) == 1 + 8 + 80
    pipelines = [r for r in runs if r.data.tags.get("transferlab.kind") == "pipeline"]
    assert [r.info.run_name for r in pipelines] == ["pipeline team-exec"]
    for i in range(8):
        stage = by_name[f"writer{i}"]
        assert stage.data.tags["mlflow.parentRunId"] == pipelines[0].info.run_id
        assert stage.data.metrics == {"epoch_loss": pytest.approx(1.0 / (i + 1))}
        for j in range(10):
            child = by_name[f"w{i}-c{j}"]
            assert child.info.status == "FINISHED"
            assert child.data.tags["mlflow.parentRunId"] == stage.info.run_id
            assert child.data.tags["writer"] == str(i) and child.data.tags["child"] == str(j)
            assert child.data.params == {"j": str(j), "lr": str(0.1 * i)}
            assert child.data.metrics == pytest.approx(
                {"accuracy": j / 10, "loss": 1 - j / 10, "writer": float(i)})


def run_tree(uri: str, experiment: str) -> dict:
    """(stage, DVC stage, run name, strategy) -> (metrics, selected tags, params) of an experiment;
    pipeline ids and MLflow's own tags left out, so two stores of the same outputs compare
    equal."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    keep = ("transferlab.stage", "source", "strategy", "budget", "seed", "dvc.")
    tree = {}
    for r in client.search_runs([exp.experiment_id], max_results=5000):
        if r.data.tags.get("transferlab.kind") == "pipeline":
            continue
        tags = {k: v for k, v in r.data.tags.items() if k.startswith(keep)}
        # a transfer@<source> stage has a run per strategy (and theirs have children)
        key = (tags.get("transferlab.stage"), tags.get("dvc.stage"), r.info.run_name,
               r.data.tags.get("transferlab.strategy"))
        assert key not in tree, key
        tree[key] = (r.data.metrics, tags, r.data.params)
    return tree


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name, (metrics, tags, run_params) in a.items():
        # a live run logs full precision; one rebuilt from the JSON outputs, 6 decimals
        assert metrics == pytest.approx(b[name][0], abs=1e-6, nan_ok=True), name
        assert tags == b[name][1], name
        if name[2] != name[0]:  # a stage's own run that sync re-creates has no params (README)
            assert run_params == b[name][2], name


def test_sync_and_audit_against_the_server_as_against_sqlite(
        server: TeamServer, tiny_pipeline: BuiltPipeline, tmp_path: Path) -> None:
    repo = tiny_pipeline.copy(tmp_path / "repo")

    def run(cmd: list[str], uri: str, check: bool = True) -> subprocess.CompletedProcess:
        env = dict(VENV, MLFLOW_TRACKING_URI=uri, **{EXECUTION_ENV: BuiltPipeline.EXECUTION})
        env.pop("PYTHONPATH")
        done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
        assert not check or done.returncode == 0, f"{cmd}:\n{done.stdout}\n{done.stderr}"
        return done

    # what `make repro` leaves in a sqlite store: the runs the stages logged live, and sync's
    live = f"sqlite:///{shutil.copy(tiny_pipeline.mlflow_db, tmp_path / 'live.db')}"
    run([sys.executable, "-m", "transferlab.tracking", "sync"], live)
    on_sqlite = run_tree(live, "transferlab")

    # `make sync` against the server: the same tree, rebuilt from the outputs; twice, no change
    run([sys.executable, "-m", "transferlab.tracking", "sync"], server.uri)
    on_server = run_tree(server.uri, "transferlab")
    run([sys.executable, "-m", "transferlab.tracking", "sync"], server.uri)
    assert_same(run_tree(server.uri, "transferlab"), on_server)
    run([sys.executable, "-m", "transferlab.tracking", "finish", "--status", "FINISHED"],
        server.uri)
    assert len(on_server) > 10
    assert_same(on_sqlite, on_server)

    audit = run([sys.executable, "-m", "transferlab.provenance.audit", "--skip-rerun", "--out",
    "audit"],
                server.uri)
    report = json.loads((repo / "audit/audit.json").read_text())
    assert report["mlflow"]["uri"] == server.uri
    # pretrain, the two transfers, scratch and evaluate: each checked against the outputs
    assert len(report["mlflow"]["stages"]) == 5
    assert report["unexplained"] == [] and report["verdict"] == "pass", audit.stdout
