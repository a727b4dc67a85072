"""The shared adaptation loop: how a source model becomes a target model at one label budget
and seed, for any registered strategy (:mod:`transferlab.adapt.strategies`).

It knows no strategy by name. For each replicate it plans the selection
(:mod:`transferlab.adapt.selection`), trains every candidate of the strategy's search space on the
budget's training part, chooses on the held-out labels, and refits the choice on the whole
budget; the strategy's hooks decide what trains and how.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from transferlab.adapt.execution import Executor
from transferlab.adapt.selection import (
    EXTERNAL,
    FIXED,
    HOLDOUT,
    KFOLD,
    SelectionPlan,
    plan_selection,
)
from transferlab.adapt.strategies import Context, Strategy, get
from transferlab.adapt.strategies.registry import variant
from transferlab.adapt.target import TargetData
from transferlab.config.params import ExecutionParams, SelectionParams
from transferlab.core import tasks
from transferlab.core.errors import ParamsError
from transferlab.core.runtime import device_description, resolve_device
from transferlab.data.store import PreparedDataset
from transferlab.models.nets import TransferNet, load_checkpoint, save_checkpoint
from transferlab.training.loop import (
    Stopwatch,
    counted_flops,
    predict_logits,
)


def replicate_seed(seed: str, budget: str) -> int:
    """One integer seed per (seed, budget) replicate, stable across runs and machines."""
    digest = hashlib.sha256(f"{int(seed)}:{budget}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1  # 31 bits


def skip_reason(strategy: str, source_config: dict | None, mapping: dict | None) -> str | None:
    """Why a strategy cannot run for this source, or None if it can."""
    return get(strategy).skip_reason(source_config, mapping)


def adapt(strategy: Strategy, target: TargetData, cfg: Any, seed: str, budget: str,
          selection: SelectionParams, desc: str = "") -> tuple[TransferNet, dict]:
    """Train one target model for a (strategy, budget, seed) replicate under the selection
    protocol (:mod:`transferlab.adapt.selection`): train each candidate of the strategy's search
    space on the budget's training part, choose the candidate and its epoch on the labels held
    out of the budget (or the external validation set, or a fixed schedule), then refit the
    choice on the whole budget.

    Args:
        strategy: the strategy, built on this replicate's :class:`Context` (``ctx.seed`` is
            :func:`replicate_seed` of ``seed`` and ``budget``).
        target: pool, validation set and class count.
        cfg: the strategy's params block.
        seed: the replicate seed (as a string, as in budgets.json).
        budget: labels per class (as in budgets.json, e.g. "10" or "all").
        selection: the ``selection`` params block.
        desc: progress-bar label.
    Returns:
        (trained model on CPU, record: selection method and score, best epoch, steps, trainable
        params, FLOPs, validation history of the choosing run, and the search where there was
        one).
    """
    rep = prepare_replicate(strategy, target, cfg, seed, budget, selection, desc)
    candidates = [train_candidate(rep, i) for i in range(len(rep.frame.grid))]
    best = best_candidate(rep.frame, candidates)
    refit = refit_choice(rep, candidates[best]) if rep.frame.plan.refit_idx is not None else None
    return assemble(rep.frame, candidates, best, refit)


@dataclass
class SelectionFrame:
    """What a replicate's choice is made within: cheap to build, the same everywhere."""

    plan: Any  # transferlab.adapt.selection.SelectionPlan
    task: Any  # transferlab.core.tasks.Task
    grid: list  # [(override, run_cfg)]: the search points (one: the block as written)
    scale: dict | None  # a regression's target scale (the head learns z-scores)
    refit_loss_ratio: float = 1.5  # selection.refit_loss_ratio: a refit above it is unstable


