"""Stage prepare: build the target and every candidate source dataset from params."""

import argparse
import logging

from transferlab.core.helptext import plain
from transferlab.core.runtime import (
    run_stage,
    seed_everything,
    staged_outputs,
    timing_path,
    write_timing,
)
from transferlab.data.prepare import prepare_all
from transferlab.models.resolved import load_params

log = logging.getLogger("transferlab.stages.prepare")  # under transferlab: run_stage's handler


def main() -> None:
    parser = argparse.ArgumentParser(description=plain(__doc__))
    parser.add_argument("--params", default="params.yaml", help="params file")
    parser.add_argument("--out", required=True, help="output directory (e.g. data/prepared)")
    args = parser.parse_args()

    params = load_params(args.params)
    seed_everything(params.prepare.seed, params.common.num_threads,
                    params.common.gemm_branch, params.common.determinism)
    with staged_outputs(args.out) as (out,):
        manifests = prepare_all(params, out)
    for name, manifest in manifests.items():
        sizes = {split: sum(c.values()) for split, c in manifest.get("counts", {}).items()}
        log.info("prepared %s: %d classes, %s", name, len(manifest["class_names"]), sizes)
    write_timing(timing_path(args.out), {})  # its wall time is dvc's; its peak memory


if __name__ == "__main__":
    run_stage(main)
