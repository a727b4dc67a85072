"""The Ray backend through the real `dvc` and a real two-node Ray cluster on loopback
(tests/ray_cluster.py: one GCS, two raylets with their own worker processes, all on 127.0.0.1).

- The transfer stages write the same bytes on Ray (each search point and each refit a task) as
  in the stage process (the same dvc.lock).
- A worker process killed mid-task: Ray reruns the task, the outputs are complete and the same,
  and MLflow holds one run per replicate (only the stage process logs). Its tasks ask for
  half a GPU each (execution.num_gpus: 0.5) of the GPU each node declares.
- No address: the stage starts a private Ray of its own, with the same bytes.
- An address where no cluster answers: a clear error naming execution.address, and nothing
  written.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import BuiltPipeline
from tests.ray_cluster import DRIVER_ENV, holder
from transferlab.tracking import services

STAGE = "transfer@printed_digits"  # the tiny pipeline's: linear_probe, then finetune
ENV = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", **DRIVER_ENV)


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=ENV)
    if check:
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """{"address", "raylet_pids"} of a two-node cluster with one CPU per node, each node
    declaring one GPU (Ray schedules by the declared count; no CUDA runs here)."""
    # Ray's unix sockets live under its temp dir: keep the path short (108-byte limit)
    temp = Path(tempfile.mkdtemp(prefix="tlray", dir="/tmp"))
    service, info = holder(temp, tmp_path_factory.mktemp("ray") / "cluster.log", gpus=1,
                           env=ENV)
    try:
        with service.start(timeout=120):
            yield info()
    finally:
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def repo(tiny_pipeline: BuiltPipeline, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session's tiny pipeline (its two transfer stages ran in the stage
    process), tracking into a sqlite store of its own."""
    repo = tiny_pipeline.copy(tmp_path_factory.mktemp("rayrepo") / "repo")
    ENV["MLFLOW_TRACKING_URI"] = f"sqlite:///{repo / 'mlflow.db'}"
    return repo


def use_ray(repo: Path, address: str, **extra: object) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["execution"] = {"backend": "ray", "address": address, "num_cpus": 1, **extra}
    params["tracking"]["live"] = True  # single stages rerun here: their runs as they happen
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def locked_outs(repo: Path) -> dict:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return lock[STAGE]["outs"]


