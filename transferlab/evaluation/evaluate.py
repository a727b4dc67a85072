"""Per-run evaluation: test predictions, a shifted test copy, forgetting, transferability.

This is the only module that reads the target test set. Aggregation over seeds lives in
:mod:`transferlab.evaluation.analysis`.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from transferlab.adapt import strategies
from transferlab.adapt.strategies.linear_probe import load_pool_features
from transferlab.config.params import EvaluateParams
from transferlab.core.runtime import read_timing, sha256_file, timing_path
from transferlab.data.store import PreparedDataset
from transferlab.evaluation.analysis import curve_name
from transferlab.evaluation.transferability import score_all, score_regression
from transferlab.models.nets import checkpoint_config, load_checkpoint
from transferlab.training.loop import extract_features, head_proba, predict_logits, predict_proba

BASELINE = strategies.by_role("baseline")  # its runs live in runs/<its name>


@dataclass(frozen=True)
class RunResult:
    """What evaluate keeps of one (source, strategy, budget, seed) run."""

    key: dict  # source, strategy, budget, seed
    metrics: dict  # test metrics (flat), shifted headline metric, forgetting
    # (N,) per-example scores whose mean is the headline metric (transferlab.core.tasks): 1/0 for a
    # correct / wrong class; 1 - (y - ŷ)² / Var(y_test) for a regression (mean: R²)
    correct: np.ndarray
    proba: np.ndarray  # (N, C) test probabilities; a regression: (N,) predicted values
    # accuracy on the labels held out of the budget (selection protocol); nan where the budget
    # was too small to hold any out. Every choice ranks runs by this, never by the test split.
    selection_score: float = math.nan
    search: dict | None = None  # the run's in-stage search (chosen config, candidates), if any
    # its refit ended on a training-loss spike (transferlab.adapt.replicates.refit_check)
    unstable_refit: bool = False


def discover_runs(runs_root: Path, sources: Sequence[str], strategies: Sequence[str],
                  methods: Sequence[tuple[str, str]] = ()) -> list[dict]:
    """The ``runs.json`` of every configured ``<source>/<strategy>/`` and of the baseline's.

    Only the configured sources and strategies (``prepare.sources`` x ``grid.strategies``,
    plus the ``methods`` (source, strategy) pairs of ``grid.methods``) are read: run folders
    that another scenario left under ``runs_root`` do not leak in. A configured run folder
    without its ``runs.json`` is an error.
    """
    found = []
    wanted = [runs_root / src / st / "runs.json" for src in sorted(sources) for st in strategies]
    wanted += [runs_root / src / st / "runs.json" for src, st in methods]
    for path in wanted:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no runs of a configured source and strategy")
    scratch = runs_root / BASELINE / "runs.json"
    for path in wanted + ([scratch] if scratch.is_file() else []):
        info = json.loads(path.read_text())
        info["folder"] = path.parent
        found.append(info)
    if not any(i["strategy"] == BASELINE for i in found):
        raise FileNotFoundError(f"{runs_root}: no {BASELINE} runs found; {BASELINE} is the "
                                "baseline of every transfer gain")
    return found


class LoadedModels:
    """:func:`load_checkpoint` for the evaluate stage's passes over the same checkpoints (the
    scoring, then what transferred): each model read is kept while the kept ones hold at most
    ``max_params`` weights in all (least recently used out first), so a small network is read
    from disk once; a language model's hundreds of millions of weights are read again rather
    than held. For CPU inference only: the scoring leaves a CPU model as it was loaded (eval
    mode aside, which every pass sets itself), where on a GPU it moves it."""

    def __init__(self, max_params: int = 50_000_000) -> None:
        self.max_params = max_params
        self.kept: OrderedDict[str, tuple[torch.nn.Module, dict, int]] = OrderedDict()
        self.held = 0

    def __call__(self, path: Path | str) -> tuple[torch.nn.Module, dict]:
        key = str(path)
        if key in self.kept:
            self.kept.move_to_end(key)
            model, config, _ = self.kept[key]
            return model, config
        model, config = load_checkpoint(path)
        size = sum(t.numel() for t in model.parameters())
        if size <= self.max_params:
            self.kept[key] = (model, config, size)
            self.held += size
            while self.held > self.max_params:
                self.held -= self.kept.popitem(last=False)[1][2]
        return model, config

    def config(self, path: Path | str) -> dict:
        """A checkpoint's config: the kept model's, else read from the file alone
        (:func:`~transferlab.models.nets.checkpoint_config`, its tensors not read)."""
        kept = self.kept.get(str(path))
        return kept[1] if kept is not None else checkpoint_config(path)


def evaluate_runs(runs: list[dict], target: PreparedDataset, sources: dict[str, Path],
                  source_data: dict[str, PreparedDataset], p: EvaluateParams,
                  device: torch.device, seconds: dict[str, float] | None = None,
                  load: Callable[[Path], tuple[torch.nn.Module, dict]] = load_checkpoint
                  ) -> tuple[list[RunResult], dict]:
    """Evaluate every checkpoint on the test set, its shifted copy and (forgetting) the source.

    Args:
        runs: from :func:`discover_runs`.
        target: the prepared target (its test split is read here).
        sources: source name -> source checkpoint path.
        source_data: source name -> prepared source dataset (for forgetting).
        p: the evaluate block.
        device: where to run inference.
        seconds: where given, gains each curve's wall time (loading and scoring its
            checkpoints), ``<source>/<strategy>`` -> seconds.
        load: how a checkpoint is read (:class:`LoadedModels` keeps them for a later pass).
    Returns:
        (one RunResult per run, {"skipped": {"<source>/<strategy>": reason}}).
    """
    task = target.task
    truth = target.load("test").truth
    headline = task.headline
    encoded: dict[str, tuple[torch.Tensor, torch.Tensor, bool]] = {}

    def test_inputs(arch: str) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """(test inputs, their shifted copy, whether the shift changed nothing) as a model of
        ``arch`` reads them (a text source of another tokenizer: its own encoding)."""
        if arch not in encoded:
            view = target.encoded_for(arch)
            x = view.modality.to_inputs(view.load("test").examples)
            shift = view.modality.shifted(x, p, 0, view.manifest)
            encoded[arch] = x, shift, bool(torch.equal(shift, x))  # strength 0: one pass
        return encoded[arch]

    source_tests: dict = {}
    results, skipped, cache = [], {}, {}
    # many checkpoints share a backbone (a linear probe's or a source-only model is the
    # source's, AdaBN's is the same for every seed and budget): its features on the test set
    # and the shifted copy are computed once per backbone (CPU: the same bits as model(x))
    shared = _SharedBackbones(device)
    todo = [(info, r) for info in runs for r in info["runs"]]
    for info in runs:
        if info["skipped"]:
            skipped[f"{info['source']}/{info['strategy']}"] = info["skipped"]
    for info, run in tqdm(todo, desc="evaluate", unit="run", disable=None):
        clock = time.perf_counter()
        path = info["folder"] / run["checkpoint"]
        # replicates whose checkpoints are the same bytes (a prompt that reads no label, AdaBN's
        # statistics) are scored once: keyed by content, within one source and strategy
        ckpt = (sha256_file(path), info["source"], info["strategy"])
        if ckpt not in cache:
            model, config = load(path)
            x_test, x_shift, unshifted = test_inputs(config["arch"])
            if task.name == "regression":
                proba = predict_values(model, config, x_test, device)
                shifted = proba if unshifted else predict_values(model, config, x_shift, device)
                shifted_score = float(task.per_example(truth, shifted).mean())
            else:
                proba = shared.proba(model, f"test@{config['arch']}", x_test)
                # only the shifted copy's predicted labels are kept: (N,) not (N, C) per run
                shifted = proba if unshifted else shared.proba(model, f"shift@{config['arch']}",
                                                               x_shift)
                shifted_score = float((shifted.argmax(1) == truth).mean())
            forget = _forgetting(model, info, sources, source_data, source_tests, device,
                                 shared)
            cache[ckpt] = (proba, shifted_score, forget)
        proba, shifted_score, forget = cache[ckpt]
        metrics = task.test_metrics(truth, proba, p.calibration_bins)
        metrics[f"shifted_{headline}"] = shifted_score
        metrics["shift_gap"] = metrics[headline] - shifted_score
        metrics.update(forget)
        metrics.update(trainable_params=run["trainable_params"], train_flops=run["train_flops"])
        key = {"source": info["source"], "strategy": info["strategy"], "budget": run["budget"],
               "seed": run["seed"]}
        score = run.get("selection_score")
        per_example = task.per_example(truth, proba)
        if task.name == "classification":
            per_example = per_example.astype(bool)  # as before: correct or not
        results.append(RunResult(key, metrics, per_example, proba,
                                 math.nan if score is None else float(score),
                                 run.get("search"),
                                 bool((run.get("refit_check") or {}).get("unstable"))))
        if seconds is not None:
            curve = f"{info['source']}/{info['strategy']}"
            seconds[curve] = seconds.get(curve, 0.0) + time.perf_counter() - clock
    return results, {"skipped": skipped}


def predict_values(model: torch.nn.Module, config: dict, x: torch.Tensor,
                   device: torch.device) -> np.ndarray:
    """A regression model's predictions (N,) in target units: the head's z-score times the
    budget's target deviation plus its mean, both kept in the checkpoint's config."""
    z = predict_logits(model, x, device).double().reshape(-1).numpy()
    return z * config["target_std"] + config["target_mean"]  # as models.TargetScaled does


class _SharedBackbones:
    """Backbone features per (backbone, input set), keyed by the sha256 of the backbone's and
    input normalisation's weights: a checkpoint whose backbone another one already has gets
    its predictions from the head alone. On CPU, ``head(features(x))`` is ``model(x)`` bit for
    bit (the same operations on the same batches); elsewhere every model runs whole."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.features: dict[tuple[str, str], torch.Tensor] = {}

    @staticmethod
    def key(model: torch.nn.Module) -> str:
        """sha256 of the backbone's kind, its prompt (a prompted LM's token ids, which are not
        in its state) and the normalisation's and backbone's state. A causal LM that a
        checkpoint restored from its init (``arch_config["weights"]`` with its ``module``: the
        digest was checked against the weights on loading) stands in by that digest instead
        of its hundreds of megabytes."""
        h = hashlib.sha256(type(model.backbone).__name__.encode())
        config = getattr(model, "arch_config", {}) or {}
        h.update(json.dumps(config.get("prompt"), sort_keys=True).encode())
        weights = config.get("weights") or {}
        skip = f"{weights['module']}." if weights.get("module") and weights.get(
            "sha256") else None
        if skip:
            h.update(f"{skip}{weights['sha256']}".encode())
        for prefix, part in (("normalize.", model.normalize), ("backbone.", model.backbone)):
            for name, t in part.state_dict().items():
                if skip and f"{prefix}{name}".startswith(skip):
                    continue
                h.update(name.encode())
                h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def proba(self, model: torch.nn.Module, name: str, x: torch.Tensor) -> np.ndarray:
        if self.device.type != "cpu" or len(x) > _PREDICT_BATCH:
            return predict_proba(model, x, self.device)
        k = (self.key(model), name)
        if k not in self.features:
            self.features[k] = extract_features(model, x, self.device)
        return head_proba(model, self.features[k])


