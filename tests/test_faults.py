"""Faults: a real MLflow server that is down or dies, a server whose starter dies, stages that
raise or get SIGTERM, a fresh sqlite store hit by several processes at once, and
`dvc exp run --queue` with two workers."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import ROOT, VENV_ENV, MlflowServer, shrunk_params
from transferlab.config.params import TrackingParams
from transferlab.core.run_context import EXECUTION_ENV
from transferlab.core.workspace import copy_worktree
from transferlab.tracking.tracker import Tracker, tracked


def runs_of(uri: str, experiment: str = "transferlab") -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


def test_real_server_receives_the_run_tree(mlflow_server: MlflowServer,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    monkeypatch.setenv(EXECUTION_ENV, "server-exec")
    with tracked(Tracker(TrackingParams(live=True, experiment="server"), "pretrain")) as tracker:
        tracker.child("c", {}, {"budget": "1"}, {"accuracy": 0.5})
    names = {r.info.run_name: r for r in runs_of(mlflow_server.uri, "server")}
    assert {"pipeline server-exec", "pretrain", "c"} <= set(names)
    assert names["c"].data.metrics == {"accuracy": 0.5}
    assert names["pretrain"].info.status == "FINISHED"


@pytest.mark.slow  # a second MLflow-server fault (make test keeps the real-server run tree): 20 s
def test_server_killed_mid_run_does_not_stop_the_stage(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    server = MlflowServer(tmp_path / "mlflow.db").start()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    finished_work = False
    try:
        with tracked(Tracker(TrackingParams(live=True), "pretrain")) as tracker:
            tracker.log_metrics(tracker.run_id, {"epoch_loss": 1.0})
            server.stop()  # the server dies while the stage is training
            for epoch in range(3):
                tracker.log_metrics(tracker.run_id, {"epoch_loss": 1.0 / (epoch + 2)})
            finished_work = True
    finally:
        server.stop()
    assert finished_work and tracker.failures == 1 and tracker.enabled is False
    (warned,) = [r for r in caplog.records if r.name == "transferlab.tracking.tracker"]
    err = warned.getMessage()
    assert warned.levelno == logging.WARNING
    assert "MLflow tracking failed" in err and "python -m transferlab.tracking sync" in err


STARTER = """
import sys, time
from pathlib import Path
from transferlab.tracking import services
server = services.Service("sleeper", [sys.executable, "-c", "import time; time.sleep(600)"],
                          lambda: True, Path(sys.argv[1]))
server.start(timeout=30)
print(server.proc.pid, flush=True)
time.sleep(600)
"""


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent has not collected it yet


def test_a_server_does_not_outlive_the_process_that_started_it(tmp_path: Path) -> None:
    # a test run killed by a timeout (or `serve` killed with SIGKILL) must not leave its servers
    starter = subprocess.Popen([sys.executable, "-c", STARTER, str(tmp_path / "sleeper.log")],
                               stdout=subprocess.PIPE, text=True,
                               env=dict(VENV_ENV, PYTHONPATH=str(ROOT)))
    try:
        server = int(starter.stdout.readline())
        time.sleep(1.5)
        assert _running(server)
    finally:
        starter.kill()
        starter.wait()
    deadline = time.monotonic() + 30
    while _running(server) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _running(server), f"the server (pid {server}) outlived its starter by 30 s"


def test_fresh_sqlite_store_survives_concurrent_first_use(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = ("from transferlab.config.params import TrackingParams\n"
            "from transferlab.tracking.tracker import Tracker, tracked\n"
            "with tracked(Tracker(TrackingParams(live=True), 'pretrain')) as t:\n"
            "    t.log_metrics(t.run_id, {'m': 1.0})\n")
    env = dict(VENV_ENV, MLFLOW_TRACKING_URI=uri, EXECUTION_ENV="x", PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    assert sum(r.info.run_name == "pretrain" for r in runs_of(uri)) == 4


# -- stages that fail, through the real dvc ---------------------------------------------------

def _run(cmd: list[str], cwd: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def prepared_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A temporary git+dvc copy with tracking on and `prepare` already reproduced."""
    repo = tmp_path_factory.mktemp("faults") / "repo"
    copy_worktree(ROOT, repo)
    params = shrunk_params()
    params["tracking"].update(enabled=True, log_models=False, live=True)  # runs as they happen
    # training that cannot end by itself within the test: the SIGTERM always lands mid-training
    params["pretrain"].update(epochs=100_000, patience=100_000)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / "dvc.lock").unlink(missing_ok=True)
    env = dict(VENV_ENV, MLFLOW_TRACKING_URI=f"sqlite:///{repo / 'mlflow.db'}")
    for cmd in (["git", "add", "-A"],
                ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "x"],
                ["dvc", "repro", "prepare"]):
        _run(cmd, repo, env)
    return repo, env


def _stage_runs(repo: Path, stage: str) -> list:
    return [r for r in runs_of(f"sqlite:///{repo / 'mlflow.db'}")
            if r.data.tags.get("dvc.stage") == stage and r.data.tags.get("transferlab.kind")
            != "pipeline" and "mlflow.parentRunId" in r.data.tags
            and r.info.run_name == "pretrain"]


