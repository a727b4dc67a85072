"""A throwaway copy of the project, for reruns (audit), benchmarks and end-to-end tests, and a
timed ``dvc repro`` in it."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any


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


def run_repro(repo: Path, targets: list[str], log: Path, timeout_s: float | None = None,
              tracking_uri: str | None = None) -> dict[str, Any]:
    """``dvc repro [targets]`` in ``repo`` with this interpreter's environment (MLflow in
    ``tracking_uri``, default ``repo/mlflow.db``), its output written to ``log``; with
    ``timeout_s``, killed (its whole process group: dvc and the stage it runs) after that many
    seconds.

    Returns:
        {"status": ok | failed | timeout, "seconds", "timeout_s", "targets", "stages_run",
        "stage_seconds": each stage's seconds, from DVC announcing it to announcing the next
        (or exiting), "log": the log's file name}, and where it did not end ok, "log_tail": the
        log's last 25 lines.
    """
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               MLFLOW_TRACKING_URI=tracking_uri or f"sqlite:///{repo / 'mlflow.db'}")
    marks: list[tuple[str, float]] = []
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(["dvc", "repro", *targets], cwd=repo, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", start_new_session=True)

        def pump() -> None:  # the log, and when each stage starts
            for line in proc.stdout:
                out.write(line)
                out.flush()  # a study's log shows each progress line as it comes
                if m := re.match(r"Running stage '([^']+)'", line):
                    marks.append((m.group(1), time.perf_counter()))

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            status = "ok" if proc.wait(timeout=timeout_s) == 0 else "failed"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            status = "timeout"
        reader.join(timeout=30)
    end = time.perf_counter()
    row: dict[str, Any] = {
        "status": status, "seconds": end - start, "timeout_s": timeout_s, "targets": targets,
        "stages_run": [name for name, _ in marks],
        "stage_seconds": {name: (marks[i + 1][1] if i + 1 < len(marks) else end) - t
                          for i, (name, t) in enumerate(marks)},
        "log": log.name}
    if status != "ok":
        row["log_tail"] = log.read_text(errors="replace").splitlines()[-25:]
    return row
