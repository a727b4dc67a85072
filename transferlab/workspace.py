"""A throwaway copy of the project, for reruns (audit), benchmarks and end-to-end tests."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path


def copy_worktree(root: Path, dest: Path, extra: Iterable[str] = ()) -> None:
    """Copy what git lists in ``root`` (tracked and untracked-not-ignored files, as they are on
    disk, uncommitted edits included) plus the ``extra`` paths (files or directories, e.g. DVC
    outputs) into ``dest``, and commit it there as a fresh git repository."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=root, capture_output=True, text=True,
                            check=True).stdout.split("\0")
    for rel in [r for r in listed if r] + list(extra):
        src, dst = root / rel, dest / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir() and not dst.exists():
            shutil.copytree(src, dst)
        elif src.is_file() and not dst.exists():
            shutil.copy2(src, dst)
    ident = ["-c", "user.name=transferlab", "-c", "user.email=transferlab@localhost"]
    for args in (["init", "-q"], ["add", "-A"], [*ident, "commit", "-qm", "copy", "-n"]):
        subprocess.run(["git", *args], cwd=dest, capture_output=True, text=True, check=True)


def export_revision(root: Path, revision: str, dest: Path) -> str:
    """Write the files of git ``revision`` of ``root`` (as committed; nothing of the working
    tree) into ``dest`` and commit them there as a fresh git repository, like
    :func:`copy_worktree`. Returns the revision's full commit hash.

    Raises:
        ValueError: ``revision`` does not name a commit of ``root``.
    """
    found = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"],
                           cwd=root, capture_output=True, text=True)
    if found.returncode != 0:
        raise ValueError(f"{revision!r} is not a commit of {root}")
    commit = found.stdout.strip()
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", "--format=tar", commit], cwd=root,
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    ident = ["-c", "user.name=transferlab", "-c", "user.email=transferlab@localhost"]
    for args in (["init", "-q"], ["add", "-A"], [*ident, "commit", "-qm", commit, "-n"]):
        subprocess.run(["git", *args], cwd=dest, capture_output=True, text=True, check=True)
    return commit
