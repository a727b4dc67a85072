"""What each stage mirrors into MLflow, and ``sync``: rebuild the mirror from the DVC outputs.

The stages and ``sync`` call the same ``mirror_*`` functions, so a run re-created from the
outputs on disk carries the same metrics as one logged live. ``sync`` ties every stage's run to
``dvc.lock``: it tags the run with the md5 of each dep and out, logs the prepared data as the
run's dataset input (digest = the DVC hash of ``data/prepared``), re-creates the runs of stages
whose tracking was off or lost, and marks stages that DVC skipped (or restored from its
run-cache) in the current execution, linked to the run that produced their outputs. It is
idempotent: a second ``sync`` changes nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from transferlab.core.run_context import EXECUTION_ENV
from transferlab.core.runtime import sha256_file
from transferlab.tracking.tracker import Tracker, execution_run, set_tags_batched

MATRIX_KINDS = ("transfer",)  # transfer@<source>: a folder of replicates per strategy
OTHER_KINDS = ("prepare", "pretrain", "evaluate", "report", "mirror")
UNTRACKED_KINDS = ("prepare", "report", "mirror")  # mirror: writes MLflow, has no run of its own


def runs_strategy(kind: str) -> bool:
    """Does a stage of this kind run strategies' replicates? The matrix stages do (one folder
    per strategy), and so does a stage named after its strategy (the baseline's)."""
    return kind in MATRIX_KINDS or kind not in OTHER_KINDS


def is_tracked(kind: str) -> bool:
    """Is a stage of this kind mirrored to MLflow?"""
    return kind not in UNTRACKED_KINDS


def stage_kind(dvc_stage: str) -> str:
    """``transfer@printed_digits`` -> ``transfer``."""
    return dvc_stage.split("@", 1)[0]


def outputs_digest(outputs: Mapping[str, str | Path]) -> str:
    """sha256 over every file of a stage's outputs, keyed by final name and relative path.

    Args:
        outputs: final output path (as in dvc.yaml) -> where it is on disk now (the two differ
            while a stage still holds its outputs in staged temporary paths).
    """
    rows = []
    for final, actual in sorted((str(k), Path(v)) for k, v in outputs.items()):
        name = Path(final).name
        files = [actual] if actual.is_file() else sorted(p for p in actual.rglob("*")
                                                          if p.is_file())
        for f in files:
            rel = name if f == actual else f"{name}/{f.relative_to(actual).as_posix()}"
            rows.append([rel, sha256_file(f)])
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


# -- what each stage mirrors ----------------------------------------------------------------

def mirror_pretrain(tracker: Tracker, metrics: dict, history: dict) -> None:
    """The source's metrics and its per-epoch curves (``history.json``: {"history": [...]})."""
    tracker.log_history(tracker.run_id, history.get("history", []))
    tracker.log_metrics(tracker.run_id, metrics)


def mirror_transfer_record(tracker: Tracker, source: str, strategy: str, record: dict,
                           trained_on: str | None = None) -> str | None:
    """One child run per (budget, seed) replicate, with its validation curve; what its
    in-stage search chose is logged as ``search.<key>`` params. ``trained_on``: the device the
    replicate trained on (tag ``transferlab.device``; on a Ray cluster, where its tasks ran)."""
    chosen = (record.get("search") or {}).get("chosen", {})
    device = {"transferlab.device": trained_on} if trained_on else {}
    run_id = tracker.child(f"{source}/{strategy} b={record['budget']} s={record['seed']}",
                           {"transferlab.budget": str(record["budget"]),
                            "transferlab.seed": str(record["seed"]), **device},
                           {"budget": record["budget"], "seed": record["seed"],
                            **{f"search.{k}": v for k, v in chosen.items()}},
                           {k: v for k, v in record.items() if k not in ("history", "search")},
                           history=record.get("history", []))
    return run_id


def mirror_evaluate(tracker: Tracker, report: dict) -> dict[tuple[str, str], str]:
    """Child runs per curve x budget, each with what transferred (per block: mean CKA with the
    source and relative drift over seeds) and the privacy spent (ε, δ), where measured; the
    per-example verdicts of fixed curves on the parent. Returns the children's run ids."""
    ids = tracker.log_summary(report["summary"]) or {}
    tracker.log_metrics(tracker.run_id, {"label_efficiency": report["label_efficiency"],
                                         **_fixed_metrics(report.get("fixed_predictions"))})
    for (curve, budget), run_id in ids.items():
        extra = _curve_extras(report, curve, budget)
        if extra:
            tracker.log_metrics(run_id, extra)
    return ids


def _finite(metrics: dict) -> dict:
    """The finite numbers of a flat mapping (MLflow stores no NaN CKA of a constant block, and
    an ε of ∞ is said by the report, not charted)."""
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and math.isfinite(v)}


