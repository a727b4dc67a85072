"""``python -m transferlab.audit``: can these results be trusted and rerun?

Four checks, one verdict: (1) the workspace matches ``dvc.lock`` and git (no uncommitted params
or code); (2) the pipeline re-executed in a temporary copy reproduces every recorded output,
each stage labelled bit-identical, equal within tolerance, different, or an expected difference
(wall-clock timing, provenance); (3) MLflow agrees with ``dvc.lock`` and the metrics files; (4)
an environment fingerprint. Writes ``audit.json`` and ``audit.md``; exits 1 on any unexplained
difference.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from transferlab.errors import TransferlabError
from transferlab.mirror import TRACKED_KINDS, stage_kind
from transferlab.runtime import dumps_json, run_stage
from transferlab.workspace import copy_worktree

IDENTICAL, WITHIN, DIFFERENT = "bit-identical", "equal within tolerance", "different"
TIMING, PROVENANCE = "expected: wall-clock timing", "expected: provenance"
SEVERITY = {IDENTICAL: 0, PROVENANCE: 1, TIMING: 1, WITHIN: 2, DIFFERENT: 3}
WALL_CLOCK_FILES = ("metrics/compute.json",)  # documented as not reproducible (compute.py)
# the wall-clock keys of every timing.json (training.Stopwatch); the rest must match
WALL_CLOCK_KEYS = frozenset({"seconds", "peak_bytes", "feature_extraction_seconds"})
MLFLOW_TOLERANCE = 1e-6  # the JSON files round to 6 decimals; MLflow may hold full precision
PIPELINE_FILES = frozenset({"dvc.yaml", "dvc.lock", "params.yaml", ".dvcignore",
                            "requirements.txt", "constraints.txt"})
PIPELINE_DIRS = ("stages/", "transferlab/", ".dvc/")
ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUBLAS_WORKSPACE_CONFIG")
# report table columns filled from metrics/compute.json (report_results.costs, report.py)
WALL_CLOCK_COLUMNS = ("second", "memory")


class AuditError(TransferlabError):
    """The audit itself cannot run (no lock file, unknown stage, a failing dvc/git call)."""


@dataclass(frozen=True)
class Diff:
    """How a rerun output compares with the recorded one; ``key`` names the first difference."""

    label: str
    file: str | None = None
    key: str | None = None
    recorded: Any = None
    rerun: Any = None
    detail: str | None = None

    def describe(self) -> str:
        where = ": ".join(str(p) for p in (self.file, self.key) if p)
        values = (f"recorded {self.recorded!r}, rerun {self.rerun!r}"
                  if (self.recorded, self.rerun) != (None, None) else "")
        return ", ".join(p for p in (where or "-", values, self.detail or "") if p)


def worst(diffs: list[Diff], default: Diff | None = None) -> Diff:
    """The most severe diff (the first of equals): different > within tolerance > expected."""
    return max(diffs, key=lambda d: SEVERITY[d.label], default=default or Diff(IDENTICAL))


def _close(a: float, b: float, tol: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= tol + 1e-12  # 1e-12: 0.123457 - 0.123456 is 1.0000000000287e-06


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _leaves(a: Any, b: Any, key: str, ignore: frozenset[str], masked: bool = False
            ) -> Iterator[tuple[str, Any, Any, bool]]:
    """(key path, recorded, rerun, masked) of every differing leaf, in sorted key order."""
    if a == b:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            sub, hide = f"{key}.{k}" if key else str(k), masked or k in ignore
            if k not in a or k not in b:
                yield sub, a.get(k, "<missing>"), b.get(k, "<missing>"), hide
            else:
                yield from _leaves(a[k], b[k], sub, ignore, hide)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from _leaves(x, y, f"{key}[{i}]", ignore, masked)
    else:
        yield key, a, b, masked


def compare_json(recorded: Any, rerun: Any, tol: float, ignore: frozenset[str] = frozenset(),
                 file: str | None = None) -> Diff:
    """Compare two JSON documents number by number; keys in ``ignore`` (at any depth) hold
    wall-clock values, so a difference under them is labelled expected, not different."""
    within = timing = None
    for key, a, b, masked in _leaves(recorded, rerun, "", ignore):
        if masked:
            timing = timing or Diff(TIMING, file, key, a, b)
        elif _is_number(a) and _is_number(b) and _close(float(a), float(b), tol):
            within = within or Diff(WITHIN, file, key, a, b, f"tolerance {tol:g}")
        else:
            return Diff(DIFFERENT, file, key, a, b)
    return within or timing or Diff(IDENTICAL, file)


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def compare_csv(recorded: str, rerun: str, tol: float, file: str | None = None) -> Diff:
    """Compare two CSV tables cell by cell; numeric cells may differ by ``tol``."""
    ra, rb = list(csv.reader(io.StringIO(recorded))), list(csv.reader(io.StringIO(rerun)))
    if not ra or not rb or ra[0] != rb[0]:
        return Diff(DIFFERENT, file, "header", ra[0] if ra else None, rb[0] if rb else None)
    if len(ra) != len(rb):
        return Diff(DIFFERENT, file, "number of rows", len(ra) - 1, len(rb) - 1)
    within = None
    for i, (row_a, row_b) in enumerate(zip(ra[1:], rb[1:], strict=True), start=1):
        if len(row_a) != len(row_b):
            return Diff(DIFFERENT, file, f"row {i}", row_a, row_b)
        for column, u, v in zip(ra[0], row_a, row_b, strict=True):
            if u == v:
                continue
            fu, fv, key = _float(u), _float(v), f"row {i}, column {column}"
            if fu is None or fv is None or not _close(fu, fv, tol):
                return Diff(DIFFERENT, file, key, u, v)
            within = within or Diff(WITHIN, file, key, fu, fv, f"tolerance {tol:g}")
    return within or Diff(IDENTICAL, file)


def html_as_markdown(text: str) -> str:
    """report.html -> report.md-like lines (render.py writes one block per line), so both
    renderings of the report are compared by the same rules."""
    lines = []
    for line in text.splitlines():
        cells = re.findall(r"<t[hd]>(.*?)</t[hd]>", line)
        heading = re.match(r"<h2[^>]*>(.*)</h2>$", line)
        if cells:
            line = "| " + " | ".join(cells) + " |"
        elif heading:
            line = f"## {heading[1]}"
        elif line.startswith("<p>"):
            line = re.sub(r"<[^>]+>", "", line)
        lines.append(line)
    return "\n".join(lines)


def report_parts(text: str) -> tuple[list[str], list[str], list[str]]:
    """Split a rendered report into (body, provenance lines, wall-clock table cells).

    The body keeps every line outside the Provenance section, with wall-clock cells masked: the
    columns whose header names seconds or memory, and the table after "Time to compute the four
    scores" (report_results.transferability), all read from metrics/compute.json.
    """
    body: list[str] = []
    provenance: list[str] = []
    timing: list[str] = []
    section, previous, header, masked = "", "", None, set()
    for line in text.splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        if section == "Provenance":
            provenance.append(line)
            continue
        if not line.startswith("|"):
            header, previous = None, (line if line.strip() else previous)
            body.append(line)
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header, whole = cells, previous.startswith("Time to compute")
            masked = {i for i, c in enumerate(cells)
                      if (whole and i) or any(w in c.lower() for w in WALL_CLOCK_COLUMNS)}
        elif not set(cells[0]) <= {"-", ":"}:
            timing += [c for i, c in enumerate(cells) if i in masked]
            cells = ["<wall-clock>" if i in masked else c for i, c in enumerate(cells)]
        body.append("| " + " | ".join(cells) + " |")
    return body, provenance, timing


def compare_report(recorded: str, rerun: str, file: str | None = None) -> Diff:
    """A report may differ only in its Provenance section and its wall-clock cells."""
    body_a, prov_a, time_a = report_parts(recorded)
    body_b, prov_b, time_b = report_parts(rerun)
    if body_a != body_b:
        n = next((i for i, (x, y) in enumerate(zip(body_a, body_b, strict=False)) if x != y),
                 min(len(body_a), len(body_b)))
        line = lambda body: body[n] if n < len(body) else "<end>"  # noqa: E731
        return Diff(DIFFERENT, file, f"line {n + 1} outside Provenance", line(body_a),
                    line(body_b))
    if prov_a != prov_b:
        return Diff(PROVENANCE, file, "Provenance section")
    return Diff(TIMING, file, "wall-clock cells") if time_a != time_b else Diff(IDENTICAL, file)


def compare_file(rel: str, recorded: Path, rerun: Path, tol: float) -> Diff:
    """Compare one output file of the workspace with the rerun's, by what kind of file it is."""
    if not (recorded.is_file() and rerun.is_file()):
        return Diff(DIFFERENT, rel, None, "present" if recorded.is_file() else "missing",
                    "present" if rerun.is_file() else "missing")
    a, b = recorded.read_bytes(), rerun.read_bytes()
    name, suffix = Path(rel).name, Path(rel).suffix
    if a == b:
        return Diff(IDENTICAL, rel)
    try:
        if rel in WALL_CLOCK_FILES:
            return Diff(TIMING, rel, detail="wall time and memory, not reproducible")
        if suffix == ".json":
            ignore = WALL_CLOCK_KEYS if name == "timing.json" else frozenset()
            return compare_json(json.loads(a), json.loads(b), tol, ignore, rel)
        if suffix == ".csv":
            return compare_csv(a.decode(), b.decode(), tol, rel)
        if name in ("report.md", "report.html"):
            convert = html_as_markdown if suffix == ".html" else str
            return compare_report(convert(a.decode()), convert(b.decode()), rel)
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError included
        return Diff(DIFFERENT, rel, detail=f"unreadable: {err}")
    return Diff(DIFFERENT, rel, None, hashlib.sha256(a).hexdigest()[:12],
                hashlib.sha256(b).hexdigest()[:12], "binary content differs (sha256 prefixes)")


