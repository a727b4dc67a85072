"""Wall time and peak memory per stage of `dvc repro` from nothing, and the time of a no-op
`dvc repro`, for the default and, side by side in the same run, each ``--scenario`` (e.g. the
former default, ``digits_study``); with ``--compare REV``, the same measurement of git revision
REV (e.g. ``HEAD~1``) as committed.

Runs in temporary copies (of the working tree, and of REV as committed), so the workspace's
outputs, lock file and MLflow store are untouched; with ``--results`` each measured scenario's
report, figures, headline metrics and provenance also go to ``docs/results/<name>/`` (what
``make study`` writes), so a study is measured and published by one run. Usage:

    python benchmarks/pipeline_speed.py [--scenario NAME ...] [--results] [--compare REV]
                                        [--keep] [--json F]

Per-stage time is the wall time between DVC announcing a stage and announcing the next one
(or exiting), so it includes each stage's Python start-up. Per-stage peak memory is the peak
resident memory of the stage's process, which each stage writes into its timing file
(`timing/`); a revision from before that was recorded shows none.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from transferlab import scenarios
from transferlab.core.workspace import copy_worktree, export_revision, run_repro
from transferlab.reporting.costs import stage_peak_rss

ROOT = Path(__file__).resolve().parents[1]


def timed_repro(repo: Path) -> tuple[float, list[tuple[str, float]]]:
    """Total seconds and [(stage, seconds)] of one `dvc repro` in ``repo`` (its log in
    ``repo/repro.log``); exits with the log's tail if it fails."""
    row = run_repro(repo, [], repo / "repro.log")
    if row["status"] != "ok":
        sys.exit("dvc repro failed:\n" + "\n".join(row["log_tail"]))
    return row["seconds"], list(row["stage_seconds"].items())


def measure(repo: Path, params: str | None) -> dict:
    """Run `dvc repro` from nothing, then a no-op one, in ``repo``. Returns the times."""
    (repo / "dvc.lock").unlink(missing_ok=True)  # from nothing
    if params:
        shutil.copy(params, repo / "params.yaml")
    total, stages = timed_repro(repo)
    return with_noop(repo, total, stages)


def with_noop(repo: Path, total: float, stages: list[tuple[str, float]]) -> dict:
    noop, ran = timed_repro(repo)
    return {"total_seconds": total, "stages": dict(stages), "noop_seconds": noop,
            "noop_stages_run": len(ran), "peak_rss_bytes": stage_peak_rss(repo / "timing")}


def measure_scenario(name: str, tmp: Path, results: bool) -> dict:
    """The scenario composed onto the working tree's params, from nothing, then a no-op run;
    with ``results``, its docs/results/<name>/ written from the same run."""
    scenario = scenarios.load(name, ROOT / "scenarios")
    repo, row = scenarios.reproduce(scenario, ROOT, tmp / name)
    if results:
        command = "python benchmarks/pipeline_speed.py --results (" + " ".join(sys.argv[1:]) + ")"
        print(f"wrote {scenarios.write_results(scenario, ROOT, repo, row, command=command)}",
              flush=True)
    return with_noop(repo, row["seconds"], list(row["stage_seconds"].items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=None, help="params file to use (default: the repo's)")
    parser.add_argument("--scenario", action="append", default=[], metavar="NAME",
                        help="also measure this scenario (scenarios/NAME.yaml) in the same run")
    parser.add_argument("--results", action="store_true",
                        help="write docs/results/<name>/ for the default and each --scenario")
    parser.add_argument("--compare", metavar="REV", default=None,
                        help="also measure this git revision as committed (e.g. HEAD~1)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="transferlab-bench-"))
    try:
        # one MLflow store for every copy: the workspace's stays as it is
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
        if args.params:
            repo = tmp / "repo"
            repo.mkdir()
            copy_worktree(ROOT, repo)
            runs = {"working tree": measure(repo, args.params)}
        else:
            runs = {"working tree": measure_scenario("default", tmp, args.results)}
        for name in args.scenario:
            runs[f"scenario {name}"] = measure_scenario(name, tmp, args.results)
        if args.compare:
            commit = export_revision(ROOT, args.compare, tmp / "compare")
            runs[f"{args.compare} ({commit[:7]})"] = measure(tmp / "compare", args.params)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    names = list(runs)
    stages = list(dict.fromkeys(s for r in runs.values() for s in r["stages"]))
    print(f"{'stage':40s}" + "".join(f" {n[:22]:>22s}" for n in names) + "   (seconds)")
    for stage in stages:
        print(f"{stage:40s}" + "".join(
            f" {runs[n]['stages'].get(stage, float('nan')):22.1f}" for n in names))
    print(f"{'TOTAL dvc repro from nothing':40s}"
          + "".join(f" {runs[n]['total_seconds']:22.1f}" for n in names))
    print(f"{'no-op dvc repro':40s}" + "".join(f" {runs[n]['noop_seconds']:22.2f}" for n in names))
    for other in names[1:]:
        a, b = runs[names[0]]["total_seconds"], runs[other]["total_seconds"]
        print(f"from nothing: the working tree's default takes {a / b:.2f}x the time of "
              f"{other}")
    print(f"\npeak resident memory per stage, working tree (MB): largest "
          f"{max(runs[names[0]]['peak_rss_bytes'].values(), default=0) / 2**20:.0f}")
    for name, peak in runs[names[0]]["peak_rss_bytes"].items():
        print(f"  {name:38s} {peak / 2**20:8.0f}")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2) + "\n")


if __name__ == "__main__":
    main()
