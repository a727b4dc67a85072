"""Stage evaluate: test-set metrics of every run, statistics over seeds, transferability."""

import argparse
from pathlib import Path

from transferlab.adapt import strategies
from transferlab.adapt.selection import labels_per_class_used
from transferlab.config.params import load_params, to_dict
from transferlab.core.runtime import (
    device_description,
    dumps_json,
    resolve_device,
    run_stage,
    seed_everything,
    staged_outputs,
    timing_path,
    write_timing,
)
from transferlab.data.cleaning import cleaning_report
from transferlab.data.store import PreparedDataset
from transferlab.evaluation import (
    analysis,
    tables,  # noqa: E402
)
from transferlab.evaluation.evaluate import (
    champion_checkpoints,
    discover_runs,
    evaluate_runs,
    transferability_scores,
)
from transferlab.evaluation.helped import what_helped
from transferlab.tracking.mirror import mirror_evaluate, outputs_digest, register_champions
from transferlab.tracking.tracker import Tracker, tracked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="params file")
    parser.add_argument("--data", required=True, help="prepared data directory")
    parser.add_argument("--models", required=True, help="directory of source models")
    parser.add_argument("--runs", required=True, help="directory of transfer runs")
    parser.add_argument("--metrics", required=True, help="output metrics JSON")
    parser.add_argument("--headline", required=True, help="output folder of headline metrics, one "
                        "JSON per curve (the few numbers `dvc metrics show` displays)")
    parser.add_argument("--runs-table", required=True, help="output per-run CSV")
    parser.add_argument("--timing", default=None, help="the scores' wall time, not a DVC "
                        "output (default: timing/<metrics>.json)")
    parser.add_argument("--plots", required=True, help="output directory of plot CSVs")
    args = parser.parse_args()

    params = strategies.resolve(load_params(args.params))
    p = params.evaluate
    seed_everything(0, params.common.num_threads,
                    params.common.gemm_branch, params.common.determinism)
    device = resolve_device(params.common.device)
    data = Path(args.data)
    target = PreparedDataset.open(data / "target")
    task = target.task
    headline = task.headline
    regression = task.name == "regression"
    names = sorted(params.prepare.sources)
    sources = {n: Path(args.models) / n / "model.pt" for n in names}
    source_data = {n: PreparedDataset.open(data / "sources" / n) for n in names}
    budgets = [str(b) for b in params.prepare.budgets]
    all_lpc = sum(target.manifest["counts"]["train"].values()) / len(target.class_names)
    grid = params.grid.strategies
    feature_probe = strategies.by_role("feature_probe")
    methods = [(s, st) for s in params.grid.methods.sources
               for st in params.grid.methods.strategies]
    runs = discover_runs(Path(args.runs), names, grid, methods)
    tracker = Tracker(params.tracking, "evaluate",
                      {"transferlab.device": device_description(device)}, {"evaluate": to_dict(p)},
                      dvc_stage="evaluate")
    outputs = (args.metrics, args.headline, args.runs_table, args.plots)
    with tracked(tracker), staged_outputs(*outputs) as staged:
        metrics_path, headline_path, table_path, plots = staged
        results, extra = evaluate_runs(runs, target, sources, source_data, p, device)
        summary = analysis.summarize(results, budgets, all_lpc, p)
        scores, score_timing = transferability_scores(sources, target, Path(args.runs), device,
                                                      feature_probe in grid)
        transfer = analysis.transferability_summary(scores, summary, budgets, p.confidence,
                                                    headline, regression)
        verdicts = analysis.control_family(
            summary, analysis.recommend(summary, results, budgets, transfer, p, headline), p)
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
            "what_helped": what_helped(results, summary, budgets, p, headline),
            "data_hygiene": cleaning_report(
                {s: (target.modality.cleaning_arrays(split.examples), split.labels)
                 for s in ("train", "val", "test") for split in [target.load(s)]},
                features=target.modality.features),
            **extra,
        }
        metrics_path.write_text(dumps_json(report))
        tables.write_headline(headline_path, tables.headline_metrics(summary, budgets, headline))
        tables.runs_table(results).to_csv(table_path, index=False, float_format="%.6g")
        test_truth = target.load("test").truth
        tables.write_plots(plots, results, summary, report, budgets, all_lpc, test_truth,
                           target.class_names, p.calibration_bins, headline)
        child_ids = mirror_evaluate(tracker, report)
        champions = champion_checkpoints(report["recommendations"], runs)
        register_champions(tracker, champions, target.example_input(), child_ids)
        tracker.set_tags({"transferlab.outputs_digest": outputs_digest(
            dict(zip(outputs, staged, strict=True)))})
    write_timing(args.timing or timing_path(Path(args.metrics).with_suffix("")),
                 {"scores": score_timing})
    best = report["recommendations"][budgets[-1]]
    print(f"evaluate: {len(results)} runs; best at {budgets[-1]} labels/class: {best['best']} "
          + (f"({headline} {best[headline]['mean']:.3f})" if best["best"]
             else "(no selection score)"))


if __name__ == "__main__":
    run_stage(main)