def _files(a: Path, b: Path) -> list[str]:
    if not (a.is_dir() or b.is_dir()):
        return [""]
    return sorted({p.relative_to(d).as_posix() for d in (a, b) if d.is_dir()
                   for p in d.rglob("*") if p.is_file()})


def compare_out(path: str, recorded_md5: str | None, rerun_md5: str | None, root: Path,
                work: Path, tol: float) -> list[Diff]:
    """One ``dvc.lock`` out: its recorded hash against the rerun's, then file by file.

    Returns:
        The files that differ (``[Diff(IDENTICAL, path)]`` if none), workspace vs rerun.
    """
    if recorded_md5 == rerun_md5:
        return [Diff(IDENTICAL, path)]
    rels = [f"{path}/{r}" if r else path for r in _files(root / path, work / path)]
    diffs = [d for d in (compare_file(rel, root / rel, work / rel, tol) for rel in rels)
             if d.label != IDENTICAL]
    return diffs or [Diff(DIFFERENT, path, "md5", recorded_md5, rerun_md5,
                          "the workspace copy equals the rerun but not dvc.lock (dvc status)")]


# -- the four checks ---------------------------------------------------------------------------

def _run(cmd: list[str], cwd: Path) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise AuditError(f"`{' '.join(cmd)}` failed in {cwd}: {tail[0]}")
    return proc.stdout