def selection_frame(target: TargetData, cfg: Any, seed: str, budget: str,
                    selection: SelectionParams, gen_seed: int) -> SelectionFrame:
    """The plan, task, search points and target scale of one (seed, budget) replicate whose
    generators start from ``gen_seed`` (in a stage: :func:`replicate_seed`)."""
    budget_idx = np.asarray(target.budgets[seed][budget], dtype=np.int64)
    plan = plan_selection(budget_idx, target.strata.numpy(), selection, gen_seed)
    if not getattr(cfg, "chooses_on_labels", True) and plan.method in (HOLDOUT, KFOLD):
        # a strategy whose labels are private chooses nothing on them (a fixed schedule); a
        # fixed validation set (selection.protocol external_val) stays usable
        plan = SelectionPlan(FIXED, budget_idx, None, None)
    task = tasks.get(target.task)
    scale = None
    if task.name == "regression":
        scale = target_scale(target.pool_y[torch.from_numpy(budget_idx)])
    # nothing held out to choose with: the block's own values, as written
    grid = [({}, cfg)] if plan.method == FIXED else cfg.search_grid()
    return SelectionFrame(plan, task, grid, scale, selection.refit_loss_ratio)


@dataclass
class Replicate:
    """One replicate ready to train: its frame, the strategy's start model and inputs."""

    strategy: Strategy
    cfg: Any
    frame: SelectionFrame
    init: TransferNet
    inputs: torch.Tensor
    val_inputs: torch.Tensor
    pool_y: torch.Tensor
    val: tuple | None
    desc: str


def prepare_replicate(strategy: Strategy, target: TargetData, cfg: Any, seed: str,
                      budget: str, selection: SelectionParams, desc: str = "") -> Replicate:
    """Everything a replicate's candidates and refit train from (``strategy.ctx.seed`` is
    :func:`replicate_seed` of ``seed`` and ``budget``); rebuilt alike in any process."""
    frame = selection_frame(target, cfg, seed, budget, selection, strategy.ctx.seed)
    frame.grid = usable_candidates(strategy, frame.grid)
    plan, scale = frame.plan, frame.scale
    init = strategy.initial_model()
    inputs, val_inputs = strategy.inputs()
    pool_y, val_y = target.pool_y, target.val_y
    if scale is not None:  # the head learns z-scores of the budget's targets
        pool_y = ((pool_y - scale["target_mean"]) / scale["target_std"]).float()
        val_y = ((val_y - scale["target_mean"]) / scale["target_std"]).float()
    val = None
    if plan.method == HOLDOUT:
        held = torch.from_numpy(plan.choose_on)
        val = (inputs[held], pool_y[held])
    elif plan.method == EXTERNAL:
        val = (val_inputs, val_y)
    return Replicate(strategy, cfg, frame, init, inputs, val_inputs, pool_y, val, desc)


def usable_candidates(strategy: Strategy, grid: list) -> list:
    """The search points this replicate's source allows: ``head_init: source`` needs source
    classes that map onto the target's, so a search over [source, fresh] keeps only its fresh
    points for an unrelated or null source. Where no point is left, the first one's error (it
    names the key and why) is raised."""
    usable = []
    for override, run_cfg in grid:
        if getattr(run_cfg, "head_init", "fresh") == "source":
            try:
                strategy.source_head_rows()
            except ParamsError:
                continue
        usable.append((override, run_cfg))
    if not usable:
        strategy.source_head_rows()  # raises: why head_init: source cannot be honoured
    return usable


def trained_parameters(groups: list[dict]) -> int:
    """Elements of the distinct tensors in the optimizer's groups that train (require a
    gradient): what a run trains, a discriminator or adapters discarded afterwards included."""
    params = {id(p): p for group in groups for p in group["params"]}
    return sum(p.numel() for p in params.values() if p.requires_grad)


