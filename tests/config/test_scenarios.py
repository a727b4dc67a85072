"""Scenarios are short override files composed onto params.yaml by DVC's own --set-param."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from transferlab import scenarios
from transferlab.config.params import load_params, to_dict
from transferlab.core.errors import ParamsError

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "scenarios"
PARAMS = ROOT / "params.yaml"


@pytest.mark.parametrize("name", scenarios.names(FOLDER))
def test_every_scenario_composes_into_params_that_validate(name, tmp_path):
    scenario = scenarios.load(name, FOLDER)
    out = scenarios.compose(scenario, PARAMS, tmp_path / "params.yaml")
    params = load_params(out)
    # the overrides took effect: every `key=value` and `+key=value` is in the composed file
    composed = yaml.safe_load(out.read_text())
    for override in scenario.overrides:
        if override.startswith("~"):
            node = composed
            *parents, last = override[1:].split(".")
            for key in parents:
                node = node[key]
            assert last not in node, override
            continue
        key = override.lstrip("+").split("=", 1)[0]
        node = composed
        for part in key.split("."):
            assert part in node, f"{name}: {override} did not land"
            node = node[part]
    assert params is not None


def test_the_default_scenario_is_params_yaml_itself(tmp_path):
    out = scenarios.compose(scenarios.load("default", FOLDER), PARAMS, tmp_path / "p.yaml")
    assert out.read_text() == PARAMS.read_text()


def test_scenarios_are_overrides_not_copies():
    """No scenario repeats params.yaml: each holds a question and a list of overrides, far
    fewer lines than the default's keys."""
    leaves = len(_leaves(yaml.safe_load(PARAMS.read_text())))
    for path in FOLDER.glob("*.yaml"):
        data = yaml.safe_load(path.read_text())
        assert set(data) == {"question", "overrides"}, path.name
        assert len(data["overrides"]) < leaves / 2, path.name


def test_the_study_scenario_keeps_the_former_default(tmp_path):
    """digits_study is the former default: five seeds, the `all` budget, four strategies and
    five methods."""
    p = load_params(scenarios.compose(scenarios.load("digits_study", FOLDER), PARAMS,
                                      tmp_path / "p.yaml"))
    assert list(p.common.seeds) == [0, 1, 2, 3, 4]
    assert [str(b) for b in p.prepare.budgets] == ["1", "3", "10", "30", "all"]
    assert "partial_finetune" in p.grid.strategies
    assert len(p.grid.methods.strategies) == 5
    assert p.pretrain.width == 32  # the default is width 16


def test_unknown_scenario_names_the_valid_ones():
    with pytest.raises(ParamsError, match="unknown scenario 'nope'; expected one of .*default"):
        scenarios.load("nope", FOLDER)


def test_bad_files_and_overrides_are_clear_errors(tmp_path):
    (tmp_path / "extra.yaml").write_text("question: q\noverrides: []\nseeds: 3\n")
    with pytest.raises(ParamsError, match="unknown key 'seeds'"):
        scenarios.load("extra", tmp_path)
    (tmp_path / "notlist.yaml").write_text("question: q\noverrides: common.seeds=[1]\n")
    with pytest.raises(ParamsError, match="overrides must be a list"):
        scenarios.load("notlist", tmp_path)
    # a key that is not in params.yaml must be added with +: DVC's rule, named with the scenario
    typo = scenarios.Scenario("typo", "q", ("common.sedes=[1]",))
    with pytest.raises(ParamsError, match="scenario 'typo'"):
        scenarios.compose(typo, PARAMS, tmp_path / "p.yaml")
    # a value of the wrong type fails validation, naming the key
    bad = scenarios.Scenario("bad", "q", ("common.num_threads='many'",))
    with pytest.raises(ParamsError, match="scenario 'bad' composes into invalid params.*"
                                          "num_threads"):
        scenarios.compose(bad, PARAMS, tmp_path / "p.yaml")


def test_a_float_dvc_writes_without_a_dot_reads_as_a_number(tmp_path):
    """DVC (ruamel, YAML 1.2) writes 0.00005 as 5e-05, which YAML 1.1 reads as a string."""
    lr = scenarios.Scenario("lr", "q", ("pretrain.lr=0.00005",))
    out = scenarios.compose(lr, PARAMS, tmp_path / "p.yaml")
    assert "lr: 5e-05" in out.read_text()
    assert load_params(out).pretrain.lr == pytest.approx(5e-5)