def load_lock(root: Path) -> dict[str, dict]:
    path = root / "dvc.lock"
    if not path.is_file():
        raise AuditError(f"{path}: no lock file; run `dvc repro` (make repro) first")
    return yaml.safe_load(path.read_text()).get("stages", {})


def status_findings(status: dict) -> list[str]:
    """``dvc status --json`` -> one line per changed stage/dep/out/param ({} is clean)."""
    out = []
    for stage, entries in sorted(status.items()):
        for entry in entries:
            if not isinstance(entry, dict):
                out.append(f"{stage}: {entry}")
                continue
            for kind, changes in entry.items():
                items = changes.items() if isinstance(changes, dict) else [(changes, "")]
                out.append(f"{stage}: {kind}: " + ", ".join(
                    f"{path} ({state})".replace(" ()", "") for path, state in items))
    return out


def git_changes(porcelain: str, is_pipeline: Callable[[str], bool]) -> tuple[list, list]:
    """``git status --porcelain`` -> (paths the pipeline reads, other paths)."""
    paths = [line[3:].split(" -> ")[-1].strip('"') for line in porcelain.splitlines() if line]
    return [p for p in paths if is_pipeline(p)], [p for p in paths if not is_pipeline(p)]


def check_workspace(root: Path, lock: dict, stage: str | None) -> dict:
    """dvc status and git status; with ``stage``, only that stage and the files it reads."""
    status = json.loads(_run([sys.executable, "-m", "dvc", "status", "--json",
                              *([stage] if stage else [])], root) or "{}")
    deps = {d["path"].rstrip("/") for name, e in lock.items() if name == stage or not stage
            for d in e.get("deps", [])}

    def is_pipeline(p: str) -> bool:
        return (p in PIPELINE_FILES or (not stage and p.startswith(PIPELINE_DIRS))
                or any(p == d or p.startswith(d + "/") for d in deps))

    git = ["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=all"]
    read, other = git_changes(_run(git, root), is_pipeline)
    return {"dvc_status": status, "uncommitted": read, "uncommitted_not_read": other,
            "unexplained": [f"dvc status: {f}" for f in status_findings(status)]
            + [f"git: uncommitted change the pipeline reads: {p}" for p in read],
            "notes": [f"git: uncommitted, not read by the pipeline: {p}" for p in other]}


