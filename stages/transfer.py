"""Stage transfer: adapt one source with one strategy at every label budget and seed."""

import argparse
import itertools
import logging
from collections.abc import Callable
from pathlib import Path

from transferlab.adapt import strategies
from transferlab.adapt.execution import Executor
from transferlab.adapt.replicates import (
    devices_used,
    load_mapping,
    replicate_line,
    result_line,
    run_replicates,
)
from transferlab.adapt.target import load_target
from transferlab.config.params import to_dict
from transferlab.core.helptext import plain
from transferlab.core.runtime import (
    device_description,
    dumps_json,
    progress,
    resolve_device,
    run_stage,
    seed_everything,
    sha256_file,
    staged_outputs,
    timing_path,
    write_timing,
)
from transferlab.models.resolved import load_params
from transferlab.tracking.mirror import mirror_transfer_record, outputs_digest
from transferlab.tracking.tracker import Tracker, tracked

log = logging.getLogger("transferlab.stages.transfer")  # under transferlab: run_stage's handler


def main() -> None:
    args = _arguments().parse_args()
    params = strategies.resolve(load_params(args.params))
    cfg = strategies.block(params.transfer, args.strategy)
    seed_everything(params.pretrain.seed, params.common.num_threads,
                    params.common.gemm_branch, params.common.determinism)
    device = resolve_device(params.common.device)
    target = load_target(args.target)
    source_model, source_data = _path(args.source_model), _path(args.source_data)
    mapping = load_mapping(source_data)
    source = args.source or "none"
    tracker = Tracker(params.tracking, "transfer", {
        "transferlab.source": source, "transferlab.strategy": args.strategy,
        "transferlab.device": device_description(device)}, {args.strategy: to_dict(cfg)},
        dvc_stage=args.stage)
    on_result = _reporter(tracker, source, args.strategy, len(list(target.replicates())))
    arch = {"arch": params.pretrain.arch, "width": params.pretrain.width}
    executor = Executor(params.execution, params.common.num_threads, params.common.gemm_branch,
                        params.common.device, params.common.determinism)
    # connected first: an unreachable cluster fails the stage before anything is written
    with executor, tracked(tracker), staged_outputs(args.out) as (out,):
        if source_model:
            tracker.link_source_run(sha256_file(source_model))
        out.mkdir(parents=True)
        result = run_replicates(args.strategy, cfg, source_model, target, device, out, arch,
                                params.selection, on_result, mapping, source_data, executor)
        timing = result.pop("timing")
        ran_on = devices_used(timing)
        if executor.backend == "ray" and ran_on:  # tasks ran there, not in this process
            tracker.set_tags({"transferlab.device": ", ".join(ran_on)})
        (out / "runs.json").write_text(dumps_json({**result, "source": source}))
        if result["skipped"]:
            tracker.set_tags({"transferlab.skipped": result["skipped"]})
        tracker.set_tags({"transferlab.outputs_digest": outputs_digest({args.out: out})})
    write_timing(args.timing or timing_path(args.out),
                 {**timing, "source": source, "strategy": args.strategy})
    log.info(result_line(source, args.strategy, result))


def _reporter(tracker: Tracker, source: str, strategy: str,
              total: int) -> Callable[[dict, object, str], None]:
    """What each finished replicate does: a progress line, and its record to tracking."""
    done = itertools.count(1)

    def on_result(record: dict, model: object, trained_on: str) -> None:
        progress(replicate_line(source, strategy, record, next(done), total))
        mirror_transfer_record(tracker, source, strategy, record, trained_on)

    return on_result


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def _arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=plain(__doc__))
    parser.add_argument("--params", default="params.yaml", help="params file")
    parser.add_argument("--strategy", required=True, help="a registered strategy name")
    parser.add_argument("--stage", required=True, help="this stage's name in dvc.yaml")
    parser.add_argument("--source", default=None, help="source name (omit for scratch)")
    parser.add_argument("--source-model", default=None, help="source checkpoint")
    parser.add_argument("--source-data", default=None, help="prepared source directory")
    parser.add_argument("--target", required=True, help="prepared target directory")
    parser.add_argument("--out", required=True, help="output directory of this strategy")
    parser.add_argument("--timing", default=None, help="wall time and memory JSON, not a DVC "
                        "output (default: timing/<out>.json)")
    return parser


if __name__ == "__main__":
    run_stage(main)
