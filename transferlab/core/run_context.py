"""Where a stage's runs go and what they record about where they ran: the project root (also
from ``dvc exp run --temp/--queue`` copies), the tracking URI and its sqlite store, the id of
the pipeline execution, the git commit and the package versions.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

EXECUTION_ENV = "TRANSFERLAB_EXECUTION"
# the packages whose versions every MLflow run is tagged with
TAGGED_PACKAGES = ("torch", "torchvision", "numpy", "scikit-learn", "dvc", "mlflow")


def repo_root() -> Path:
    """The project root: the nearest directory holding dvc.yaml (stages run from there).

    ``dvc exp run --temp`` and ``--queue`` run stages in a copy under
    ``<root>/.dvc/tmp/exps/...`` that is deleted afterwards; the root is then the workspace that
    owns that ``.dvc``, so tracking lands in the same store as ``dvc repro``.
    """
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if folder.name == "exps" and folder.parent.name == "tmp" \
                and folder.parent.parent.name == ".dvc":
            return folder.parent.parent.parent
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").is_file():
            return folder
    return here


def tracking_uri(root: Path | None = None) -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else an absolute ``sqlite:///<root>/mlflow.db``, with
    ``root`` the project root (:func:`repo_root`) unless given (an orchestrator naming the
    workspace whose copy runs the stages)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or \
        f"sqlite:///{(root or repo_root()).resolve() / 'mlflow.db'}"


def execution_id() -> str:
    """An id shared by every stage of one ``dvc repro`` / ``dvc exp run``.

    ``$TRANSFERLAB_EXECUTION`` wins; otherwise the nearest ancestor ``dvc`` process (its pid and
    start time) identifies the execution; a stage run by hand gets its own id.
    """
    if os.environ.get(EXECUTION_ENV):
        return os.environ[EXECUTION_ENV]
    pid = os.getppid()
    for _ in range(8):  # stage <- sh <- dvc (<- make ...)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            break
        if any(Path(a.decode(errors="replace")).name == "dvc" for a in argv[:2]):
            start_time = stat.rsplit(")", 1)[1].split()[19]
            return hashlib.sha1(f"{pid}-{start_time}".encode()).hexdigest()[:12]
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        if pid <= 1:
            break
    return hashlib.sha1(f"{os.getpid()}-{time.time_ns()}".encode()).hexdigest()[:12]


def git_state(repo: Path) -> dict:
    """The HEAD commit and whether tracked files differ from it; read-only git calls.

    Returns:
        {"commit": sha or None, "dirty": bool or None, "note": why either is None, or None}.
    """

    def git(*args: str) -> subprocess.CompletedProcess:
        # --no-optional-locks: `git status` must not even refresh the index of the work tree
        return subprocess.run(["git", "--no-optional-locks", "-C", str(repo), *args],
                              capture_output=True, text=True, check=False)

    try:
        inside = git("rev-parse", "--is-inside-work-tree")
    except FileNotFoundError:
        return {"commit": None, "dirty": None, "note": "git is not installed"}
    if inside.returncode != 0:
        return {"commit": None, "dirty": None, "note": f"{repo} is not a git work tree"}
    # dvc.lock is rewritten by `dvc repro` itself while the pipeline runs: not "dirty"
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)dvc.lock")
    dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    head = git("rev-parse", "--verify", "--quiet", "HEAD")
    if head.returncode != 0:
        return {"commit": None, "dirty": dirty, "note": "the repository has no commits yet"}
    return {"commit": head.stdout.strip(), "dirty": dirty, "note": None}


def package_versions(names: tuple[str, ...]) -> dict[str, str]:
    """Installed distribution versions (``not installed`` where absent)."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in names:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def run_tags() -> dict[str, str]:
    """The tags every MLflow run carries about where it ran: ``git.commit`` ('unknown' outside
    git) and ``git.dirty`` of the tree the stage runs in (a ``dvc exp`` copy included),
    ``version.<package>`` for python and the packages results depend on, and the CPU pins
    (``transferlab.cpu.*``, :func:`transferlab.core.cpu_pinning.tags`)."""
    import platform

    from transferlab.core import cpu_pinning
    state = git_state(Path.cwd())
    versions = package_versions(TAGGED_PACKAGES)
    return {"git.commit": state["commit"] or "unknown",
            "git.dirty": str(bool(state["dirty"])).lower(),
            "version.python": platform.python_version(),
            **{f"version.{name}": v for name, v in versions.items()},
            **cpu_pinning.tags()}


def init_sqlite_store(path: Path) -> None:
    """Create the sqlite store's schema once, under a file lock, and switch it to WAL.

    MLflow creates its schema racily: several stages starting together against a fresh store
    can crash. The lock serialises the first use; WAL lets readers and a writer overlap.
    """
    import fcntl
    import sqlite3

    from mlflow.tracking import MlflowClient

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments(max_results=1)
            with sqlite3.connect(path, timeout=60) as db:
                db.execute("PRAGMA journal_mode=WAL")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
