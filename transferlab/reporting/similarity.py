"""The report's "What transferred": a heat map of per-block CKA with the source (curves x
blocks, one panel per budget) and evaluate's sentences on where adaptation happened."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from transferlab.reporting import figures
from transferlab.reporting.render import NA, Block, Image, Table, ci, f3


def _rows(block: dict) -> list[str]:
    return sorted(block.get("curves", {}))


def _blocks(block: dict) -> list[str]:
    names: list[str] = []
    for by_source in block.get("blocks", {}).values():
        names += [b for b in by_source if b not in names]
    return names


def heat_map(block: dict, budgets: list[str], path: str | Path) -> Path:
    """Mean linear CKA with the source per curve (rows) and block (columns), one panel per
    budget, each cell printed; 1 is the source's own representation."""
    curves, blocks = _rows(block), _blocks(block)
    shown = [b for b in budgets if any(b in block["curves"][c] for c in curves)]
    if not curves or not blocks or not shown:
        return figures._empty(path, "no run starts from a source: nothing to compare")
    grids = {}
    for budget in shown:
        grid = grids[budget] = np.full((len(curves), len(blocks)), np.nan)
        for i, curve in enumerate(curves):
            entry = block["curves"][curve].get(budget, {})
            for j, name in enumerate(blocks):
                if name in entry and entry[name]["cka"]["mean"] is not None:
                    grid[i, j] = entry[name]["cka"]["mean"]
    # the colour scale starts a little below the lowest CKA shown (at most 0.9), in steps of
    # 0.05, so that the differences between high similarities stay visible
    finite = [v for g in grids.values() for v in g[np.isfinite(g)]]
    vmin = float(np.floor(min([*finite, 0.9]) * 20) / 20)
    fig, axes = figures._grid(len(shown), len(shown),
                              (1.1 + 0.75 * len(blocks), 0.9 + 0.32 * len(curves)))
    image = None
    for k, (ax, budget) in enumerate(zip(axes, shown, strict=True)):
        grid = grids[budget]
        image = ax.imshow(grid, vmin=vmin, vmax=1, cmap="viridis", aspect="auto")
        for i in range(len(curves)):
            for j in range(len(blocks)):
                if np.isfinite(grid[i, j]):
                    dark = grid[i, j] < vmin + 0.6 * (1 - vmin)
                    ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if dark else "black")
        ax.set_xticks(range(len(blocks)), blocks, rotation=45, ha="right")
        ax.set_yticks(range(len(curves)), curves if k == 0 else [""] * len(curves))
        per = "label" if budget == "1" else "labels"
        ax.set_title(f"{budget} {per} per class", fontsize=9)
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="linear CKA with the source")
    return figures._save(fig, path)


def _estimator(block: dict) -> str:
    """The CKA estimator, named with its reference (evaluate outputs before the choice existed
    used the plug-in one)."""
    if block.get("estimator", "biased") == "debiased":
        return ("debiased linear CKA (Kornblith et al. 2019's linear CKA with Song et al. "
                "2012's unbiased HSIC, as in Nguyen et al. 2021; unbiased at any probe size)")
    return "linear CKA (Kornblith et al. 2019)"


def section(ev: dict, budgets: list[str], figure: str | None) -> list[Block]:
    """The blocks of the "What transferred" section."""
    block = ev.get("what_transferred") or {}
    if not block.get("curves"):
        skipped = block.get("not_compared") or []
        return ["Not measured: no run starts from a source with its blocks, or "
                "`evaluate.similarity_probe` is 0."
                + (f" Not comparable block by block: {', '.join(f'`{c}`' for c in skipped)}."
                   if skipped else "")]
    out: list[Block] = [
        "Which parts of each source network carried over and which were rewritten. For every "
        "curve that starts from a source, each backbone block's features on a fixed probe of "
        f"{block['probe_size']} target pool inputs (never the test split) are compared with "
        f"the same block's in the source network by {_estimator(block)} (1 is "
        "the same representation up to rotation and scale, 0 none of it), and its weights by "
        "the relative drift ‖w − w_source‖ / ‖w_source‖. Both are means over seeds with 95 % "
        "t intervals in the table.",
        Image(figure, "Linear CKA with the source per curve and block, mean over seeds."),
    ]
    for budget in budgets:
        out += list(block.get("sentences", {}).get(budget, []))
    still = block.get("unmoved") or {}
    everywhere = [c for c, at in still.items()
                  if set(at) >= {b for b in budgets if b in block["curves"][c]}]
    if still:
        out.append(
            "Backbone as the source's, weights and BatchNorm statistics, so CKA 1 by "
            "construction: "
            + ", ".join(f"`{c}`" + ("" if c in everywhere else f" at {', '.join(at)}")
                        for c, at in still.items())
            + (". The table leaves out the curves this holds for at every budget."
               if everywhere else "."))
    chosen = block.get("chosen_blocks") or {}
    for curve, by_budget in chosen.items():
        for budget, entry in by_budget.items():
            picks = ", ".join(f"`{b}` ({n} seeds)" for b, n in sorted(entry["chosen"].items()))
            out.append(f"`{curve}` at {budget}: the block it chose to tune, {picks}; the block "
                       f"whose CKA fell most, `{entry['lowest_cka']}`.")
    if block.get("not_compared"):
        out.append("Not compared block by block (the network is not the source's blocks: a "
                   "causal LM read through a prompt as it is, its weights the source's): "
                   + ", ".join(f"`{c}`" for c in block["not_compared"]) + ".")
    blocks = _blocks(block)
    rows = []
    for curve in (c for c in _rows(block) if c not in everywhere):
        for budget in budgets:
            entry = block["curves"][curve].get(budget)
            if not entry:
                continue
            rows.append((curve, budget, *(_cell(entry.get(b)) for b in blocks)))
    if rows:
        out.append(Table(("curve", "budget", *(f"{b}: CKA / drift" for b in blocks)),
                         tuple(rows)))
    return out


def _cell(entry: dict | None) -> str:
    if not entry:
        return NA
    c, d = entry["cka"], entry["drift"]
    return f"{f3(c['mean'])} {ci(c['ci_low'], c['ci_high'])} / {f3(d['mean'])}"
