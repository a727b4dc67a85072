"""What MLflow tracking costs a stage: one transfer stage run with tracking off and on,
alternating, side by side in one session (the machine is noisy: compare medians).

Needs a finished `dvc repro` (prepared data and source models in the workspace). Writes into a
temporary directory and a temporary sqlite store; the workspace is untouched.

    python benchmarks/tracking_overhead.py [--strategy finetune] [--source printed_digits]
        [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def run_stage(params: Path, out: Path, strategy: str, source: str, env: dict) -> float:
    cmd = [sys.executable, str(ROOT / "stages" / "transfer.py"), "--params", str(params),
           "--strategy", strategy, "--source", source,
           "--source-model", str(ROOT / "models" / source / "model.pt"),
           "--source-data", str(ROOT / "data" / "prepared" / "sources" / source),
           "--target", str(ROOT / "data" / "prepared" / "target"), "--run-dir", str(out),
           "--stage", f"transfer@{source}", "--timing", str(out) + ".timing.json"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--strategy", default="finetune")
    parser.add_argument("--source", default="printed_digits")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="transferlab-tracking-"))
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp / 'mlflow.db'}",
               TRANSFERLAB_EXECUTION="bench")
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    files = {}
    for enabled in (False, True):
        base["tracking"]["enabled"] = enabled
        files[enabled] = tmp / f"params-{enabled}.yaml"
        files[enabled].write_text(yaml.safe_dump(base))
    times: dict[bool, list[float]] = {False: [], True: []}
    run_stage(files[True], tmp / "warm", args.strategy, args.source, env)  # creates the store
    for i in range(args.repeats):
        for enabled in (False, True):
            times[enabled].append(run_stage(files[enabled], tmp / f"out-{enabled}-{i}",
                                            args.strategy, args.source, env))
    off, on = statistics.median(times[False]), statistics.median(times[True])
    print(f"{args.source}/{args.strategy}, {args.repeats} runs each (median)")
    print(f"tracking off  {off:8.2f} s   {[round(t, 2) for t in times[False]]}")
    print(f"tracking on   {on:8.2f} s   {[round(t, 2) for t in times[True]]}")
    print(f"overhead      {on - off:8.2f} s   ({(on - off) / off:+.1%} of the untracked stage)")


if __name__ == "__main__":
    main()