def _curve_extras(report: dict, curve: str, budget: str) -> dict:
    blocks = ((report.get("what_transferred") or {}).get("curves", {}).get(curve, {})
              .get(budget, {}))
    out = _finite({f"what_transferred.{block}.{m}": entry[m]["mean"]
                   for block, entry in blocks.items() for m in ("cka", "drift")})
    privacy = (report.get("privacy") or {}).get(curve, {}).get(budget)
    if privacy:
        out.update(_finite({"privacy.epsilon": privacy["epsilon"],
                            "privacy.dp_delta": privacy["dp_delta"],
                            "privacy.noise_multiplier": privacy["noise_multiplier"]}))
    return out


def _fixed_metrics(fixed: dict | None) -> dict:
    """Per fixed curve its accuracy and adjusted p-value against chance; per pair the
    adjusted McNemar p-value (evaluate's ``fixed_predictions``)."""
    if not fixed:
        return {}
    out = {}
    for curve, t in fixed["curves"].items():
        out[f"fixed.{curve}.accuracy"] = t["accuracy"]
        out[f"fixed.{curve}.vs_chance_p_adjusted"] = t["p_adjusted"]
    for t in fixed["pairs"]:
        out[f"fixed.{t['a']}.vs.{t['b']}.p_adjusted"] = t["p_adjusted"]
    return _finite(out)


def register_champions(tracker: Tracker, champions: Mapping[str, tuple[str, Path]],
                       target: Any, child_ids: Mapping[tuple[str, str], str]) -> None:
    """Register each budget's champion model as ``<experiment>-<budget>``, alias ``champion``.

    Args:
        champions: {budget: (curve, checkpoint path)} from
            :func:`transferlab.evaluation.evaluate.champion_checkpoints`.
        target: the prepared target (a ``PreparedDataset``): each model's input example is
            one of its own architecture's encoding (a text source of another tokenizer).
    """
    from transferlab.models.nets import in_target_units, load_checkpoint

    if not (tracker.enabled and tracker.params.log_models):
        return
    for budget, (curve, path) in champions.items():
        model, config = load_checkpoint(path)
        example = target.encoded_for(config["arch"]).example_input()
        model = in_target_units(model, config)  # a regression predicts target units
        tracker.log_model(child_ids.get((curve, budget)), model, example, "model",
                          registered_name=f"{tracker.params.experiment}-{budget}",
                          alias="champion")


def mirror_from_disk(tracker: Tracker, kind: str, outs: list[Path]) -> None:
    """Re-log a finished stage from its outputs on disk (used by ``sync``)."""
    if kind == "pretrain":
        by_name = {p.name: p for p in outs}
        metrics = json.loads(by_name["metrics.json"].read_text())
        history = json.loads(by_name["history.json"].read_text())
        mirror_pretrain(tracker, metrics, history)
    elif runs_strategy(kind):
        info = json.loads((outs[0] / "runs.json").read_text())
        for record in info["runs"]:
            mirror_transfer_record(tracker, info["source"], info["strategy"], record)
    elif kind == "evaluate":
        (metrics,) = [p for p in outs if p.name == "evaluate.json"]
        mirror_evaluate(tracker, json.loads(metrics.read_text()))


# -- sync -----------------------------------------------------------------------------------

