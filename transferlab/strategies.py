"""Transfer strategies: how a source model becomes a target model at one label budget and seed.

- ``source_only``: the source model as it is, its head rows re-ordered to the target classes.
- ``linear_probe``: frozen backbone, new linear head trained on features cached once.
- ``partial_finetune``: the first N backbone blocks frozen; the rest and a new head train.
- ``finetune``: everything trains, the backbone at ``lr * backbone_lr_mult``.
- ``scratch``: same architecture, random init, target data only (the baseline).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from transferlab.models import (
    TransferNet,
    block_names,
    build_model,
    count_trainable,
    freeze,
    load_checkpoint,
    reset_head,
    save_checkpoint,
)
from transferlab.params import STRATEGIES, SelectionParams, TrainParams
from transferlab.prepared import PreparedDataset, load_verified
from transferlab.runtime import sha256_file
from transferlab.selection import EXTERNAL, FIXED, HOLDOUT, plan_selection
from transferlab.training import (
    Stopwatch,
    extract_features,
    fit,
    flops_per_example,
    predict_logits,
    to_tensor,
)


@dataclass(frozen=True)
class TargetData:
    """The target's train pool and validation set as tensors, with the drawn budgets."""

    pool_x: torch.Tensor  # (P, 1, H, W)
    pool_y: torch.Tensor  # (P,)
    val_x: torch.Tensor
    val_y: torch.Tensor
    num_classes: int
    budgets: dict[str, dict[str, list[int]]]  # {seed: {budget: pool indices}}
    normalization: dict[str, float]

    def replicates(self) -> Iterator[tuple[str, str]]:
        """(seed, budget) of every drawn replicate, in a fixed order."""
        for seed in sorted(self.budgets, key=int):
            for budget in self.budgets[seed]:
                yield seed, budget


