"""MLflow mirror of the DVC outputs. Tracking never changes what a stage computes or writes.

One pipeline execution (one ``dvc repro``) reads as one tree in the MLflow UI: a parent run per
execution, a child run per stage, and grandchildren per strategy x budget x seed where that helps
comparison. With ``tracking.enabled: false`` every call here is a no-op.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import pickle
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from transferlab.config.params import TrackingParams
from transferlab.core.errors import TrackingError
from transferlab.core.run_context import (
    execution_id,
    init_sqlite_store,
    repo_root,
    run_tags,
    tracking_uri,
)

# MLflow 3 opens an experiment on its GenAI overview unless the experiment's kind says otherwise;
# "custom_model_development" is the UI's "Machine learning" kind (training runs first). MLflow
# 3.17's UI also follows a global GenAI / Machine-learning switch (the `workflowType` query
# parameter, remembered in the browser), so `make ui` prints a link that sets it: ui_url().
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
PIPELINE_STATUSES = ("FINISHED", "FAILED", "KILLED")

log = logging.getLogger(__name__)


def flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """{"test": {"accuracy": 0.9}} -> {"test.accuracy": 0.9}. Non-numbers are dropped, and so
    are undefined numbers (NaN, infinities): the outputs on disk write them as JSON null, so a
    mirror logged live and one rebuilt from the outputs (`sync`) hold the same metrics."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        elif (isinstance(value, (int, float)) and not isinstance(value, bool)
              and math.isfinite(value)):
            out[name] = float(value)
    return out


def _guarded(method: Callable) -> Callable:
    """Tracking must never break a stage: after the first failing call (server gone, store
    locked, ...) tracking switches off for the rest of the stage, the failure is counted, and
    `tracked` reports it with the command that restores the mirror."""

    @functools.wraps(method)
    def wrapper(self: Tracker, *args: Any, **kwargs: Any) -> Any:
        if not self.enabled:
            return None
        try:
            if self.journal is not None and method.__name__ in JOURNALED:
                return self._record(method.__name__, args, kwargs)
            return method(self, *args, **kwargs)
        except Exception as err:  # noqa: BLE001 - counted and reported, never silent
            self.failures += 1
            self.last_error = f"{type(err).__name__}: {err}"[:500]
            self.enabled = False
            return None

    return wrapper


# Deferred mirroring (``tracking.live: false``): these calls are journaled by the stage and
# replayed, in order, by the `mirror` stage (:func:`replay_journals`); the others run as usual
# and reach MLflow only through the journaled ones (``log_summary`` creates children)
JOURNALED = frozenset({"child", "link_source_run", "set_tags", "finish", "log_params",
                       "log_metrics", "log_history", "log_artifact", "log_model"})
JOURNAL_DIR = ".tracking-journal"  # under the project root, beside mlflow.db; git-ignored
PENDING = "pending-run:"  # a journaled run's id until the replay creates it


def journal_dir() -> Path:
    """Where stages leave their journals: the project root's ``.tracking-journal/`` (also
    from ``dvc exp run --temp`` copies, as the sqlite store)."""
    return repo_root() / JOURNAL_DIR


LOCK_TAG = "transferlab.pipeline_run"
LOCK_WAIT_S = 120.0


def _execution_runs(client: Any, experiment_id: str, execution: str) -> list:
    """The execution's pipeline runs, oldest first (ties by run id)."""
    found = client.search_runs(
        [experiment_id], filter_string=f"tags.`transferlab.execution` = '{execution}' "
                                       "and tags.`transferlab.kind` = 'pipeline'",
        max_results=1000)
    return sorted(found, key=lambda r: (r.info.start_time, r.info.run_id))


def lock_name(experiment_id: str, execution: str) -> str:
    """The experiment whose creation elects an execution's pipeline run (:func:`execution_run`)."""
    return f"transferlab lock: experiment {experiment_id}, execution {execution}"


