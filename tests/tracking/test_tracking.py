"""The MLflow mirror: run tree, tags, batching, no-op when disabled, clear unreachable errors."""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from transferlab.config.params import TrackingParams
from transferlab.core.errors import TrackingError
from transferlab.core.run_context import EXECUTION_ENV, execution_id
from transferlab.models.nets import build_model
from transferlab.tracking.tracker import Tracker, execution_run, flatten, lock_name, tracked


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv(EXECUTION_ENV, "exec-1")
    return uri


def all_runs(uri: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("transferlab")
    return client.search_runs([exp.experiment_id])


def test_flatten() -> None:
    assert flatten({"a": 1, "b": {"c": 2.5, "d": "x", "e": True}}) == {"a": 1.0, "b.c": 2.5}
    # undefined numbers are JSON null in the outputs, so the live mirror leaves them out too
    assert flatten({"ci": {"low": float("nan"), "high": float("inf"), "n": 1},
                    "none": None}) == {"ci.n": 1.0}


def test_stage_run_tree_and_tags(store: str) -> None:
    with tracked(Tracker(TrackingParams(live=True), "transfer", {"transferlab.source": "s"},
                         {"finetune": {"lr": 0.1}})) as tracker:
        child = tracker.child("s/finetune b=1 s=0", {"transferlab.budget": "1"},
                              {"budget": "1"}, {"best_val_accuracy": 0.5, "nested": {"x": 1}})
        tracker.log_history(child, [{"epoch": 1, "val_accuracy": 0.2},
                                    {"epoch": 2, "val_accuracy": 0.4}])
        # the same run in one call: params, metrics and history in one batch
        tracker.child("s/finetune b=1 s=1", {"transferlab.budget": "1"}, {"budget": "1"},
                      {"best_val_accuracy": 0.5, "nested": {"x": 1}},
                      history=[{"epoch": 1, "val_accuracy": 0.2},
                               {"epoch": 2, "val_accuracy": 0.4}])
    with tracked(Tracker(TrackingParams(live=True), "evaluate")):
        pass
    runs = {r.info.run_name: r for r in all_runs(store)}
    pipeline = runs["pipeline exec-1"]  # one parent for the whole execution
    stage, evaluate, leaf = runs["transfer"], runs["evaluate"], runs["s/finetune b=1 s=0"]
    assert stage.data.tags["mlflow.parentRunId"] == pipeline.info.run_id
    assert evaluate.data.tags["mlflow.parentRunId"] == pipeline.info.run_id
    assert leaf.data.tags["mlflow.parentRunId"] == stage.info.run_id
    for run in (stage, leaf):
        assert run.data.tags["transferlab.stage"] == "transfer"
        assert run.data.tags["transferlab.source"] == "s"
    assert "git.commit" in stage.data.tags and "transferlab.params_sha256" in stage.data.tags
    assert stage.data.params["finetune.lr"] == "0.1"
    assert leaf.data.metrics == {"best_val_accuracy": 0.5, "nested.x": 1.0, "val_accuracy": 0.4}
    history = MlflowClient(store).get_metric_history(leaf.info.run_id, "val_accuracy")
    assert [(m.step, m.value) for m in history] == [(1, 0.2), (2, 0.4)]
    batched = runs["s/finetune b=1 s=1"]
    assert batched.data.metrics == leaf.data.metrics and batched.data.params == leaf.data.params
    history = MlflowClient(store).get_metric_history(batched.info.run_id, "val_accuracy")
    assert [(m.step, m.value) for m in history] == [(1, 0.2), (2, 0.4)]
    assert stage.info.status == "FINISHED"


def test_rerun_creates_a_new_run(store: str) -> None:
    for lr in (0.1, 0.2):  # changing a param value must never hit MLflow's immutability error
        with tracked(Tracker(TrackingParams(live=True), "pretrain", {}, {"lr": lr})):
            pass
    assert sum(r.info.run_name == "pretrain" for r in all_runs(store)) == 2


@pytest.mark.parametrize(("error", "status"), [(RuntimeError, "FAILED"),
                                               (KeyboardInterrupt, "KILLED")])
def test_failed_stage_ends_its_run(store: str, error: type, status: str) -> None:
    with pytest.raises(error), tracked(Tracker(TrackingParams(live=True), "pretrain")):
        raise error("boom")
    (run,) = [r for r in all_runs(store) if r.info.run_name == "pretrain"]
    assert run.info.status == status


def test_link_to_source_run(store: str) -> None:
    with tracked(Tracker(TrackingParams(live=True), "pretrain")) as pre:
        pre.set_tags({"transferlab.checkpoint_sha256": "abc"})
    with tracked(Tracker(TrackingParams(live=True), "transfer")) as tr:
        assert tr.link_source_run("abc") == pre.run_id
        tr.child("c", {}, {}, {"m": 1.0})
    runs = {r.info.run_name: r for r in all_runs(store)}
    assert runs["c"].data.tags["transferlab.source_run_id"] == pre.run_id
    assert pre.run_id in runs["transfer"].data.tags["mlflow.note.content"]


def test_log_model_with_signature(store: str, caplog: pytest.LogCaptureFixture) -> None:
    model = build_model("small_cnn", 3, 0.1, 0.3, seed=0, width=4).eval()
    pytorch_log = logging.getLogger("mlflow.pytorch")  # MLflow's loggers do not propagate
    pytorch_log.addHandler(caplog.handler)
    try:
        with tracked(Tracker(TrackingParams(live=True), "pretrain")) as tracker:
            tracker.log_model(tracker.run_id, model, np.zeros((1, 1, 16, 16), np.float32), "m")
    finally:
        pytorch_log.removeHandler(caplog.handler)
    # the pickle notice is dropped (pickle on purpose), for the call only
    assert not [r for r in caplog.records if "Pickle" in r.getMessage()], caplog.text
    assert pytorch_log.filters == []
    import mlflow
    import torch

    mlflow.set_tracking_uri(store)
    (logged,) = mlflow.search_logged_models(experiment_ids=[tracker.experiment_id],
                                            output_format="list")
    uri = f"models:/{logged.model_id}"
    info = mlflow.models.get_model_info(uri)
    assert list(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 1, 16, 16]
    loaded = mlflow.pytorch.load_model(uri)
    x = torch.rand(2, 1, 16, 16)
    assert torch.equal(loaded(x), model(x))
    # the model carries the whole package as its code, so it loads where transferlab is not
    # installed (unpickling needs transferlab.models.nets.TransferNet)
    local = Path(mlflow.artifacts.download_artifacts(f"{logged.artifact_location}/code"))
    assert (local / "transferlab" / "models" / "nets.py").is_file()
    assert (local / "transferlab" / "__init__.py").is_file()


def test_disabled_is_a_noop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with tracked(Tracker(TrackingParams(live=True, enabled=False), "pretrain")) as tracker:
        assert tracker.child("c", {}, {}, {"m": 1.0}) is None
        tracker.log_metrics(None, {"m": 1.0})
    assert not (tmp_path / "mlflow.db").exists()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(TrackingError, match=r"unreachable.*tracking\.on_unreachable: warn"):
        Tracker(TrackingParams(live=True), "pretrain").start()


def test_unreachable_server_can_warn_and_continue(monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_closed_port()}")
    with caplog.at_level(logging.WARNING, logger="transferlab"):
        tracker = Tracker(TrackingParams(live=True, on_unreachable="warn"), "pretrain").start()
    (warned,) = [r for r in caplog.records if r.name == "transferlab.tracking.tracker"]
    assert warned.levelno == logging.WARNING
    assert "continuing with tracking off" in warned.getMessage()
    assert tracker.enabled is False


def test_execution_id_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EXECUTION_ENV, "abc")
    assert execution_id() == "abc"
    monkeypatch.delenv(EXECUTION_ENV)
    assert execution_id() != execution_id()  # no dvc ancestor: one id per stage process


