"""Cost of the transferability scores against one finetuning run they stand in for.

For one source and each label budget (seed 0), times side by side in one process:
  - scores: the source head's softmax and LogME, LEEP, NCE and H-score on the budget's target
    examples, from backbone features already computed. In the pipeline those are the pool
    features that the linear probe caches for its own training (median of --repeats);
  - pass: one backbone pass over the budget's examples alone, what the scores would add without
    that cache (median of --repeats);
  - one `finetune` run of that source at that budget (the params.yaml settings).
It prints scores / finetune (the target is under 1%) and (scores + pass) / finetune.
Needs the prepared data and source models of a finished `dvc repro` (or `make repro`).

    python benchmarks/transferability_cost.py [--source printed_digits] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
import timeit
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from transferlab.adapt import strategies
from transferlab.adapt.replicates import adapt, replicate_seed
from transferlab.adapt.target import load_target
from transferlab.config.params import load_params
from transferlab.core.runtime import resolve_device, seed_everything
from transferlab.evaluation.transferability import score_all
from transferlab.models.nets import load_checkpoint
from transferlab.training.loop import extract_features, head_proba

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", default="printed_digits")
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats (median)")
    args = parser.parse_args()
    params = strategies.resolve(load_params(ROOT / "params.yaml"))
    reference = strategies.by_role("reference")
    seed_everything(0, params.common.num_threads)
    device = resolve_device(params.common.device)
    target = load_target(ROOT / "data" / "prepared" / "target")
    source, config = load_checkpoint(ROOT / "models" / args.source / "model.pt")
    has_head = bool(config.get("source_classes"))  # the null source has no LEEP or NCE
    arch = {"arch": params.pretrain.arch, "width": params.pretrain.width}
    pool_features = extract_features(source, target.pool_x, device)  # the linear probe's cache
    print(f"source {args.source}, device {device}")
    print(f"{'budget':>7s} {'n':>6s} {'scores s':>9s} {'pass s':>8s} {'finetune s':>11s} "
          f"{'scores/ft':>10s} {'+pass/ft':>9s}")
    for budget in [str(b) for b in params.prepare.budgets]:
        idx = target.budgets["0"][budget]
        y = target.pool_y[idx].numpy()
        features = pool_features[idx]
        feats = features.double().numpy()

        def scores(features: torch.Tensor = features, feats: np.ndarray = feats,
                   y: np.ndarray = y) -> None:
            probs = head_proba(source.cpu(), features) if has_head else None
            score_all(feats, probs, y)

        def backbone_pass(idx: list[int] = idx) -> None:
            extract_features(source, target.pool_x[idx], device)

        with threadpool_limits(1, user_api="blas"):  # as the evaluate stage scores
            scoring = statistics.median(timeit.repeat(scores, number=1, repeat=args.repeats))
        passing = statistics.median(timeit.repeat(backbone_pass, number=1, repeat=args.repeats))
        start = time.perf_counter()
        ctx = strategies.Context.build(target, source, arch=arch, device=device,
                                       seed=replicate_seed("0", budget), source_config=config)
        cfg = params.transfer[reference]
        adapt(strategies.get(reference)(cfg, ctx), target, cfg, "0", budget, params.selection)
        finetune = time.perf_counter() - start
        print(f"{budget:>7s} {len(idx):6d} {scoring:9.4f} {passing:8.4f} {finetune:11.3f} "
              f"{scoring / finetune:10.2%} {(scoring + passing) / finetune:9.2%}")


if __name__ == "__main__":
    main()
