"""Training a budget's seeds together against one after another (target of the speed issue:
>= 2x faster on CPU for the small CNN, results identical or the difference documented).

Each of ``--members`` replicates (seeds) trains its own small CNN on its own examples of the
same size, with its own batch order, as the pipeline's seeds of one budget do. Two ways:

* sequential: one model after another, a plain PyTorch loop (the pipeline's way);
* batched: ``torch.func.stack_module_state`` + ``functional_call`` under ``vmap``: one forward
  and backward pass trains every member at once (vmap turns each conv into a grouped conv over
  the members), one AdamW step updates the stacked parameters. AdamW is elementwise, so every
  member gets exactly its sequential update, up to the order of floating-point sums.

Both sides run alternately ``--repeats`` times in this process and the median ratio is printed,
with the largest difference between the two ways' weights (after two steps, and at the end) and
the members' agreement in predictions. Usage:

    python benchmarks/replicates.py [--members 5] [--examples 800] [--epochs 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import transferlab  # noqa: F401  (pins the CPU kernels first)

# isort: split
import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from transferlab.models.nets import build_model

ROOT = Path(__file__).resolve().parents[1]


def _members(m: int) -> list[torch.nn.Module]:
    return [build_model("small_cnn", 10, 0.5, 0.25, seed=s) for s in range(m)]


def _data(m: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(m, n, 1, 16, 16, generator=g), torch.randint(0, 10, (m, n), generator=g)


def _orders(m: int, n: int, epochs: int) -> torch.Tensor:
    """(epochs, M, n): each member's own batch order per epoch."""
    gens = [torch.Generator().manual_seed(100 + i) for i in range(m)]
    return torch.stack([torch.stack([torch.randperm(n, generator=g) for g in gens])
                        for _ in range(epochs)])


def sequential(models, x, y, orders, batch: int, lr: float) -> tuple[float, list[dict]]:
    start = time.perf_counter()
    states = []
    for i, model in enumerate(models):
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
        for order in orders[:, i]:
            for s in range(0, len(order), batch):
                idx = order[s:s + batch]
                loss = F.cross_entropy(model(x[i, idx]), y[i, idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        states.append(model.state_dict())
    return time.perf_counter() - start, states


def batched(models, x, y, orders, batch: int, lr: float) -> tuple[float, list[dict]]:
    start = time.perf_counter()
    params, buffers = stack_module_state(models)  # {name: (M, ...)}; params are leaves
    base = copy.deepcopy(models[0]).to("meta")
    base.train()

    def loss_of(p, b, xb, yb):
        return F.cross_entropy(functional_call(base, (p, b), (xb,)), yb)

    # the sum of the members' losses: each member's gradient is its own loss's gradient
    step_loss = vmap(loss_of, in_dims=(0, 0, 0, 0))
    opt = torch.optim.AdamW(list(params.values()), lr=lr, weight_decay=1e-4)
    rows = torch.arange(x.shape[0])[:, None]
    for order in orders:  # (M, n)
        for s in range(0, order.shape[1], batch):
            idx = order[:, s:s + batch]  # (M, B)
            loss = step_loss(params, buffers, x[rows, idx], y[rows, idx]).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    states = [{**{k: v[i].detach() for k, v in params.items()},
               **{k: v[i] for k, v in buffers.items()}} for i in range(x.shape[0])]
    return time.perf_counter() - start, states


def _max_difference(a_states: list[dict], b_states: list[dict]) -> float:
    """The largest absolute difference between two lists of members' float tensors."""
    return max(float((a[k].float() - b[k].float()).abs().max())
               for a, b in zip(a_states, b_states, strict=True)
               for k in a if a[k].is_floating_point())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=5, help="replicates trained together")
    parser.add_argument("--examples", type=int, default=800, help="training examples per member")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="alternating pairs")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(2)
    m, n = args.members, args.examples
    x, y = _data(m, n)
    orders = _orders(m, n, args.epochs)
    lr = 0.003
    # warm-up, untimed
    sequential(_members(m), x, y, orders[:1], args.batch_size, lr)
    batched(_members(m), x, y, orders[:1], args.batch_size, lr)
    pairs = []
    for _ in range(args.repeats):
        t_seq, s_seq = sequential(_members(m), x, y, orders, args.batch_size, lr)
        t_bat, s_bat = batched(_members(m), x, y, orders, args.batch_size, lr)
        pairs.append((t_seq, t_bat))
    diff = _max_difference(s_seq, s_bat)
    # the same two ways for two steps only: the rounding of one kernel against another, before
    # training amplifies it (AdamW's normalised steps turn tiny gradient differences into
    # lr-sized ones, so long runs drift apart as two machines' runs would)
    short = orders[:1, :, :2 * args.batch_size]
    early = _max_difference(sequential(_members(m), x, y, short, args.batch_size, lr)[1],
                            batched(_members(m), x, y, short, args.batch_size, lr)[1])
    agree = []
    probe = torch.rand(500, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    for a, b in zip(s_seq, s_bat, strict=True):
        net_a, net_b = _members(1)[0], _members(1)[0]
        net_a.load_state_dict(a), net_b.load_state_dict(b)
        with torch.inference_mode():
            pa, pb = net_a.eval()(probe).argmax(1), net_b.eval()(probe).argmax(1)
        agree.append(float((pa == pb).double().mean()))
    speedup = statistics.median(s / b for s, b in pairs)
    out = {"batched_speedup_vs_sequential": round(speedup, 2),
           "seconds_median": {"sequential": round(statistics.median(s for s, _ in pairs), 3),
                              "batched": round(statistics.median(b for _, b in pairs), 3)},
           "max_abs_weight_difference": diff,
           "max_abs_weight_difference_after_2_steps": early,
           "bit_identical": diff == 0.0,
           "prediction_agreement_min": min(agree),
           "setup": {"members": m, "examples": n, "epochs": args.epochs,
                     "batch_size": args.batch_size, "repeats": args.repeats,
                     "threads": torch.get_num_threads()}}
    print(f"replicates: {m} seeds trained together (vmap) {speedup:.2f}x faster than one after "
          f"another (target >= 2); median {out['seconds_median']['sequential']} s vs "
          f"{out['seconds_median']['batched']} s")
    print(f"  same results? largest weight difference {early:.3g} after 2 steps, {diff:.3g} at "
          f"the end; predictions agree on >= {min(agree):.3f} of 500 random inputs")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