def rerun_pipeline(root: Path, lock: dict, stage: str | None, tol: float, log: Path,
                   keep: bool = False) -> dict:
    """``dvc repro --force`` in a temporary git copy (its own MLflow store), then every
    recorded out compared with the rerun's; ``stage`` reruns that stage alone on the
    workspace's copies of its deps."""
    tmp = Path(tempfile.mkdtemp(prefix="transferlab-audit-"))
    work, notes = tmp / "repo", []
    try:
        extra = [d["path"] for d in lock[stage].get("deps", [])] if stage else []
        copy_worktree(root, work, extra)
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        env.pop("TRANSFERLAB_EXECUTION", None)
        cmd = ["dvc", "repro", "--force", *(["--single-item", stage] if stage else [])]
        proc = subprocess.run([sys.executable, "-m", *cmd], cwd=work, env=env,
                              capture_output=True, text=True)
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(proc.stdout + proc.stderr)
        if proc.returncode:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return {"skipped": False, "stages": {}, "notes": notes, "unexplained": [
                f"rerun: `{' '.join(cmd)}` failed ({last}); full log: {log}"]}
        rerun_lock = load_lock(work)
        stages = {}
        for name in [stage] if stage else sorted(lock):
            new = {o["path"]: o.get("md5") for o in rerun_lock.get(name, {}).get("outs", [])}
            diffs = [d for o in lock[name].get("outs", []) for d in compare_out(
                o["path"], o.get("md5"), new.get(o["path"]), root, work, tol)]
            top = worst(diffs)
            stages[name] = {"label": top.label, "first": None if top.label == IDENTICAL
                            else top.describe(), "files": [asdict(d) for d in diffs
                                                           if d.label != IDENTICAL]}
    finally:
        if keep:
            notes.append(f"rerun workspace kept at {work}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return {"skipped": False, "command": " ".join(cmd), "tolerance": tol, "stages": stages,
            "notes": notes, "unexplained": [f"rerun {n}: {s['first']}" for n, s in stages.items()
                                            if s["label"] == DIFFERENT]}


def expected_tags(entry: dict) -> dict[str, str]:
    """The ``dvc.dep.<path>`` / ``dvc.out.<path>`` tags `make sync` writes from a lock entry."""
    return {f"dvc.{kind[:-1]}.{item['path']}": str(item.get("md5") or item.get("hash") or "")
            for kind in ("deps", "outs") for item in entry.get(kind, [])}


def _same(a: Any, b: Any) -> bool:
    return (a is None and b is None) or (_is_number(a) and _is_number(b)
                                         and _close(float(a), float(b), MLFLOW_TOLERANCE))


def _stage_run_problems(client: Any, exp: str, root: Path, name: str, entry: dict,
                        data_md5: str | None) -> tuple[str | None, list[str]]:
    runs = client.search_runs([exp], f"tags.`dvc.stage` = '{name}' and "
                              "tags.`dvc.lock.synced` = 'true'",
                              order_by=["attributes.start_time DESC"])
    if not runs:
        return None, ["no MLflow run synced with dvc.lock; run `make sync`"]
    want = expected_tags(entry)
    run = next((r for r in runs if all(r.data.tags.get(k) == v for k, v in want.items())), None)
    if run is None:
        tags = runs[0].data.tags
        key = next(k for k, v in want.items() if tags.get(k) != v)
        return runs[0].info.run_id, [f"tag {key} = {tags.get(key)!r} but dvc.lock has "
                                     f"{want[key]!r} (stale mirror? run `make sync`)"]
    problems = []
    digests = [d.dataset.digest for d in run.inputs.dataset_inputs]
    if data_md5 and str(data_md5)[:36] not in digests:
        problems.append(f"dataset digests {digests} lack dvc.lock's data/prepared {data_md5}")
    kind, outs = stage_kind(name), [o["path"] for o in entry.get("outs", [])]
    rel = next((p for p in outs if p.endswith(("/metrics.json", "/evaluate.json"))), None)
    if rel is None:  # transfer / scratch: the tags and the dataset are the whole mirror
        return run.info.run_id, problems
    try:
        metrics = json.loads((root / rel).read_text())
    except (OSError, ValueError) as err:
        return run.info.run_id, [*problems, f"{rel}: unreadable ({err})"]
    if kind == "pretrain":
        got = run.data.metrics.get("test.accuracy")
        have = metrics.get("test", {}).get("accuracy")  # None: the untrained null source
        if not _same(got, have):
            problems.append(f"{rel}: test.accuracy = {have} but MLflow logged {got}")
    else:  # evaluate: one child run per curve x budget, named "<curve> b=<budget>"
        children = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{run.info.run_id}'")
        logged = {c.info.run_name: c.data.metrics.get("accuracy.mean") for c in children}
        bad = [(f"summary.{curve}.{b}.accuracy.mean", e["accuracy"]["mean"],
                logged.get(f"{curve} b={b}"))
               for curve, by_budget in sorted(metrics.get("summary", {}).items())
               for b, e in by_budget.items()
               if not _same(logged.get(f"{curve} b={b}"), e["accuracy"]["mean"])]
        if bad:
            problems.append(f"{rel}: {len(bad)} value(s) disagree with MLflow; first "
                            f"{bad[0][0]} = {bad[0][1]} but MLflow logged {bad[0][2]}")
    return run.info.run_id, problems


