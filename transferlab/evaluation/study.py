"""The evaluate stage's work as two calls: :meth:`StudyInputs.open` reads what a study trained,
:func:`evaluate_study` scores it into the metrics, tables and plots the stage writes.

Everything here is computed in a fixed order from the params, the prepared data and the run
folders: the same inputs give the same bytes. Only the transferability scores' wall time
(:attr:`Evaluation.score_timing`) varies, and it is kept apart from the outputs.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from transferlab.adapt import strategies
from transferlab.adapt.selection import labels_per_class_used
from transferlab.config.params import Params, to_dict
from transferlab.core.runtime import dumps_json
from transferlab.data.cleaning import cleaning_report
from transferlab.data.store import PreparedDataset
from transferlab.evaluation import analysis, tables
from transferlab.evaluation.analysis import curve_name
from transferlab.evaluation.evaluate import (
    LoadedModels,
    RunResult,
    champion_checkpoints,
    discover_runs,
    evaluate_runs,
    transferability_scores,
)
from transferlab.evaluation.fixed import judge_fixed
from transferlab.evaluation.helped import what_helped
from transferlab.evaluation.similarity import probe_indices, study_similarity
from transferlab.models.nets import load_checkpoint


@dataclass
class StudyInputs:
    """What the evaluate stage reads: the target, every source and the runs of the grid."""

    target: PreparedDataset
    sources: dict[str, Path]  # source name -> its checkpoint
    source_data: dict[str, PreparedDataset]  # source name -> its prepared data
    runs_root: Path
    runs: list[dict]  # every configured run folder's runs.json (discover_runs)
    budgets: list[str]

    @classmethod
    def open(cls, params: Params, data: Path, models: Path, runs_root: Path) -> StudyInputs:
        """Open the prepared ``data`` folder, the source checkpoints under ``models`` and the
        runs under ``runs_root`` of the sources and strategies that ``params`` configures."""
        names = sorted(params.prepare.sources)
        methods = [(s, st) for s in params.grid.methods.sources
                   for st in params.grid.methods.strategies]
        return cls(PreparedDataset.open(data / "target"),
                   {n: models / n / "model.pt" for n in names},
                   {n: PreparedDataset.open(data / "sources" / n) for n in names}, runs_root,
                   discover_runs(runs_root, names, params.grid.strategies, methods),
                   [str(b) for b in params.prepare.budgets])

    @property
    def all_labels_per_class(self) -> float:
        """Training labels per target class in the whole pool."""
        counts = self.target.manifest["counts"]["train"]
        return sum(counts.values()) / len(self.target.class_names)


@dataclass
class Evaluation:
    """What :func:`evaluate_study` found: the metrics report and what it was made of."""

    inputs: StudyInputs
    results: list[RunResult]
    report: dict  # the metrics JSON (summary, recommendations, statistics, ...)
    score_timing: list[dict]  # the transferability scores' wall time: not reproducible
    calibration_bins: int
    # where evaluate's own wall time went, seconds: {"runs": {curve: s}, "transferability",
    # "what_transferred", ...}; not reproducible, kept apart from the outputs like score_timing
    part_seconds: dict = field(default_factory=dict)

    @property
    def summary(self) -> dict:
        return self.report["summary"]

    def write(self, metrics: Path, headline: Path, runs_table: Path, plots: Path) -> None:
        """Write the metrics JSON, the headline folder, the per-run CSV and the plot CSVs."""
        target, budgets = self.inputs.target, self.inputs.budgets
        key = target.task.headline
        metrics.write_text(dumps_json(self.report))
        tables.write_headline(headline, tables.headline_metrics(self.summary, budgets, key))
        tables.runs_table(self.results).to_csv(runs_table, index=False, float_format="%.6g")
        test_truth = target.load("test").truth
        tables.write_plots(plots, self.results, self.summary, self.report, budgets,
                           self.inputs.all_labels_per_class, test_truth, target.class_names,
                           self.calibration_bins, key)

    def champions(self) -> dict[str, tuple[str, Path]]:
        """Per budget, the recommended curve and its best seed's checkpoint
        (:func:`~transferlab.evaluation.evaluate.champion_checkpoints`)."""
        return champion_checkpoints(self.report["recommendations"], self.inputs.runs)

    def line(self) -> str:
        """One line of results: the runs evaluated and the largest budget's recommendation."""
        last = self.inputs.budgets[-1]
        best, headline = self.report["recommendations"][last], self.inputs.target.task.headline
        return (f"evaluate: {len(self.results)} runs; best at {last} labels/class: "
                f"{best['best']} "
                + (f"({headline} {best[headline]['mean']:.3f})" if best["best"]
                   else "(no selection score)"))