def execution_run(client: Any, experiment_id: str, execution: str,
                  tags: Mapping[str, str] | None = None,
                  wait_s: float = LOCK_WAIT_S) -> tuple[str, bool]:
    """The one ``pipeline`` parent run of an execution, created if none exists yet:
    (run id, whether this call created it).

    Writers that start at once (stages on a shared server, parallel workers under one
    ``$TRANSFERLAB_EXECUTION``) must agree on one run. MLflow cannot create a run under a
    chosen id, and run start times are the clients' clocks, not the order in which the store
    commits runs, so "the oldest run" is no election. An experiment name is unique in every
    MLflow store, even once the experiment is deleted: the one writer whose ``create_experiment``
    of the execution's lock name succeeds creates the run, writes its id as a tag of the lock
    experiment and deletes that experiment (it stays in MLflow's trash until ``mlflow gc``);
    every other writer reads the id from there, waiting at most ``wait_s`` seconds.
    """
    from mlflow.exceptions import MlflowException

    found = _execution_runs(client, experiment_id, execution)
    if found:  # stores written before this lock may hold several: the oldest, as they did
        return found[0].info.run_id, False
    lock = lock_name(experiment_id, execution)
    try:
        lock_id = client.create_experiment(lock, tags={"transferlab.lock": "true"})
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    else:
        run_id = client.create_run(experiment_id, run_name=f"pipeline {execution}", tags={
            "transferlab.kind": "pipeline", "transferlab.execution": execution,
            **(tags or {})}).info.run_id
        client.set_experiment_tag(lock_id, LOCK_TAG, run_id)
        client.delete_experiment(lock_id)
        return run_id, True
    deadline = time.monotonic() + wait_s
    while True:
        held = client.get_experiment_by_name(lock)
        if held is not None and held.tags.get(LOCK_TAG):
            run_id = held.tags[LOCK_TAG]
            if client.get_run(run_id).info.lifecycle_stage == "deleted":
                client.restore_run(run_id)  # deleted by hand, its execution id used again
            return run_id, False
        found = _execution_runs(client, experiment_id, execution)
        if found:  # only the lock's holder creates one: it stopped before writing the tag
            return found[0].info.run_id, False
        if time.monotonic() > deadline:
            raise TrackingError(
                f"the pipeline run of execution {execution} was not written within {wait_s:.0f}"
                f" s: the writer holding MLflow experiment '{lock}' stopped before it wrote "
                f"the run's id; delete that experiment for good (`mlflow gc --experiment-ids "
                f"{held.experiment_id if held else '<id>'}`) and rerun")
        time.sleep(0.5)


