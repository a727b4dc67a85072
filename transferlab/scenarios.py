"""Studies as scenarios: short override files composed onto the default ``params.yaml``.

A scenario is ``scenarios/<name>.yaml`` with two keys: ``question`` (what the study asks, one
sentence) and ``overrides``, a list of DVC ``--set-param`` overrides in Hydra's grammar
(``key=value`` changes a key, ``+key=value`` adds one, ``~key`` removes one). Composition is
DVC's own (:func:`dvc.utils.hydra.apply_overrides`, what ``dvc exp run -S`` does), so a scenario
means exactly what ``dvc exp run -S ...`` with the same overrides means.

    python -m transferlab.scenarios list              # the scenarios and their questions
    python -m transferlab.scenarios compose NAME OUT  # the composed params file, validated
    python -m transferlab.scenarios run NAME          # dvc exp run --temp -n NAME -S ...
    python -m transferlab.scenarios study NAME        # rerun in a copy; docs/results/NAME
    python -m transferlab.scenarios status            # which published studies are current
    python -m transferlab.scenarios status --refresh  # rerun those that are not, quickest first

Above the library's layers (beside :mod:`transferlab.cli`): composing validates with every
check a stage makes, and a study runs the whole pipeline.

``run`` leaves the workspace's ``params.yaml`` untouched (``--temp``): ``dvc exp show`` lists
the experiment and ``dvc exp apply NAME`` brings it into the workspace. ``study`` reruns the
scenario from nothing in a temporary copy of the working tree and writes its
report, figures, headline metrics and provenance to ``docs/results/<name>/``. ``status`` says
which of them still stand for this tree: a study is current while its composed params hash the
same and no file of the pipeline's code (every ``deps`` path in ``dvc.yaml``) differs from its
commit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from transferlab.core.errors import ParamsError
from transferlab.core.logs import LogLevelError, configure
from transferlab.core.run_context import tracking_uri

SCENARIO_DIR = Path("scenarios")
RESULTS_DIR = Path("docs/results")
KEYS = ("question", "overrides")

log = logging.getLogger("transferlab.scenarios")  # not __name__: "__main__" under python -m


@dataclass(frozen=True)
class Scenario:
    """One study: its name, the question it asks and its overrides of the default params."""

    name: str
    question: str
    overrides: tuple[str, ...]


def names(folder: Path = SCENARIO_DIR) -> list[str]:
    """The scenarios in ``folder``, sorted."""
    return sorted(p.stem for p in folder.glob("*.yaml"))


def load(name: str, folder: Path = SCENARIO_DIR) -> Scenario:
    """Read and check ``folder/<name>.yaml``.

    Raises:
        ParamsError: the scenario does not exist (the error lists those that do), or its file
            has unknown keys, a missing key or overrides that are not a list of strings.
    """
    path = folder / f"{name}.yaml"
    if not path.is_file():
        raise ParamsError(f"unknown scenario '{name}'; expected one of "
                          f"{', '.join(names(folder)) or '(none in ' + str(folder) + ')'}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping with keys {', '.join(KEYS)}")
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise ParamsError(f"{path}: unknown key '{unknown[0]}'; expected one of "
                          f"{', '.join(KEYS)}")
    missing = [k for k in KEYS if k not in data]
    if missing:
        raise ParamsError(f"{path}: missing key '{missing[0]}'")
    overrides = data["overrides"]
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise ParamsError(f"{path}: overrides must be a list of strings such as "
                          "'common.seeds=[0,1,2]'")
    return Scenario(name, str(data["question"]).strip(), tuple(overrides))


def compose(scenario: Scenario, params: Path, out: Path) -> Path:
    """Write ``params`` with the scenario's overrides applied to ``out`` (comments kept), by
    DVC's own ``--set-param`` composition, and validate the result.

    Raises:
        ParamsError: an override does not parse or names a key that is not there (add it with
            ``+``), or the composed params do not validate; the error names the scenario.
    """
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.hydra import apply_overrides

    from transferlab.adapt.strategies import resolve
    from transferlab.models.resolved import load_params

    if out.resolve() != params.resolve():
        shutil.copyfile(params, out)
    try:
        if scenario.overrides:  # DVC rewrites the file (block lists) even for none
            apply_overrides(out, list(scenario.overrides))
    except InvalidArgumentError as err:
        cause = err.__cause__ or err
        raise ParamsError(f"scenario '{scenario.name}': {cause}") from None
    try:  # every check a stage makes: dataset kinds, backbones, strategy blocks
        resolve(load_params(out))
    except ParamsError as err:
        raise ParamsError(f"scenario '{scenario.name}' composes into invalid params: "
                          f"{err}") from None
    return out


def exp_run_command(scenario: Scenario, queue: bool = False) -> list[str]:
    """``dvc exp run`` of the scenario: in a temporary copy (or queued), named after it."""
    cmd = ["dvc", "exp", "run", "--queue" if queue else "--temp", "-n", scenario.name]
    for override in scenario.overrides:
        cmd += ["-S", override]
    return cmd


def params_digest(path: Path) -> str:
    """sha256 of the typed params a file loads into: comments and key order do not count."""
    from transferlab.config.params import load_params, to_dict

    blob = json.dumps(to_dict(load_params(path)), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _machine() -> dict:
    from transferlab.core import cpu_pinning
    from transferlab.core.run_context import package_versions

    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        model = next((line.split(":", 1)[1].strip() for line in
                      cpuinfo.read_text().splitlines() if line.startswith("model name")),
                     model)
    # the pins only: which convolutions may run is each stage's (common.determinism), not this
    # process's, and is recorded from the params (write_results)
    pins = {k: v for k, v in cpu_pinning.tags().items()
            if k.removeprefix("transferlab.cpu.") not in ("determinism", "mkldnn_enabled",
                                                          "nnpack_enabled")}
    return {"cpu": model, "cores": os.cpu_count(), "cpu_pins": pins,
            "packages": package_versions(("torch", "dvc", "mlflow", "numpy"))}


def _dirty_paths(root: Path) -> list[str]:
    """The tracked files whose working copy differs from HEAD (what made a tree dirty)."""
    out = subprocess.run(["git", "--no-optional-locks", "-C", str(root), "diff", "HEAD",
                          "--name-only"], capture_output=True, text=True, check=False)
    return sorted(out.stdout.split()) if out.returncode == 0 else []


def ensure_experiment(params_file: Path, uri: str) -> None:
    """Create the params' MLflow experiment in the local store ``uri`` (``sqlite:///<dir>/...``)
    with its artifacts in ``<dir>/mlruns``, beside the store, where it does not exist yet.

    A run in a temporary copy (a study, ``dvc exp run --temp``) that created the experiment
    itself would put its artifact folder in the copy (MLflow's default: the creating process's
    ``./mlruns``), deleted when the copy is, and every later run's artifacts would land there.
    A server's store is left alone (its ``--default-artifact-root`` decides); an existing
    experiment whose local artifact folder, away from the store, is gone is named in a warning
    (MLflow cannot move an experiment's artifact location: delete the experiment or rename
    ``tracking.experiment``).
    """
    from transferlab.config.params import load_params

    tracking = load_params(params_file).tracking
    if not tracking.enabled or not uri.startswith("sqlite:///"):
        return
    from mlflow.tracking import MlflowClient

    from transferlab.tracking.tracker import (
        EXPERIMENT_KIND,
        EXPERIMENT_KIND_TAG,
        local_artifact_location,
    )

    home = Path(uri.removeprefix("sqlite:///")).resolve().parent
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(tracking.experiment)
    if exp is None:
        client.create_experiment(tracking.experiment,
                                 artifact_location=local_artifact_location(uri),
                                 tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        return
    from mlflow.utils.file_utils import local_file_uri_to_path

    location = exp.artifact_location
    folder = Path(local_file_uri_to_path(location)) if location.startswith(("file:", "/")) \
        else None
    if folder is not None and not folder.is_dir() and not folder.is_relative_to(home):
        log.warning("MLflow experiment %r keeps its artifacts in %s, which does not exist (a "
                    "run in a deleted copy created it): this run's artifacts go there too; "
                    "delete the experiment or rename tracking.experiment", tracking.experiment,
                    folder)


def reproduce(scenario: Scenario, root: Path, workdir: Path,
              timeout_s: float | None = None) -> tuple[Path, dict]:
    """``dvc repro`` of the scenario from nothing, in a copy of ``root``'s working tree made
    in ``workdir``. Its MLflow runs go to ``root``'s store (``$MLFLOW_TRACKING_URI`` wins).

    Returns:
        (the copy, :func:`transferlab.core.workspace.run_repro`'s row: seconds, per-stage
        seconds, and ``git``: the commit and dirty flag of ``root`` when it was copied)
    Raises:
        RuntimeError: dvc repro failed or ran out of time (with its log's tail).
    """
    from transferlab.core.run_context import git_state
    from transferlab.core.workspace import copy_worktree, run_repro

    repo = workdir / "repo"
    repo.mkdir(parents=True)
    state = git_state(root)  # what is copied, not what the repository holds once it ends
    state["dirty_paths"] = _dirty_paths(root) if state.get("dirty") else []
    copy_worktree(root, repo)
    (repo / "dvc.lock").unlink(missing_ok=True)  # from nothing
    compose(scenario, repo / "params.yaml", repo / "params.yaml")
    uri = tracking_uri(root)
    ensure_experiment(repo / "params.yaml", uri)
    row = run_repro(repo, [], repo / "repro.log", timeout_s, tracking_uri=uri)
    if row["status"] != "ok":
        raise RuntimeError(f"scenario '{scenario.name}': dvc repro {row['status']}:\n"
                           + "\n".join(row.get("log_tail", [])))
    return repo, {**row, "git": state}


def write_results(scenario: Scenario, root: Path, repo: Path, row: dict,
                  results: Path | None = None, command: str | None = None) -> Path:
    """Copy a reproduced scenario's report, figures and headline metrics, with its provenance
    (commit, params hash, lock hash, machine, wall time per stage), to ``results`` (default
    ``root/docs/results/<name>``), replacing what was there in one step."""
    from transferlab.config.params import load_params
    from transferlab.core.run_context import git_state

    results = results or root / RESULTS_DIR / scenario.name
    state = row.get("git") or git_state(root)  # the commit the run copied (reproduce's)
    staging = results.with_name(results.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shutil.copy(repo / "reports" / "report.md", staging / "report.md")
    if (repo / "reports" / "figures").is_dir():
        shutil.copytree(repo / "reports" / "figures", staging / "figures")
    if (repo / "metrics" / "headline").is_dir():
        shutil.copytree(repo / "metrics" / "headline", staging / "headline")
    shutil.copy(repo / "params.yaml", staging / "params.yaml")
    if (repo / "metrics" / "evaluate.json").is_file():
        statistics = family_statistics(json.loads((repo / "metrics" / "evaluate.json").read_text()))
        (staging / "statistics.json").write_text(json.dumps(statistics, indent=1) + "\n")
    provenance = {
        "scenario": scenario.name, "question": scenario.question,
        "overrides": list(scenario.overrides),
        "git_commit": state["commit"], "git_dirty": state["dirty"],
        "git_dirty_paths": state.get("dirty_paths", []),
        "params_sha256": params_digest(repo / "params.yaml"),
        "determinism": load_params(repo / "params.yaml").common.determinism,
        "dvc_lock_sha256": hashlib.sha256((repo / "dvc.lock").read_bytes()).hexdigest(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_seconds": round(row["seconds"], 1),
        "stage_seconds": {k: round(v, 1) for k, v in row["stage_seconds"].items()},
        **({"evaluate_seconds": seconds} if (seconds := _evaluate_seconds(repo)) else {}),
        "machine": _machine(),
        "command": command or f"make study S={scenario.name}",
    }
    (staging / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    shutil.rmtree(results, ignore_errors=True)
    staging.rename(results)
    return results


def _evaluate_seconds(repo: Path) -> dict:
    """Where the evaluate stage's time went (its timing file's ``seconds``: each curve's
    checkpoints, the transferability scores, what transferred), rounded; {} where not
    recorded."""
    path = repo / "timing" / "metrics" / "evaluate.json"
    try:
        seconds = json.loads(path.read_text()).get("seconds") or {}
    except (OSError, ValueError):
        return {}

    def rounded(value: Any) -> Any:
        return ({k: rounded(v) for k, v in value.items()} if isinstance(value, dict)
                else round(value, 1))
    return rounded(seconds)


def family_statistics(evaluate: dict) -> dict:
    """What a study's verdicts rest on, small enough for git: ``evaluate.json``'s
    ``statistics`` (the family, its adjustment, what the design can detect per budget) and the
    raw p-value of every comparison in the family (each gain over scratch, each recommended
    curve against its runner-up), as [curve or "recommended", budget, p]."""
    family = [[curve, budget, e["gain"]["p_value"]]
              for curve, by_budget in sorted(evaluate.get("summary", {}).items())
              for budget, e in by_budget.items() if "gain" in e]
    family += [["recommended", budget, r["vs_runner_up"]["p_value"]]
               for budget, r in evaluate.get("recommendations", {}).items()
               if r.get("vs_runner_up")]
    family = [row for row in family if isinstance(row[2], float) and math.isfinite(row[2])]
    return {"statistics": evaluate.get("statistics", {}), "family_p_values": family}


def study(scenario: Scenario, root: Path, results: Path | None = None,
          timeout_s: float | None = None) -> Path:
    """Rerun the scenario from nothing in a temporary copy of ``root``'s working tree and write
    its results to ``results`` (default ``root/docs/results/<name>``): :func:`reproduce`, then
    :func:`write_results`. What was there is replaced only once the run succeeded."""
    with tempfile.TemporaryDirectory(prefix=f"transferlab-study-{scenario.name}-") as tmp:
        repo, row = reproduce(scenario, root, Path(tmp), timeout_s)
        return write_results(scenario, root, repo, row, results)


def pipeline_code(dvc_yaml: Path) -> list[str]:
    """Every path a stage of ``dvc_yaml`` lists in its ``deps``, but another stage's outputs,
    ``params.yaml`` (its keys are compared as composed params) and templated paths (data, per
    source)."""
    stages = [s.get("do", s) for s in
              ((yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages") or {}).values()]
    deps = {dep for stage in stages for dep in stage.get("deps") or [] if "${" not in dep}
    outs = {next(iter(o)) if isinstance(o, dict) else o for stage in stages
            for key in ("outs", "metrics", "plots") for o in stage.get(key) or []}
    return sorted(deps - outs - {"params.yaml"})


def _pipeline_paths(paths: list[str], code: list[str]) -> list[str]:
    """The ``paths`` a study's results depend on: pipeline ``code`` (files, or files under its
    folders), ``params.yaml``, ``dvc.yaml`` and the scenarios (not results, docs or tests)."""
    return [p for p in paths if p in ("params.yaml", "dvc.yaml")
            or p.startswith(SCENARIO_DIR.as_posix() + "/")
            or any(p == c or p.startswith(c.rstrip("/") + "/") for c in code)]


def _took(row: dict) -> str:
    """How long a published study ran, and where: "33.0 min on AMD EPYC" ("" if not known)."""
    return f"{row['seconds'] / 60:.1f} min on {row['cpu']}" if row["seconds"] else ""


def status(root: Path) -> list[dict]:
    """Per scenario, whether ``root/docs/results/<name>`` is from this tree's pipeline: its
    commit's version of every file of :func:`pipeline_code` equals the working tree's (git
    diff), its run had no uncommitted change to that code, ``params.yaml``, ``dvc.yaml`` or a
    scenario (changes to results and docs do not count), and the scenario composes onto today's
    ``params.yaml`` into params with the hash it recorded. Rows: {"scenario", "state"
    (current | stale | never published), "commit", "reasons", "seconds" and "cpu" (its
    last run's wall time and CPU; None if never published)}.

    Raises:
        ParamsError: a provenance names a commit this clone does not have (a shallow clone).
    """
    code = pipeline_code(root / "dvc.yaml")
    rows = []
    for name in names(root / SCENARIO_DIR):
        path = root / RESULTS_DIR / name / "provenance.json"
        if not path.is_file():
            rows.append({"scenario": name, "state": "never published", "commit": None,
                         "reasons": [], "seconds": None, "cpu": None})
            continue
        prov = json.loads(path.read_text())
        diff = subprocess.run(["git", "diff", "--name-only", prov["git_commit"], "--", *code],
                              cwd=root, capture_output=True, text=True, check=False)
        if diff.returncode != 0:
            raise ParamsError(f"{path}: git cannot compare with commit {prov['git_commit']} "
                              f"({diff.stderr.strip()}); a full clone has it")
        changed = diff.stdout.split()
        with tempfile.TemporaryDirectory() as tmp:
            composed = compose(load(name, root / SCENARIO_DIR), root / "params.yaml",
                               Path(tmp) / "params.yaml")
            same_params = params_digest(composed) == prov["params_sha256"]
        reasons = []
        if prov.get("git_dirty"):  # uncommitted changes to results or docs do not count
            paths = prov.get("git_dirty_paths")
            if paths is None:
                reasons.append("run from a tree with uncommitted changes (which: not recorded)")
            elif touched := _pipeline_paths(paths, code):
                reasons.append(f"run with uncommitted changes to {', '.join(touched[:4])}")
        if changed:
            reasons.append(f"pipeline code changed since: {', '.join(changed[:4])}"
                           + (f" and {len(changed) - 4} more" if len(changed) > 4 else ""))
        if not same_params:
            reasons.append("its composed params changed")
        rows.append({"scenario": name, "state": "stale" if reasons else "current",
                     "commit": prov["git_commit"][:7], "reasons": reasons,
                     "seconds": prov.get("wall_seconds"),
                     "cpu": (prov.get("machine") or {}).get("cpu", "an unrecorded CPU")})
    return rows


def refresh(root: Path, run=None) -> dict[str, str]:
    """Rerun every study :func:`status` does not call current, one after another, the quickest
    first (by the time its last run took; never-published ones last), each with :func:`study`
    (or ``run(scenario, root)``). A study that fails is logged and the rest still run.

    Returns:
        {scenario: "ok" or the error}, in the order they ran.
    Raises:
        ParamsError: the tree has uncommitted changes to pipeline code, params, ``dvc.yaml`` or a
            scenario: every study written from it would be stale at once (commit them first).
    """
    run = run or study
    touched = _pipeline_paths(_dirty_paths(root), pipeline_code(root / "dvc.yaml"))
    if touched:
        raise ParamsError(f"uncommitted changes to {', '.join(touched[:4])}: a study run from "
                          "this tree is stale as soon as it is written; commit them first")
    todo = sorted((r for r in status(root) if r["state"] != "current"),
                  key=lambda r: (r["seconds"] is None, r["seconds"] or 0.0, r["scenario"]))
    if not todo:
        log.info("studies: every published study is current; nothing to rerun")
        return {}
    log.info("studies: rerunning %d (%s); their last runs took %.0f min in all%s", len(todo),
             ", ".join(r["scenario"] for r in todo),
             sum(r["seconds"] or 0.0 for r in todo) / 60,
             "" if all(r["seconds"] for r in todo) else ", plus the never-published")
    outcome: dict[str, str] = {}
    for i, row in enumerate(todo, 1):
        name = row["scenario"]
        log.info("study %d/%d: %s (last run %s)", i, len(todo), name, _took(row) or "never")
        try:
            log.info("study %s: wrote %s", name, run(load(name, root / SCENARIO_DIR), root))
            outcome[name] = "ok"
        except (RuntimeError, ParamsError) as err:
            log.error("study %s failed: %s", name, err)
            outcome[name] = str(err)
    done = [name for name, result in outcome.items() if result == "ok"]
    log.info("studies: %d rerun (%s)%s; commit docs/results/ to publish them", len(done),
             ", ".join(done) or "none",
             f", {len(outcome) - len(done)} failed" if len(done) < len(outcome) else "")
    return outcome


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m transferlab.scenarios",
                                     description="List, compose, run and study scenarios.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the scenarios and their questions")
    p = sub.add_parser("compose", help="write the composed, validated params file")
    p.add_argument("name")
    p.add_argument("out", type=Path)
    p = sub.add_parser("run", help="dvc exp run --temp (or --queue) with the overrides")
    p.add_argument("name")
    p.add_argument("--queue", action="store_true", help="queue it (dvc queue start runs it)")
    p = sub.add_parser("study", help="rerun in a copy; write docs/results/<name>/")
    p.add_argument("name")
    p = sub.add_parser("status", help="which published studies (docs/results/) are current")
    p.add_argument("--refresh", action="store_true",
                   help="rerun every study that is not current (quickest first)")
    args = parser.parse_args(argv)
    root = Path.cwd()
    try:
        configure()
        if args.command == "list":  # the listing is the answer: stdout
            for name in names():
                print(f"{name:18s} {load(name).question}")
            return
        if args.command == "status" and args.refresh:
            failed = [name for name, result in refresh(root).items() if result != "ok"]
            sys.exit(f"error: studies failed: {', '.join(failed)}" if failed else 0)
        if args.command == "status":
            rows = status(root)
            for row in rows:
                print(f"{row['scenario']:18s} {row['state']:16s} {row['commit'] or '':8s}"
                      f"{_took(row):34s} {'; '.join(row['reasons'])}".rstrip())
            sys.exit(0 if all(r["state"] == "current" for r in rows) else 1)
        scenario = load(args.name)
        if args.command == "compose":
            compose(scenario, root / "params.yaml", args.out)
            log.info("%s: scenario '%s' composed and valid", args.out, scenario.name)
        elif args.command == "run":
            with tempfile.TemporaryDirectory() as tmp:  # fail here, not in the experiment
                composed = compose(scenario, root / "params.yaml", Path(tmp) / "params.yaml")
                ensure_experiment(composed, tracking_uri(root))
            sys.exit(subprocess.run(exp_run_command(scenario, args.queue), check=False)
                     .returncode)
        else:
            log.info("study %s: wrote %s", scenario.name, study(scenario, root))
    except (ParamsError, LogLevelError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
