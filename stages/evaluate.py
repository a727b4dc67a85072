"""Stage evaluate: test-set metrics of every run, statistics over seeds, transferability."""

import argparse
import logging
from pathlib import Path

from transferlab.adapt import strategies
from transferlab.config.params import to_dict
from transferlab.core.helptext import plain
from transferlab.core.runtime import (
    device_description,
    resolve_device,
    run_stage,
    seed_everything,
    staged_outputs,
    timing_path,
    write_timing,
)
from transferlab.evaluation.study import StudyInputs, evaluate_study
from transferlab.models.resolved import load_params
from transferlab.tracking.mirror import mirror_evaluate, outputs_digest, register_champions
from transferlab.tracking.tracker import Tracker, tracked

# a named logger: under ``python -m`` this module's __name__ is "__main__", outside the
# ``transferlab`` logger that transferlab.core.logs configures
log = logging.getLogger("transferlab.stages.evaluate")


def main() -> None:
    args = _arguments().parse_args()
    params = strategies.resolve(load_params(args.params))
    seed_everything(0, params.common.num_threads,
                    params.common.gemm_branch, params.common.determinism)
    device = resolve_device(params.common.device)
    inputs = StudyInputs.open(params, Path(args.data), Path(args.models), Path(args.runs))
    tracker = Tracker(params.tracking, "evaluate",
                      {"transferlab.device": device_description(device)},
                      {"evaluate": to_dict(params.evaluate)}, dvc_stage="evaluate")
    outputs = (args.metrics, args.headline, args.runs_table, args.plots)
    with tracked(tracker), staged_outputs(*outputs) as staged:
        evaluation = evaluate_study(inputs, params, device)
        evaluation.write(*staged)
        child_ids = mirror_evaluate(tracker, evaluation.report)
        register_champions(tracker, evaluation.champions(), inputs.target,
                           child_ids)
        tracker.set_tags({"transferlab.outputs_digest": outputs_digest(
            dict(zip(outputs, staged, strict=True)))})
    write_timing(args.timing or timing_path(Path(args.metrics).with_suffix("")),
                 {"scores": evaluation.score_timing, "seconds": evaluation.part_seconds})
    log.info(evaluation.line())


def _arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=plain(__doc__))
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
    return parser


if __name__ == "__main__":
    run_stage(main)