def local_artifact_location(uri: str) -> str | None:
    """Where a new experiment of the local store ``uri`` (``sqlite:///<dir>/<file>``) keeps its
    artifacts: ``<dir>/mlruns``, beside the store. MLflow's default is the creating process's
    ``./mlruns``: for a stage in a temporary copy (a study, ``dvc exp run --temp``) a folder
    deleted with the copy, where every later run's artifacts would go too. None for a server
    (its ``--default-artifact-root`` decides)."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlruns").as_uri()


class Tracker:
    """Mirror one stage into MLflow; a no-op when tracking is disabled."""

    def __init__(self, params: TrackingParams, stage: str, tags: Mapping[str, str] | None = None,
                 params_used: Mapping[str, Any] | None = None,
                 dvc_stage: str | None = None) -> None:
        self.enabled = params.enabled
        self.params = params
        self.stage = stage
        self.tags = dict(tags or {})
        if dvc_stage:
            self.tags["dvc.stage"] = dvc_stage
        self.failures = 0
        self.last_error: str | None = None
        self.params_used = params_used or {}
        self.client = None
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        # deferred mode: [(method, args, kwargs)], written at finish, replayed by `mirror`
        self.journal: list[tuple[str, tuple, dict]] | None = None
        self._journal_head: dict[str, Any] = {}

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, where: Mapping[str, str] | None = None,
              execution: str | None = None) -> Tracker:
        """Open this stage's run under its execution's pipeline run. Deferred
        (``tracking.live: false``): nothing reaches MLflow yet; the calls are journaled.
        ``where`` and ``execution`` (the replay's) default to this process's."""
        if not self.enabled:
            return self
        where = dict(where or run_tags())
        execution = execution or execution_id()
        if not self.params.live:
            self.journal = []
            self._journal_head = {"stage": self.stage, "tags": dict(self.tags),
                                  "params_used": self.params_used, "where": where,
                                  "execution": execution}
            self.run_id = f"{PENDING}0"
            return self
        try:
            self._connect()
        except TrackingError as err:
            if self.params.on_unreachable == "error":
                raise
            log.warning("%s; continuing with tracking off", err)
            self.enabled = False
            return self
        base = {"transferlab.stage": self.stage, "transferlab.execution": execution, **where,
                **self.tags}
        parent = execution_run(self.client, self.experiment_id, execution,
                               {"git.commit": where["git.commit"]})[0]
        self.run_id = self._create(f"{self.stage}", base, parent)
        params_json = json.dumps(self.params_used, sort_keys=True, default=str)
        self.client.set_tag(self.run_id, "transferlab.params_sha256",
                            hashlib.sha256(params_json.encode()).hexdigest())
        self.log_params(self.run_id, flatten_params(self.params_used))
        return self

    def _connect(self) -> None:
        from mlflow.tracking import MlflowClient

        uri = tracking_uri()
        if uri.startswith("sqlite:///"):
            init_sqlite_store(Path(uri[len("sqlite:///"):]))
        elif uri.startswith("http"):
            # MLflow's own retries can stall a stage for minutes once the server is gone
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
            import urllib.request

            try:
                urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5).read()
            except OSError as err:
                raise TrackingError(f"MLflow tracking server {uri} is unreachable ({err}); "
                                    "start it, unset MLFLOW_TRACKING_URI, or set "
                                    "tracking.on_unreachable: warn") from None
        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name(self.params.experiment)
        if exp is None:  # several writers may get here at once (a shared server)
            from mlflow.exceptions import MlflowException

            try:
                self.client.create_experiment(self.params.experiment,
                                              artifact_location=local_artifact_location(uri),
                                              tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
            except MlflowException as err:
                if err.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            exp = self.client.get_experiment_by_name(self.params.experiment)
        self.experiment_id = exp.experiment_id
        if exp is not None and exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
            self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG,
                                           EXPERIMENT_KIND)

    def _create(self, name: str, tags: Mapping[str, str], parent: str | None) -> str:
        tags = dict(tags)
        if parent:
            tags["mlflow.parentRunId"] = parent
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        return run.info.run_id

    @_guarded
    def child(self, name: str, tags: Mapping[str, str], params: Mapping[str, Any],
              metrics: Mapping[str, Any], history: list[dict] | None = None) -> str | None:
        """A finished child run of this stage's run, with its params, metrics and per-epoch
        ``history`` (as :meth:`log_history`) in one batch where MLflow's limits allow: the
        mirror's time is mostly one SQLite transaction per call."""
        if not self.enabled:
            return None
        from mlflow.entities import Metric, Param

        run_id = self._create(name, {"transferlab.stage": self.stage, **self.tags, **tags},
                              self.run_id)
        now = int(time.time() * 1000)
        items = [Metric(k, v, now, 0) for k, v in sorted(flatten(metrics).items())]
        items += _history_metrics(history or [], now)
        if len(params) <= 100 and len(params) + len(items) <= 1000:  # MLflow's batch limits
            self.client.log_batch(
                run_id, metrics=items,
                params=[Param(k, str(v)[:6000]) for k, v in sorted(params.items())])
        else:
            self.log_params(run_id, params)
            self.log_metrics(run_id, metrics)
            self.log_history(run_id, history or [])
        self.client.set_terminated(run_id, "FINISHED")
        return run_id

    @_guarded
    def link_source_run(self, checkpoint_sha256: str) -> str | None:
        """Tag this stage (and its children) with the pretrain run that produced the source
        checkpoint, found by the checkpoint's sha256; the run's note links to it in the UI."""
        if not self.enabled:
            return None
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string="tags.`transferlab.stage` = 'pretrain' and "
                          f"tags.`transferlab.checkpoint_sha256` = '{checkpoint_sha256}'",
            order_by=["attributes.start_time DESC"], max_results=1)
        if not found:
            return None
        source_run = found[0].info.run_id
        self.tags["transferlab.source_run_id"] = source_run
        self.set_tags({"transferlab.source_run_id": source_run,
                       "mlflow.note.content": f"Source model: [pretrain run {source_run}]"
                       f"(#/experiments/{self.experiment_id}/runs/{source_run})"})
        return source_run

    @_guarded
    def set_tags(self, tags: Mapping[str, str], run_id: str | None = None) -> None:
        if self.enabled:
            set_tags_batched(self.client, run_id or self.run_id, tags)

    @_guarded
    def log_summary(self, summary: Mapping[str, Mapping[str, Mapping]]
                    ) -> dict[tuple[str, str], str]:
        """One child run per curve x budget, all under identical metric names, so the UI can
        compare strategies side by side. Returns {(curve, budget): run id}."""
        ids = {}
        for curve, by_budget in summary.items():
            source, _, strategy = curve.rpartition("/")
            for budget, entry in by_budget.items():
                tags = {"transferlab.source": source or "none",
                        "transferlab.strategy": strategy, "transferlab.budget": budget}
                ids[curve, budget] = self.child(f"{curve} b={budget}", tags,
                                                {"curve": curve, "budget": budget}, entry)
        return ids

    @_guarded
    def finish(self, status: str = "FINISHED") -> None:
        if self.enabled and self.run_id:
            self.client.set_terminated(self.run_id, status)

    # -- the journal (deferred mirroring) ----------------------------------------------------
    def _record(self, method: str, args: tuple, kwargs: dict) -> Any:
        """Journal one call; return what the stage's code needs back (a pending run id)."""
        if method == "log_model":  # the model as it is now, not as it may be changed later
            kwargs = dict(zip(("run_id", "model", "example", "name", "registered_name",
                               "alias"), args, strict=False)) | kwargs
            kwargs["model"] = pickle.dumps(kwargs["model"])
            args = ()
        if method == "log_artifact":  # the file as it is now
            run_id, path = (*args, *kwargs.values())[:2]
            args, kwargs = (run_id, Path(path).name, Path(path).read_bytes()), {}
            method = "_log_artifact_bytes"
        self.journal.append((method, args, kwargs))
        if method == "child":
            return f"{PENDING}{sum(m == 'child' for m, _, _ in self.journal)}"
        if method == "finish":
            self._write_journal()
        return None

    def _write_journal(self) -> Path:
        folder = journal_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{time.time_ns():020d}-{os.getpid()}.journal"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(pickle.dumps({**self._journal_head, "calls": self.journal}))
        tmp.rename(path)  # whole or absent: a replay never reads a half-written journal
        self.journal = None
        return path

    def _log_artifact_bytes(self, run_id: str | None, name: str, blob: bytes) -> None:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / name).write_bytes(blob)
            self.log_artifact(run_id, Path(tmp) / name)

    def replay(self, calls: list[tuple[str, tuple, dict]], where: Mapping[str, str],
               execution: str) -> None:
        """Make the journaled calls for real, in order, with pending run ids mapped."""
        ids: dict[str, str | None] = {}

        def real(value: Any) -> Any:
            return ids.get(value) if isinstance(value, str) and value.startswith(PENDING) \
                else value

        self.start(where, execution)
        ids[f"{PENDING}0"] = self.run_id
        children = 0
        for method, args, kwargs in calls:
            args = tuple(real(a) for a in args)
            kwargs = {k: real(v) for k, v in kwargs.items()}
            if method == "log_model":
                kwargs["model"] = pickle.loads(kwargs["model"])
            result = getattr(self, method)(*args, **kwargs)
            if method == "child":
                children += 1
                ids[f"{PENDING}{children}"] = result

    # -- logging -----------------------------------------------------------------------------
    @_guarded
    def log_params(self, run_id: str | None, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        if not self.enabled or not params:
            return
        items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        for start in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[start:start + 100])

    @_guarded
    def log_metrics(self, run_id: str | None, metrics: Mapping[str, Any],
                    step: int = 0) -> None:
        """All metrics of one step in batched calls (never one call per metric)."""
        from mlflow.entities import Metric

        if not self.enabled:
            return
        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step) for k, v in sorted(flatten(metrics).items())]
        for start in range(0, len(items), 1000):
            self.client.log_batch(run_id, metrics=items[start:start + 1000])

    @_guarded
    def log_history(self, run_id: str | None, history: list[dict]) -> None:
        """Per-epoch curves, one batch for the whole history."""
        if not self.enabled or not history:
            return
        items = _history_metrics(history, int(time.time() * 1000))
        for start in range(0, len(items), 1000):
            self.client.log_batch(run_id, metrics=items[start:start + 1000])

    @_guarded
    def log_artifact(self, run_id: str | None, path: str | Path) -> None:
        if self.enabled:
            self.client.log_artifact(run_id, str(path))

    @_guarded
    def log_model(self, run_id: str | None, model: Any, example: Any, name: str,
                  registered_name: str | None = None, alias: str | None = None) -> None:
        """``mlflow.pytorch.log_model`` with an input example and inferred signature; optionally
        registered under ``registered_name`` with ``alias`` pointing at the new version."""
        if not (self.enabled and self.params.log_models):
            return
        import mlflow
        import mlflow.pytorch
        import torch
        from mlflow.models import infer_signature

        mlflow.set_tracking_uri(tracking_uri())
        with torch.inference_mode():
            output = model(torch.from_numpy(example)).numpy()
        # MLflow logs a warning for every pickled model (unpickling runs code; it suggests
        # serialization_format="pt2"). Pickle is kept on purpose (below): the models are the
        # pipeline's own, read back from its own store. The notice is a log record of
        # mlflow.pytorch, not warnings.warn, so a logging filter drops it, for this call only.
        with mlflow.start_run(run_id=run_id), _dropping_logs("mlflow.pytorch", _PICKLE_NOTICE):
            # pickle + the library's code: loads anywhere with `mlflow.pytorch.load_model`,
            # without torch.export's tracing cost on every stage
            info = mlflow.pytorch.log_model(
                model, name=name, input_example=example,
                signature=infer_signature(example, output), serialization_format="pickle",
                code_paths=[str(Path(__file__).resolve().parents[1])],  # transferlab/
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
                registered_model_name=registered_name)
        if registered_name and alias:
            self.client.set_registered_model_alias(registered_name, alias,
                                                   info.registered_model_version)


