"""Stage transfer: adapt one source with one strategy at every label budget and seed."""

import argparse
import itertools
import json
from pathlib import Path

from transferlab.adapt import strategies
from transferlab.adapt.execution import Executor
from transferlab.adapt.replicates import replicate_line, run_replicates
from transferlab.adapt.target import load_target
from transferlab.config.params import load_params, to_dict
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
from transferlab.tracking.mirror import mirror_transfer_record, outputs_digest
from transferlab.tracking.tracker import Tracker, tracked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
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
    args = parser.parse_args()

    params = strategies.resolve(load_params(args.params))
    cfg = strategies.block(params.transfer, args.strategy)
    seed_everything(params.pretrain.seed, params.common.num_threads,
                    params.common.gemm_branch, params.common.determinism)
    device = resolve_device(params.common.device)
    target = load_target(args.target)
    mapping = None
    if args.source_data:
        mapping = json.loads((Path(args.source_data) / "manifest.json").read_text())
    source_name = args.source or "none"
    tags = {"transferlab.source": source_name, "transferlab.strategy": args.strategy,
            "transferlab.device": device_description(device)}
    tracker = Tracker(params.tracking, "transfer", tags, {args.strategy: to_dict(cfg)},
                      dvc_stage=args.stage)

    total, done = len(list(target.replicates())), itertools.count(1)

    def on_result(record: dict, model: object, trained_on: str) -> None:
        progress(replicate_line(source_name, args.strategy, record, next(done), total))
        mirror_transfer_record(tracker, source_name, args.strategy, record, trained_on)

    arch = {"arch": params.pretrain.arch, "width": params.pretrain.width}
    executor = Executor(params.execution, params.common.num_threads, params.common.gemm_branch,
                        params.common.device, params.common.determinism)
    # connected first: an unreachable cluster fails the stage before anything is written
    with executor, tracked(tracker), staged_outputs(args.out) as (out,):
        if args.source_model:
            tracker.link_source_run(sha256_file(args.source_model))
        out.mkdir(parents=True)
        source_model = Path(args.source_model) if args.source_model else None
        result = run_replicates(args.strategy, cfg, source_model, target, device, out, arch,
                                params.selection, on_result, mapping,
                                Path(args.source_data) if args.source_data else None, executor)
        timing = result.pop("timing")
        ran_on = sorted({t["device"] for t in timing.values() if isinstance(t, dict)})
        if executor.backend == "ray" and ran_on:  # tasks ran there, not in this process
            tracker.set_tags({"transferlab.device": ", ".join(ran_on)})
        (out / "runs.json").write_text(dumps_json({**result, "source": source_name}))
        if result["skipped"]:
            tracker.set_tags({"transferlab.skipped": result["skipped"]})
        tracker.set_tags({"transferlab.outputs_digest": outputs_digest({args.out: out})})
    write_timing(args.timing or timing_path(args.out),
                 {**timing, "source": source_name, "strategy": args.strategy})
    status = f"skipped: {result['skipped']}" if result["skipped"] else f"{len(result['runs'])} runs"
    print(f"transfer {source_name}/{args.strategy}: {status}")


if __name__ == "__main__":
    run_stage(main)
