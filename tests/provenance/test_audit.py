"""transferlab.provenance.audit: workspace findings, the fingerprint, and the audit end to end
(a tracked, synced shrunk run in a temporary clone passes; a tampered metrics file fails)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import GIT_ID, ROOT, VENV_ENV, BuiltPipeline, run
from transferlab.core.runtime import dumps_json
from transferlab.provenance.audit import (
    check_kernels,
    environment_fingerprint,
    expected_tags,
    git_changes,
    render_markdown,
    status_findings,
)
from transferlab.provenance.comparison import IDENTICAL, WITHIN
from transferlab.provenance.reproduction import check_reproduction, lock_changes


def test_workspace_findings_name_every_path() -> None:
    status = {"evaluate": [{"changed outs": {"metrics/evaluate.json": "modified"}}],
              "report": ["always changed"]}
    assert status_findings(status) == [
        "evaluate: changed outs: metrics/evaluate.json (modified)", "report: always changed"]
    assert status_findings({}) == []
    porcelain = " M params.yaml\n M README.md\n?? transferlab/new.py\nR  a.py -> stages/b.py\n"
    read, other = git_changes(porcelain, lambda p: p.startswith(("transferlab/", "stages/"))
                              or p == "params.yaml")
    assert read == ["params.yaml", "transferlab/new.py", "stages/b.py"] and other == ["README.md"]


def test_expected_tags_match_what_sync_writes() -> None:
    from transferlab.tracking.mirror import _lock_tags

    entry = {"deps": [{"path": "data/prepared", "md5": "abc.dir"}],
             "outs": [{"path": "models/x/model.pt", "md5": "def"}]}
    assert expected_tags(entry) == _lock_tags(entry) == {
        "dvc.dep.data/prepared": "abc.dir", "dvc.out.models/x/model.pt": "def"}


def test_environment_fingerprint_keys() -> None:
    env = environment_fingerprint(num_threads=2)
    assert {"python", "platform", "packages", "cuda", "cudnn", "deterministic", "cpu", "gpu",
            "threads", "env", "cpu_pinning"} <= set(env)
    assert env["cpu_pinning"]["pins"]["MKL_CBWR"] == "COMPATIBLE"
    assert set(env["packages"]) == {"torch", "torchvision", "numpy", "dvc", "mlflow"}
    assert env["deterministic"]["algorithms"] is True
    assert env["threads"]["torch"] == 2 and env["threads"]["cpu_count"] >= 1
    assert set(env["env"]) == {"OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUBLAS_WORKSPACE_CONFIG",
                               "TRANSFERLAB_CPU_PINNING"}
    json.loads(dumps_json(env))  # serialisable as the audit writes it


def test_markdown_puts_the_verdict_first() -> None:
    result = {"verdict": "fail", "unexplained": ["rerun evaluate: metrics/evaluate.json: a"],
              "notes": [], "options": {"stage": None, "skip_rerun": True, "tolerance": 1e-6},
              "rerun": {"skipped": True}, "mlflow": {"uri": "x", "stages": {}},
              "environment": {"python": "3.11", "threads": {"torch": 2}}}
    md = render_markdown(result).splitlines()
    assert md[0] == "# Audit: FAIL" and md[2] == "- rerun evaluate: metrics/evaluate.json: a"
    assert "| threads.torch | 2 |" in md


LOCK = {"schema": "2.0", "stages": {
    "pretrain@a": {"cmd": "python -m stages.pretrain_source --source a",
                   "deps": [{"path": "data/prepared/sources/a", "md5": "d1.dir"},
                            {"path": "stages/pretrain_source.py", "md5": "s1"}],
                   "params": {"params.yaml": {"pretrain": {"epochs": 2}}},
                   "outs": [{"path": "models/a/model.pt", "md5": "m1"},
                            {"path": "models/a/metrics.json", "md5": "j1"}]},
    "evaluate": {"cmd": "python -m stages.evaluate",
                 "deps": [{"path": "models", "md5": "ms.dir"}],
                 "outs": [{"path": "metrics/evaluate.json", "md5": "e1"}]}}}
EVALUATE = {"summary": {"scratch": {"1": {"accuracy": {"mean": 0.5}}},
                        "a/finetune": {"1": {"accuracy": {"mean": 0.7}}}},
            "recommendations": {"1": {"best": "a/finetune"}}}


def _git_repo(root: Path) -> None:
    (root / "metrics").mkdir(parents=True)
    (root / "models" / "a").mkdir(parents=True)
    (root / "dvc.lock").write_text(yaml.safe_dump(LOCK))
    (root / "metrics" / "evaluate.json").write_text(dumps_json(EVALUATE))
    (root / "models" / "a" / "metrics.json").write_text(dumps_json({"test": {"accuracy": 0.9}}))
    for args in (["init", "-q"], ["add", "-A"], [*GIT_ID, "commit", "-qm", "results"]):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def test_lock_changes_separate_inputs_from_reproduced_outputs() -> None:
    import copy

    other = copy.deepcopy(LOCK["stages"])
    other["pretrain@a"]["outs"][0]["md5"] = "m2"  # another machine's checkpoint
    other["evaluate"]["deps"][0]["md5"] = "ms2.dir"  # follows from it: not an input change
    assert lock_changes(LOCK["stages"], other) == ([], {"pretrain@a": ["models/a/model.pt"]})
    other["pretrain@a"]["deps"][1]["md5"] = "s2"  # the script itself changed
    other["pretrain@a"]["params"] = {"params.yaml": {"pretrain": {"epochs": 3}}}
    inputs, _ = lock_changes(LOCK["stages"], other)
    assert inputs == ["pretrain@a: params, stages/pretrain_source.py"]


def test_reproduction_passes_when_identical_and_says_how_far_numbers_moved(
        tmp_path: Path) -> None:
    import copy

    _git_repo(tmp_path)
    same = check_reproduction(tmp_path, LOCK["stages"], None, 1e-6)
    assert same["identical"] is True and same["unexplained"] == [] and same["stages"] == {}
    # a rerun elsewhere: other checkpoint bits, the same metrics to 6 digits -> a note only
    lock = copy.deepcopy(LOCK["stages"])
    lock["pretrain@a"]["outs"][0]["md5"] = "m2"
    bitwise = check_reproduction(tmp_path, lock, None, 1e-6)
    assert bitwise["unexplained"] == [] and bitwise["identical"] is False
    assert bitwise["outputs_identical"] is False and same["outputs_identical"] is True
    assert "reproduction pretrain@a: outputs differ" in bitwise["notes"][0]
    # ... and numbers that moved, with a changed recommendation -> unexplained, per stage
    moved = copy.deepcopy(EVALUATE)
    moved["summary"]["a/finetune"]["1"]["accuracy"]["mean"] = 0.45
    moved["recommendations"]["1"]["best"] = "scratch"
    (tmp_path / "metrics" / "evaluate.json").write_text(dumps_json(moved))
    lock["evaluate"]["outs"][0]["md5"] = "e2"
    far = check_reproduction(tmp_path, lock, None, 1e-6)
    (line,) = far["unexplained"]
    assert line.startswith("reproduction evaluate: outputs differ from the committed dvc.lock "
                           "(metrics/evaluate.json); metrics/evaluate.json: 1 metric(s) moved")
    assert "summary.*.accuracy.mean max |Δ| 0.25 (1/2 values" in line
    assert "recommendations.1.best: 'a/finetune' -> 'scratch'" in line
    md = render_markdown({"verdict": "fail", "unexplained": far["unexplained"], "notes": [],
                          "options": {"stage": None, "skip_rerun": True, "tolerance": 1e-6},
                          "reproduction": far, "rerun": {"skipped": True},
                          "mlflow": {"uri": "x", "stages": {}}, "environment": {}})
    assert "## Reproduction against the commit" in md and "- evaluate: outputs differ" in md
    # outputs that changed, counted apart from the conclusions that changed
    assert far["summary"]["outputs_changed"] == ["metrics/evaluate.json", "models/a/model.pt"]
    assert far["summary"]["conclusions_changed"] == [
        {"file": "metrics/evaluate.json", "key": "recommendations.1.best",
         "committed": "a/finetune", "workspace": "scratch"}]
    assert "Conclusions that changed (verdicts, recommendations): 1." in md
    assert check_reproduction(tmp_path, lock, "pretrain@a", 1e-6)["unexplained"] == []


def _kernels(cpu: str, conv: str) -> dict:
    ops = {"conv2d_fwd_1x32": conv, "softmax": "s1"}
    return {"machine": {"cpu": cpu, "flags": ["avx2"]}, "portable": ops, "onednn_on": ops}


def test_audit_names_the_kernels_that_differ_from_the_lock_machine(tmp_path: Path) -> None:
    from transferlab.provenance import fingerprint as fp
    assert check_kernels(tmp_path, "portable", None, _kernels("here", "c1"))["notes"][0] \
        .startswith("kernels: no dvc.lock.fingerprint.json records the lock's machine")
    _git_repo(tmp_path)
    lock_machine = {"lock_sha256": fp.lock_sha256(tmp_path / "dvc.lock"), "determinism":
                    "portable", **_kernels("AMD EPYC 7R13 Processor", "c1")}
    (tmp_path / fp.LOCK_FINGERPRINT).write_text(json.dumps(lock_machine))
    subprocess.run(["git", "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*("git", *GIT_ID), "commit", "-qm", "fp"], cwd=tmp_path, check=True)
    (tmp_path / fp.LOCK_FINGERPRINT).write_text("{}")  # the workspace's copy is not read
    same = check_kernels(tmp_path, "portable", True, _kernels("Intel Xeon", "c1"))
    assert same["equal"] and same["unexplained"] == [] and same["differing"] == []
    assert "computes every kernel as the lock's machine did" in same["notes"][0]
    # outputs differ and a kernel differs: the cause, named, as a note
    other = check_kernels(tmp_path, "portable", False, _kernels("Intel Xeon", "c2"))
    assert other["differing"] == ["conv2d_fwd_1x32"] and other["unexplained"] == []
    assert "the expected cause of outputs that differ: portable: 1 of 2 kernels differ, " \
           "first conv2d_fwd_1x32 (c2 here, c1 in the golden)" in other["notes"][0]
    assert "AMD EPYC 7R13" in other["notes"][0] and "Intel Xeon" in other["notes"][0]
    # outputs differ although every kernel is equal: not the CPU, unexplained
    (line,) = check_kernels(tmp_path, "portable", False, _kernels("Intel Xeon", "c1"))[
        "unexplained"]
    assert "the cause is not the CPU" in line


def test_make_audit_runs_the_module() -> None:
    out = subprocess.run(["make", "-n", "audit", "AUDIT_ARGS=--skip-rerun"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert "transferlab audit --skip-rerun" in out


# -- end to end ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synced_clone(tiny_pipeline: BuiltPipeline,
                 tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A copy of the session's tiny pipeline (every kind of stage: the audit reruns them all),
    its MLflow mirror synced into a store inside the copy."""
    repo = tiny_pipeline.copy(tmp_path_factory.mktemp("audit") / "repo")
    env = dict(VENV_ENV, MLFLOW_TRACKING_URI=f"sqlite:///{repo / 'mlflow.db'}")
    run([sys.executable, "-m", "transferlab.tracking", "sync"], repo, env)
    return repo, env