_PICKLE_NOTICE = "Saving pytorch model by Pickle or CloudPickle format"


@contextmanager
def _dropping_logs(logger: str, prefix: str) -> Iterator[None]:
    """Drop ``logger``'s records whose message starts with ``prefix``, inside the block only."""
    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(prefix)

    target = logging.getLogger(logger)
    target.addFilter(keep)
    try:
        yield
    finally:
        target.removeFilter(keep)


def _history_metrics(history: list[dict], now: int) -> list:
    """Per-epoch rows {"epoch", name: value} -> MLflow metrics at step = epoch."""
    from mlflow.entities import Metric

    return [Metric(k, float(v), now, int(row["epoch"])) for row in history
            for k, v in row.items() if k != "epoch"]


def set_tags_batched(client: Any, run_id: str, tags: Mapping[str, Any]) -> None:
    """Set ``tags`` on a run in batches of MLflow's limit (100 per ``log_batch``): one
    transaction per batch, where a ``set_tag`` per key is one each."""
    from mlflow.entities import RunTag

    items = [RunTag(k, str(v)) for k, v in tags.items()]
    for start in range(0, len(items), 100):
        client.log_batch(run_id, tags=items[start:start + 100])


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten_params(value, f"{name}."))
        else:
            out[name] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return out


