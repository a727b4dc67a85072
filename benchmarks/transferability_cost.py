"""Cost of the transferability scores against one finetuning run they stand in for.

For one source and each label budget (seed 0), times side by side in one process:
  - scoring: one backbone pass over the budget's target examples (features, and the source
    softmax from the head on those features) + LogME, LEEP, NCE and H-score;
  - one `finetune` run of that source at that budget (the params.yaml settings).
Needs the prepared data and source models of a finished `dvc repro` (or `make repro`).

    python benchmarks/transferability_cost.py [--source printed_digits] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transferlab.models import load_checkpoint  # noqa: E402
from transferlab.params import load_params  # noqa: E402
from transferlab.runtime import resolve_device, seed_everything  # noqa: E402
from transferlab.strategies import adapt, load_target  # noqa: E402
from transferlab.training import extract_features, head_proba  # noqa: E402
from transferlab.transferability import score_all  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", default="printed_digits")
    parser.add_argument("--repeats", type=int, default=3, help="scoring repeats (median)")
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml")
    seed_everything(0, params.common.num_threads)
    device = resolve_device(params.common.device)
    target = load_target(ROOT / "data" / "prepared" / "target")
    source, _ = load_checkpoint(ROOT / "models" / args.source / "model.pt")
    arch = {"arch": params.pretrain.arch, "width": params.pretrain.width}
    print(f"source {args.source}, device {device}")
    print(f"{'budget':>7s} {'n':>6s} {'scores s':>9s} {'finetune s':>11s} {'ratio':>8s}")
    for budget, idx in target.budgets["0"].items():
        x = target.pool_x[idx]
        y = target.pool_y[idx].numpy()
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            features = extract_features(source, x, device)
            score_all(features.double().numpy(), head_proba(source.cpu(), features), y)
            times.append(time.perf_counter() - start)
        scoring = float(np.median(times))
        start = time.perf_counter()
        adapt("finetune", copy.deepcopy(source), target, params.transfer.finetune, "0", budget,
              device, arch)
        finetune = time.perf_counter() - start
        print(f"{budget:>7s} {len(idx):6d} {scoring:9.4f} {finetune:11.3f} "
              f"{scoring / finetune:8.2%}")


if __name__ == "__main__":
    main()