def check_mlflow(root: Path, lock: dict, enabled: bool, experiment: str,
                 stage: str | None) -> dict:
    """Every tracked stage's synced run must carry dvc.lock's md5s, the prepared data's digest
    and the metrics on disk. Without tracking (params) the findings are notes."""
    from mlflow.tracking import MlflowClient

    from transferlab.tracking import tracking_uri

    uri, result = tracking_uri(), {"stages": {}, "unexplained": [], "notes": []}
    result["uri"] = uri
    sink = result["unexplained"] if enabled else result["notes"]
    if not enabled:
        result["notes"].append("MLflow: tracking.enabled is false; findings are notes only")
    store = Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None
    client = MlflowClient(uri) if store is None or store.is_file() else None
    exp = client.get_experiment_by_name(experiment) if client else None
    if exp is None:
        sink.append(f"MLflow: no experiment {experiment!r} in {uri}; run `make sync`")
        return result
    data = next((o.get("md5") for o in lock.get("prepare", {}).get("outs", [])
                 if o["path"] == "data/prepared"), None)
    for name, entry in sorted(lock.items()):
        if stage_kind(name) in TRACKED_KINDS and stage in (None, name):
            run_id, problems = _stage_run_problems(client, exp.experiment_id, root, name, entry,
                                                   data)
            result["stages"][name] = {"run_id": run_id, "problems": problems}
    if result["stages"] and all(s["run_id"] is None for s in result["stages"].values()):
        sink.append(f"MLflow: none of {len(result['stages'])} tracked stages has a run synced "
                    f"with dvc.lock in {uri}; run `make sync`")
    else:
        sink += [f"MLflow {n}: {p}" for n, s in result["stages"].items() for p in s["problems"]]
    return result


def environment_fingerprint(num_threads: int | None) -> dict:
    """Python, packages, CUDA/cuDNN, the deterministic flags the stages set, CPU/GPU, threads."""
    import torch

    from transferlab.provenance import package_versions
    from transferlab.runtime import seed_everything

    env = {k: os.environ.get(k) for k in ENV_VARS}  # as the user set them, before seeding
    default_threads = torch.get_num_threads()
    seed_everything(0, num_threads)  # what every stage does first
    cpuinfo = Path("/proc/cpuinfo")
    models = [line.split(":", 1)[1].strip() for line in (
        cpuinfo.read_text().splitlines() if cpuinfo.is_file() else [])
              if line.startswith("model name")]
    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(), "platform": platform.platform(),
        "packages": package_versions(("torch", "torchvision", "numpy", "dvc", "mlflow")),
        "cuda": torch.version.cuda, "cuda_available": cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "deterministic": {"algorithms": torch.are_deterministic_algorithms_enabled(),
                          "cudnn_deterministic": torch.backends.cudnn.deterministic,
                          "cudnn_benchmark": torch.backends.cudnn.benchmark},
        "cpu": models[0] if models else platform.processor() or None,
        "gpu": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if cuda else [],
        "threads": {"torch": torch.get_num_threads(), "torch_default": default_threads,
                    "torch_interop": torch.get_num_interop_threads(),
                    "cpu_count": os.cpu_count(), "params_num_threads": num_threads},
        "env": env,
    }


# -- report ------------------------------------------------------------------------------------