def _train(rep: Replicate, run_cfg: Any, idx: np.ndarray, val: tuple | None, epochs: int,
           label: str, chosen: dict | None = None) -> tuple:
    """One fit of the replicate: (model, summary, choices, trainable params, FLOPs).

    The FLOPs are everything the run computes: the phases before and after the main fit (a
    probe, statistics, scoring interpolations on the held-out labels), counted exactly, and
    the fit's steps (extra loss terms, a teacher's or a discriminator's passes included) and
    validation passes, as :func:`~transferlab.training.loop.fit` counts them. Work a stage shares
    between its runs (``Strategy.setup``) is the stage's ``setup_flops``."""
    strategy = rep.strategy
    model = strategy.start_head(copy.deepcopy(rep.init), run_cfg)
    ix = torch.from_numpy(idx)
    data = (rep.inputs[ix], rep.pool_y[ix])
    generator = torch.Generator().manual_seed(strategy.ctx.seed)
    with counted_flops() as before:
        model = strategy.before_fit(model, data, run_cfg, generator)
        net, groups = strategy.trainable(model, run_cfg)
        loss_term = strategy.loss_term(model, run_cfg)
    summary = strategy.fit(net, data, val, replace(run_cfg, epochs=epochs), groups, generator,
                           label, loss_term=loss_term,
                           on_epoch=lambda epoch: strategy.on_epoch(model, epoch, run_cfg),
                           task=rep.frame.task)
    trainable = trained_parameters(groups)
    with counted_flops() as after:
        model, choices = strategy.after_fit(model, net, val, run_cfg, chosen)
    flops = before.total + summary.pop("flops") + after.total
    selection = choices.pop("selection", None)
    if selection:  # the model after the fit scored otherwise than its best epoch
        summary = {**summary, **selection, "after_fit_selection": True}
    return model, summary, choices, trainable, flops


def train_candidate(rep: Replicate, i: int) -> tuple:
    """Train search point ``i`` on the budget's training part, validated on the held-out
    labels: (override, run_cfg, model, summary, choices, trainable, FLOPs)."""
    override, run_cfg = rep.frame.grid[i]
    n = len(rep.frame.grid)
    label = rep.desc if n == 1 else f"{rep.desc} cand {i + 1}/{n}"
    plan = rep.frame.plan
    if plan.method != KFOLD:
        return (override, run_cfg, *_train(rep, run_cfg, plan.train_idx, rep.val,
                                           rep.cfg.epochs, label))
    fits = []
    for k, (train_idx, held_idx) in enumerate(plan.folds):
        held = torch.from_numpy(held_idx)
        fits.append((len(held_idx), _train(
            rep, run_cfg, train_idx, (rep.inputs[held], rep.pool_y[held]), rep.cfg.epochs,
            f"{label} fold {k + 1}/{len(plan.folds)}")))
    return (override, run_cfg, *pool_folds(fits, rep.frame.task.val_key))


