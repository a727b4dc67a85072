"""Stage report: one Markdown and one self-contained HTML report of the whole pipeline."""

import argparse
import logging

from transferlab.core.helptext import plain
from transferlab.core.runtime import run_stage, staged_outputs, timing_path, write_timing
from transferlab.models.resolved import load_params
from transferlab.provenance.record import collect_provenance
from transferlab.reporting import report

log = logging.getLogger("transferlab.stages.report")  # under transferlab: run_stage's handler


def main() -> None:
    parser = argparse.ArgumentParser(description=plain(__doc__))
    parser.add_argument("--params", default="params.yaml", help="params file")
    parser.add_argument("--metrics", required=True, help="evaluate's metrics JSON")
    parser.add_argument("--runs-table", required=True, help="evaluate's per-run CSV")
    parser.add_argument("--plots", required=True, help="evaluate's directory of plot CSVs")
    parser.add_argument("--models", required=True, help="directory of source models")
    parser.add_argument("--data", required=True, help="prepared data directory")
    parser.add_argument("--out", required=True, help="output report directory")
    args = parser.parse_args()

    params = load_params(args.params)
    inputs = report.load_inputs(args.metrics, args.runs_table, args.plots, args.models,
                                args.data, sorted(params.prepare.sources))
    provenance = collect_provenance(args.params, args.data)
    with staged_outputs(args.out) as (out,):
        written = report.write_report(out, inputs, params, provenance)
        n_figures = len(list(written["figures"].glob("*.png")))
    log.info("report: wrote %s/report.md, report.html and %d figures", args.out, n_figures)
    write_timing(timing_path(args.out), {})  # its peak memory


if __name__ == "__main__":
    run_stage(main)
