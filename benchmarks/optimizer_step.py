"""What the project's AdamW (``transferlab.training.optim``, a correctly rounded CPU sqrt) costs
against ``torch.optim.AdamW``, side by side in one run (these machines are noisy; only ratios
taken together mean anything).

For the default's model (``pretrain.arch``/``width`` of params.yaml) at the pretraining and
fine-tuning batch sizes, under the project's CPU pins and ``common.determinism``:

- ``step``: ``optimizer.step()`` alone, on fixed gradients;
- ``train``: a whole training step (forward, backward, step).

Each optimizer is timed interleaved with the others, best of ``--repeats`` rounds:
torch's AdamW as training used it before (``foreach`` default, which is the single-tensor
loop on the CPU), torch's with ``foreach=True``, and the project's.

Usage:  python benchmarks/optimizer_step.py [--repeats 5] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from determinism_cost import training_step_seconds  # benchmarks/ is the script's own folder

import transferlab  # noqa: F401  (the CPU pins, before torch loads)
from transferlab.config.params import load_params
from transferlab.core import cpu_pinning
from transferlab.core.runtime import seed_everything
from transferlab.models.nets import build_model
from transferlab.training.optim import AdamW

ROOT = Path(__file__).resolve().parents[1]

OPTIMIZERS = {
    "torch": lambda p: torch.optim.AdamW(p, lr=3e-3, weight_decay=5e-4),
    "torch_foreach": lambda p: torch.optim.AdamW(p, lr=3e-3, weight_decay=5e-4, foreach=True),
    "transferlab": lambda p: AdamW(p, lr=3e-3, weight_decay=5e-4),
}


def timings(name: str, arch: str, width: int, batch: int, steps: int = 30) -> tuple[float, float]:
    """(seconds per optimizer step alone, seconds per training step) for one optimizer."""
    torch.manual_seed(0)
    model = build_model(arch, 10, 0.5, 0.3, 0, width=width)
    opt = OPTIMIZERS[name](model.parameters())
    train = training_step_seconds(model, opt, batch, torch.Generator().manual_seed(0), steps)
    start = time.perf_counter()
    for _ in range(steps):
        opt.step()  # the last gradients, kept
    return (time.perf_counter() - start) / steps, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml")
    arch, width = params.pretrain.arch, params.pretrain.width
    seed_everything(0, params.common.num_threads, params.common.gemm_branch)
    cpu_pinning.set_determinism(params.common.determinism)
    rows: dict[str, dict[str, tuple[float, float]]] = {}
    for batch in sorted({params.pretrain.batch_size, params.transfer["finetune"]["batch_size"]}):
        best: dict[str, tuple[float, float]] = {}
        for _ in range(args.repeats):
            for name in OPTIMIZERS:  # interleaved: drift of the machine hits all of them
                t = timings(name, arch, width, batch)
                best[name] = tuple(min(a, b) for a, b in zip(best.get(name, t), t, strict=True))
        rows[f"{arch} width {width}, batch {batch}"] = best
    print(f"{cpu_pinning.cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads,"
          f" determinism {params.common.determinism}; best of {args.repeats}, ms")
    print(f"{'model':28s} {'optimizer':14s} {'step':>8s} {'ratio':>6s} {'train':>8s} {'ratio':>6s}")
    for model, best in rows.items():
        s0, t0 = best["torch"]
        for name, (s, t) in best.items():
            print(f"{model:28s} {name:14s} {s * 1e3:8.3f} {s / s0:6.2f}"
                  f" {t * 1e3:8.2f} {t / t0:6.2f}")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_pinning.cpu_model(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