def evaluate_study(inputs: StudyInputs, params: Params, device: torch.device) -> Evaluation:
    """Score every run on the test set, summarise over seeds, score the sources'
    transferability, and judge them: the evaluate stage's metrics report.

    Args:
        inputs: from :meth:`StudyInputs.open`.
        params: the study's params, resolved (:func:`transferlab.adapt.strategies.resolve`).
        device: where to run inference.
    """
    p, target, budgets = params.evaluate, inputs.target, inputs.budgets
    task = target.task
    headline, regression = task.headline, task.name == "regression"
    all_lpc = inputs.all_labels_per_class
    seconds: dict = {"runs": {}}
    clock = time.perf_counter()
    # on CPU, the checkpoints scored here are kept for what transferred (read once)
    load = LoadedModels() if device.type == "cpu" else None
    results, extra = evaluate_runs(inputs.runs, target, inputs.sources, inputs.source_data, p,
                                   device, seconds["runs"], load or load_checkpoint)
    seconds["runs_total"] = time.perf_counter() - clock
    summary = analysis.summarize(results, budgets, all_lpc, p)
    clock = time.perf_counter()
    scores, score_timing = transferability_scores(
        inputs.sources, target, inputs.runs_root, device,
        strategies.by_role("feature_probe") in params.grid.strategies)
    seconds["transferability"] = time.perf_counter() - clock
    transfer = analysis.transferability_summary(scores, summary, budgets, p.confidence,
                                                headline, regression)
    verdicts = analysis.control_family(
        summary, analysis.recommend(summary, results, budgets, transfer, p, headline), p,
        analysis.contrasts(results, budgets, p))
    summary = verdicts["summary"]
    report = {
        **({"task": {"name": task.name, "headline": headline}} if regression else {}),
        "summary": summary,
        "label_efficiency": analysis.label_efficiency(
            summary, budgets, all_lpc, p.reach_fraction,
            labels_per_class_used(0, params.selection.protocol,
                                  params.prepare.val_per_class), headline),
        "selection": to_dict(params.selection),
        "transferability": transfer,
        "recommendations": verdicts["recommendations"],
        "statistics": verdicts["statistics"],
        **({"contrasts": verdicts["contrasts"]} if "contrasts" in verdicts else {}),
        "what_helped": what_helped(results, summary, budgets, p, headline),
        "data_hygiene": _data_hygiene(target),
        "what_transferred": _timed(seconds, "what_transferred", what_transferred_report,
                                   inputs, p.similarity_probe, p.confidence, p.similarity_cka,
                                   load),
        **({} if regression or not (fixed := judge_fixed(results, target.load("test").truth, p))
           else {"fixed_predictions": fixed}),
        **({"privacy": privacy} if (privacy := _privacy(inputs.runs)) else {}),
        **extra,
    }
    return Evaluation(inputs, results, report, score_timing, p.calibration_bins, seconds)


def _timed(seconds: dict, part: str, fn: Any, *args: Any) -> Any:
    """``fn(*args)``, its wall time added to ``seconds[part]``."""
    clock = time.perf_counter()
    try:
        return fn(*args)
    finally:
        seconds[part] = seconds.get(part, 0.0) + time.perf_counter() - clock


def what_transferred_report(inputs: StudyInputs, probe_size: int, confidence: float,
                            estimator: str = "debiased", load: Any = None) -> dict:
    """Per-block CKA (``estimator``: debiased | biased) and drift against the source
    (:mod:`~transferlab.evaluation.similarity`) on a fixed probe of target pool inputs (never
    the test split); {} when switched off. ``load``: the scoring pass's
    :class:`~transferlab.evaluation.evaluate.LoadedModels`, where it kept the checkpoints."""
    if probe_size == 0:
        return {}
    target = inputs.target
    pool = target.load("train")
    chosen = probe_indices(len(pool.labels), probe_size)

    @functools.cache
    def probe(arch: str | None) -> torch.Tensor:
        """The probe texts or images as a model of ``arch`` reads them."""
        view = target.encoded_for(arch)
        return view.modality.to_inputs((pool if view is target else view.load("train"))
                                       .examples)[chosen]

    return study_similarity(inputs.runs, inputs.sources, probe, confidence, target.task.group,
                            estimator, load)


def _privacy(runs: list[dict]) -> dict:
    """Per curve and budget, the privacy the runs of a private strategy spent (their records'
    ``privacy``): the largest ε over seeds (∞ where a run added no noise), δ and the noise
    multiplier."""
    out: dict = {}
    for info in runs:
        for run in info["runs"]:
            if "privacy" not in run:
                continue
            entry = out.setdefault(curve_name(info["source"], info["strategy"]), {}).setdefault(
                str(run["budget"]), {"epsilon": 0.0, "dp_delta": [], "noise_multiplier": []})
            spent = run["privacy"]["epsilon"]  # null in a record: no noise, ε = ∞
            entry["epsilon"] = max(entry["epsilon"], math.inf if spent is None else spent)
            entry["dp_delta"].append(run["privacy"]["dp_delta"])
            entry["noise_multiplier"].append(run["privacy"]["noise_multiplier"])
    for by_budget in out.values():
        for entry in by_budget.values():
            entry["dp_delta"] = max(entry["dp_delta"])
            entry["noise_multiplier"] = min(entry["noise_multiplier"])
    return out


def _data_hygiene(target: PreparedDataset) -> dict:
    """Duplicates and near-duplicates within and across the target's splits."""
    return cleaning_report(
        {s: (target.modality.cleaning_arrays(split.examples), split.labels)
         for s in ("train", "val", "test") for split in [target.load(s)]},
        features=target.modality.features)