def transfer_runs(repo: Path) -> list:
    """The transfer stage's MLflow runs: each strategy's, and their replicates'."""
    client = MlflowClient(ENV["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("transferlab")
    return [r for r in client.search_runs([exp.experiment_id], max_results=1000)
            if r.data.tags.get("dvc.stage") == STAGE]


def test_ray_backend_writes_the_bytes_of_the_local_backend(repo: Path, cluster: dict) -> None:
    """The linear probe and finetune (two learning rates searched); the bytes under a worker's
    kill are checked in the next test, and with a private Ray (slow)."""
    local = locked_outs(repo)
    use_ray(repo, cluster["address"])
    log = run(["dvc", "repro", "--force", "--single-item", STAGE], repo)
    assert log.stdout.count("Running stage") == 1
    assert locked_outs(repo) == local  # every file of both strategies, byte for byte (md5)


def _task_workers(raylets: list[int]) -> list[psutil.Process]:
    """The worker processes of this cluster's raylets that are running a transfer task now
    (Ray titles a worker `ray::<task name>` while it runs one)."""
    found = []
    for pid in raylets:
        for child in psutil.Process(pid).children(recursive=True):
            try:
                if "transferlab:finetune" in " ".join(child.cmdline()):
                    found.append(child)
            except psutil.NoSuchProcess:
                continue
    return found


@pytest.mark.slow  # a second Ray test (make test keeps the bytes-equal one): 54 s here
def test_a_worker_killed_mid_task_is_retried_and_logged_once(repo: Path, cluster: dict) -> None:
    """Each task also asks for half a GPU: a fractional GPU through the real scheduler (a task
    holds half of its node's declared GPU; it trains on common.device, the CPU)."""
    local = locked_outs(repo)
    use_ray(repo, cluster["address"], num_gpus=0.5)
    before = {r.info.run_id for r in transfer_runs(repo)}
    dvc = subprocess.Popen(["dvc", "repro", "--force", "--single-item", STAGE], cwd=repo,
                           env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    try:
        victims: list[psutil.Process] = []
        deadline = time.monotonic() + 120
        while not victims and time.monotonic() < deadline and dvc.poll() is None:
            time.sleep(0.2)
            victims = _task_workers(cluster["raylet_pids"])
        assert victims, "no worker ever ran a finetune task"
        time.sleep(1.0)
        # still titled with the task, so the kill lands mid-task (Ray retitles it when it ends)
        assert "transferlab:finetune" in " ".join(victims[0].cmdline())
        victims[0].send_signal(signal.SIGKILL)
        log = dvc.communicate(timeout=300)[0]
    finally:
        if dvc.poll() is None:
            os.killpg(dvc.pid, signal.SIGKILL)
            dvc.wait()
    assert dvc.returncode == 0, log
    assert locked_outs(repo) == local
    new = [r for r in transfer_runs(repo) if r.info.run_id not in before]
    stage_runs = [r for r in new if r.info.run_name == "transfer"
                  and r.data.tags.get("transferlab.strategy") == "finetune"]
    assert len(stage_runs) == 1
    children = [r for r in new
                if r.data.tags.get("mlflow.parentRunId") == stage_runs[0].info.run_id]
    replicates = {(r.data.tags.get("transferlab.seed"), r.data.tags.get("transferlab.budget"))
                  for r in children}
    assert len(stage_runs) == 1 and stage_runs[0].info.status == "FINISHED"
    assert len(children) == len(replicates) == 2, [r.info.run_name for r in children]
    # each replicate's run and the stage's are tagged with the device the tasks ran on (here
    # the driver's too: on CPU only, this checks the tags are there, not where they come from)
    assert {r.data.tags["transferlab.device"] for r in children + stage_runs} == {"cpu"}


@pytest.mark.slow  # a third Ray start and stage run: make test-all
def test_a_private_ray_on_this_machine_writes_the_same_bytes(repo: Path) -> None:
    """execution.address null: the stage starts its own Ray (on loopback, DRIVER_ENV) and
    stops it when it ends."""
    local = locked_outs(repo)
    use_ray(repo, None)
    temp = Path(tempfile.mkdtemp(prefix="tlray", dir="/tmp"))  # Ray's session files
    try:
        ENV["RAY_TMPDIR"] = str(temp)
        log = run(["dvc", "repro", "--force", "--single-item", STAGE], repo)
    finally:
        ENV.pop("RAY_TMPDIR")
        shutil.rmtree(temp, ignore_errors=True)
    assert "Running stage" in log.stdout
    assert locked_outs(repo) == local


def test_an_unreachable_cluster_names_the_address_and_writes_nothing(repo: Path) -> None:
    lock = (repo / "dvc.lock").read_bytes()
    address = f"127.0.0.1:{services.free_port()}"
    use_ray(repo, address)
    shutil.rmtree(repo / "runs" / "printed_digits" / "finetune")
    runs_before = len(transfer_runs(repo))
    start = time.monotonic()
    proc = run(["dvc", "repro", "--force", "--single-item", STAGE], repo, check=False)
    assert proc.returncode != 0
    assert time.monotonic() - start < 120  # a bounded wait, not Ray's minutes of retries
    assert f"execution.address: no Ray cluster answers at '{address}'" in proc.stderr
    assert (repo / "dvc.lock").read_bytes() == lock
    assert not (repo / "runs" / "printed_digits" / "finetune").exists()
    assert not (repo / "runs" / ".printed_digits.partial").exists()
    assert len(transfer_runs(repo)) == runs_before  # no MLflow run either