def test_run_is_a_dvc_experiment_in_a_temporary_copy():
    scenario = scenarios.load("digits_study", FOLDER)
    cmd = scenarios.exp_run_command(scenario)
    assert cmd[:6] == ["dvc", "exp", "run", "--temp", "-n", "digits_study"]
    assert cmd[6::2] == ["-S"] * len(scenario.overrides)
    assert cmd[7::2] == list(scenario.overrides)
    assert "--queue" in scenarios.exp_run_command(scenario, queue=True)


def test_params_digest_ignores_comments(tmp_path):
    text = PARAMS.read_text()
    (tmp_path / "a.yaml").write_text(text)
    (tmp_path / "b.yaml").write_text("# another comment\n" + text)
    assert scenarios.params_digest(tmp_path / "a.yaml") == scenarios.params_digest(
        tmp_path / "b.yaml")
    assert json.dumps(to_dict(load_params(tmp_path / "a.yaml")), default=str)


def _leaves(node, prefix=""):
    if isinstance(node, dict) and node:
        return [leaf for k, v in node.items() for leaf in _leaves(v, f"{prefix}{k}.")]
    return [prefix]


def test_a_study_records_its_determinism_from_the_params(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "reports").mkdir(parents=True)
    (repo / "reports" / "report.md").write_text("# report\n")
    (repo / "dvc.lock").write_text("schema: '2.0'\n")
    scenario = scenarios.Scenario("fast", "q", ("common.determinism='fast'",))
    scenarios.compose(scenario, PARAMS, repo / "params.yaml")
    out = scenarios.write_results(scenario, tmp_path, repo, {"seconds": 1.0,
                                                             "stage_seconds": {"a": 1.0}},
                                  results=tmp_path / "results" / "fast")
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["determinism"] == "fast"
    # the orchestrating process's own convolution switches say nothing of the stages'
    assert not {"transferlab.cpu.determinism", "transferlab.cpu.mkldnn_enabled",
                "transferlab.cpu.nnpack_enabled"} & set(provenance["machine"]["cpu_pins"])
    assert provenance["machine"]["cpu_pins"]["transferlab.cpu.MKL_CBWR"] == "COMPATIBLE"


def test_a_study_records_the_commit_it_copied_not_the_one_at_its_end(tmp_path: Path) -> None:
    """A commit made while a study runs must not become the study's provenance: the git state
    is taken when the working tree is copied (reproduce's row) and written as it was."""
    repo = tmp_path / "repo"
    (repo / "reports").mkdir(parents=True)
    (repo / "reports" / "report.md").write_text("# report\n")
    (repo / "dvc.lock").write_text("schema: '2.0'\n")
    scenario = scenarios.Scenario("s", "q", ())
    scenarios.compose(scenario, PARAMS, repo / "params.yaml")
    copied = {"commit": "a" * 40, "dirty": True, "note": None,
              "dirty_paths": ["docs/results/t/report.md"]}
    out = scenarios.write_results(scenario, tmp_path, repo,
                                  {"seconds": 1.0, "stage_seconds": {}, "git": copied},
                                  results=tmp_path / "results" / "s")
    provenance = json.loads((out / "provenance.json").read_text())
    assert (provenance["git_commit"], provenance["git_dirty"],
            provenance["git_dirty_paths"]) == ("a" * 40, True, ["docs/results/t/report.md"])


def test_dirty_paths_name_the_changed_tracked_files(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "a.txt").write_text("1\n")
    (repo / "b.txt").write_text("1\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a")
    (repo / "b.txt").write_text("2\n")
    (repo / "c.txt").write_text("untracked\n")
    assert scenarios._dirty_paths(repo) == ["b.txt"]


def _git(repo: Path, *args: str) -> str:
    import subprocess

    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                          text=True).stdout.strip()