@contextmanager
def tracked(tracker: Tracker) -> Iterator[Tracker]:
    """Start a tracker; end its run FINISHED, FAILED (exception) or KILLED (signal / Ctrl-C)."""
    tracker.start()
    try:
        yield tracker
    except (KeyboardInterrupt, SystemExit):
        tracker.finish("KILLED")
        raise
    except BaseException:
        tracker.finish("FAILED")
        raise
    finally:
        if tracker.failures:
            log.warning("MLflow tracking failed during stage %r (%s); the DVC outputs are "
                        "complete. Restore the mirror with: python -m transferlab.tracking sync",
                        tracker.stage, tracker.last_error)
    tracker.finish("FINISHED")


def replay_journals(params: TrackingParams) -> list[str]:
    """Write every journal that stages left (``tracking.live: false``) into MLflow, oldest
    first, and delete it. Each journal is claimed by renaming it first, so two replays at once
    (parallel ``dvc exp`` workers) never write one twice. Returns the replayed stages' names.

    Journals are pickles that this project's own stages wrote into the git-ignored
    ``.tracking-journal/`` folder of the project; nothing else should be put there.
    """
    folder = journal_dir()
    done: list[str] = []
    live = dataclasses.replace(params, enabled=True, live=True)
    for path in sorted(folder.glob("*.journal")) if folder.is_dir() else []:
        claimed = path.with_suffix(f".replaying-{os.getpid()}")
        try:
            path.rename(claimed)
        except FileNotFoundError:  # another replay took it
            continue
        entry = pickle.loads(claimed.read_bytes())
        tags = dict(entry["tags"])
        dvc_stage = tags.pop("dvc.stage", None)
        tracker = Tracker(live, entry["stage"], tags, entry["params_used"], dvc_stage=dvc_stage)
        tracker.replay(entry["calls"], entry["where"], entry["execution"])
        if not tracker.enabled and not tracker.failures:  # unreachable, on_unreachable: warn
            claimed.rename(path)
            log.warning("MLflow unreachable: %d stage journals kept; `python -m "
                        "transferlab.tracking replay` writes them later",
                        len(list(folder.glob("*.journal"))))
            break
        if tracker.failures:
            claimed.rename(path)  # kept for the next replay; `sync` restores the rest
            raise TrackingError(f"replaying {path.name} ({dvc_stage or entry['stage']}) "
                                f"failed: {tracker.last_error}")
        claimed.unlink()
        done.append(dvc_stage or entry["stage"])
    return done


def ui_url(experiment: str, base: str = "http://127.0.0.1:5000") -> str:
    """The MLflow UI link that opens ``experiment`` on its training runs (the Machine-learning
    view), or the UI's home where the experiment does not exist yet."""
    from mlflow.tracking import MlflowClient

    uri = tracking_uri()
    store = Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None
    exp = (MlflowClient(tracking_uri=uri).get_experiment_by_name(experiment)
           if store is None or store.is_file() else None)
    if exp is None:
        return f"{base}/#/?workflowType=machine_learning"
    return f"{base}/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning"