def pool_folds(fits: list[tuple[int, tuple]], val_key: str = "best_val_accuracy") -> tuple:
    """One candidate's K fold fits as one choosing run (see :mod:`transferlab.adapt.selection`).

    Args:
        fits: (held-out examples, :func:`_train`'s result) per fold.
        val_key: the task's score key (``best_val_accuracy``; a regression's ``best_val_r2``).
    Returns:
        :func:`_train`'s tuple for the candidate: the first fold's model (the refit replaces
        it), the pooled summary (best epoch and score of the size-weighted per-epoch curve over
        the epochs every fold ran; a score a strategy gave after its fit, pooled the same way),
        the choice most folds made, the trainable parameters, and every fold's FLOPs.
    """
    score_key = val_key.removeprefix("best_")
    weights = np.array([n for n, _ in fits], dtype=np.float64)
    weights /= weights.sum()
    summaries = [fit_[1] for _, fit_ in fits]
    epochs = min(len(s["history"]) for s in summaries)
    history = []
    for e in range(epochs):
        rows = [s["history"][e] for s in summaries]
        history.append({"epoch": e + 1,
                        "train_loss": float(np.mean([r["train_loss"] for r in rows])),
                        "val_loss": float(weights @ [r["val_loss"] for r in rows]),
                        score_key: float(weights @ [r[score_key] for r in rows])})
    best = max(range(epochs), key=lambda e: (history[e][score_key], -history[e]["val_loss"],
                                             -e))
    score, loss = history[best][score_key], history[best]["val_loss"]
    if any(s.get("after_fit_selection") for s in summaries):  # e.g. wise_ft's mixed model
        score = float(weights @ [s[val_key] for s in summaries])
        loss = float(weights @ [s["best_val_loss"] for s in summaries])
    chosen = [{k: v for k, v in fit_[2].items() if k != "diagnostics"} for _, fit_ in fits]
    labels = [json.dumps(c, sort_keys=True) for c in chosen]
    choice = chosen[max(range(len(labels)), key=lambda i: (labels.count(labels[i]), -i))]
    diagnostics = [fit_[2]["diagnostics"] for _, fit_ in fits if "diagnostics" in fit_[2]]
    if diagnostics:
        choice = {**choice, "diagnostics": {"folds": diagnostics}}
    summary = {"best_epoch": best + 1, "epochs_run": sum(s["epochs_run"] for s in summaries),
               "steps": sum(s["steps"] for s in summaries), val_key: score,
               "best_val_loss": loss, "history": history,
               "folds": [{k: s[k] for k in ("best_epoch", "epochs_run", val_key,
                                            "best_val_loss")} for s in summaries]}
    model, _, _, trainable, _ = fits[0][1]
    return model, summary, choice, trainable, sum(fit_[4] for _, fit_ in fits)


def best_candidate(frame: SelectionFrame, candidates: list[tuple]) -> int:
    """The chosen search point: the best validation score, then the lower validation loss,
    then the first."""
    return max(range(len(candidates)),
               key=lambda i: _candidate_key(candidates[i][3], frame.task.val_key))


def refit_choice(rep: Replicate, candidate: tuple) -> tuple:
    """Refit the chosen search point on the whole budget for its chosen number of epochs."""
    _, run_cfg, _, chosen, choices, _, _ = candidate
    return _train(rep, run_cfg, rep.frame.plan.refit_idx, None, chosen["best_epoch"],
                  f"{rep.desc} refit", choices)


def assemble(frame: SelectionFrame, candidates: list[tuple], best: int,
             refit: tuple | None) -> tuple[TransferNet, dict]:
    """The replicate's model (the refit, else the chosen candidate's) and its record."""
    plan, task = frame.plan, frame.task
    override, run_cfg, model, chosen, choices, trainable, _ = candidates[best]
    flops = sum(c[6] for c in candidates)  # every candidate's run, then the refit
    steps = sum(c[3]["steps"] for c in candidates)
    if refit is not None:
        model, refit_summary, _, trainable, refit_flops = refit
        flops += refit_flops
        steps += refit_summary["steps"]
    # (linear_probe: the backbone pass over the pool is the stage's shared setup_flops)
    record = {k: chosen[k] for k in ("best_epoch", "epochs_run", task.val_key, "best_val_loss")}
    record.update(plan.record(), selection_score=chosen[task.val_key], steps=steps,
                  trainable_params=trainable, train_flops=int(flops),
                  history=chosen["history"])
    if len(frame.grid) > 1 or choices:
        record["search"] = {
            "chosen": {**override, **{k: v for k, v in choices.items() if k != "diagnostics"}},
            "candidates": [{"config": c[0], task.val_key: c[3][task.val_key],
                            "best_val_loss": c[3]["best_val_loss"],
                            "best_epoch": c[3]["best_epoch"], **c[4]} for c in candidates]}
    if "folds" in chosen:
        record["folds"] = chosen["folds"]
    if "privacy" in (refit[1] if refit is not None else chosen):  # the model kept: its ε
        record["privacy"] = (refit[1] if refit is not None else chosen)["privacy"]
    if refit is not None:
        record["refit_check"] = refit_check(chosen, refit[1], frame.refit_loss_ratio)
    if frame.scale is not None:
        record["target_scale"] = frame.scale
    return model.cpu().eval(), record


