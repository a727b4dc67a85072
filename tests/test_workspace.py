"""Tests for transferlab.workspace: throwaway copies of the project."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from transferlab.workspace import copy_worktree, export_revision

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
