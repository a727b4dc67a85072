"""A DVC remote that two machines share, through the real `dvc` and a real remote on this host:

- a directory, standing for a shared filesystem (NFS, a mounted volume);
- an S3-compatible server on 127.0.0.1 (moto's server, an emulator of the S3 API; not Amazon S3),
  reached through `dvc-s3` exactly as a real bucket would be.

Machine A runs the pipeline and pushes its outputs and its run-cache. Machine B, a fresh clone
with an empty cache, pulls and reruns nothing. Machine C has the commit but no lock (a run A
made and never committed): `dvc repro --pull` restores the stages whose outputs are all in the
DVC cache (prepare, transfers, report) from the shared run-cache, and reruns the two that write
git-tracked metrics (see the README).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests import conftest
from tests.conftest import GIT_ID, VENV_ENV, BuiltPipeline
from transferlab.tracking import services

ENV = dict(VENV_ENV, AWS_ACCESS_KEY_ID="transferlab-test",
           AWS_SECRET_ACCESS_KEY="transferlab-test", AWS_DEFAULT_REGION="us-east-1")
BUCKET = "transferlab-cache"


def run(cmd: list[str], cwd: Path) -> str:
    return conftest.run(cmd, cwd, ENV)


def git(repo: Path, *args: str) -> str:
    return run(["git", *GIT_ID, *args], repo)


def ran(log: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", log))


def lock_outs(repo: Path) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for entry in lock["stages"].values()
            for o in entry.get("outs", [])}


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory):
    import boto3

    port = services.free_port()
    server = services.s3_server(port, log=tmp_path_factory.mktemp("s3") / "s3.log").start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="transferlab-test",
                 aws_secret_access_key="transferlab-test",
                 region_name="us-east-1").create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture(scope="module")
def machine_a(tiny_pipeline: BuiltPipeline, tmp_path_factory: pytest.TempPathFactory,
              s3: str) -> tuple[Path, dict, set]:
    """Machine A: the pipeline run once (the session's tiny pipeline), pushed with its
    run-cache to both remotes, committed."""
    root = tmp_path_factory.mktemp("shared")
    repo = tiny_pipeline.copy(root / "a")
    run(["dvc", "remote", "add", "shared-dir", str(root / "remote-dir")], repo)
    run(["dvc", "remote", "add", "shared-s3", f"s3://{BUCKET}/cache"], repo)
    run(["dvc", "remote", "modify", "shared-s3", "endpointurl", s3], repo)
    for remote in ("shared-dir", "shared-s3"):
        assert "pushed" in run(["dvc", "push", "--run-cache", "-r", remote], repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "remotes")
    return repo, lock_outs(repo), ran(tiny_pipeline.log)


def clone(machine_a: tuple[Path, dict, set], name: str, remote: str) -> Path:
    a, _, _ = machine_a
    dest = a.parent / name
    shutil.rmtree(dest, ignore_errors=True)
    run(["git", "clone", "-q", str(a), str(dest)], a.parent)
    assert not (dest / ".dvc" / "cache").exists()  # its own, empty cache
    run(["dvc", "remote", "default", "--local", remote], dest)
    return dest


# the directory remote in make test-all (make test keeps S3, the service): 14 s here
@pytest.mark.parametrize("remote", [pytest.param("shared-dir", marks=pytest.mark.slow),
                                    "shared-s3"])
def test_fresh_clone_pulls_and_reruns_nothing(machine_a, remote: str) -> None:
    a, outs, first = machine_a
    assert first == set(run(["dvc", "stage", "list", "--name-only"], a).split())
    b = clone(machine_a, f"b-{remote}", remote)
    run(["dvc", "pull"], b)
    log = run(["dvc", "repro"], b)
    assert ran(log) == set(), log
    assert "Data and pipelines are up to date" in run(["dvc", "status"], b)
    assert lock_outs(b) == outs
    for rel in ["models/printed_digits/model.pt", "models/printed_digits/history.json",
                "reports/report.md", "metrics/evaluate.json"]:
        assert (b / rel).read_bytes() == (a / rel).read_bytes(), rel


# the run-cache through the directory remote: make test-all (make test pulls outputs from it
# above, and takes the run-cache through S3)
@pytest.mark.parametrize("remote", [pytest.param("shared-dir", marks=pytest.mark.slow),
                                    "shared-s3"])
def test_second_machine_reuses_stages_it_never_ran(machine_a, remote: str) -> None:
    a, outs, _ = machine_a
    c = clone(machine_a, f"c-{remote}", remote)
    (c / "dvc.lock").unlink()  # this machine has not run, nor been told the results
    log = run(["dvc", "repro", "--pull"], c)
    stages = set(run(["dvc", "stage", "list", "--name-only"], c).split())
    restored = set(re.findall(r"Stage '([^']+)' is cached - skipping run", log))
    # the stages that write git-tracked metrics (cache: false) rerun: DVC pushes no object of
    # an uncached output, so the run-cache entry cannot be completed elsewhere (README); the
    # mirror stage has no outputs to restore: it writes this machine's MLflow runs
    uncached = {"pretrain@printed_digits", "evaluate", "mirror"}
    assert ran(log) == uncached, log
    assert restored == stages - uncached, log
    # they rerun to the same bytes, so every stage after them was restored, and the lock is A's
    assert lock_outs(c) == outs


def test_unreachable_remote_is_a_clear_error(machine_a) -> None:
    a, _, _ = machine_a
    port = services.free_port()  # nothing listens there
    b = clone(machine_a, "b-down", "shared-s3")
    run(["dvc", "remote", "modify", "--local", "shared-s3", "endpointurl",
         f"http://127.0.0.1:{port}"], b)
    proc = subprocess.run(["dvc", "pull"], cwd=b, capture_output=True, text=True,
                          env=dict(ENV, AWS_MAX_ATTEMPTS="1"))  # no retry back-off
    assert proc.returncode != 0
    assert "failed to connect to s3" in proc.stderr and f"127.0.0.1:{port}" in proc.stderr, (
        proc.stderr)
    assert not (b / "models/printed_digits/model.pt").exists()