LOSS_NOISE = 0.1  # training loss (nats; a regression's z-score MSE) below which no spike counts


def refit_check(chosen: dict, refit: dict, ratio: float) -> dict:
    """Whether a refit ended where its choice said it would: its last epoch's training loss
    against the choosing run's at the chosen epoch (pooled over folds under kfold). A refit
    whose last loss is above ``ratio`` times that ended on a spike (an adversarial term, a
    high-rank adapter): ``unstable``, reported with the curve's seed spread. Losses that
    differ by at most :data:`LOSS_NOISE` are never a spike (near 0 a ratio means nothing).
    A choice that trained no epoch (``in_context``: epochs 0) has no loss to compare: None."""
    if not chosen["history"]:
        return {"chosen_train_loss": None, "final_train_loss": None, "unstable": False}
    at_choice = chosen["history"][chosen["best_epoch"] - 1]["train_loss"]
    final = refit["history"][-1]["train_loss"] if refit["history"] else at_choice
    return {"chosen_train_loss": at_choice, "final_train_loss": final,
            "unstable": bool(final > ratio * at_choice and final - at_choice > LOSS_NOISE)}


def target_scale(budget_targets: torch.Tensor) -> dict[str, float]:
    """Mean and standard deviation (population; 1 where the targets are all equal) of a
    budget's regression targets: the head predicts their z-scores."""
    values = budget_targets.double()
    std = float(values.std(correction=0)) if len(values) > 1 else 0.0
    return {"target_mean": float(values.mean()), "target_std": std if std > 0 else 1.0}


def _candidate_key(summary: dict, val_key: str = "best_val_accuracy") -> tuple:
    """Higher is better: the validation score (accuracy; a regression's R²), then lower
    validation loss (the first candidate wins a full tie, as ``max`` keeps the first maximum).
    Under a fixed schedule there is one."""
    acc, loss = summary[val_key], summary["best_val_loss"]
    return (-math.inf if acc is None else acc, -(loss if loss is not None else 0.0))


def source_only_selection(model: TransferNet, target: TargetData, seed: str, budget: str,
                          selection: SelectionParams, device: torch.device) -> dict:
    """The selection fields of a replicate of a strategy that reads no target label
    (``source_only``, ``adabn`` with ``then: none``): its accuracy on every label of the budget,
    at every budget (one label per class too), since none of them trained it; under
    ``external_val``, on the validation set, as every other strategy."""
    if selection.protocol == "external_val":
        x, y = target.val_x, target.val_y
    else:
        idx = torch.from_numpy(np.asarray(target.budgets[seed][budget], dtype=np.int64))
        x, y = target.pool_x[idx], target.pool_y[idx]
    score = float((predict_logits(model, x, device).argmax(1) == y).double().mean())
    return {"selection_method": EXTERNAL if selection.protocol == "external_val"
            else "all_budget_labels", "fit_examples": 0, "holdout_examples": int(len(y)),
            "refit": False, "selection_score": score}


def replicate_line(source: str, strategy: str, record: dict, done: int, total: int) -> str:
    """One progress line per finished replicate, the same in a terminal and in a log file:
    ``transfer printed_digits/finetune b=10 seed 3 (12/15) selection 0.950``."""
    curve = f"{source}/{strategy}" if source != "none" else strategy
    score = record.get("selection_score")
    chose = "selection n/a" if score is None else f"selection {score:.3f}"
    return (f"transfer {curve} b={record['budget']} seed {record['seed']} ({done}/{total}) "
            f"{chose}")


def result_line(source: str, strategy: str, result: dict) -> str:
    """The transfer stage's line of results: ``transfer printed_digits/finetune: 15 runs`` (or
    why the strategy was skipped)."""
    status = f"skipped: {result['skipped']}" if result["skipped"] else f"{len(result['runs'])} runs"
    return f"transfer {source}/{strategy}: {status}"


