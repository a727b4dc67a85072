"""What each strategy costs in wall time and memory, read from the stages' timing files.

Wall time is not reproducible, so it lives apart from the metrics (``metrics/compute.json``);
trainable parameters and FLOPs, which are reproducible, are in the metrics themselves.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from transferlab.analysis import curve_name


def compute_summary(runs_root: Path, models_root: Path, score_timing: list[dict]) -> dict:
    """Mean wall time and peak memory per run of every curve, pretraining time per source, and
    the transferability scores' time as a fraction of the finetune run each stands in for.

    Args:
        runs_root: the transfer stages' output root (``<source>/<strategy>/timing.json``).
        models_root: the pretrain stages' output root (``<source>/timing.json``).
        score_timing: rows {source, budget, seed, seconds, feature_seconds, cached} from
            :func:`transferlab.evaluation.transferability_scores`.
    Returns:
        {"curves": {curve: {"seconds_per_run", "peak_bytes", "peak_added_bytes",
                            "feature_extraction_seconds"}},
         (``peak_bytes``: the largest over the curve's runs; ``peak_added_bytes``: the median
         over its runs, since a process's first run also pays one-off allocations such as
         lazy imports, and None where the platform has no per-run peak; see
         :class:`transferlab.training.Stopwatch`),
         "pretrain": {source: seconds},
         "transferability_fraction_of_finetune": {source: {budget: fraction}} (the scores
         alone, on features already cached),
         "transferability_fraction_with_features": {source: {budget: fraction}} (plus the
         budget's share of one backbone pass over the pool),
         "transferability_features_cached": {source: whether linear_probe's cache was used}}.
    """
    curves, finetune = {}, defaultdict(dict)
    for path in sorted(runs_root.rglob("timing.json")):
        timing = json.loads(path.read_text())
        info = json.loads((path.parent / "runs.json").read_text())
        per_run = {k: v for k, v in timing.items() if isinstance(v, dict)}
        if not per_run:
            continue
        curve = curve_name(info["source"], info["strategy"])
        curves[curve] = {
            "seconds_per_run": float(np.mean([v["seconds"] for v in per_run.values()])),
            "peak_bytes": int(max(v["peak_bytes"] for v in per_run.values())),
            "peak_added_bytes": _median(v.get("peak_added_bytes") for v in per_run.values()),
            "feature_extraction_seconds": timing.get("feature_extraction_seconds"),
        }
        if info["strategy"] == "finetune":
            finetune[info["source"]] = {k: v["seconds"] for k, v in per_run.items()}
    pretrain = {}
    for path in sorted(models_root.glob("*/timing.json")):
        pretrain[path.parent.name] = json.loads(path.read_text()).get("seconds")
    alone: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    with_features: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in score_timing:
        ft = finetune.get(row["source"], {}).get(f"{row['seed']}_{row['budget']}")
        if ft:
            alone[row["source"]][row["budget"]].append(row["seconds"] / ft)
            with_features[row["source"]][row["budget"]].append(
                (row["seconds"] + row["feature_seconds"]) / ft)

    def means(fractions: dict) -> dict:
        return {s: {b: float(np.mean(v)) for b, v in by_b.items()} for s, by_b in
                fractions.items()}

    return {
        "curves": curves,
        "pretrain": pretrain,
        "transferability_fraction_of_finetune": means(alone),
        "transferability_fraction_with_features": means(with_features),
        "transferability_features_cached": {row["source"]: row["cached"] for row in score_timing},
    }


def _median(values: Iterable[int | None]) -> float | None:
    """The median, or None if any value is missing (no per-run peak on this platform)."""
    values = list(values)
    return None if any(v is None for v in values) else float(np.median(values))
