"""Stage transfer: adapt one source with each of its strategies at every label budget and seed.

One process runs every strategy the grid gives a source (``grid.strategies``, and
``grid.methods.strategies`` where ``grid.methods.sources`` lists it), each into
``<out>/<strategy>/``, so the stage pays Python's, torch's and the optimizer's start-up once
(``benchmarks/pipeline_speed.py``). Each replicate seeds its own generators, so a strategy's
bytes do not depend on the strategies run before it in the process. ``--strategy`` names
strategies explicitly (the baseline: ``--strategy scratch``).
"""

import argparse
import dataclasses
import itertools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
from transferlab.models.nets import checkpoint_config
from transferlab.models.resolved import load_params
from transferlab.tracking.mirror import mirror_transfer_record, outputs_digest
from transferlab.tracking.tracker import Tracker, tracked

log = logging.getLogger("transferlab.stages.transfer")  # under transferlab: run_stage's handler


def main() -> None:
    args = _arguments().parse_args()
    params = strategies.resolve(load_params(args.params))
    names = args.strategy or strategies.grid_strategies(params.grid, args.source)
    if args.run_dir and len(names) != 1:
        raise SystemExit(f"--run-dir holds one strategy's runs; got {len(names)}: "
                         f"{', '.join(names)} (use --out DIR for one folder per strategy)")
    seed_everything(params.pretrain.seed, params.common.num_threads,
                    params.common.gemm_branch, params.common.determinism)
    device = resolve_device(params.common.device)
    source_model, source_data = _path(args.source_model), _path(args.source_data)
    # the target as the source's model reads it (a text source of another tokenizer: its own
    # encoding of the same splits); scratch's is pretrain.arch's
    target = load_target(args.target, checkpoint_config(source_model)["arch"]
                         if source_model else None)
    mapping = load_mapping(source_data)
    arch = {"arch": params.pretrain.arch, "width": params.pretrain.width,
            "pooling": params.pretrain.pooling}
    executor = Executor(params.execution, params.common.num_threads, params.common.gemm_branch,
                        params.common.device, params.common.determinism)
    final = Path(args.run_dir or args.out)
    # connected first: an unreachable cluster fails the stage before anything is written;
    # the whole folder is staged, so a failing strategy leaves none of the stage's outputs
    with executor, staged_outputs(final) as (staged,):
        staged.mkdir(parents=True)
        for i, strategy in enumerate(names, 1):
            if len(names) > 1:
                log.info("transfer %s/%s: strategy %d of %d", args.source or "none", strategy,
                         i, len(names))
            if args.run_dir:
                into = (final, staged, Path(args.timing) if args.timing else timing_path(final))
            else:
                timing = Path(args.timing) / f"{strategy}.json" if args.timing else None
                into = (final / strategy, staged / strategy,
                        timing or timing_path(final / strategy))
            job = _Job(strategy, strategies.block(params.transfer, strategy), args.source,
                       source_model, source_data, mapping, *into)
            _run_strategy(job, params, args.stage, device, target, arch, executor)


@dataclasses.dataclass(frozen=True)
class _Job:
    strategy: str
    cfg: Any
    source: str | None
    source_model: Path | None
    source_data: Path | None
    mapping: dict | None
    final: Path  # where the strategy's folder lands (as DVC sees it)
    out: Path  # where it is written meanwhile (inside the staged folder)
    timing: Path  # its wall time and memory (not a DVC output)


def _run_strategy(job: _Job, params: Any, stage: str, device: Any, target: Any, arch: dict,
                  executor: Executor) -> None:
    """One strategy's replicates into ``job.out``, with its own MLflow run and timing file."""
    source = job.source or "none"
    tracker = Tracker(params.tracking, "transfer", {
        "transferlab.source": source, "transferlab.strategy": job.strategy,
        "transferlab.device": device_description(device)}, {job.strategy: to_dict(job.cfg)},
        dvc_stage=stage)
    on_result = _reporter(tracker, source, job.strategy, len(list(target.replicates())))
    with tracked(tracker):
        if job.source_model:
            tracker.link_source_run(sha256_file(job.source_model))
        job.out.mkdir(exist_ok=True)
        result = run_replicates(job.strategy, job.cfg, job.source_model, target, device, job.out,
                                arch, params.selection, on_result, job.mapping, job.source_data,
                                executor)
        timing = result.pop("timing")
        ran_on = devices_used(timing)
        if executor.backend == "ray" and ran_on:  # tasks ran there, not in this process
            tracker.set_tags({"transferlab.device": ", ".join(ran_on)})
        (job.out / "runs.json").write_text(dumps_json({**result, "source": source}))
        if result["skipped"]:
            tracker.set_tags({"transferlab.skipped": result["skipped"]})
        tracker.set_tags({"transferlab.outputs_digest": outputs_digest({job.final: job.out})})
    write_timing(job.timing, {**timing, "source": source, "strategy": job.strategy})
    log.info(result_line(source, job.strategy, result))


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
    parser.add_argument("--strategy", action="append", default=None,
                        help="a registered strategy name; repeat for several (default: the "
                             "grid's strategies for --source)")
    parser.add_argument("--stage", required=True, help="this stage's name in dvc.yaml")
    parser.add_argument("--source", default=None, help="source name (omit for scratch)")
    parser.add_argument("--source-model", default=None, help="source checkpoint")
    parser.add_argument("--source-data", default=None, help="prepared source directory")
    parser.add_argument("--target", required=True, help="prepared target directory")
    into = parser.add_mutually_exclusive_group(required=True)
    into.add_argument("--out", help="output directory: one folder per strategy")
    into.add_argument("--run-dir", help="the output folder of a single strategy (the "
                      "baseline's layout: runs/scratch)")
    parser.add_argument("--timing", default=None, help="wall time and memory, not DVC outputs: "
                        "a folder of <strategy>.json under --out (default: timing/<out>/), the "
                        "JSON file under --run-dir (default: timing/<run-dir>.json)")
    return parser


if __name__ == "__main__":
    run_stage(main)
