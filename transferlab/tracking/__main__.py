"""``python -m transferlab.tracking``: the MLflow mirror's command line.

The mirror's commands live here, above both :mod:`~transferlab.tracking.tracker` (which writes
runs) and :mod:`~transferlab.tracking.mirror` (which rebuilds them from DVC outputs), so neither
of those imports the other's caller.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from pathlib import Path

from transferlab.config.params import load_params
from transferlab.core.helptext import plain
from transferlab.core.run_context import EXECUTION_ENV, execution_id, repo_root
from transferlab.core.runtime import TIMING_DIR, run_stage
from transferlab.tracking.mirror import finish_pipeline, sync
from transferlab.tracking.tracker import PIPELINE_STATUSES, replay_journals, ui_url

log = logging.getLogger("transferlab.tracking")  # not __name__: "__main__" under python -m


def main(argv: list[str] | None = None) -> None:
    """``python -m transferlab.tracking replay | sync | finish --status S | ui-url``: write the
    runs that stages journaled (the `mirror` stage); rebuild the MLflow mirror from the DVC
    outputs; end the pipeline run (with this machine's timing/ summary); print the UI link to
    the experiment's training runs."""
    parser = argparse.ArgumentParser(prog="python -m transferlab.tracking",
                                     description=plain(main.__doc__))
    parser.add_argument("command", choices=["replay", "sync", "finish", "ui-url"])
    parser.add_argument("--params", default="params.yaml", help="params file")
    parser.add_argument("--status", default="FINISHED", choices=PIPELINE_STATUSES,
                        help="finish: how the pipeline run ends")
    parser.add_argument("--timing", default=str(TIMING_DIR), help="finish: the timing folder")
    args = parser.parse_args(argv)

    def _main() -> None:
        configured = load_params(args.params).tracking
        if args.command == "replay":  # the `mirror` stage: nothing to do with tracking off
            if configured.enabled:
                stages = replay_journals(configured)
                # then tie the runs to dvc.lock (this execution's copy of the repo: the
                # stage's working directory, also under `dvc exp run --temp`)
                os.environ.setdefault(EXECUTION_ENV, execution_id())
                result = sync(Path.cwd(), configured)
                log.info("mirror: %d stage runs written to MLflow; %d stages marked as skipped "
                         "by DVC", len(stages), len(result["skipped_marked"]))
            return
        # an explicit sync/finish mirrors even when the stages ran with tracking switched off
        params = dataclasses.replace(configured, enabled=True)
        if args.command == "ui-url":  # the link is the answer: stdout
            print(f"MLflow UI, training runs of {params.experiment!r}: "
                  f"{ui_url(params.experiment)}")
        elif args.command == "finish":
            replay_journals(params)  # the stages that ran, a failed one included
            if args.status == "FINISHED":  # complete the mirror first (idempotent)
                sync(repo_root(), params)
            run_id = finish_pipeline(params, args.status, Path(args.timing))
            if run_id:
                log.info("pipeline run %s: %s", run_id, args.status)
            else:
                log.info("no pipeline run")
        else:
            replay_journals(params)  # what stages journaled first, then what is still missing
            result = sync(repo_root(), params)
            for key, stages in result.items():
                log.info("%-15s %3d  %s", key, len(stages), " ".join(stages))

    run_stage(_main)



if __name__ == "__main__":
    main()
