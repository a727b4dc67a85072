"""Which within-budget selection rule should be the default: holdout (``holdout_fraction`` 0.34),
three holdout splits pooled, or kfold with K in {2, 3, 5}, by simulation
(:mod:`transferlab.evaluation.selection_sim`): selection accuracy (the chosen candidate is the
one best on test after the refit), regret (test accuracy lost), and fits per candidate.

Writes ``table.md``, ``selection_rule.json`` and ``selection_accuracy.png`` to ``--out``
(default ``docs/results/selection_rule``) and prints the table. One BLAS thread; about 130 s
of CPU at the default size (261 s of wall time under ``nice`` on 2 cores busy with other work).
Usage:

    nice -n 19 python benchmarks/selection_rule.py [--reps 1500] [--seed 0] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path

import transferlab  # noqa: F401  (pins the CPU kernels first)

# isort: split
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from transferlab.evaluation.selection_sim import (  # noqa: E402
    DEFAULT_CANDIDATES,
    DEFAULT_RULES,
    TaskSpec,
    markdown_table,
    simulate_records,
    summarize,
)

ROOT = Path(__file__).resolve().parents[1]
BUDGETS = (2, 3, 5, 10, 20)


def fixed_choice(records: pd.DataFrame) -> pd.DataFrame:
    """Regret of never selecting: always the one candidate with the best mean test accuracy at
    that budget (chosen in hindsight, so a lower bound on any fixed default's regret).

    Args:
        records: :func:`simulate_records`' rows.
    Returns:
        Columns budget, candidate, regret, regret_se, and share_best (how often each candidate
        was the best: a dict).
    """
    one = records[records["rule"] == records["rule"].iloc[0]]
    cols = [c for c in one.columns if c.startswith("test_")]
    out = []
    for budget, g in one.groupby("budget"):
        acc = g[cols].to_numpy()
        k = int(np.argmax(acc.mean(axis=0)))
        regret = g["best_acc"].to_numpy() - acc[:, k]
        out.append({"budget": int(budget), "candidate": cols[k].removeprefix("test_"),
                    "regret": float(regret.mean()),
                    "regret_se": float(regret.std(ddof=1) / np.sqrt(len(regret))),
                    "share_best": {k: round(v, 4) for k, v in
                                   g["best"].value_counts(normalize=True).sort_index().items()}})
    return pd.DataFrame(out)


def figure(summary: pd.DataFrame, path: Path) -> None:
    """Selection accuracy and regret against the budget, one line per rule, +-1 s.e. bars.

    Args:
        summary: :func:`summarize`' frame.
        path: the PNG to write.
    """
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    rules = list(dict.fromkeys(summary["rule"]))
    for i, rule in enumerate(rules):
        s = summary[summary["rule"] == rule]
        x = s["budget"].to_numpy() * (1 + 0.03 * (i - (len(rules) - 1) / 2))
        axes[0].errorbar(x, 100 * s["selection_accuracy"], 100 * s["selection_se"],
                         marker="o", ms=3, capsize=2, label=rule)
        axes[1].errorbar(x, 100 * s["regret"], 100 * s["regret_se"], marker="o", ms=3,
                         capsize=2, label=rule)
    for ax, label in zip(axes, ("selection accuracy (%)", "regret (test acc. points)"),
                         strict=True):
        ax.set_xscale("log")
        ax.set_xticks(BUDGETS, [str(b) for b in BUDGETS])
        ax.minorticks_off()
        ax.set_xlabel("labels per class")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "docs/results/selection_rule")
    args = ap.parse_args()
    start = time.perf_counter()
    with threadpool_limits(1):
        records = simulate_records(args.reps, BUDGETS, DEFAULT_RULES, args.seed)
    seconds = time.perf_counter() - start
    summary = summarize(records, reference=DEFAULT_RULES[0].name)
    fixed = fixed_choice(records)
    table = markdown_table(summary)
    fixed_lines = ["| n/class | fixed candidate | regret pp (±se) |", "|---|---|---|"]
    fixed_lines += [f"| {r.budget} | {r.candidate} | {100 * r.regret:.2f} ± "
                    f"{100 * r.regret_se:.2f} |" for r in fixed.itertuples(index=False)]
    text = (f"Selection rules, {args.reps} simulated tasks per budget (seed {args.seed}; "
            f"{len(DEFAULT_CANDIDATES)} candidates: "
            f"{', '.join(c.name for c in DEFAULT_CANDIDATES)}). Δregret: paired difference "
            f"to {DEFAULT_RULES[0].name}.\n\n{table}\nNo selection: the candidate best on "
            f"average at each budget (chosen in hindsight), always.\n\n"
            + "\n".join(fixed_lines) + "\n")
    print(text)
    print(f"{seconds:.0f} s")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(text)
    meta = {
        "seed": args.seed, "reps": args.reps, "budgets": list(BUDGETS),
        "rules": [{"name": r.name, "scheme": r.params.scheme, "folds": r.params.folds,
                   "holdout_fraction": r.params.holdout_fraction, "repeats": r.repeats}
                  for r in DEFAULT_RULES],
        "candidates": [c.name for c in DEFAULT_CANDIDATES],
        "task_spec": asdict(TaskSpec()),
        "versions": {p: version(p) for p in ("numpy", "scikit-learn", "pandas")},
        "summary": summary.to_dict(orient="records"),
        "fixed_choice": fixed.to_dict(orient="records"),
    }
    (args.out / "selection_rule.json").write_text(json.dumps(meta, indent=1) + "\n")
    figure(summary, args.out / "selection_accuracy.png")


if __name__ == "__main__":
    main()
