"""Reproduction against the commit: the workspace's ``dvc.lock`` and committed metrics files
against ``git show HEAD:...``. Equal lock files mean every output reproduced bit for bit; where
they differ (a rerun on another CPU family or a GPU) this says, per stage, which outputs differ,
how far each committed metric moved and whether any verdict or recommendation changed
(:mod:`transferlab.provenance.drift`). Used by ``make audit`` (:mod:`transferlab.provenance.audit`).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from transferlab.provenance import drift
from transferlab.tracking.mirror import lock_stages


def out_paths(lock: dict) -> set[str]:
    """Every out and metrics file ``dvc.lock`` records."""
    return {o["path"].rstrip("/") for e in lock.values() for o in e.get("outs", [])}


def under(path: str, roots: set[str]) -> bool:
    return any(path == r or path.startswith(r + "/") for r in roots)


def lock_changes(committed: dict, workspace: dict) -> tuple[list[str], dict[str, list[str]]]:
    """Compare two ``dvc.lock`` stage maps.

    Returns:
        (input changes, one line per stage whose cmd, params or a dep that no stage produces
        differ; {stage: out paths whose hash differs}). A dep produced by another stage (a
        checkpoint, the prepared data) moves with that stage's outs and is not an input change.
    """
    produced = out_paths(committed) | out_paths(workspace)
    inputs, outs = [], {}
    for name in sorted(set(committed) | set(workspace)):
        a, b = committed.get(name), workspace.get(name)
        if a is None or b is None:
            inputs.append(f"{name}: stage {'added' if a is None else 'removed'}")
            continue
        hashes = [{d["path"]: d.get("md5") or d.get("hash") for d in e.get(kind, [])}
                  for e in (a, b) for kind in ("deps", "outs")]
        deps = sorted(p for p in set(hashes[0]) | set(hashes[2])
                      if hashes[0].get(p) != hashes[2].get(p)
                      and not (under(p.rstrip("/"), produced)
                               or any(o.startswith(p.rstrip("/") + "/") for o in produced)))
        what = (["cmd"] if a.get("cmd") != b.get("cmd") else []) + (
            ["params"] if a.get("params") != b.get("params") else []) + deps
        if what:
            inputs.append(f"{name}: {', '.join(what)}")
        changed = sorted(p for p in set(hashes[1]) | set(hashes[3])
                         if hashes[1].get(p) != hashes[3].get(p))
        if changed:
            outs[name] = changed
    return inputs, outs


def committed_text(root: Path, rel: str) -> str | None:
    """``git show HEAD:<rel>``, or None where it is not committed."""
    proc = subprocess.run(["git", "--no-optional-locks", "show", f"HEAD:{rel}"], cwd=root,
                          capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else None


def _committed_files(root: Path, out: str) -> list[str]:
    listed = subprocess.run(["git", "--no-optional-locks", "ls-tree", "-r", "--name-only",
                             "HEAD", "--", out], cwd=root, capture_output=True, text=True)
    return [f for f in listed.stdout.splitlines() if f.endswith((".json", ".csv"))]


def check_reproduction(root: Path, lock: dict, stage: str | None, tol: float) -> dict:
    """The workspace's ``dvc.lock`` and metrics files against the committed ones.

    Equal lock files: the run reproduced the commit bit for bit. Otherwise, per stage, the
    outputs whose hash differs and, for each committed metrics/plots file among them, how far
    every metric moved and which verdicts or recommendations changed. Unexplained: an input
    recorded differently (cmd, params, a dep no stage produces), a number moved by more than
    ``tol`` or a changed conclusion; outputs that differ only bitwise are a note.
    """
    text = committed_text(root, "dvc.lock")
    result: dict[str, Any] = {"stages": {}, "unexplained": [], "notes": []}
    if text is None:
        result["notes"].append("reproduction: no committed dvc.lock to compare with")
        return result
    committed = lock_stages(text)
    inputs, outs = lock_changes(committed, lock)
    result["identical"] = not inputs and not outs
    result["outputs_identical"] = not outs
    result["unexplained"] += [f"dvc.lock records other inputs than the commit: {i}"
                              for i in inputs if stage in (None, i.split(":")[0])]
    # outputs that changed, apart from conclusions that changed (a verdict, a recommendation)
    overview: dict[str, Any] = {"outputs_changed": [], "metrics_moved": 0,
                                "conclusions_changed": []}
    result["summary"] = overview
    for name, changed in outs.items():
        if stage not in (None, name):
            continue
        files = {}
        for out in changed:
            for rel in _committed_files(root, out):
                old, path = committed_text(root, rel), root / rel
                if old is None or not path.is_file():
                    continue
                new = path.read_text()
                files[rel] = (drift.csv_drift(old, new) if rel.endswith(".csv") else
                              drift.json_drift(json.loads(old), json.loads(new)))
        lines = [drift.describe(rel, d, tol) for rel, d in files.items()]
        moved = any(drift.significant(d, tol) for d in files.values())
        result["stages"][name] = {"outs_changed": changed, "moved": moved,
                                  "files": files, "lines": lines}
        overview["outputs_changed"] += changed
        overview["metrics_moved"] += sum(m["max_abs_diff"] > tol for d in files.values()
                                        for m in d["metrics"].values())
        overview["conclusions_changed"] += [{"file": rel, **label} for rel, d in files.items()
                                           for label in d["labels"]]
        summary = (f"reproduction {name}: outputs differ from the committed dvc.lock "
                   f"({', '.join(changed)})")
        if moved:
            result["unexplained"] += [f"{summary}; {line}" for line in lines
                                      if line.split(": ", 1)[0] in files]
        else:
            result["notes"].append(f"{summary}; " + ("; ".join(lines) if lines else
                                   "no committed metrics among them (see later stages)"))
    return result