def test_experiment_opens_on_training_runs(store: str) -> None:
    """MLflow 3 lands on the GenAI overview unless the experiment's kind is machine learning."""
    from transferlab.tracking.tracker import EXPERIMENT_KIND_TAG, ui_url

    client = MlflowClient(store)
    assert "experiments" not in ui_url("transferlab")  # no experiment yet: the UI's home
    client.create_experiment("transferlab")  # made by an older version: no kind tag
    with tracked(Tracker(TrackingParams(live=True), "pretrain")):
        pass
    exp = client.get_experiment_by_name("transferlab")
    assert exp.tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    with tracked(Tracker(TrackingParams(live=True, experiment="fresh"), "pretrain")):
        pass
    assert client.get_experiment_by_name("fresh").tags[EXPERIMENT_KIND_TAG] == (
        "custom_model_development")
    assert ui_url("transferlab").endswith(
        f"#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning")


def test_a_new_experiment_keeps_its_artifacts_beside_the_local_store(
        store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stage in another folder (a study's temporary copy) that creates the experiment puts
    its artifact folder beside the sqlite store, not in its own ./mlruns (deleted with the
    copy); a server's store is left to its --default-artifact-root."""
    from transferlab.tracking.tracker import local_artifact_location

    elsewhere = tmp_path / "copy"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with tracked(Tracker(TrackingParams(live=True, experiment="made_in_a_copy"), "pretrain")):
        pass
    exp = MlflowClient(store).get_experiment_by_name("made_in_a_copy")
    assert exp.artifact_location == (tmp_path / "mlruns").as_uri()
    assert local_artifact_location(store) == (tmp_path / "mlruns").as_uri()
    assert local_artifact_location("http://127.0.0.1:5000") is None


def test_stage_runs_record_the_cpu_pins(store: str) -> None:
    with tracked(Tracker(TrackingParams(live=True), "pretrain")):
        pass
    tags = next(r for r in all_runs(store) if r.info.run_name == "pretrain").data.tags
    assert tags["transferlab.cpu.pinning"] == "on"
    assert tags["transferlab.cpu.ATEN_CPU_CAPABILITY"] == "avx2"
    assert tags["transferlab.cpu.MKL_CBWR"] == "COMPATIBLE"


@pytest.mark.parametrize("status", ["FINISHED", "FAILED"])
def test_finish_ends_the_pipeline_run_with_this_machines_summary(
        store: str, tmp_path: Path, status: str) -> None:
    from transferlab.core.runtime import dumps_json
    from transferlab.tracking.mirror import finish_pipeline

    with tracked(Tracker(TrackingParams(live=True), "pretrain")):
        pass
    pipeline = next(r for r in all_runs(store) if r.info.run_name == "pipeline exec-1")
    assert pipeline.info.status == "RUNNING"  # what `dvc repro` alone leaves
    timing = tmp_path / "timing"
    timing.mkdir()
    (timing / "compute.json").write_text(dumps_json(
        {"curves": {"s/finetune": {"seconds_per_run": 2.5}}, "pretrain": {"s": 4.0}}))
    (timing / "provenance.json").write_text(dumps_json(
        {"git": {"commit": "abc", "dirty": False}, "device": "cpu",
         "cpu": {"model": "m", "isa": "avx2 fma", "pinning": "on",
                 "pins": {"ATEN_CPU_CAPABILITY": "avx2"}}}))
    (timing / "summary.md").write_text("# summary\n")
    run_id = finish_pipeline(TrackingParams(live=True), status, timing)
    run = MlflowClient(store).get_run(run_id)
    assert run_id == pipeline.info.run_id and run.info.status == status
    assert run.data.tags["transferlab.cpu.model"] == "m"
    assert run.data.tags["transferlab.cpu.ATEN_CPU_CAPABILITY"] == "avx2"
    assert run.data.metrics["compute.curves.s/finetune.seconds_per_run"] == 2.5
    assert run.data.metrics["compute.pretrain_seconds.s"] == 4.0
    artifacts = {a.path for a in MlflowClient(store).list_artifacts(run_id)}
    assert {"compute.json", "provenance.json", "summary.md"} <= artifacts


def test_importing_the_package_switches_mlflow_telemetry_off() -> None:
    """MLflow's telemetry thread edits os.environ while requests iterate it (KeyError under
    concurrent writers); the package turns it off unless the user chose otherwise."""
    import os
    import subprocess
    import sys

    code = "import transferlab, os; print(os.environ['MLFLOW_DISABLE_TELEMETRY'])"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_DISABLE_TELEMETRY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "true"
    kept = subprocess.run([sys.executable, "-c", code], env=dict(env,
                          MLFLOW_DISABLE_TELEMETRY="false"), capture_output=True, text=True,
                          check=True).stdout.strip()
    assert kept == "false"


class SlowCreate:
    """An MlflowClient whose create_run waits for `go`: a writer that holds the execution's lock
    and has not yet stored the pipeline run."""

    def __init__(self, uri: str, go: threading.Event) -> None:
        self.client, self.go = MlflowClient(uri), go

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def create_run(self, *args: Any, **kwargs: Any) -> Any:
        assert self.go.wait(30)
        return self.client.create_run(*args, **kwargs)


def test_writers_that_start_at_once_share_one_pipeline_run(store: str) -> None:
    # the interleaving that split a run tree on the team server: a second writer finds no run
    # while the first is still storing its own; it must wait for that run, not create another
    exp = MlflowClient(store).create_experiment("transferlab")
    go, got = threading.Event(), {}

    def write(name: str, client: Any) -> None:
        got[name] = execution_run(client, exp, "exec-1", {"git.commit": "c"}, wait_s=30)

    first = threading.Thread(target=write, args=("first", SlowCreate(store, go)))
    first.start()
    lock = lock_name(exp, "exec-1")
    for _ in range(200):
        if MlflowClient(store).get_experiment_by_name(lock) is not None:
            break
        time.sleep(0.05)
    second = threading.Thread(target=write, args=("second", MlflowClient(store)))
    second.start()
    time.sleep(1.0)
    assert "second" not in got, "the second writer went on before the first stored its run"
    go.set()
    first.join(30)
    second.join(30)
    assert got["first"][1] is True and got["second"][1] is False
    assert got["first"][0] == got["second"][0]
    pipelines = [r for r in all_runs(store) if r.data.tags.get("transferlab.kind") == "pipeline"]
    assert [r.info.run_id for r in pipelines] == [got["first"][0]]
    assert pipelines[0].data.tags["git.commit"] == "c"
    # the lock is in MLflow's trash, not among the experiments the UI lists
    assert MlflowClient(store).get_experiment_by_name(lock).lifecycle_stage == "deleted"
    assert execution_run(MlflowClient(store), exp, "exec-1") == (got["first"][0], False)


def test_a_lock_whose_writer_died_is_a_clear_error(store: str) -> None:
    client = MlflowClient(store)
    exp = client.create_experiment("transferlab")
    lock = lock_name(exp, "exec-1")
    lock_id = client.create_experiment(lock)
    with pytest.raises(TrackingError, match=f"'{lock}'.*mlflow gc --experiment-ids {lock_id}"):
        execution_run(client, exp, "exec-1", wait_s=1)


def test_an_execution_whose_parent_was_deleted_gets_it_back(store: str) -> None:
    client = MlflowClient(store)
    exp = client.create_experiment("transferlab")
    parent, created = execution_run(client, exp, "exec-1")
    assert created
    client.delete_run(parent)  # by hand, in the UI; the lock still names it
    assert execution_run(client, exp, "exec-1", wait_s=1) == (parent, False)
    assert client.get_run(parent).info.lifecycle_stage == "active"


# -- deferred mirroring: the stages journal, the `mirror` stage replays -----------------------

def _stage(params: TrackingParams, status_error: type[BaseException] | None = None) -> None:
    """A stage's tracking calls: a child with history, tags, a summary, a registered model."""
    model = build_model("small_cnn", 10, 0.1, 0.3, seed=0, width=4).eval()
    example = np.zeros((1, 1, 16, 16), dtype=np.float32)
    try:
        with tracked(Tracker(params, "evaluate", {"transferlab.device": "cpu"},
                             {"evaluate": {"confidence": 0.95}}, dvc_stage="evaluate")) as t:
            child = t.child("c b=1", {"transferlab.budget": "1"}, {"budget": 1},
                            {"test": {"accuracy": 0.5}})
            t.log_history(child, [{"epoch": 1, "val_loss": 2.0}, {"epoch": 2, "val_loss": 1.5}])
            ids = t.log_summary({"s/finetune": {"1": {"accuracy": {"mean": 0.7}}}})
            t.log_model(ids[("s/finetune", "1")], model, example, "model",
                        registered_name="transferlab-1", alias="champion")
            t.set_tags({"transferlab.outputs_digest": "abc"})
            if status_error is not None:
                raise status_error("boom")
    except (RuntimeError, KeyboardInterrupt):
        pass


def _tree(uri: str) -> list[tuple]:
    """The runs as the UI compares them: name, status, parent's name, params, metric histories
    and tags (ids, clocks and the source-code tags left out)."""
    client = MlflowClient(uri)
    runs = all_runs(uri)
    names = {r.info.run_id: r.info.run_name for r in runs}
    skip = ("mlflow.source", "mlflow.user", "mlflow.parentRunId", "mlflow.log-model.history",
            "mlflow.runName")
    out = []
    for r in runs:
        history = {k: [(m.step, m.value) for m in client.get_metric_history(r.info.run_id, k)]
                   for k in r.data.metrics}
        tags = {k: v for k, v in r.data.tags.items() if not k.startswith(skip)}
        out.append((r.info.run_name, r.info.status,
                    names.get(r.data.tags.get("mlflow.parentRunId")), r.data.params, history,
                    tags))
    return sorted(out, key=repr)


def test_a_deferred_stage_writes_nothing_until_the_replay_and_then_the_live_tree(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transferlab.tracking.tracker import journal_dir, replay_journals

    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.setenv(EXECUTION_ENV, "exec-1")
    live_uri, deferred_uri = (f"sqlite:///{tmp_path / n}" for n in ("live.db", "deferred.db"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", live_uri)
    _stage(TrackingParams(live=True))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", deferred_uri)
    _stage(TrackingParams(live=False))
    assert not (tmp_path / "deferred.db").exists()  # nothing reached MLflow yet
    assert len(list(journal_dir().glob("*.journal"))) == 1
    assert replay_journals(TrackingParams()) == ["evaluate"]
    assert not list(journal_dir().glob("*"))  # replayed once, then gone
    assert replay_journals(TrackingParams()) == []  # a second replay writes nothing again
    assert _tree(deferred_uri) == _tree(live_uri)
    for uri in (live_uri, deferred_uri):  # the champion is registered in both
        version = MlflowClient(uri).get_model_version_by_alias("transferlab-1", "champion")
        assert version.run_id


@pytest.mark.parametrize(("error", "status"), [(RuntimeError, "FAILED"),
                                               (KeyboardInterrupt, "KILLED")])
def test_a_deferred_stage_that_fails_is_replayed_with_its_status(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: type, status: str) -> None:
    from transferlab.tracking.tracker import replay_journals

    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.setenv(EXECUTION_ENV, "exec-1")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    _stage(TrackingParams(live=False, log_models=False), error)
    replay_journals(TrackingParams())
    stage = [r for r in all_runs(uri) if r.info.run_name == "evaluate"]
    assert [r.info.status for r in stage] == [status]