def _scratch_repo(tmp_path: Path, *others: str) -> Path:
    """A git repository with the default params, a dvc.yaml whose pipeline code is
    stages/evaluate.py and runs/, and the scenarios default and ``others`` (no overrides),
    committed."""
    repo = tmp_path / "repo"
    (repo / "scenarios").mkdir(parents=True)
    (repo / "stages").mkdir()
    (repo / "params.yaml").write_text(PARAMS.read_text())
    for name in ("default", *others):
        (repo / "scenarios" / f"{name}.yaml").write_text("question: q\noverrides: []\n")
    (repo / "stages" / "evaluate.py").write_text("x = 1\n")
    (repo / "README.md").write_text("read me\n")
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "evaluate": {"cmd": "python stages/evaluate.py",
                     "deps": ["stages/evaluate.py", "params.yaml", "runs"],
                     "outs": ["metrics/evaluate.json"]},
        "report": {"cmd": "true", "deps": ["metrics/evaluate.json"]},
        "pretrain": {"foreach": ["a"], "do": {"cmd": "true",
                                              "deps": ["data/${item}", "stages/evaluate.py"]}},
    }}))
    _git(repo, "init", "-q")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a",
         "--allow-empty")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "b")
    return repo


def _publish(repo: Path, name: str, **provenance) -> Path:
    published = repo / "docs" / "results" / name
    published.mkdir(parents=True, exist_ok=True)
    (published / "provenance.json").write_text(json.dumps(
        {"git_commit": _git(repo, "rev-parse", "HEAD"), "git_dirty": False,
         "params_sha256": scenarios.params_digest(repo / "params.yaml"), **provenance}))
    return published


def test_status_says_which_published_studies_this_tree_still_stands_behind(tmp_path):
    """A study is current until a file of the pipeline's code (a dvc.yaml dep that no stage
    writes) or its composed params change; docs, tests and outputs do not count."""
    repo = _scratch_repo(tmp_path, "other")
    assert scenarios.pipeline_code(repo / "dvc.yaml") == ["runs", "stages/evaluate.py"]
    digest = scenarios.params_digest(repo / "params.yaml")
    published = _publish(repo, "default")

    def states() -> dict:
        return {r["scenario"]: (r["state"], r["reasons"]) for r in scenarios.status(repo)}

    assert states() == {"default": ("current", []), "other": ("never published", [])}
    (repo / "README.md").write_text("changed\n")  # not pipeline code
    assert states()["default"] == ("current", [])
    (repo / "stages" / "evaluate.py").write_text("x = 2\n")  # uncommitted counts too
    state, reasons = states()["default"]
    assert state == "stale" and reasons == ["pipeline code changed since: stages/evaluate.py"]
    (repo / "stages" / "evaluate.py").write_text("x = 1\n")
    text = (repo / "params.yaml").read_text().replace("seeds: [0, 1, 2, 3]", "seeds: [0, 1, 2]")
    (repo / "params.yaml").write_text(text)
    assert states()["default"] == ("stale", ["its composed params changed"])
    (repo / "params.yaml").write_text(PARAMS.read_text())
    head = _git(repo, "rev-parse", "HEAD")
    for dirty, expected in (  # a study run beside uncommitted results is still the commit's
            ({"git_dirty_paths": ["docs/results/other/report.md"]}, ("current", [])),
            ({"git_dirty_paths": ["stages/evaluate.py", "README.md"]},
             ("stale", ["run with uncommitted changes to stages/evaluate.py"])),
            ({}, ("stale", ["run from a tree with uncommitted changes (which: not recorded)"]))):
        (published / "provenance.json").write_text(json.dumps(
            {"git_commit": head, "git_dirty": True, "params_sha256": digest, **dirty}))
        assert states()["default"] == expected, dirty
    (published / "provenance.json").write_text(json.dumps(
        {"git_commit": "0" * 40, "git_dirty": False, "params_sha256": digest}))
    with pytest.raises(ParamsError, match="git cannot compare with commit 0000000"):
        scenarios.status(repo)