def lock_stages(text: str) -> dict[str, dict]:
    """The ``stages`` of a ``dvc.lock``'s text, parsed by libyaml where PyYAML has it (the
    default's lock is about 150 KB: 1.3 s in the pure-Python loader, a tenth of that in C)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return (yaml.load(text, Loader=loader) or {}).get("stages", {})


def _lock_tags(entry: dict) -> dict[str, str]:
    tags = {}
    for kind in ("deps", "outs"):
        for item in entry.get(kind, []):
            digest = item.get("md5") or item.get("hash") or ""
            tags[f"dvc.{kind[:-1]}.{item['path']}"] = str(digest)
    return tags


def _tags_for(dvc_stage: str) -> dict[str, str]:
    kind = stage_kind(dvc_stage)
    if kind == "pretrain" or kind in MATRIX_KINDS:
        return {"transferlab.source": dvc_stage.split("@", 1)[1]}
    if runs_strategy(kind):  # named after its strategy, which uses no source
        return {"transferlab.source": "none", "transferlab.strategy": dvc_stage}
    return {}


def stage_units(name: str, outs: list[Path]) -> list[tuple[str, dict[str, str], list[Path]]]:
    """The MLflow runs one ``dvc.lock`` stage stands for, as (label, tags, outputs): one per
    strategy folder of a ``transfer@<source>`` stage, else the stage itself."""
    if stage_kind(name) not in MATRIX_KINDS:
        return [(name, _tags_for(name), outs)]
    return [(f"{name}/{folder.name}", {**_tags_for(name), "transferlab.strategy": folder.name},
             [folder])
            for out in outs for folder in sorted(p for p in out.iterdir() if p.is_dir())]


def sync(root: Path, tracker_params: Any) -> dict[str, list[str]]:
    """Bring MLflow in line with ``dvc.lock`` and the outputs on disk. Idempotent.

    Args:
        root: the project root (holds dvc.lock).
        tracker_params: the ``tracking`` params block (store, experiment).
    Returns:
        {"tagged": [...], "recreated": [...], "skipped_marked": [...], "ok": [...]} stage names.
    """
    from mlflow.entities import Dataset

    lock_path = root / "dvc.lock"
    if not lock_path.is_file():
        raise FileNotFoundError(f"{lock_path}: no lock file; run `dvc repro` first")
    lock = lock_stages(lock_path.read_text())
    tracker_params = dataclasses.replace(tracker_params, live=True)  # sync writes, never journals
    probe = Tracker(tracker_params, "sync")
    probe._connect()
    client, exp = probe.client, probe.experiment_id
    data = next((o for o in lock.get("prepare", {}).get("outs", [])
                 if o["path"] == "data/prepared"), None)
    dataset = Dataset(name="data/prepared", digest=str(data["md5"])[:36], source_type="dvc",
                      source=str(root / "data" / "prepared")) if data else None
    current = _current_execution(client, exp) or f"sync-{sha256_file(lock_path)[:12]}"
    previous = os.environ.get(EXECUTION_ENV)
    os.environ[EXECUTION_ENV] = current  # runs re-created below join the current execution
    try:
        return _sync_stages(root, tracker_params, lock, client, exp, dataset, current)
    finally:
        if previous is None:
            os.environ.pop(EXECUTION_ENV, None)
        else:
            os.environ[EXECUTION_ENV] = previous


def _sync_stages(root: Path, tracker_params: Any, lock: dict, client: Any, exp: str,
                 dataset: Any, current: str) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {"tagged": [], "recreated": [], "skipped_marked": [],
                                    "ok": []}
    for name, entry in sorted(lock.items()):
        kind = stage_kind(name)
        if not is_tracked(kind):
            continue
        outs = [root / o["path"] for o in entry.get("outs", [])]
        if not all(p.exists() for p in outs):
            continue  # outputs not checked out here: nothing to mirror from
        for unit in stage_units(name, outs):
            _sync_unit(name, entry, unit, tracker_params, client, exp, dataset, current, result)
    return result


def _sync_unit(name: str, entry: dict, unit: tuple[str, dict[str, str], list[Path]],
               tracker_params: Any, client: Any, exp: str, dataset: Any, current: str,
               result: dict[str, list[str]]) -> None:
    """Find, or re-create, the run that made one unit's outputs; tie it to its lock entry; and
    mark it skipped in the current execution if DVC did not rerun it."""
    from mlflow.entities import DatasetInput

    label, unit_tags, outs = unit
    digest = outputs_digest({str(p): p for p in outs})
    runs = client.search_runs([exp], filter_string=f"tags.`dvc.stage` = '{name}' and "
                              f"tags.`transferlab.outputs_digest` = '{digest}' and "
                              "attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time ASC"])
    made = [r for r in runs if r.data.tags.get("transferlab.status") != "skipped"]
    # the run of the current execution if the stage ran in it, else the first that made them
    producer = next((r for r in made if r.data.tags.get("transferlab.execution") == current),
                    made[0] if made else None)
    if producer is None:
        producer_id = _recreate(tracker_params, name, unit_tags, outs, digest, entry)
        result["recreated"].append(label)
    else:
        producer_id = producer.info.run_id
    tags = {**_lock_tags(entry), "dvc.lock.synced": "true"}
    producer_run = client.get_run(producer_id)
    if any(producer_run.data.tags.get(k) != v for k, v in tags.items()):
        set_tags_batched(client, producer_id, tags)
        if dataset is not None:
            client.log_inputs(producer_id, [DatasetInput(dataset)])
        if label not in result["recreated"]:
            result["tagged"].append(label)
    execution = producer_run.data.tags.get("transferlab.execution")
    if execution != current and not any(
            r.data.tags.get("transferlab.status") == "skipped"
            and r.data.tags.get("transferlab.execution") == current for r in runs):
        _mark_skipped(client, exp, name, label, current, producer_id, digest)
        result["skipped_marked"].append(label)
    elif producer is not None and label not in result["tagged"]:
        result["ok"].append(label)


def _current_execution(client: Any, exp: str) -> str | None:
    if os.environ.get(EXECUTION_ENV):
        return os.environ[EXECUTION_ENV]
    latest = client.search_runs([exp], filter_string="tags.`transferlab.kind` = 'pipeline'",
                                order_by=["attributes.start_time DESC"], max_results=1)
    return latest[0].data.tags["transferlab.execution"] if latest else None


def _ran_on(entry: dict) -> dict[str, str]:
    """The tags a live stage run has for how it ran, from its lock entry's params: a pretrain
    on several DDP ranks (``execution.ddp_procs``, a parameter of the pretrain stages)."""
    procs = entry.get("params", {}).get("params.yaml", {}).get("execution.ddp_procs", 1)
    return {"transferlab.ddp_procs": str(procs)} if procs > 1 else {}


def _recreate(tracker_params: Any, name: str, unit_tags: dict[str, str], outs: list[Path],
              digest: str, entry: dict) -> str:
    kind = stage_kind(name)
    tags = {**unit_tags, **_ran_on(entry), "transferlab.synced": "true",
            "transferlab.outputs_digest": digest}
    tracker = Tracker(tracker_params, "transfer" if runs_strategy(kind) else kind, tags,
                      dvc_stage=name)
    tracker.start()
    mirror_from_disk(tracker, kind, outs)
    tracker.finish("FINISHED")
    return tracker.run_id


def _mark_skipped(client: Any, exp: str, name: str, label: str, execution: str,
                  producer: str, digest: str) -> None:
    parent, created = execution_run(client, exp, execution)
    if created:  # DVC skipped every stage of this execution: nothing had created its parent
        client.set_terminated(parent, "FINISHED")
    tags = {"dvc.stage": name, "transferlab.status": "skipped",
            "transferlab.execution": execution, "transferlab.produced_by": producer,
            "transferlab.outputs_digest": digest,
            "mlflow.note.content": f"DVC did not rerun `{name}` (unchanged or restored from "
                                   f"its run-cache); the outputs of `{label}` come from run "
                                   f"{producer}.",
            "mlflow.parentRunId": parent}
    run = client.create_run(exp, run_name=f"{label} (skipped by DVC)", tags=tags)
    client.set_terminated(run.info.run_id, "FINISHED")


# -- the pipeline run ------------------------------------------------------------------------

def finish_pipeline(tracker_params: Any, status: str, timing_dir: Path) -> str | None:
    """End the current execution's ``pipeline`` run with ``status`` (FINISHED, or FAILED when a
    stage failed), after mirroring this machine's summary onto it: the provenance as tags
    (commit, device, CPU, pins), wall time and memory as metrics, and the summary files as
    artifacts (``timing/``: :mod:`transferlab.reporting.costs`). Returns the run id (None: no run).
    """
    probe = Tracker(dataclasses.replace(tracker_params, live=True), "pipeline")
    probe._connect()
    client, exp = probe.client, probe.experiment_id
    execution = _current_execution(client, exp)
    if execution is None:
        return None
    run_id = execution_run(client, exp, execution)[0]
    probe.run_id = run_id
    provenance = timing_dir / "provenance.json"
    if provenance.is_file():
        prov = json.loads(provenance.read_text())
        cpu = prov.get("cpu", {})
        probe.set_tags({"git.commit": prov["git"].get("commit") or "unknown",
                        "git.dirty": str(bool(prov["git"].get("dirty"))).lower(),
                        "transferlab.device": prov.get("device"),
                        "transferlab.cpu.model": cpu.get("model"),
                        "transferlab.cpu.isa": cpu.get("isa"),
                        "transferlab.cpu.pinning": cpu.get("pinning"),
                        **{f"transferlab.cpu.{k}": v for k, v in cpu.get("pins", {}).items()}})
    summary = timing_dir / "compute.json"
    if summary.is_file():
        compute = json.loads(summary.read_text())
        probe.log_metrics(run_id, {"compute": {"curves": compute.get("curves", {}),
                                               "pretrain_seconds": compute.get("pretrain", {})}})
    for path in (summary, provenance, timing_dir / "summary.md"):
        if path.is_file():
            probe.log_artifact(run_id, path)
    client.set_terminated(run_id, status)
    return run_id