def replicate_seed(seed: str, budget: str) -> int:
    """One integer seed per (seed, budget) replicate, stable across runs and machines."""
    digest = hashlib.sha256(f"{int(seed)}:{budget}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1  # 31 bits


def skip_reason(strategy: str, source_config: dict | None, mapping: dict | None) -> str | None:
    """Why a strategy cannot run for this source, or None if it can."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    if strategy != "source_only":
        return None
    if not source_config or not source_config.get("source_classes"):
        return "the source has no trained classifier (null source)"
    if not mapping or not mapping.get("aligned"):
        missing = (mapping or {}).get("unmapped_target_classes", [])
        return ("label spaces differ: the source has no class for target classes "
                + ", ".join(map(str, missing)))
    return None


def source_only_model(source: TransferNet, source_classes: list[str], mapping: dict,
                      num_classes: int) -> TransferNet:
    """The source model with its head rows picked and ordered by the source->target mapping."""
    rows = [0] * num_classes
    for s_name, t_idx in mapping["source_to_target"].items():
        rows[t_idx] = source_classes.index(s_name)
    with torch.random.fork_rng(devices=[]):  # its init is overwritten: keep global RNG intact
        head = nn.Linear(source.feature_dim, num_classes)
    with torch.no_grad():
        head.weight.copy_(source.head.weight[rows])
        head.bias.copy_(source.head.bias[rows])
    source.head = head
    return source.eval()


def _trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def adapt(strategy: str, source: TransferNet | None, target: TargetData, cfg: TrainParams,
          seed: str, budget: str, device: torch.device, arch: dict, selection: SelectionParams,
          features: tuple[torch.Tensor, torch.Tensor] | None = None,
          desc: str = "") -> tuple[TransferNet, dict]:
    """Train one target model for a (strategy, budget, seed) replicate under the selection
    protocol (:mod:`transferlab.selection`): choose the epoch on labels held out of the budget
    (or the external validation set, or a fixed schedule), then refit on the whole budget.

    Args:
        strategy: one of linear_probe, partial_finetune, finetune, scratch.
        source: a fresh copy of the source model (None for scratch).
        target: pool, validation set and class count.
        cfg: the strategy's params block.
        seed: the replicate seed (as a string, as in budgets.json).
        budget: labels per class (as in budgets.json, e.g. "10" or "all").
        device: where to train.
        arch: {"arch", "width"} for scratch.
        selection: the ``selection`` params block.
        features: cached (pool features, val features) for linear_probe.
        desc: progress-bar label.
    Returns:
        (trained model on CPU, record: selection method and score, best epoch, steps, trainable
        params, FLOPs, validation history of the choosing run).
    """
    budget_idx = np.asarray(target.budgets[seed][budget], dtype=np.int64)
    gen_seed = replicate_seed(seed, budget)
    plan = plan_selection(budget_idx, target.pool_y.numpy(), selection, gen_seed)
    if strategy == "scratch":
        norm = target.normalization
        init = build_model(arch["arch"], target.num_classes, norm["mean"], norm["std"],
                           gen_seed, arch["width"])
    else:
        init = reset_head(source, target.num_classes, gen_seed)
    probe = strategy == "linear_probe"
    inputs, val_inputs = features if probe else (target.pool_x, target.val_x)

    def train(idx: np.ndarray, val: tuple | None, epochs: int, label: str) -> tuple:
        model = copy.deepcopy(init)
        if probe:
            freeze(model, block_names(model), bn_stats=True)
            net, groups = model.head, [{"params": list(model.head.parameters())}]
        else:
            net, groups = model, _param_groups(strategy, model, cfg)
        ix = torch.from_numpy(idx)
        summary = fit(net, (inputs[ix], target.pool_y[ix]), val, replace(cfg, epochs=epochs),
                      groups, torch.Generator().manual_seed(gen_seed), device, label,
                      augment=False if probe else None)
        return model, net, summary

    val = None
    if plan.method == HOLDOUT:
        held = torch.from_numpy(plan.choose_on)
        val = (inputs[held], target.pool_y[held])
    elif plan.method == EXTERNAL:
        val = (val_inputs, target.val_y)
    model, net, chosen = train(plan.train_idx, val, cfg.epochs, desc)
    examples_x_epochs = len(plan.train_idx) * chosen["epochs_run"]
    steps = chosen["steps"]
    if plan.refit_idx is not None:
        model, net, refit = train(plan.refit_idx, None, chosen["best_epoch"], f"{desc} refit")
        examples_x_epochs += len(plan.refit_idx) * refit["epochs_run"]
        steps += refit["steps"]
    # (linear_probe: the one backbone forward per pool example is the shared feature cost)
    example = val_inputs[:1]
    per_example = flops_per_example(net.cpu(), example, train=True)
    record = {k: chosen[k] for k in ("best_epoch", "epochs_run", "best_val_accuracy",
                                     "best_val_loss")}
    record.update(plan.record(), selection_score=chosen["best_val_accuracy"], steps=steps,
                  trainable_params=count_trainable(model),
                  train_flops=int(per_example * examples_x_epochs), history=chosen["history"])
    return model.cpu().eval(), record


def source_only_selection(model: TransferNet, target: TargetData, seed: str, budget: str,
                          selection: SelectionParams, device: torch.device) -> dict:
    """The selection fields of an untrained ``source_only`` replicate: its accuracy on the same
    held-out labels (or external validation set) as every other strategy of the replicate."""
    budget_idx = np.asarray(target.budgets[seed][budget], dtype=np.int64)
    plan = plan_selection(budget_idx, target.pool_y.numpy(), selection,
                          replicate_seed(seed, budget))
    score = None
    if plan.method != FIXED:
        if plan.method == HOLDOUT:
            held = torch.from_numpy(plan.choose_on)
            x, y = target.pool_x[held], target.pool_y[held]
        else:
            x, y = target.val_x, target.val_y
        score = float((predict_logits(model, x, device).argmax(1) == y).double().mean())
    return {**plan.record(), "refit": False, "selection_score": score}


def _param_groups(strategy: str, model: TransferNet, cfg: TrainParams) -> list[dict]:
    if strategy == "partial_finetune":
        names = block_names(model)
        if cfg.frozen_blocks >= len(names):
            raise ValueError(f"transfer.partial_finetune.frozen_blocks: {cfg.frozen_blocks} "
                             f"would freeze every block; the backbone has {len(names)}: "
                             + ", ".join(names))
        freeze(model, names[:cfg.frozen_blocks], bn_stats=cfg.freeze_bn_stats)
        return [{"params": _trainable(model)}]
    if strategy == "finetune":
        head = set(map(id, model.head.parameters()))
        backbone = [p for p in model.parameters() if id(p) not in head]
        return [{"params": backbone, "lr": cfg.lr * cfg.backbone_lr_mult},
                {"params": list(model.head.parameters()), "lr": cfg.lr}]
    return [{"params": _trainable(model)}]  # scratch


def cached_features(source: TransferNet, target: TargetData,
                    device: torch.device) -> tuple[tuple[torch.Tensor, torch.Tensor], float]:
    """Backbone features of the whole pool and the validation set, computed once per source.

    Every budget and seed of ``linear_probe`` reuses them. Returns ((pool, val), seconds).
    """
    with Stopwatch() as watch:
        # clone(): inference-mode tensors cannot enter autograd when the head trains on them
        feats = (extract_features(source, target.pool_x, device).clone(),
                 extract_features(source, target.val_x, device).clone())
    return feats, watch.seconds


POOL_FEATURES = "pool_features.npy"


def save_pool_features(features: torch.Tensor, out_dir: Path) -> dict:
    """Write linear_probe's cached pool features, so evaluate scores transferability from them
    without another backbone pass. Returns the runs.json entry {file, sha256, shape}."""
    path = out_dir / POOL_FEATURES
    np.save(path, features.float().numpy())
    return {"file": POOL_FEATURES, "sha256": sha256_file(path), "shape": list(features.shape)}


def load_pool_features(folder: Path, rows: int) -> np.ndarray | None:
    """The pool features a linear_probe run folder cached (sha256-verified), or None where the
    folder holds none or holds features of a pool with another size."""
    runs_json = folder / "runs.json"
    if not runs_json.is_file():
        return None
    entry = json.loads(runs_json.read_text()).get("pool_features")
    if not entry or entry["shape"][0] != rows:
        return None
    stage = f"transfer@{folder.parent.name}-{folder.name}"
    return load_verified(folder / entry["file"], entry["sha256"], runs_json, stage)


def load_target(folder: str | Path) -> TargetData:
    """The prepared target's pool, validation set and budgets (sha256-verified)."""
    data = PreparedDataset.open(folder)
    pool, val = data.load("train"), data.load("val")
    return TargetData(to_tensor(pool.images), torch.from_numpy(pool.labels),
                      to_tensor(val.images), torch.from_numpy(val.labels),
                      len(data.class_names), data.budgets(), data.manifest["normalization"])


def run_replicates(strategy: str, cfg: TrainParams | None, source_path: Path | None,
                   target: TargetData, device: torch.device, out_dir: Path,
                   arch: dict, selection: SelectionParams,
                   on_result: Callable[[dict, TransferNet], None] | None = None,
                   mapping: dict | None = None) -> dict:
    """Run one strategy for every (seed, budget) replicate; write checkpoints into ``out_dir``.

    Args:
        strategy: the strategy name.
        cfg: its params block (None for source_only).
        source_path: the source checkpoint (None for scratch).
        target: the prepared target.
        device: where to train.
        out_dir: receives ``<seed>_<budget>.pt`` checkpoints.
        arch: {"arch", "width"} used by scratch.
        selection: the ``selection`` params block (how each replicate chooses).
        on_result: called with (record, model) after each replicate (e.g. tracking).
        mapping: the source->target label mapping from the source manifest (source_only).
    Returns:
        {"strategy", "skipped": reason or None, "runs": [record...], "timing": {...}}.
    """
    source, config = (None, None)
    if source_path is not None:
        source, config = load_checkpoint(source_path)
    reason = skip_reason(strategy, config, mapping)
    result = {"strategy": strategy, "skipped": reason, "runs": [], "timing": {}}
    if reason:
        return result
    features = None
    if strategy == "linear_probe":
        features, seconds = cached_features(source, target, device)
        result["timing"]["feature_extraction_seconds"] = seconds
        result["pool_features"] = save_pool_features(features[0], out_dir)
    if strategy == "source_only":
        model = source_only_model(source, config["source_classes"], mapping, target.num_classes)
        save_checkpoint(model, out_dir / "model.pt", {**config, "num_classes": target.num_classes})
    replicates = list(target.replicates())
    bar = tqdm(replicates, desc=strategy, unit="run", disable=None)
    for seed, budget in bar:
        bar.set_postfix(seed=seed, budget=budget)
        name = f"{seed}_{budget}.pt" if strategy != "source_only" else "model.pt"
        record = {"seed": int(seed), "budget": budget, "checkpoint": name}
        if strategy != "source_only":
            base = copy.deepcopy(source) if source is not None else None
            with Stopwatch() as watch:
                model, info = adapt(strategy, base, target, cfg, seed, budget, device, arch,
                                    selection, features, desc=f"{strategy} b={budget} s={seed}")
            save_checkpoint(model, out_dir / name, {
                "arch": arch["arch"], "width": arch["width"], "num_classes": target.num_classes,
                "mean": float(model.normalize.mean), "std": float(model.normalize.std),
                "strategy": strategy})
            record.update(info)
            result["timing"][f"{seed}_{budget}"] = {
                "seconds": watch.seconds, "peak_bytes": watch.peak_bytes,
                "peak_added_bytes": watch.peak_added_bytes}
        else:
            record.update(source_only_selection(model, target, seed, budget, selection, device),
                          trainable_params=0, train_flops=0, steps=0, history=[])
        result["runs"].append(record)
        if on_result is not None:
            on_result(record, model)
    return result
