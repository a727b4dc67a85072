"""Tests for transferlab.core.workspace: throwaway copies of the project."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from transferlab.core.workspace import copy_worktree, export_revision, run_repro

IDENT = ["-c", "user.name=t", "-c", "user.email=t@localhost"]


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repo with two commits of a.txt, b.txt added in the second, an ignored file and an
    uncommitted edit."""
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q")
    (root / ".gitignore").write_text("ignored.txt\n")
    (root / "a.txt").write_text("first")
    _git(root, "add", "-A")
    _git(root, *IDENT, "commit", "-qm", "one")
    (root / "a.txt").write_text("second")
    (root / "b.txt").write_text("b")
    _git(root, "add", "-A")
    _git(root, *IDENT, "commit", "-qm", "two")
    (root / "a.txt").write_text("uncommitted")
    (root / "ignored.txt").write_text("x")
    return root


def test_export_revision_writes_that_commit_only(repo: Path, tmp_path: Path) -> None:
    first = _git(repo, "rev-parse", "HEAD~1")
    dest = tmp_path / "old"
    assert export_revision(repo, "HEAD~1", dest) == first
    assert (dest / "a.txt").read_text() == "first"
    assert not (dest / "b.txt").exists() and not (dest / "ignored.txt").exists()
    assert _git(dest, "status", "--porcelain") == ""  # committed there, a clean tree
    assert _git(dest, "log", "--format=%s") == first


def test_export_revision_rejects_an_unknown_revision(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'nope' is not a commit"):
        export_revision(repo, "nope", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_copy_worktree_takes_uncommitted_edits_not_ignored_files(repo: Path,
                                                                 tmp_path: Path) -> None:
    dest = tmp_path / "copy"
    dest.mkdir()
    copy_worktree(repo, dest)
    assert (dest / "a.txt").read_text() == "uncommitted"
    assert (dest / "b.txt").read_text() == "b"
    assert not (dest / "ignored.txt").exists()


def _toy_pipeline(root: Path, second_cmd: str) -> Path:
    """A git + DVC repo with stage ``first`` (writes a) and stage ``second`` (reads a)."""
    root.mkdir()
    _git(root, "init", "-q")
    dvc = Path(sys.executable).parent / "dvc"
    subprocess.run([str(dvc), "init", "-q"], cwd=root, check=True)
    py = "python -c"
    (root / "dvc.yaml").write_text(
        "stages:\n"
        f"  first:\n    cmd: {py} \"open('a', 'w').write('1')\"\n    outs: [a]\n"
        f"  second:\n    cmd: {second_cmd}\n    deps: [a]\n    outs: [b]\n")
    _git(root, "add", "-A")
    _git(root, *IDENT, "commit", "-qm", "toy")
    return root


def test_run_repro_times_each_stage(tmp_path: Path) -> None:
    repo = _toy_pipeline(tmp_path / "toy", "python -c \"open('b', 'w').write('2')\"")
    row = run_repro(repo, [], tmp_path / "repro.log")
    assert row["status"] == "ok" and row["stages_run"] == ["first", "second"]
    assert set(row["stage_seconds"]) == {"first", "second"} and "log_tail" not in row
    assert all(s > 0 for s in row["stage_seconds"].values())
    assert row["seconds"] >= sum(row["stage_seconds"].values()) - 1e-6
    assert (repo / "b").read_text() == "2"
    assert "Running stage 'second'" in (tmp_path / "repro.log").read_text()


def test_run_repro_kills_the_whole_run_at_its_timeout(tmp_path: Path) -> None:
    # the second stage writes its pid, then sleeps far past the timeout
    repo = _toy_pipeline(tmp_path / "toy", "python -c \"import os, time; "
                         "open('pid', 'w').write(str(os.getpid())); time.sleep(600)\"")
    row = run_repro(repo, [], tmp_path / "repro.log", timeout_s=8)
    assert row["status"] == "timeout" and row["stages_run"] == ["first", "second"]
    assert row["seconds"] < 60 and row["log_tail"]
    pid = int((repo / "pid").read_text())
    assert _ends(pid, within_s=10)  # the stage's process went with dvc


def _ends(pid: int, within_s: float) -> bool:
    """Whether process ``pid`` is gone (or a zombie waiting to be reaped) within the time."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z":
            return True
        time.sleep(0.1)
    return False


def test_run_repro_reports_a_failed_stage(tmp_path: Path) -> None:
    repo = _toy_pipeline(tmp_path / "toy", "python -c \"raise SystemExit('boom')\"")
    row = run_repro(repo, ["second"], tmp_path / "repro.log")
    assert row["status"] == "failed" and row["targets"] == ["second"]
    assert any("boom" in line for line in row["log_tail"])