_PREDICT_BATCH = 1024  # predict_logits' batch: one batch, so the head sees the same matrix


def _forgetting(model: torch.nn.Module, info: dict, sources: dict[str, Path],
                source_data: dict[str, PreparedDataset], cache: dict,
                device: torch.device, shared: _SharedBackbones | None = None) -> dict:
    """Source-test accuracy of the adapted backbone under the original source head."""
    name = info["source"]
    member = strategies.get(info["strategy"])
    if not (member.uses_source and member.trains) or name not in source_data \
            or not source_data[name].has_data:
        return {}
    if name not in cache:
        source_model, _ = load_checkpoint(sources[name])
        x, labels = source_data[name].inputs("test")
        labels = labels.numpy()
        before = float((predict_proba(source_model, x, device).argmax(1) == labels).mean())
        cache[name] = (source_model, x, labels, before)
    source_model, x, labels, before = cache[name]
    source_model.backbone.load_state_dict(model.backbone.state_dict())
    after = float(((shared.proba(source_model, f"source:{name}", x) if shared else
                    predict_proba(source_model, x, device)).argmax(1) == labels).mean())
    return {"source_accuracy_before": before, "source_accuracy_after": after,
            "forgetting": before - after}


def transferability_scores(sources: dict[str, Path], target: PreparedDataset, runs_root: Path,
                           device: torch.device, use_cache: bool = True
                           ) -> tuple[list[dict], list[dict]]:
    """LogME, LEEP, NCE and H-score of every source at every budget and seed.

    Uses only the target training subset of each budget (never the test set). The backbone
    features of the pool come from the source's linear_probe run, which cached them for its
    own training (``runs/<source>/linear_probe/pool_features.npy``); where there is no such
    run (or with ``use_cache`` false: linear_probe is not in the grid, so a folder there is
    stale), one backbone pass over the pool here computes them. Returns (score rows {source,
    budget, seed, logme, leep, nce, hscore, n_examples, feature_dim, min_per_class,
    source_classes} (the last four for :func:`transferability.trusted`), timing rows {source,
    budget, seed, seconds, feature_seconds, cached}): ``seconds`` is the score computation
    itself (head softmax and the four scores), ``feature_seconds`` the budget's pro-rata share
    of the backbone pass that computed the features (the linear probe's also covers the
    validation set, so it errs high), and ``cached`` whether that pass was the linear probe's.
    Timing is kept apart from the scores because wall time is not reproducible.
    """
    pool = target.load("train")
    regression = target.task.name == "regression"
    rows, timing = [], []
    for name, path in sorted(sources.items()):
        model, config = load_checkpoint(path)
        view = target.encoded_for(config["arch"])  # the same pool, as this source reads it
        x_pool = view.modality.to_inputs((pool if view is target else view.load("train")).examples)
        linear_probe = runs_root / name / strategies.by_role("feature_probe")
        cached = load_pool_features(linear_probe, len(x_pool)) if use_cache else None
        if cached is not None:
            features = torch.from_numpy(cached)
            pass_seconds = read_timing(timing_path(linear_probe)).get(
                "feature_extraction_seconds") or 0.0
        else:
            start = time.perf_counter()
            features = extract_features(model, x_pool, device)
            pass_seconds = time.perf_counter() - start
        start = time.perf_counter()
        feats = features.double().numpy()
        probs = head_proba(model.cpu(), features) \
            if config.get("source_classes") and not regression else None
        shared = time.perf_counter() - start  # one head pass over the pool serves every budget
        # the scores' matrices are small: one BLAS thread is faster than two that synchronise
        with threadpool_limits(1, user_api="blas"):
            for seed, budgets in sorted(target.budgets().items(), key=lambda kv: int(kv[0])):
                for budget, idx in budgets.items():
                    start = time.perf_counter()
                    if regression:
                        scores = score_regression(feats[idx], pool.targets[idx])
                    else:
                        scores = score_all(feats[idx], None if probs is None else probs[idx],
                                           pool.labels[idx])
                    share = len(idx) / len(x_pool)
                    rows.append({"source": name, "budget": budget, "seed": int(seed), **scores,
                                 "n_examples": len(idx), "feature_dim": int(feats.shape[1]),
                                 "min_per_class": int(np.unique(pool.labels[idx],
                                                                return_counts=True)[1].min()),
                                 "source_classes": 0 if probs is None else int(probs.shape[1])})
                    timing.append({"source": name, "budget": budget, "seed": int(seed),
                                   "seconds": time.perf_counter() - start + shared * share,
                                   "feature_seconds": pass_seconds * share,
                                   "cached": cached is not None})
    return rows, timing


def champion_checkpoints(recommendations: dict, runs: list[dict]) -> dict[str, tuple[str, Path]]:
    """Per budget, the recommended curve and the checkpoint of its seed with the best selection
    score (accuracy on labels held out of the budget; ties: the lowest seed). Neither choice reads
    the test split. A budget without a recommendation (``best`` None) has no champion.

    Args:
        recommendations: from :func:`transferlab.evaluation.analysis.recommend`.
        runs: from :func:`discover_runs` (each run record's ``selection_score``).
    Returns:
        {budget: (curve, checkpoint path)}, only for budgets with a recommendation.
    """
    def score(record: dict) -> float:
        value = record.get("selection_score")
        return -math.inf if value is None or not math.isfinite(value) else float(value)

    out = {}
    for budget, rec in recommendations.items():
        if rec.get("best") is None:
            continue
        info = next(i for i in runs if curve_name(i["source"], i["strategy"]) == rec["best"])
        candidates = [r for r in info["runs"] if str(r["budget"]) == budget]
        best = max(candidates, key=lambda r: (score(r), -r["seed"]))
        out[budget] = (rec["best"], info["folder"] / best["checkpoint"])
    return out
