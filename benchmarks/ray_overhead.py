"""What the Ray backend and MLflow logging cost per task, beside the stage process's own loop.

Starts a real two-node Ray cluster on loopback (tests/ray_cluster.py: one CPU per node), then,
side by side in one session (the machine is noisy):

- scheduling: N no-op tasks through :class:`transferlab.adapt.execution.Executor` on the cluster
  (submit, run, collect in order), and the same N calls through the local backend;
- logging: N child runs, as a transfer stage logs one per replicate
  (:meth:`transferlab.tracking.tracker.Tracker.child`: tags, 2 params, 12 metrics), into a fresh
  sqlite store, in the stage process (only the stage process logs).

    python -m benchmarks.ray_overhead [--tasks 1000 10000] [--log-runs 1000] [--out FILE]

Prints a table and writes the numbers as JSON to --out (default: ray_overhead.json in a
temporary folder). The workspace is untouched.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from tests.ray_cluster import (  # python -m benchmarks.ray_overhead: the root on sys.path
    DRIVER_ENV,
    holder,
)

os.environ.update(DRIVER_ENV)

from transferlab.adapt.execution import Executor
from transferlab.config.params import ExecutionParams, TrackingParams

ROOT = Path(__file__).resolve().parents[1]


def noop(shared: object, item: int) -> int:
    return item


def time_map(executor: Executor, n: int) -> float:
    start = time.perf_counter()
    for _ in executor.map(noop, None, range(n)):
        pass
    return time.perf_counter() - start


def time_logging(n: int, store: Path) -> float:
    from transferlab.tracking.tracker import Tracker, tracked

    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}"
    os.environ["TRANSFERLAB_EXECUTION"] = "bench"
    metrics = {k: 0.5 for k in ("accuracy", "best_val_accuracy", "best_val_loss", "best_epoch",
                                "epochs_run", "selection_score", "steps", "trainable_params",
                                "train_flops", "f1_macro", "recall_macro", "seconds")}
    with tracked(Tracker(TrackingParams(live=True, log_models=False), "transfer",
                         {"transferlab.strategy": "noop"})) as tracker:
        tracker.child("warm-up", {}, {}, metrics)
        start = time.perf_counter()
        for i in range(n):
            tracker.child(f"noop b=1 s={i}", {"transferlab.seed": str(i),
                                              "transferlab.budget": "1"},
                          {"budget": 1, "seed": i}, metrics)
        seconds = time.perf_counter() - start
    assert tracker.failures == 0, tracker.last_error
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--log-runs", type=int, nargs="+", default=[1000])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tlbench", dir="/tmp"))  # short: Ray's socket paths
    service, info = holder(tmp / "ray", tmp / "cluster.log")
    results: dict = {"nodes": 2, "cpus_per_node": 1, "cpu_count": os.cpu_count(),
                     "scheduling": [], "logging": []}
    try:
        with service.start(timeout=120):
            ray_params = ExecutionParams(backend="ray", address=info()["address"], num_cpus=1)
            with Executor(ray_params, 1, "compatible") as on_ray:
                time_map(on_ray, 20)  # workers start, the runtime env is set up
                local = Executor(ExecutionParams(), 1, "compatible")
                for n in args.tasks:
                    ray_s, local_s = time_map(on_ray, n), time_map(local, n)
                    results["scheduling"].append({
                        "tasks": n, "ray_seconds": ray_s, "local_seconds": local_s,
                        "ray_ms_per_task": 1000 * ray_s / n,
                        "local_ms_per_task": 1000 * local_s / n})
        for n in args.log_runs:
            seconds = time_logging(n, tmp / f"mlflow-{n}.db")
            results["logging"].append({"runs": n, "seconds": seconds,
                                       "ms_per_run": 1000 * seconds / n})
    finally:
        out = args.out or tmp / "ray_overhead.json"
        out.write_text(json.dumps(results, indent=2) + "\n")
        for key in ("scheduling", "logging"):
            for row in results[key]:
                print(key, {k: round(v, 3) if isinstance(v, float) else v
                            for k, v in row.items()})
        print(f"written: {out}")
        shutil.rmtree(tmp / "ray", ignore_errors=True)


if __name__ == "__main__":
    main()