def _assert_failed_cleanly(repo: Path, lock_before: bytes, source: str) -> None:
    assert (repo / "dvc.lock").read_bytes() == lock_before  # dvc.lock unchanged
    folder = repo / "models" / source
    assert not folder.exists() or not any(folder.iterdir()), list(folder.iterdir())


def _python_process(session: int, script: str) -> int | None:
    """The python process running `script` in `session`, not the shell that DVC wraps it in
    (`sh -c "python -m stages..."` matches the same command line, and dash does not exec it)."""
    out = subprocess.run(["pgrep", "-s", str(session), "-f", script],
                         capture_output=True, text=True).stdout.split()
    for pid in map(int, out):
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except FileNotFoundError:  # it ended between pgrep and here
            continue
        if name.startswith("python"):
            return pid
    return None


def test_sigterm_ends_the_run_killed_and_leaves_nothing(prepared_repo) -> None:
    repo, env = prepared_repo
    lock_before = (repo / "dvc.lock").read_bytes()
    dvc = subprocess.Popen(["dvc", "repro", "pretrain@printed_digits"], cwd=repo, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    try:
        stage_pid = None
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and stage_pid is None:
            time.sleep(0.5)
            if _stage_runs(repo, "pretrain@printed_digits"):  # its MLflow run has started
                stage_pid = _python_process(dvc.pid, "stages.pretrain_source")
        assert stage_pid, "the stage never started"
        time.sleep(1.0)
        os.kill(stage_pid, signal.SIGTERM)
        log = dvc.communicate(timeout=120)[0]
    finally:
        # never leave a 100,000-epoch stage running behind a failure, even one orphaned by its
        # dvc parent: kill whatever is left in the session
        subprocess.run(["pkill", "-KILL", "-s", str(dvc.pid)], check=False)
        dvc.wait()
    assert dvc.returncode != 0, log
    (run,) = _stage_runs(repo, "pretrain@printed_digits")
    assert run.info.status == "KILLED"
    _assert_failed_cleanly(repo, lock_before, "printed_digits")


def test_raising_stage_ends_the_run_failed_and_leaves_nothing(prepared_repo) -> None:
    repo, env = prepared_repo
    lock_before = (repo / "dvc.lock").read_bytes()
    train_x = repo / "data" / "prepared" / "sources" / "printed_digits" / "train_x.npy"
    original = train_x.read_bytes()
    arr = np.load(train_x)
    arr[0, 0, 0] ^= 1
    np.save(train_x, arr)  # a hand-edited array: the stage raises when it reads it
    try:
        proc = _run(["dvc", "repro", "--single-item", "pretrain@printed_digits"], repo, env,
                    check=False)
    finally:
        train_x.write_bytes(original)
    assert proc.returncode != 0
    assert "train_x.npy: sha256 does not match" in proc.stdout + proc.stderr
    runs = _stage_runs(repo, "pretrain@printed_digits")
    assert runs and runs[0].info.status == "FAILED"  # newest first
    _assert_failed_cleanly(repo, lock_before, "printed_digits")


@pytest.mark.slow  # a pipeline run of its own under dvc queue: 39 s here
def test_queue_with_two_workers_lands_every_run(tmp_path: Path) -> None:
    """`dvc exp run --queue` runs stages in copies under .dvc/tmp/exps; their runs must land in
    the workspace's store, with no "database is locked"."""
    repo = tmp_path / "q"
    repo.mkdir()
    (repo / "params.yaml").write_text("x: 1\n")
    (repo / "stage.py").write_text(
        "import os, sys, yaml\n"
        "from transferlab.config.params import TrackingParams\n"
        "from transferlab.tracking.tracker import Tracker, tracked\n"
        "x = yaml.safe_load(open('params.yaml'))['x']\n"
        "with tracked(Tracker(TrackingParams(live=True), 'toy', {}, {'x': x})) as t:\n"
        "    t.log_metrics(t.run_id, {'x': float(x)})\n"
        "open('out.txt', 'w').write(str(x))\n")
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"toy": {
        "cmd": "python stage.py", "deps": ["stage.py"], "params": ["x"], "outs": ["out.txt"]}}}))
    (repo / ".gitignore").write_text("/out.txt\n/mlflow.db*\n")
    env = {k: v for k, v in VENV_ENV.items() if k != "MLFLOW_TRACKING_URI"}
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"],
                ["dvc", "config", "core.analytics", "false"], ["git", "add", "-A"],
                ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "x"]):
        _run(cmd, repo, env)
    for x in (2, 3, 4, 5):
        _run(["dvc", "exp", "run", "--queue", "-S", f"x={x}", "-q"], repo, env)
    _run(["dvc", "queue", "start", "-j", "2"], repo, env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status = _run(["dvc", "queue", "status"], repo, env).stdout
        if status.count("Success") + status.count("Failed") >= 4 and "Running" not in status:
            break
        time.sleep(2)
    assert status.count("Success") == 4, status
    runs = runs_of(f"sqlite:///{repo / 'mlflow.db'}")
    # a "database is locked" crash would have failed its experiment and lost its run
    assert sorted(r.data.metrics["x"] for r in runs if r.info.run_name == "toy") == [2, 3, 4, 5]