def test_refresh_reruns_what_is_not_current_quickest_first(tmp_path):
    """``studies --refresh``: the stale and the never-published studies rerun, the quickest
    (by its last run) first; a failure is reported and the rest still run; a tree with
    uncommitted pipeline code is refused, since every study it wrote would be stale."""
    repo = _scratch_repo(tmp_path, "never", "slow", "quick")
    _publish(repo, "default", wall_seconds=10.0)  # current
    _publish(repo, "slow", wall_seconds=600.0, params_sha256="0" * 64)  # stale params
    _publish(repo, "quick", wall_seconds=60.0, params_sha256="0" * 64)
    ran = []

    def run(scenario, root):
        ran.append(scenario.name)
        if scenario.name == "slow":
            raise RuntimeError("dvc repro failed")
        return root / "docs" / "results" / scenario.name

    outcome = scenarios.refresh(repo, run=run)
    assert ran == ["quick", "slow", "never"]
    assert outcome == {"quick": "ok", "slow": "dvc repro failed", "never": "ok"}
    (repo / "README.md").write_text("a docs change does not block a refresh\n")
    (repo / "stages" / "evaluate.py").write_text("x = 3\n")
    with pytest.raises(ParamsError, match="uncommitted changes to stages/evaluate.py"):
        scenarios.refresh(repo, run=run)
    assert ran == ["quick", "slow", "never"]


def test_a_run_in_a_copy_keeps_its_mlflow_artifacts_in_the_project(tmp_path, monkeypatch, caplog):
    """MLflow puts a new experiment's artifacts under the creating process's ./mlruns: created
    by a stage in a study's (or dvc exp run's) temporary copy, they would go where the copy is
    deleted. ensure_experiment creates it first, with its artifacts beside the store (the
    project's mlruns for the default store), and names an existing experiment whose artifact
    folder is gone."""
    import logging

    from mlflow.tracking import MlflowClient

    # the CLI's configure() (run by earlier tests) stops transferlab's records at its handler
    monkeypatch.setattr(logging.getLogger("transferlab"), "propagate", True)
    root, copy = tmp_path / "root", tmp_path / "copy"
    root.mkdir()
    copy.mkdir()
    uri = f"sqlite:///{root / 'mlflow.db'}"
    monkeypatch.chdir(copy)  # where the stages of a run in a copy start
    scenarios.ensure_experiment(PARAMS, uri)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("transferlab")
    assert exp.artifact_location == (root / "mlruns").as_uri()
    run = client.create_run(exp.experiment_id)
    assert run.info.artifact_uri.startswith((root / "mlruns").as_uri())
    with caplog.at_level("WARNING", logger="transferlab.scenarios"):
        scenarios.ensure_experiment(PARAMS, uri)  # there already: left as it is
    assert client.get_experiment_by_name("transferlab").experiment_id == exp.experiment_id
    assert not _warnings(caplog)  # its folder in the project is made with the first artifact

    (tmp_path / "store").mkdir()
    other = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"  # what a stage in a copy did before
    MlflowClient(tracking_uri=other).create_experiment("transferlab")
    shutil.rmtree(copy / "mlruns", ignore_errors=True)
    with caplog.at_level("WARNING", logger="transferlab.scenarios"):
        scenarios.ensure_experiment(PARAMS, other)
    (warning,) = set(_warnings(caplog))  # one warning (a record may reach two capturing handlers)
    assert "which does not exist" in warning and str(copy / "mlruns") in warning
    caplog.clear()
    scenarios.ensure_experiment(PARAMS, "http://127.0.0.1:1")  # a server: not touched
    assert not _warnings(caplog)


def _warnings(caplog) -> list[str]:
    """transferlab.scenarios' own warnings (MLflow logs its database set-up beside them)."""
    return [r.getMessage() for r in caplog.records
            if r.name == "transferlab.scenarios" and r.levelname == "WARNING"]


def test_evaluate_seconds_come_from_the_stage_timing_file(tmp_path: Path) -> None:
    """A study's provenance records where evaluate's time went (its timing file, kept out of
    the DVC outputs), rounded; nothing where the file is absent or unreadable."""
    assert scenarios._evaluate_seconds(tmp_path) == {}
    timing = tmp_path / "timing" / "metrics"
    timing.mkdir(parents=True)
    (timing / "evaluate.json").write_text(json.dumps({
        "scores": [], "seconds": {"runs": {"lm/zero_shot": 12.345}, "transferability": 3.21}}))
    assert scenarios._evaluate_seconds(tmp_path) == {"runs": {"lm/zero_shot": 12.3},
                                                     "transferability": 3.2}
    (timing / "evaluate.json").write_text("{not json")
    assert scenarios._evaluate_seconds(tmp_path) == {}
