"""What portable CPU determinism costs: ``common.determinism: portable`` against ``fast``, side
by side in one run (these machines are noisy; only ratios taken together mean anything).

Two measurements:

1. a training step (forward, backward, AdamW) and a batch of inference of the default's model
   (``pretrain.arch``/``width`` of params.yaml) at the pretraining and fine-tuning batch sizes,
   the modes interleaved, best of ``--repeats`` rounds each;
2. (unless ``--no-pipeline``) the default pipeline, ``dvc repro`` from nothing in temporary
   copies of the working tree, once per mode (``common.determinism`` overridden as a scenario
   would), with per-stage times.

Usage:  python benchmarks/determinism_cost.py [--repeats 3] [--no-pipeline] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import transferlab  # noqa: F401  (the CPU pins, before torch loads)
from transferlab import scenarios
from transferlab.config.params import load_params
from transferlab.core import cpu_pinning
from transferlab.core.runtime import seed_everything
from transferlab.models.nets import build_model
from transferlab.training.optim import AdamW

ROOT = Path(__file__).resolve().parents[1]

MODES = ("fast", "portable")


def training_step_seconds(model: torch.nn.Module, opt: torch.optim.Optimizer, batch: int,
                          g: torch.Generator, steps: int = 30) -> float:
    """Seconds per training step (forward, backward, ``opt.step()``) on a fixed batch of 16x16
    images, after 3 warm-up steps."""
    x, y = torch.randn(batch, 1, 16, 16, generator=g), torch.arange(batch) % 10
    for i in range(steps + 3):
        if i == 3:
            start = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return (time.perf_counter() - start) / steps


def step_times(arch: str, width: int, batch: int, steps: int = 30) -> tuple[float, float]:
    """(seconds per training step, seconds per inference of 512 images) in the current mode,
    with the project's AdamW (what training runs)."""
    model = build_model(arch, 10, 0.5, 0.3, 0, width=width)
    opt = AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    train = training_step_seconds(model, opt, batch, g, steps)
    model.eval()
    xe = torch.randn(512, 1, 16, 16, generator=g)
    with torch.inference_mode():
        model(xe)
        start = time.perf_counter()
        for _ in range(5):
            model(xe)
    return train, (time.perf_counter() - start) / 5


def kernels(repeats: int) -> dict:
    params = load_params(ROOT / "params.yaml")
    arch, width = params.pretrain.arch, params.pretrain.width
    seed_everything(0, params.common.num_threads, params.common.gemm_branch)
    rows = {}
    for batch in sorted({params.pretrain.batch_size, params.transfer["finetune"]["batch_size"]}):
        best: dict[str, tuple[float, float]] = {}
        for _ in range(repeats):
            for mode in MODES:  # interleaved: drift of the machine hits both
                cpu_pinning.set_determinism(mode)
                t = step_times(arch, width, batch)
                best[mode] = min(best.get(mode, t), t)
        rows[f"{arch} width {width}, batch {batch}"] = best
    return rows


def pipeline() -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="transferlab-determinism-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
    out = {}
    try:
        for mode in MODES:
            scenario = scenarios.Scenario(f"default-{mode}", "", (f"common.determinism='{mode}'",))
            print(f"dvc repro of the default, determinism {mode} ...", flush=True)
            _, row = scenarios.reproduce(scenario, ROOT, tmp / mode)
            out[mode] = {"seconds": row["seconds"], "stages": row["stage_seconds"]}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-pipeline", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = {"cpu": cpu_pinning.cpu_model(), "threads": torch.get_num_threads(),
              "kernels": kernels(args.repeats)}
    print(f"{result['cpu']}, {os.cpu_count()} cores; best of {args.repeats}, ms")
    print(f"{'model':32s} {'train fast':>11s} {'portable':>9s} {'ratio':>6s}"
          f" {'infer fast':>11s} {'portable':>9s} {'ratio':>6s}")
    for name, t in result["kernels"].items():
        (tf, inf_f), (tp, inf_p) = t["fast"], t["portable"]
        print(f"{name:32s} {tf * 1e3:11.2f} {tp * 1e3:9.2f} {tp / tf:6.2f}"
              f" {inf_f * 1e3:11.2f} {inf_p * 1e3:9.2f} {inf_p / inf_f:6.2f}")
    if not args.no_pipeline:
        result["pipeline"] = runs = pipeline()
        stages = list(dict.fromkeys(s for r in runs.values() for s in r["stages"]))
        print(f"\n{'dvc repro of the default (s)':40s} {'fast':>8s} {'portable':>9s} {'ratio':>6s}")
        for stage in stages:
            a, b = (runs[m]["stages"].get(stage, float("nan")) for m in MODES)
            print(f"{stage:40s} {a:8.1f} {b:9.1f} {b / a:6.2f}")
        a, b = runs["fast"]["seconds"], runs["portable"]["seconds"]
        print(f"{'TOTAL':40s} {a:8.1f} {b:9.1f} {b / a:6.2f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