def devices_used(timing: dict) -> list[str]:
    """The devices that the replicates of a :func:`run_replicates` timing ran on, sorted."""
    return sorted({t["device"] for t in timing.values() if isinstance(t, dict)})


def load_mapping(source_data: Path | None) -> dict | None:
    """The source -> target label mapping of a prepared source folder (its manifest), or None
    without one."""
    if source_data is None:
        return None
    return json.loads((Path(source_data) / "manifest.json").read_text())


def run_replicates(strategy: str, cfg: Any, source_path: Path | None, target: TargetData,
                   device: torch.device, out_dir: Path, arch: dict,
                   selection: SelectionParams,
                   on_result: Callable[[dict, TransferNet, str], None] | None = None,
                   mapping: dict | None = None, source_data: Path | None = None,
                   executor: Executor | None = None) -> dict:
    """Run one strategy for every (seed, budget) replicate; write checkpoints into ``out_dir``.

    Args:
        strategy: the strategy name (see :func:`transferlab.adapt.strategies.names`).
        cfg: its params block.
        source_path: the source checkpoint (None for a strategy that does not use a source).
        target: the prepared target.
        device: where to train.
        out_dir: receives ``<seed>_<budget>.pt`` checkpoints (``model.pt`` for a strategy that
            does not train).
        arch: {"arch", "width"} of ``pretrain.arch``, and "pooling" (pretrain.pooling,
            scratch builds with it; absent: the backbone's default); with a source, "arch" is
            the source's own (a text source may be another model than pretrain.arch).
        selection: the ``selection`` params block (how each replicate chooses).
        on_result: called with (record, model, the device it trained on) after each
            replicate (e.g. tracking; on a cluster, each task's device is where it ran).
        mapping: the source->target label mapping from the source manifest.
        source_data: the prepared source folder; its training split is loaded only for a
            strategy that declares ``uses_source_data``.
        executor: where the replicates train (:mod:`transferlab.execution`); default: one
            after another in this process.
    Returns:
        {"strategy", "skipped": reason or None, "runs": [record...], "timing": {...}} plus what
        the strategy's setup adds.
    """
    cls = get(strategy)
    executor = executor or Executor(ExecutionParams(), torch.get_num_threads(), "compatible")
    source, config = load_checkpoint(source_path) if source_path is not None else (None, None)
    if config is not None:  # a model adapted from a source is the source's architecture
        arch = {**arch, "arch": config["arch"]}
    reason = cls.skip_reason(config, mapping, cfg) or cls.task_reason(target.task)
    result: dict = {"strategy": strategy, "skipped": reason, "runs": [], "timing": {}}
    if reason:
        return result
    job = ReplicateJob(strategy, cfg, target, source, config, mapping, arch, device, selection,
                       {"out_dir": out_dir}, _source_images(cls, strategy, source_data),
                       executor.device_spec, cls.variant_of)
    with counted_flops() as setup:  # work the stage's runs share (e.g. cached features)
        result.update(cls(cfg, job.context(0)).setup())
    result["setup_flops"] = setup.total
    result["timing"].update(job.shared.pop("timing", {}))
    replicates = list(target.replicates())
    report = _Reporter(result, on_result)
    if not cls.trains_with(cfg):
        _run_untrained(job, replicates, out_dir, report)
        return result
    on_cluster = executor.backend == "ray"  # a task picks its device where it runs
    outcomes = (_on_cluster(replace(job, device=None), replicates, executor) if on_cluster
                else executor.map(train_replicate, job, replicates, desc=strategy,
                                  label=_label))
    for (seed, budget), (model, info, timing) in zip(replicates, outcomes, strict=True):
        name = f"{seed}_{budget}.pt"
        save_checkpoint(model, out_dir / name, {
            "arch": arch["arch"], "width": arch["width"], "num_classes": target.num_classes,
            "mean": float(model.normalize.mean), "std": float(model.normalize.std),
            "strategy": strategy, **info.get("target_scale", {})})
        result["timing"][f"{seed}_{budget}"] = timing
        report({"seed": int(seed), "budget": budget, "checkpoint": name, **info}, model,
               timing["device"])
    return result


