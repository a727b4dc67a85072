"""Throughput of transferlab's training loop against a bare PyTorch loop, and of the linear probe
on cached features against re-running the frozen backbone every epoch (targets of the speed
issue: >= 0.95x the bare loop; >= 20x for the cached probe).

Both sides of each ratio run in this process, alternating, on the same model, data, batch size
and number of steps, so machine noise hits both alike; the median ratio over ``--repeats`` pairs
is printed. Usage:

    python benchmarks/train_loop.py [--repeats 5] [--examples 1000] [--epochs 3]

The pipeline's loop (``transferlab.training.loop.fit``) runs with a fixed schedule (no validation
set) and no augmentation, so it does exactly the bare loop's work plus its own bookkeeping
(per-epoch permutation by a generator, the loss history, the progress bar).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import transferlab  # noqa: F401  (pins the CPU kernels first)

# isort: split
import torch
import torch.nn.functional as F

from transferlab.config.params import TrainParams
from transferlab.models.nets import build_model
from transferlab.training.loop import extract_features, fit

ROOT = Path(__file__).resolve().parents[1]


def _data(n: int, classes: int = 10, side: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, side, side, generator=g), torch.randint(0, classes, (n,), generator=g)


def _model():
    return build_model("small_cnn", 10, 0.5, 0.25, seed=0)


def pipeline_loop(x, y, cfg: TrainParams) -> float:
    model = _model()
    groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    start = time.perf_counter()
    fit(model, (x, y), None, cfg, groups, torch.Generator().manual_seed(0), torch.device("cpu"),
        augment=False)
    return time.perf_counter() - start


def bare_loop(x, y, cfg: TrainParams) -> float:
    model = _model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    model.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return time.perf_counter() - start


def train_probe(x, y, epochs: int, cached: bool) -> float:
    """A linear head trained full-batch on frozen features: computed once (the pipeline's
    probe) or, uncached, by re-running the backbone over the data every epoch."""
    model = _model().eval()
    head = torch.nn.Linear(model.head.in_features, 10)
    opt = torch.optim.AdamW(head.parameters(), lr=0.01)
    start = time.perf_counter()
    if cached:
        feats = extract_features(model, x, torch.device("cpu")).clone()  # out of inference mode
    for _ in range(epochs):
        if not cached:
            with torch.no_grad():
                feats = model.features(x)
        loss = F.cross_entropy(head(feats), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="alternating pairs per ratio")
    parser.add_argument("--examples", type=int, default=1000, help="training examples")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the training loops")
    parser.add_argument("--probe-epochs", type=int, default=200,
                        help="full-batch steps of the probe (the default's linear_probe.epochs)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(2)
    x, y = _data(args.examples)
    cfg = TrainParams(epochs=args.epochs, batch_size=32, augment=False)
    pairs = {"loop": [], "probe": []}
    # warm-up, untimed: first-call costs (kernel selection, lazy imports) fall on neither side
    pipeline_loop(x, y, cfg), bare_loop(x, y, cfg)
    train_probe(x, y, 2, cached=True), train_probe(x, y, 2, cached=False)
    for _ in range(args.repeats):
        ours, bare = pipeline_loop(x, y, cfg), bare_loop(x, y, cfg)
        pairs["loop"].append((ours, bare))
        cached = train_probe(x, y, args.probe_epochs, cached=True)
        uncached = train_probe(x, y, args.probe_epochs, cached=False)
        pairs["probe"].append((cached, uncached))
    loop = statistics.median(b / o for o, b in pairs["loop"])  # throughput ratio ours / bare
    probe = statistics.median(u / c for c, u in pairs["probe"])  # speed-up of the cache
    out = {
        "loop_throughput_vs_bare": round(loop, 3),
        "loop_seconds_median": {"transferlab": round(statistics.median(o for o, _ in pairs[
            "loop"]), 3), "bare": round(statistics.median(b for _, b in pairs["loop"]), 3)},
        "probe_cache_speedup": round(probe, 1),
        "probe_seconds_median": {"cached": round(statistics.median(c for c, _ in pairs[
            "probe"]), 3), "uncached": round(statistics.median(u for _, u in pairs["probe"]), 3)},
        "setup": {"examples": args.examples, "epochs": args.epochs, "batch_size": 32,
                  "probe_epochs": args.probe_epochs, "repeats": args.repeats,
                  "threads": torch.get_num_threads()},
    }
    print(f"training loop: {loop:.3f}x the bare loop's throughput (target >= 0.95); "
          f"median {out['loop_seconds_median']['transferlab']} s vs "
          f"{out['loop_seconds_median']['bare']} s")
    print(f"linear probe: cached features {probe:.1f}x faster than the backbone every epoch "
          f"(target >= 20); median {out['probe_seconds_median']['cached']} s vs "
          f"{out['probe_seconds_median']['uncached']} s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