def _audit(repo: Path, env: dict, *args: str) -> tuple[int, str, dict, str]:
    proc = subprocess.run([sys.executable, "-m", "transferlab.provenance.audit", *args],
                          cwd=repo, env=env, capture_output=True, text=True)
    out = repo / "audit"
    result = json.loads((out / "audit.json").read_text()) if (out / "audit.json").is_file() \
        else {}
    md = (out / "audit.md").read_text() if (out / "audit.md").is_file() else ""
    return proc.returncode, proc.stdout + proc.stderr, result, md


def _run_count(uri: str) -> int:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    return len(client.search_runs([client.get_experiment_by_name("transferlab").experiment_id],
                                  max_results=50000))


@pytest.mark.slow  # the audit reruns the whole pipeline: a second execution of minutes
@pytest.mark.timeout(1800)  # the session's pipeline run (if first) plus the audit's rerun
def test_audit_passes_on_an_untouched_run(synced_clone: tuple[Path, dict]) -> None:
    repo, env = synced_clone
    runs_before = _run_count(env["MLFLOW_TRACKING_URI"])
    code, output, result, md = _audit(repo, env)
    assert code == 0, output
    assert result["verdict"] == "pass" and result["unexplained"] == [], output
    assert md.startswith("# Audit: PASS")
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    labels = {name: s["label"] for name, s in result["rerun"]["stages"].items()}
    assert set(labels) == set(lock)
    assert set(labels.values()) <= {IDENTICAL, WITHIN}, labels
    assert labels["prepare"] == IDENTICAL and labels["evaluate"] == IDENTICAL
    assert result["reproduction"]["identical"] is True
    tracked = {n for n in lock if n.split("@")[0] in ("pretrain", "transfer", "methods",
                                                     "scratch", "evaluate")}
    assert set(result["mlflow"]["stages"]) == tracked
    assert all(not s["problems"] for s in result["mlflow"]["stages"].values())
    assert result["environment"]["deterministic"]["algorithms"] is True
    # the rerun logged into its own temporary store, never into the user's
    assert _run_count(env["MLFLOW_TRACKING_URI"]) == runs_before
    assert subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                          capture_output=True, text=True).stdout == ""


