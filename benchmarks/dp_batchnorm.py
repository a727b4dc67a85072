"""What the BatchNorm replacement costs under DP-SGD: the source's BatchNorm frozen (what
``dp_finetune`` does) against Opacus's GroupNorm replacement (``ModuleValidator.fix``: a trained
GroupNorm in each BatchNorm's place, the source's statistics and affine parameters dropped),
each with noise (``--epsilon``) and without (σ = 0, no clipping), side by side in one run.

Needs a finished ``dvc repro`` (the prepared target and ``models/<source>/model.pt``). Per seed,
``--per-class`` labels per class are drawn from the target's training pool; the rest of the
pool is the evaluation set (the test split is never read: it is evaluate's alone). Every
configuration starts from the same source network with the same fresh head, trains with
:func:`transferlab.training.private.dp_fit` with ``dp_finetune``'s optimizer (AdamW, the head
at ``--lr``, the backbone at a tenth of it; Poisson batches, a fixed schedule) and is scored on
the held-out pool. It prints the mean accuracy over seeds, the paired
difference groupnorm − freeze with its t interval, and the seconds per run.

    python benchmarks/dp_batchnorm.py [--source printed_digits] [--per-class 30]
        [--seeds 4] [--epsilon 8] [--epochs 25] [--lr 0.003] [--json F]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch
from opacus.validators import ModuleValidator
from torch import nn

from transferlab.adapt.strategies.finetune import head_and_backbone_groups
from transferlab.adapt.target import load_target
from transferlab.config.params import load_params
from transferlab.core.runtime import seed_everything
from transferlab.evaluation.stats import mean_ci
from transferlab.models.nets import load_checkpoint
from transferlab.training.private import dp_fit

ROOT = Path(__file__).resolve().parents[1]


def _split(y: torch.Tensor, per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held-out) pool indices: ``per_class`` of each class for training, drawn by
    ``seed``, and the rest."""
    gen = torch.Generator().manual_seed(seed)
    train = []
    for c in torch.unique(y).tolist():
        members = torch.nonzero(y == c).flatten()
        train.append(members[torch.randperm(len(members), generator=gen)[:per_class]])
    chosen = torch.cat(train).sort().values
    rest = torch.ones(len(y), dtype=torch.bool)
    rest[chosen] = False
    return chosen, torch.nonzero(rest).flatten()


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.inference_mode():
        return float((model(x).argmax(1) == y).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="printed_digits")
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--epsilon", type=float, default=8.0)
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.003)
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml")
    seed_everything(0, params.common.num_threads, params.common.gemm_branch,
                    params.common.determinism)
    target = load_target(ROOT / "data" / "prepared" / "target")
    source, _ = load_checkpoint(ROOT / "models" / args.source / "model.pt")
    configs = [(bn, eps) for bn in ("freeze", "groupnorm") for eps in (args.epsilon, None)]
    acc: dict[tuple, list[float]] = {c: [] for c in configs}
    seconds: dict[tuple, list[float]] = {c: [] for c in configs}
    for seed in range(args.seeds):
        train_idx, held_idx = _split(target.pool_y, args.per_class, seed)
        train = (target.pool_x[train_idx], target.pool_y[train_idx])
        torch.manual_seed(seed)
        head = nn.Linear(source.feature_dim, target.num_classes)
        for bn, eps in configs:
            model = copy.deepcopy(source)
            model.head = copy.deepcopy(head)
            if bn == "groupnorm":  # replaced before the optimizer sees the parameters (dp_fit's
                model = ModuleValidator.fix(model)  # own replacement would copy the model)
            optimizer = torch.optim.AdamW(
                head_and_backbone_groups(model, args.lr, args.lr * 0.1), weight_decay=1e-4)
            start = time.perf_counter()
            trained, info = dp_fit(
                model, train, epochs=args.epochs, batch_size=args.batch_size,
                optimizer=optimizer,
                max_grad_norm=1.0 if eps else 1e6, delta=1.0 / len(train[1]),
                target_epsilon=eps, noise_multiplier=None if eps else 0.0, seed=seed,
                batchnorm="freeze")  # after the GroupNorm replacement no BatchNorm is left
            seconds[(bn, eps)].append(time.perf_counter() - start)
            acc[(bn, eps)].append(_accuracy(trained, target.pool_x[held_idx],
                                            target.pool_y[held_idx]))
            print(f"seed {seed} {bn:9s} ε={eps or '∞ (no noise)'}: accuracy "
                  f"{acc[(bn, eps)][-1]:.3f} (σ {info['noise_multiplier']:.2f}, "
                  f"{seconds[(bn, eps)][-1]:.1f} s)", flush=True)
    out = {"per_class": args.per_class, "seeds": args.seeds, "epochs": args.epochs,
           "lr": args.lr, "source": args.source, "held_out": len(held_idx), "rows": []}
    print(f"\n{args.per_class} labels per class, {args.seeds} seeds, scored on {len(held_idx)} "
          f"held-out pool images")
    for eps in (args.epsilon, None):
        diff = [g - f for g, f in zip(acc[("groupnorm", eps)], acc[("freeze", eps)],
                                      strict=True)]
        ci = mean_ci(diff, 0.95)
        row = {"epsilon": eps, **{bn: statistics.mean(acc[(bn, eps)])
                                  for bn in ("freeze", "groupnorm")},
               "groupnorm_minus_freeze": ci["mean"], "ci": [ci["ci_low"], ci["ci_high"]],
               "seconds": {bn: statistics.mean(seconds[(bn, eps)])
                           for bn in ("freeze", "groupnorm")}}
        out["rows"].append(row)
        print(f"ε={eps or '∞ (no noise)'}: freeze {row['freeze']:.3f}, groupnorm "
              f"{row['groupnorm']:.3f}; groupnorm − freeze {ci['mean']:+.3f} "
              f"[{ci['ci_low']:+.3f}, {ci['ci_high']:+.3f}]; seconds per run "
              f"{row['seconds']['freeze']:.1f} and {row['seconds']['groupnorm']:.1f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