def render_markdown(result: dict) -> str:
    """The audit as Markdown: verdict and unexplained differences first, then the details."""
    lines = [f"# Audit: {result['verdict'].upper()}", ""]
    lines += [f"- {u}" for u in result["unexplained"]] or ["No unexplained difference."]
    o = result["options"]
    lines += ["", f"Stage: {o['stage'] or 'all'}; rerun: {'skipped' if o['skip_rerun'] else 'yes'}"
              f"; tolerance: {o['tolerance']:g}.", "", "## Rerun", ""]
    if result["rerun"].get("skipped"):
        lines.append("Skipped (`--skip-rerun`).")
    else:
        lines += ["| Stage | Result | First difference |", "|---|---|---|"]
        lines += [f"| {n} | {s['label']} | {(s['first'] or '').replace('|', '&#124;')} |"
                  for n, s in result["rerun"]["stages"].items()]
    lines += ["", "## MLflow", "", f"Store: `{result['mlflow'].get('uri')}`", ""]
    lines += [f"- {n}: {'; '.join(s['problems']) or 'agrees with dvc.lock'} (run {s['run_id']})"
              for n, s in result["mlflow"]["stages"].items()] or ["No stage checked."]
    lines += ["", "## Environment", "", "| Key | Value |", "|---|---|"]
    flat = {f"{k}.{kk}" if isinstance(v, dict) else k: vv for k, v in result["environment"].items()
            for kk, vv in (v.items() if isinstance(v, dict) else [(k, v)])}
    lines += [f"| {k} | {v} |" for k, v in flat.items()]
    lines += ["", "## Notes", ""] + ([f"- {n}" for n in result["notes"]] or ["None."])
    return "\n".join(lines) + "\n"


def audit(root: Path, stage: str | None, skip_rerun: bool, tol: float, out: Path,
          keep: bool = False) -> dict:
    """Run the four checks and return the audit (``verdict`` is ``pass`` or ``fail``)."""
    from transferlab.params import load_params

    lock = load_lock(root)
    if stage is not None and stage not in lock:
        raise AuditError(f"--stage {stage!r}: not in dvc.lock; expected one of "
                         f"{', '.join(sorted(lock))}")
    params = load_params(root / "params.yaml")
    parts = {
        "workspace": check_workspace(root, lock, stage),
        "rerun": {"skipped": True, "stages": {}, "unexplained": [], "notes": []} if skip_rerun
        else rerun_pipeline(root, lock, stage, tol, out / "rerun.log", keep),
        "mlflow": check_mlflow(root, lock, params.tracking.enabled, params.tracking.experiment,
                               stage),
    }
    unexplained = [u for p in parts.values() for u in p.pop("unexplained")]
    notes = [n for p in parts.values() for n in p.pop("notes")]
    return {"verdict": "fail" if unexplained else "pass", "unexplained": unexplained,
            "notes": notes, "options": {"stage": stage, "skip_rerun": skip_rerun,
                                        "tolerance": tol}, **parts,
            "environment": environment_fingerprint(params.common.num_threads)}


def main(argv: list[str] | None = None) -> None:
    """``python -m transferlab.audit``: exit 0 = pass, 1 = an unexplained difference."""
    from transferlab.tracking import repo_root

    parser = argparse.ArgumentParser(prog="python -m transferlab.audit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", help="audit this dvc.lock stage only (e.g. evaluate)")
    parser.add_argument("--skip-rerun", action="store_true", help="do not re-execute")
    parser.add_argument("--tolerance", type=float, default=1e-6,
                        help="largest |recorded - rerun| of a number called equal")
    parser.add_argument("--out", default="audit", help="directory for audit.json and audit.md")
    parser.add_argument("--keep-rerun", action="store_true", help="keep the rerun's workspace")
    args = parser.parse_args(argv)
    failed = []

    def _audit() -> None:
        if not args.tolerance >= 0:
            raise AuditError(f"--tolerance must be >= 0, got {args.tolerance}")
        out = Path(args.out)
        result = audit(repo_root(), args.stage, args.skip_rerun, args.tolerance, out,
                       args.keep_rerun)
        out.mkdir(parents=True, exist_ok=True)
        (out / "audit.json").write_text(dumps_json(result))
        (out / "audit.md").write_text(render_markdown(result))
        print(f"audit: {result['verdict'].upper()} ({len(result['unexplained'])} unexplained "
              f"difference(s)); wrote {out / 'audit.json'} and {out / 'audit.md'}")
        for line in result["unexplained"]:
            print(f"  {line}")
        failed.append(result["verdict"] == "fail")

    run_stage(_audit)
    if any(failed):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
