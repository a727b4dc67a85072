"""Wall time per stage of the default `dvc repro` from nothing, and of a no-op `dvc repro`.

Runs in a temporary copy of the working tree (tracked and untracked-not-ignored files), so the
workspace's outputs, lock file and MLflow store are untouched. Usage:

    python benchmarks/pipeline_speed.py [--params PARAMS] [--keep]

Per-stage time is the wall time between DVC announcing a stage and announcing the next one
(or exiting), so it includes each stage's Python start-up.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transferlab.workspace import copy_worktree  # noqa: E402


def timed_repro(repo: Path, env: dict) -> tuple[float, list[tuple[str, float]]]:
    """Total seconds and [(stage, seconds)] of one `dvc repro`, stages timed from its output."""
    start = time.perf_counter()
    proc = subprocess.Popen(["dvc", "repro"], cwd=repo, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    marks: list[tuple[str, float]] = []
    output = []
    for line in proc.stdout:
        output.append(line)
        m = re.match(r"Running stage '([^']+)'", line)
        if m:
            marks.append((m.group(1), time.perf_counter()))
    if proc.wait() != 0:
        sys.exit("dvc repro failed:\n" + "".join(output[-40:]))
    end = time.perf_counter()
    stages = [(name, (marks[i + 1][1] if i + 1 < len(marks) else end) - t)
              for i, (name, t) in enumerate(marks)]
    return end - start, stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default=None, help="params file to use (default: the repo's)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="transferlab-bench-"))
    repo = tmp / "repo"
    repo.mkdir()
    copy_worktree(ROOT, repo)
    (repo / "dvc.lock").unlink(missing_ok=True)  # from nothing
    if args.params:
        shutil.copy(args.params, repo / "params.yaml")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               MLFLOW_TRACKING_URI=f"sqlite:///{repo / 'mlflow.db'}")
    total, stages = timed_repro(repo, env)
    print(f"{'stage':40s} {'seconds':>8s}")
    for name, seconds in stages:
        print(f"{name:40s} {seconds:8.1f}")
    print(f"{'TOTAL dvc repro from nothing':40s} {total:8.1f}")
    noop, ran = timed_repro(repo, env)
    print(f"{'no-op dvc repro':40s} {noop:8.2f}   (stages run: {len(ran)})")
    if args.keep:
        print(f"kept {repo}")
    else:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
