"""Stage pretrain-source: train one candidate source model on its prepared source data."""

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from transferlab.config.params import to_dict
from transferlab.core.helptext import plain
from transferlab.core.runtime import (
    device_description,
    dumps_json,
    resolve_device,
    run_stage,
    seed_everything,
    sha256_file,
    staged_outputs,
    timing_path,
    write_timing,
)
from transferlab.data.store import PreparedDataset
from transferlab.models.nets import save_checkpoint
from transferlab.models.resolved import load_params
from transferlab.tracking.mirror import mirror_pretrain, outputs_digest
from transferlab.tracking.tracker import Tracker, tracked
from transferlab.training import distributed
from transferlab.training.pretrain import pretrain_source

log = logging.getLogger("transferlab.stages.pretrain_source")  # run_stage's handler


def main() -> None:
    parser = argparse.ArgumentParser(description=plain(__doc__))
    parser.add_argument("--params", default="params.yaml", help="params file")
    parser.add_argument("--source", required=True, help="source name (a key of prepare.sources)")
    parser.add_argument("--data", required=True, help="prepared source directory")
    parser.add_argument("--model", required=True, help="output checkpoint (.pt)")
    parser.add_argument("--metrics", required=True, help="output metrics JSON")
    parser.add_argument("--history", required=True, help="output per-epoch history JSON")
    parser.add_argument("--timing", default=None, help="wall time and memory JSON, not a DVC "
                        "output (default: timing/<model folder>.json)")
    args = parser.parse_args()

    params = load_params(args.params)
    if args.source not in params.prepare.sources:
        raise SystemExit(f"error: --source {args.source!r} is not in prepare.sources "
                         f"({', '.join(params.prepare.sources)})")
    if params.execution.ddp_procs > 1 and not distributed.is_rank():  # start the ranks
        raise SystemExit(distributed.launch(params.execution.ddp_procs, sys.argv))
    seed_everything(params.pretrain.seed, params.common.num_threads,
                    params.common.gemm_branch, params.common.determinism)
    device = distributed.rank_device(resolve_device(params.common.device))
    world = distributed.init(device)
    data = PreparedDataset.open(args.data)
    used = {"pretrain": to_dict(params.pretrain),
            "source": to_dict(params.prepare.sources[args.source])}
    tags = {"transferlab.source": args.source, "transferlab.device": device_description(device)}
    if world.distributed:
        tags["transferlab.ddp_procs"] = str(world.size)
    # only rank 0 writes outputs and logs; the other ranks train alongside it
    tracking = params.tracking if world.main else replace(params.tracking, enabled=False)
    tracker = Tracker(tracking, "pretrain", tags, used, dvc_stage=f"pretrain@{args.source}")
    outputs = (args.model, args.metrics, args.history)
    with tracked(tracker), staged_outputs(*outputs) if world.main else _nowhere(3) as (
            model_path, metrics_path, history_path):
        model, config, metrics, timing = pretrain_source(
            params.pretrain, data, device, args.source, params.prepare.sources[args.source].init,
            world)
        if world.main:
            history = {"history": timing.pop("history", [])}  # deterministic: a DVC output
            save_checkpoint(model, model_path, config)
            metrics_path.write_text(dumps_json(metrics))
            history_path.write_text(dumps_json(history))
            mirror_pretrain(tracker, metrics, history)
            tracker.log_model(tracker.run_id, model, data.example_input(), "source_model")
            tracker.set_tags({"transferlab.checkpoint_sha256": sha256_file(model_path),
                              "transferlab.outputs_digest": outputs_digest(
                                  dict(zip(outputs, (model_path, metrics_path, history_path),
                                           strict=True)))})
    distributed.finish(world)
    if not world.main:
        return
    write_timing(args.timing or timing_path(Path(args.model).parent),
                 {**timing, "source": args.source})
    log.info("pretrain %s: %s", args.source, dumps_json(metrics.get("test", metrics)).strip())


@contextlib.contextmanager
def _nowhere(n: int) -> Iterator[tuple[None, ...]]:
    """What a rank other than 0 writes into: nothing."""
    yield (None,) * n

if __name__ == "__main__":
    run_stage(main)
