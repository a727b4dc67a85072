"""``python -m transferlab.provenance.audit``: can these results be trusted and rerun?

Six checks, one verdict: (1) the workspace matches ``dvc.lock`` and git (no uncommitted params
or code); (2) reproduction against the commit: where the workspace's ``dvc.lock`` records other
outputs than the committed one (a rerun on another machine), per stage which outputs differ,
how far each metric of the committed metrics files moved and which verdicts or
recommendations changed (:mod:`transferlab.provenance.drift`), outputs and conclusions counted
apart;
(3) kernels: this machine's kernel fingerprint against the one recorded with the lock
(``dvc.lock.fingerprint.json``, :mod:`transferlab.provenance.fingerprint`), naming the kernels that
differ, so a difference in (2) comes with its cause; (4) the pipeline re-executed in a
temporary copy reproduces every recorded output, each stage labelled bit-identical, equal
within tolerance or different; (5) MLflow agrees with ``dvc.lock`` and the metrics files;
(6) an environment fingerprint. Writes ``audit.json`` and ``audit.md``; exits 1 on any
unexplained difference.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from transferlab.core.errors import TransferlabError
from transferlab.core.helptext import plain
from transferlab.core.runtime import dumps_json, run_stage
from transferlab.core.workspace import copy_worktree
from transferlab.provenance.comparison import (
    DIFFERENT,
    IDENTICAL,
    close,
    compare_out,
    is_number,
    worst,
)
from transferlab.provenance.reproduction import check_reproduction, out_paths, under
from transferlab.tracking.mirror import is_tracked, lock_stages, stage_kind, stage_units

MLFLOW_TOLERANCE = 1e-6  # the JSON files round to 6 decimals; MLflow may hold full precision
PIPELINE_FILES = frozenset({"dvc.yaml", "dvc.lock", "params.yaml", ".dvcignore",
                            "requirements.txt", "constraints.txt"})
PIPELINE_DIRS = ("stages/", "transferlab/", ".dvc/")
ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUBLAS_WORKSPACE_CONFIG",
            "TRANSFERLAB_CPU_PINNING")


class AuditError(TransferlabError):
    """The audit itself cannot run (no lock file, unknown stage, a failing dvc/git call)."""


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
    return lock_stages(path.read_text())


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
    """dvc status and git status; with ``stage``, only that stage and the files it reads.

    The committed DVC outputs (metrics, plots) and ``dvc.lock`` are left to
    :func:`check_reproduction`: after a rerun elsewhere they differ from the commit, and how
    far their numbers moved is the finding, not the fact that they changed."""
    status = json.loads(_run([sys.executable, "-m", "dvc", "status", "--json",
                              *([stage] if stage else [])], root) or "{}")
    deps = {d["path"].rstrip("/") for name, e in lock.items() if name == stage or not stage
            for d in e.get("deps", [])}

    def is_pipeline(p: str) -> bool:
        return (p in PIPELINE_FILES or (not stage and p.startswith(PIPELINE_DIRS))
                or any(p == d or p.startswith(d + "/") for d in deps))

    git = ["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=all"]
    read, other = git_changes(_run(git, root), is_pipeline)
    outs = out_paths(lock) | {"dvc.lock"}
    produced = [p for p in read if under(p, outs)]
    read = [p for p in read if p not in produced]
    return {"dvc_status": status, "uncommitted": read, "uncommitted_not_read": other,
            "uncommitted_outputs": produced,
            "unexplained": [f"dvc status: {f}" for f in status_findings(status)]
            + [f"git: uncommitted change the pipeline reads: {p}" for p in read],
            "notes": [f"git: uncommitted, not read by the pipeline: {p}" for p in other]
            + [f"git: pipeline output differs from the commit (see Reproduction): {p}"
               for p in produced]}


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
    return (a is None and b is None) or (is_number(a) and is_number(b)
                                         and close(float(a), float(b), MLFLOW_TOLERANCE))


def _stage_run_problems(client: Any, exp: str, root: Path, name: str, entry: dict,
                        data_md5: str | None, strategy: str | None = None,
                        ) -> tuple[str | None, list[str]]:
    """The synced run of a stage (of one of its strategies, for a ``transfer@<source>``
    stage) and what in it disagrees with the lock and the outputs on disk."""
    which = f" and tags.`transferlab.strategy` = '{strategy}'" if strategy else ""
    runs = client.search_runs([exp], f"tags.`dvc.stage` = '{name}' and "
                              f"tags.`dvc.lock.synced` = 'true'{which}",
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
        # the headline metric: accuracy, or a regression's r2 (transferlab.core.tasks)
        head = metrics.get("task", {}).get("headline", "accuracy")
        logged = {c.info.run_name: c.data.metrics.get(f"{head}.mean") for c in children}
        bad = [(f"summary.{curve}.{b}.{head}.mean", e[head]["mean"],
                logged.get(f"{curve} b={b}"))
               for curve, by_budget in sorted(metrics.get("summary", {}).items())
               for b, e in by_budget.items()
               if not _same(logged.get(f"{curve} b={b}"), e[head]["mean"])]
        if bad:
            problems.append(f"{rel}: {len(bad)} value(s) disagree with MLflow; first "
                            f"{bad[0][0]} = {bad[0][1]} but MLflow logged {bad[0][2]}")
    return run.info.run_id, problems


def check_mlflow(root: Path, lock: dict, enabled: bool, experiment: str,
                 stage: str | None) -> dict:
    """Every tracked stage's synced run must carry dvc.lock's md5s, the prepared data's digest
    and the metrics on disk. Without tracking (params) the findings are notes."""
    from mlflow.tracking import MlflowClient

    from transferlab.core.run_context import tracking_uri

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
        if not (is_tracked(stage_kind(name)) and stage in (None, name)):
            continue
        outs = [root / o["path"] for o in entry.get("outs", [])]
        # a transfer@<source> stage has one run per strategy folder
        units = stage_units(name, outs) if all(p.exists() for p in outs) else [(name, {}, outs)]
        for label, tags, _ in units:
            run_id, problems = _stage_run_problems(client, exp.experiment_id, root, name, entry,
                                                   data, tags.get("transferlab.strategy"))
            result["stages"][label] = {"run_id": run_id, "problems": problems}
    if result["stages"] and all(s["run_id"] is None for s in result["stages"].values()):
        sink.append(f"MLflow: none of {len(result['stages'])} tracked stages has a run synced "
                    f"with dvc.lock in {uri}; run `make sync`")
    else:
        sink += [f"MLflow {n}: {p}" for n, s in result["stages"].items() for p in s["problems"]]
    return result


def environment_fingerprint(num_threads: int | None) -> dict:
    """Python, packages, CUDA/cuDNN, the deterministic flags the stages set, CPU/GPU, threads
    and the CPU pins in effect (:mod:`transferlab.core.cpu_pinning`)."""
    import torch

    from transferlab.core import cpu_pinning
    from transferlab.core.run_context import package_versions
    from transferlab.core.runtime import seed_everything

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
        "cpu_pinning": cpu_pinning.status(),
    }


def check_kernels(root: Path, mode: str, reproduced: bool | None,
                  here: dict | None = None) -> dict:
    """This machine's kernel fingerprint against the lock's machine's.

    The lock's is the committed ``dvc.lock.fingerprint.json`` (``make repro`` rewrites the
    workspace's copy when it makes a new lock, so the commit's is the one to compare with).
    ``reproduced``: whether the workspace's lock records the committed outputs (None: unknown).
    ``here``: this machine's record (default: computed in a fresh process, as a stage runs).

    Returns:
        {"mode", "lock_machine", "here", "equal", "differing": [op...], "line", plus
        "unexplained"/"notes"}. Kernels that differ are the cause of outputs that differ, said
        in a note; outputs that differ although every kernel is equal are unexplained here.
    """
    from transferlab.provenance import fingerprint as fp
    from transferlab.provenance.reproduction import committed_text

    rel = str(fp.LOCK_FINGERPRINT)
    result: dict[str, Any] = {"mode": mode, "unexplained": [], "notes": []}
    text = committed_text(root, rel)
    if text is None and (root / rel).is_file():
        text = (root / rel).read_text()
    if text is None:
        result["notes"].append(f"kernels: no {rel} records the lock's machine; `make repro` "
                               "writes it with a new lock")
        return result
    lock = json.loads(text)
    committed_lock = committed_text(root, "dvc.lock")
    if committed_lock is not None and lock.get("lock_sha256") != hashlib.sha256(
            committed_lock.encode()).hexdigest():
        result["notes"].append(f"kernels: {rel} was recorded with another dvc.lock than the "
                               "committed one; its machine may not be the lock's")
    if here is None:
        proc = subprocess.run([sys.executable, "-m", "transferlab.provenance.fingerprint",
                               "record"], cwd=root, capture_output=True, text=True)
        if proc.returncode:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            result["unexplained"].append(f"kernels: the fingerprint failed: {tail}")
            return result
        here = json.loads(proc.stdout)
    equal, line = fp.verdict(here, lock, mode, f"the lock's machine ({rel})")
    result.update(lock_machine=fp.describe_machine(lock["machine"]),
                  here=fp.describe_machine(here["machine"]), equal=equal, line=line,
                  differing=[d.op for d in fp.differences(here, lock, mode)])
    if equal and reproduced is False:
        result["unexplained"].append(
            f"kernels: outputs differ from the lock although this machine computes every "
            f"kernel as the lock's machine did ({line}): the cause is not the CPU; look at "
            "code, packages, thread counts or params")
    elif not equal:
        cause = ("the expected cause of outputs that differ" if reproduced is False
                 else "a rerun here would not reproduce the lock bit for bit")
        result["notes"].append(f"kernels: this machine's kernels differ from the lock's "
                               f"machine's, {cause}: {line}")
    else:
        result["notes"].append(f"kernels: this machine computes every kernel as the lock's "
                               f"machine did: {line}")
    return result


# -- report ------------------------------------------------------------------------------------

def render_markdown(result: dict) -> str:
    """The audit as Markdown: verdict and unexplained differences first, then the details."""
    lines = [f"# Audit: {result['verdict'].upper()}", ""]
    lines += [f"- {u}" for u in result["unexplained"]] or ["No unexplained difference."]
    o = result["options"]
    lines += ["", f"Stage: {o['stage'] or 'all'}; rerun: {'skipped' if o['skip_rerun'] else 'yes'}"
              f"; tolerance: {o['tolerance']:g}.", "", "## Reproduction against the commit", ""]
    repro = result.get("reproduction", {})
    if repro.get("identical"):
        lines.append("dvc.lock equals the committed one: every output reproduced bit for bit.")
    for name, st in repro.get("stages", {}).items():
        lines.append(f"- {name}: outputs differ ({', '.join(st['outs_changed'])})"
                     + "".join(f"\n  - {line}" for line in st["lines"]))
    summary = repro.get("summary")
    if summary and not repro.get("identical"):
        lines += ["", f"Outputs that changed: {len(summary['outputs_changed'])} "
                  f"({', '.join(summary['outputs_changed'][:8])}"
                  f"{', ...' if len(summary['outputs_changed']) > 8 else ''}).",
                  f"Numbers that moved more than the tolerance: {summary['metrics_moved']}.",
                  f"Conclusions that changed (verdicts, recommendations): "
                  f"{len(summary['conclusions_changed'])}."]
        lines += [f"  - {c['file']}: {c['key']}: {c['committed']!r} -> {c['workspace']!r}"
                  for c in summary["conclusions_changed"][:20]]
    kernels = result.get("kernels", {})
    lines += ["", "## Kernels", "", kernels.get("line") or "Not compared (see Notes)."]
    lines += ["", "## Rerun", ""]
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
    from transferlab.config.params import load_params

    lock = load_lock(root)
    if stage is not None and stage not in lock:
        raise AuditError(f"--stage {stage!r}: not in dvc.lock; expected one of "
                         f"{', '.join(sorted(lock))}")
    params = load_params(root / "params.yaml")
    reproduction = check_reproduction(root, lock, stage, tol)
    parts = {
        "workspace": check_workspace(root, lock, stage),
        "reproduction": reproduction,
        "kernels": check_kernels(root, params.common.determinism,
                                 reproduction.get("outputs_identical")),
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
    """``python -m transferlab.provenance.audit``: exit 0 = pass, 1 = an unexplained difference."""
    from transferlab.core.run_context import repo_root

    parser = argparse.ArgumentParser(prog="transferlab audit",
                                     description=plain(__doc__),
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
        # the verdict is the answer the user asked for: stdout, at every log level
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