def test_audit_fails_and_names_a_tampered_metrics_file(
        synced_clone: tuple[Path, dict]) -> None:
    repo, env = synced_clone
    path = repo / "metrics" / "evaluate.json"
    original = path.read_text()
    report = json.loads(original)
    report["summary"]["scratch"]["all"]["accuracy"]["mean"] += 0.01
    path.write_text(dumps_json(report))
    try:
        code, output, result, md = _audit(repo, env, "--skip-rerun")
    finally:
        path.write_text(original)
    assert code == 1, output
    assert result["verdict"] == "fail" and result["rerun"]["skipped"] is True
    assert "metrics/evaluate.json" in output and "metrics/evaluate.json" in md
    assert md.startswith("# Audit: FAIL")
    # both the lock and the mirror see it: dvc status, and MLflow's logged mean
    assert any(u.startswith("dvc status: evaluate") and "metrics/evaluate.json" in u
               for u in result["unexplained"])
    assert any(u.startswith("MLflow evaluate") and "summary.scratch.all.accuracy.mean" in u
               for u in result["unexplained"])


@pytest.mark.slow  # a second audit rerun (make test keeps the tampered-file audit): 25 s here
def test_audit_of_one_stage_reruns_only_it(synced_clone: tuple[Path, dict]) -> None:
    """--stage: the rerun and the checks cover one stage of the lock (seconds, not the whole
    pipeline's minutes); a stage the lock lacks is refused with the valid names."""
    repo, env = synced_clone
    stage = "transfer@printed_digits"
    code, output, result, _ = _audit(repo, env, "--stage", stage)
    assert code == 0, output
    assert result["verdict"] == "pass" and result["unexplained"] == [], output
    assert result["options"]["stage"] == stage
    assert set(result["rerun"]["stages"]) == {stage}
    assert result["rerun"]["stages"][stage]["label"] in {IDENTICAL, WITHIN}
    # the stage's MLflow runs: one per strategy
    assert set(result["mlflow"]["stages"]) == {f"{stage}/linear_probe", f"{stage}/finetune"}
    code, output, _, _ = _audit(repo, env, "--stage", "transfer@nowhere", "--skip-rerun")
    assert code != 0
    assert "--stage 'transfer@nowhere': not in dvc.lock; expected one of" in output
    assert stage in output