def _source_images(cls: type[Strategy], strategy: str,
                   source_data: Path | None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The source's training images and labels, for a strategy that trains on them."""
    if not cls.uses_source_data:
        return None
    if source_data is None:
        raise ValueError(f"strategy {strategy} trains on the source's images; pass the "
                         "prepared source folder (--source-data)")
    return PreparedDataset.open(source_data).inputs("train")


@dataclass
class _Reporter:
    """Appends each finished replicate's record to the result's runs, then calls
    ``on_result`` (if any) with it, its model and the device it trained on."""

    result: dict
    on_result: Callable[[dict, TransferNet, str], None] | None

    def __call__(self, record: dict, model: TransferNet, trained_on: str) -> None:
        self.result["runs"].append(record)
        if self.on_result is not None:
            self.on_result(record, model, trained_on)


def _run_untrained(job: ReplicateJob, replicates: list[tuple[str, str]], out_dir: Path,
                   report: _Reporter) -> None:
    """A strategy that trains nothing: one model (``model.pt``), scored on every replicate's
    held-out labels."""
    model = job.strategy_class()(job.cfg, job.context(0)).untrained_model()
    save_checkpoint(model, out_dir / "model.pt",
                    {**job.config, "num_classes": job.target.num_classes})
    for seed, budget in tqdm(replicates, desc=job.strategy, unit="run", disable=None):
        record = {"seed": int(seed), "budget": budget, "checkpoint": "model.pt"}
        record.update(source_only_selection(model, job.target, seed, budget, job.selection,
                                            job.device),
                      trainable_params=0, train_flops=0, steps=0, history=[])
        report(record, model, device_description(job.device))


@dataclass
class ReplicateJob:
    """What every replicate of one strategy shares: sent once to a Ray cluster."""

    strategy: str
    cfg: Any
    target: TargetData
    source: TransferNet | None
    config: dict | None
    mapping: dict | None
    arch: dict
    device: torch.device | None  # None: the device ``common.device`` picks where the task runs
    selection: SelectionParams
    shared: dict
    images: tuple | None
    device_spec: str = "auto"
    variant_of: str | None = None  # a variant's base: a worker registers the variant too

    def strategy_class(self) -> type[Strategy]:
        """The strategy's class, in any process (a variant registered where needed)."""
        return variant(self.strategy, self.variant_of) if self.variant_of else get(
            self.strategy)

    def context(self, seed: int) -> Context:
        """The strategy's context for a replicate whose generators start from ``seed`` (0 for
        the stage's setup and an untrained model), on a fresh copy of the source."""
        return Context.build(self.target, self.source, arch=self.arch, device=_device(self),
                             seed=seed, source_config=self.config, mapping=self.mapping,
                             shared=self.shared, source_data=self.images)


def _label(item: tuple) -> str:
    return f"seed={item[0]} budget={item[1]}" + (f" point={item[2]}" if len(item) > 2 else "")


def _device(job: ReplicateJob) -> torch.device:
    """The job's device: the stage's, or on a cluster the one ``common.device`` picks here."""
    return job.device if job.device is not None else resolve_device(job.device_spec)


def _member(job: ReplicateJob, seed: str, budget: str) -> Strategy:
    """The strategy for one replicate, built alike in the stage process and in a worker."""
    return job.strategy_class()(job.cfg, job.context(replicate_seed(seed, budget)))


def _prepare(job: ReplicateJob, seed: str, budget: str) -> Replicate:
    return prepare_replicate(_member(job, seed, budget), job.target, job.cfg, seed, budget,
                             job.selection, desc=f"{job.strategy} b={budget} s={seed}")


def _timing(watch: Stopwatch, job: ReplicateJob) -> dict:
    return {"seconds": watch.seconds, "peak_bytes": watch.peak_bytes,
            "peak_added_bytes": watch.peak_added_bytes,
            "device": device_description(_device(job))}


def _merged(timings: list[dict]) -> dict:
    """One replicate's time and memory over its tasks: summed seconds, the highest peaks,
    the devices they ran on."""
    added = [t["peak_added_bytes"] for t in timings]
    return {"seconds": sum(t["seconds"] for t in timings),
            "peak_bytes": max(t["peak_bytes"] for t in timings),
            "peak_added_bytes": None if None in added else max(added),
            "device": ", ".join(sorted({t["device"] for t in timings}))}


def train_replicate(job: ReplicateJob, replicate: tuple[str, str]) -> tuple[TransferNet, dict,
                                                                             dict]:
    """Train one (seed, budget) replicate of a strategy (:func:`adapt`), in the stage's process.
    Returns (model on CPU, record, its wall time and memory)."""
    seed, budget = replicate
    with Stopwatch() as watch:
        model, info = adapt(_member(job, seed, budget), job.target, job.cfg, seed, budget,
                            job.selection, desc=f"{job.strategy} b={budget} s={seed}")
    return model, info, _timing(watch, job)


def candidate_task(job: ReplicateJob, point: tuple[str, str, int]) -> tuple[tuple, dict]:
    """A Ray task: search point ``i`` of replicate (seed, budget) (:func:`train_candidate`).
    Its model comes back only where no refit replaces it."""
    seed, budget, i = point
    with Stopwatch() as watch:
        rep = _prepare(job, seed, budget)
        candidate = train_candidate(rep, i)
    if rep.frame.plan.refit_idx is not None:
        candidate = (*candidate[:2], None, *candidate[3:])
    return candidate, _timing(watch, job)


def refit_task(job: ReplicateJob, item: tuple[tuple[str, str], tuple]) -> tuple[tuple, dict]:
    """A Ray task: refit replicate (seed, budget)'s chosen search point (:func:`refit_choice`)."""
    (seed, budget), candidate = item
    with Stopwatch() as watch:
        refit = refit_choice(_prepare(job, seed, budget), candidate)
    return refit, _timing(watch, job)


def _on_cluster(job: ReplicateJob, replicates: list[tuple[str, str]],
                executor: Executor) -> list[tuple[TransferNet, dict, dict]]:
    """Every replicate's search points as tasks, then every refit as a task, then the records:
    the same steps :func:`adapt` takes one after another, so the same bytes."""
    frames = {r: selection_frame(job.target, job.cfg, *r, job.selection, replicate_seed(*r))
              for r in replicates}
    member = job.strategy_class()(job.cfg, job.context(0))  # which points the source allows
    for frame in frames.values():  # as prepare_replicate filters them in each task
        frame.grid = usable_candidates(member, frame.grid)
    points = [(*r, i) for r in replicates for i in range(len(frames[r].grid))]
    found: dict[tuple[str, str], list] = {r: [] for r in replicates}
    for point, result in zip(points, executor.map(candidate_task, job, points,
                                                  desc=f"{job.strategy} search", label=_label),
                             strict=True):
        found[point[:2]].append(result)
    best = {r: best_candidate(frames[r], [c for c, _ in found[r]]) for r in replicates}
    todo = [(r, found[r][best[r]][0]) for r in replicates
            if frames[r].plan.refit_idx is not None]
    refits = dict(zip([r for r, _ in todo],
                      executor.map(refit_task, job, todo, desc=f"{job.strategy} refit",
                                   label=lambda item: _label(item[0])), strict=True))
    outcomes = []
    for r in replicates:
        refit, refit_timing = refits.get(r, (None, None))
        model, info = assemble(frames[r], [c for c, _ in found[r]], best[r], refit)
        timings = [t for _, t in found[r]] + ([refit_timing] if refit_timing else [])
        outcomes.append((model, info, _merged(timings)))
    return outcomes
