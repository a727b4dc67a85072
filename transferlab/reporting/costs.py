"""What each strategy cost on this machine: wall time and memory, read from the timing files
the stages write under ``timing/`` (never DVC outputs: they differ on every run and machine).

``python -m transferlab.reporting.costs`` (run by ``make repro`` after ``dvc repro``) writes
``timing/compute.json``, ``timing/provenance.json`` (git commit, device, CPU, pins, packages)
and ``timing/summary.md``; ``python -m transferlab.tracking finish`` mirrors them onto the
MLflow ``pipeline`` run. Trainable parameters, FLOPs and epochs, which are reproducible, are in
the DVC metrics and the report.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from transferlab.adapt import strategies
from transferlab.core.helptext import plain
from transferlab.core.runtime import TIMING_DIR, dumps_json, read_timing, run_stage
from transferlab.evaluation.analysis import curve_name

SUMMARY, PROVENANCE, MARKDOWN = "compute.json", "provenance.json", "summary.md"

log = logging.getLogger("transferlab.reporting.costs")  # not __name__: "__main__" under python -m


def compute_summary(timing_root: Path) -> dict:
    """Mean wall time and peak memory per run of every curve, pretraining time per source, and
    the transferability scores' time as a fraction of the finetune run each stands in for.

    Args:
        timing_root: the stages' timing folder: ``runs/<source>/<strategy>.json`` and
            ``runs/scratch.json`` (transfer: {"<seed>_<budget>": {"seconds", "peak_bytes",
            "peak_added_bytes"}, "feature_extraction_seconds"?, "source", "strategy"}),
            ``models/<source>.json`` (pretrain: {"seconds", ...}) and
            ``metrics/evaluate.json`` (evaluate: {"scores": rows {source, budget, seed,
            seconds, feature_seconds, cached}}).
    Returns:
        {"curves": {curve: {"seconds_per_run", "peak_bytes", "peak_added_bytes",
                            "feature_extraction_seconds"}},
         (``peak_bytes``: the largest over the curve's runs; ``peak_added_bytes``: the median
         over its runs, since a process's first run also pays one-off allocations, and None
         where the platform has no per-run peak; see :class:`transferlab.training.loop.Stopwatch`),
         "pretrain": {source: seconds},
         "transferability_fraction_of_finetune": {source: {budget: fraction}} (the scores
         alone, on features already cached),
         "transferability_fraction_with_features": {source: {budget: fraction}} (plus the
         budget's share of one backbone pass over the pool),
         "transferability_features_cached": {source: whether linear_probe's cache was used},
         "stage_peak_rss_bytes": {the stage's output, e.g. "runs/digits/finetune": the stage
         process's peak resident memory}}.
    """
    curves, finetune = {}, defaultdict(dict)
    for path in sorted((timing_root / "runs").rglob("*.json")):
        timing = json.loads(path.read_text())
        per_run = {k: v for k, v in timing.items() if isinstance(v, dict)}
        if not per_run:
            continue
        curve = curve_name(timing.get("source", "none"), timing["strategy"])
        curves[curve] = {
            "seconds_per_run": float(np.mean([v["seconds"] for v in per_run.values()])),
            "peak_bytes": int(max(v["peak_bytes"] for v in per_run.values())),
            "peak_added_bytes": _median(v.get("peak_added_bytes") for v in per_run.values()),
            "feature_extraction_seconds": timing.get("feature_extraction_seconds"),
        }
        if timing["strategy"] == strategies.by_role("reference"):
            finetune[timing["source"]] = {k: v["seconds"] for k, v in per_run.items()}
    pretrain = {p.stem: json.loads(p.read_text()).get("seconds")
                for p in sorted((timing_root / "models").glob("*.json"))}
    score_timing = read_timing(timing_root / "metrics" / "evaluate.json").get("scores", [])
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
        "stage_peak_rss_bytes": stage_peak_rss(timing_root),
    }


def stage_peak_rss(timing_root: Path) -> dict[str, int]:
    """{a stage's output, e.g. "runs/digits/finetune": its process's peak RSS in bytes}, from
    the timing files (every stage writes its peak through ``write_timing``)."""
    peaks = {}
    for path in sorted(timing_root.rglob("*.json")):
        peak = read_timing(path).get("process_peak_rss_bytes")
        if peak is not None:
            peaks[path.relative_to(timing_root).with_suffix("").as_posix()] = int(peak)
    return peaks


def _median(values: Iterable[int | None]) -> float | None:
    """The median, or None if any value is missing (no per-run peak on this platform)."""
    values = list(values)
    return None if any(v is None for v in values) else float(np.median(values))


def _fmt(x: float | None, scale: float = 1.0, digits: int = 2) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x / scale:.{digits}f}"


def render_markdown(summary: dict, provenance: dict) -> str:
    """The machine-specific summary as Markdown: where it ran, then what each curve cost."""
    git, cpu = provenance.get("git", {}), provenance.get("cpu", {})
    lines = ["# Compute and provenance of this run (machine-specific, not a DVC output)", "",
             f"- Git commit: `{git.get('commit')}` (uncommitted changes: {git.get('dirty')})",
             f"- Device: {provenance.get('device')}; CPU: {cpu.get('model')} "
             f"({cpu.get('isa')}); threads: {provenance.get('threads')}",
             f"- CPU pinning: {cpu.get('pinning')}; Python {provenance.get('python')}; "
             + ", ".join(f"{k} {v}" for k, v in sorted(provenance.get("packages", {}).items())),
             f"- Written: {provenance.get('time_utc')}", "",
             "| Curve | Seconds per run | Peak memory (MB) | Memory added (MB) |",
             "|---|---|---|---|"]
    lines += [f"| {c} | {_fmt(t['seconds_per_run'])} | {_fmt(t['peak_bytes'], 2**20, 0)} | "
              f"{_fmt(t['peak_added_bytes'], 2**20, 1)} |" for c, t in sorted(
                  summary["curves"].items())]
    lines += ["", "| Source | Pretraining seconds |", "|---|---|"]
    lines += [f"| {s} | {_fmt(v)} |" for s, v in sorted(summary["pretrain"].items())]
    alone = summary["transferability_fraction_of_finetune"]
    feats = summary["transferability_fraction_with_features"]
    lines += ["", "Transferability scores' time as a fraction of one finetune run at the same "
              "budget and seed: scores alone / plus the budget's share of the backbone pass.", "",
              "| Source | Budget | Fraction |", "|---|---|---|"]
    lines += [f"| {s} | {b} | {_fmt(alone[s][b], 0.01, 2)}% / "
              f"{_fmt(feats.get(s, {}).get(b), 0.01, 2)}% |"
              for s in sorted(alone) for b in alone[s]]
    peaks = summary.get("stage_peak_rss_bytes", {})
    lines += ["", "Peak resident memory of each stage's process (its output's timing file).", "",
              "| Stage output | Peak RSS (MB) |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v, 2**20, 0)} |" for k, v in sorted(peaks.items())]
    return "\n".join(lines) + "\n"


def write_summary(timing_root: Path, params_path: Path) -> dict[str, Path]:
    """Write compute.json, provenance.json and summary.md into ``timing_root``."""
    from transferlab.config.params import load_params
    from transferlab.provenance.record import machine_provenance

    params = load_params(params_path)
    summary = compute_summary(timing_root)
    provenance = machine_provenance(params.common.num_threads)
    timing_root.mkdir(parents=True, exist_ok=True)
    paths = {name: timing_root / name for name in (SUMMARY, PROVENANCE, MARKDOWN)}
    paths[SUMMARY].write_text(dumps_json(summary))
    paths[PROVENANCE].write_text(dumps_json(provenance))
    paths[MARKDOWN].write_text(render_markdown(summary, provenance))
    return paths


def main(argv: list[str] | None = None) -> None:
    """``python -m transferlab.reporting.costs``: summarise ``timing/`` (wall time, memory,
    provenance)."""
    parser = argparse.ArgumentParser(prog="transferlab costs",
                                     description=plain(__doc__))
    parser.add_argument("--timing", default=str(TIMING_DIR), help="the stages' timing folder")
    parser.add_argument("--params", default="params.yaml", help="params file")
    args = parser.parse_args(argv)

    def _main() -> None:
        paths = write_summary(Path(args.timing), Path(args.params))
        log.info("compute: wrote %s", ", ".join(str(p) for p in paths.values()))

    run_stage(_main)


if __name__ == "__main__":
    main()
