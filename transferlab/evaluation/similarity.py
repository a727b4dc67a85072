"""What transferred: per-block representation similarity and weight drift of an adapted network
against its source.

- **Linear CKA** (Kornblith et al., ICML 2019, "Similarity of Neural Network Representations
  Revisited", eq. 5 with linear kernels): for features X (n, p) and Y (n, q) of the same n
  inputs, centred column-wise, ``CKA = ||Yᵀ X||²_F / (||Xᵀ X||_F ||Yᵀ Y||_F)``, computed as
  ``<Kx, Ky>_F / (||Kx||_F ||Ky||_F)`` with the centred Gram matrices K = X Xᵀ, so that a
  source's Grams serve all of its runs. It is 1 for
  representations equal up to an orthogonal transform and an isotropic scaling, and it is
  invariant to both; it is not invariant to arbitrary invertible linear maps (the paper's point).
- **Debiased linear CKA** (the default, ``evaluate.similarity_cka``): the same ratio with each
  HSIC replaced by its unbiased estimator (Song et al., JMLR 2012, "Feature Selection via
  Dependence Maximization", eq. 5; as CKA in Nguyen, Raghu and Kornblith, ICLR 2021, "Do Wide
  and Deep Networks Learn the Same Things?"). The plug-in estimator above is biased upward
  when features outnumber inputs: two independent 1,000-dimensional representations of 64
  inputs have a biased CKA near 0.9, a debiased one near 0. Debiased, a small probe measures
  what a large one does without a bias (on the default's runs, 64 inputs against the whole
  pool of 1,197: bias -0.0002, mean difference 0.0017; the plug-in estimator +0.0044 and
  0.0044; benchmarks/similarity_probe.py), at a quarter of the forward passes. It is computed
  as the plug-in formula on U-centred Gram matrices (Székely and Rizzo 2014), which equals
  Song et al.'s estimator; it keeps both invariances and needs at least 4 inputs.
- **Relative weight drift** of a block: ``||w - w_source|| / ||w_source||`` over all of the
  block's parameters taken as one vector.

Both compare blocks by name (``backbone.<block>``), so a new head never enters. The probe set is
a fixed set of target pool inputs: never the test split, and the same inputs for every run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from transferlab.config.params import budget_order
from transferlab.evaluation.stats import mean_ci

__all__ = ["CKA_ESTIMATORS", "block_drift", "block_features", "centered_gram", "cka_from_grams",
           "linear_cka", "probe_indices", "source_grams", "summarize", "u_centered",
           "what_transferred"]


CKA_ESTIMATORS = ("debiased", "biased")  # evaluate.similarity_cka


def centered_gram(x: np.ndarray, debiased: bool = False) -> np.ndarray:
    """The n x n Gram matrix of a representation (n, ...) after centring its columns, returned
    in float64: what linear CKA compares. Computed once per source block, it serves every
    adapted run. ``debiased``: U-centred (:func:`u_centered`), for the debiased estimator.

    The product is taken in the features' own precision where they are float32 (a network's
    block outputs, :func:`block_features`): n x n x d multiply-adds per block and checkpoint,
    and float32 takes 2 to 3.5 times less time than float64 at the
    studies' block sizes (256 inputs, 1,152 to 6,272 features; one thread). Any other input
    is computed in float64 (the reference path of :func:`linear_cka`). The column means are
    taken in float64 either way."""
    x = np.asarray(x)
    dtype = np.float32 if x.dtype == np.float32 else np.float64
    x = x.reshape(len(x), -1)
    x = (x - x.mean(0, dtype=np.float64)).astype(dtype, copy=False)
    gram = (x @ x.T).astype(np.float64, copy=False)
    return u_centered(gram) if debiased else gram


def u_centered(gram: np.ndarray) -> np.ndarray:
    """The U-centred form of a symmetric n x n Gram matrix (Székely and Rizzo 2014, "Partial
    distance correlation with methods for dissimilarities", eq. 3.1): the diagonal zeroed, and
    row and column means taken over the n - 2 off-diagonal terms. The inner product of two
    U-centred Grams over n (n - 3) is Song et al.'s unbiased HSIC, so the CKA formula of
    :func:`cka_from_grams` on them is the debiased CKA. Column centring the features first (as
    :func:`centered_gram` does) changes nothing but rounding: U-centring removes any
    row-plus-column term."""
    n = len(gram)
    if n < 4:
        raise ValueError(f"the debiased CKA needs at least 4 inputs; the probe holds {n}")
    g = np.array(gram, dtype=np.float64)
    np.fill_diagonal(g, 0.0)
    means = g.sum(0) / (n - 2)
    means -= means.sum() / (2 * (n - 1))
    g -= means[:, None]
    g -= means[None, :]
    np.fill_diagonal(g, 0.0)
    return g


def cka_from_grams(kx: np.ndarray, ky: np.ndarray) -> float:
    """Linear CKA from two centred Gram matrices of the same inputs:
    ``<Kx, Ky>_F / (||Kx||_F ||Ky||_F)``, which equals ``||Yᵀ X||²_F / (||Xᵀ X||_F ||Yᵀ Y||_F)``.
    A constant representation (a zero Gram) has no similarity to anything: NaN."""
    if kx.shape != ky.shape:
        raise ValueError(f"linear_cka: {len(kx)} rows against {len(ky)}; the two "
                         "representations must be of the same inputs")
    nx, ny = np.linalg.norm(kx), np.linalg.norm(ky)
    if nx == 0 or ny == 0:
        return float("nan")
    return float((kx * ky).sum() / (nx * ny))


def linear_cka(x: np.ndarray, y: np.ndarray, debiased: bool = False) -> float:
    """Linear CKA of two representations of the same n inputs, (n, p) and (n, q), in float64
    (the n x n Gram form, as the pipeline computes it); :func:`cka_from_grams` checks the rows.
    ``debiased``: the unbiased-HSIC estimator (at least 4 inputs)."""
    if min(len(x), len(y)) < 2:
        raise ValueError("linear_cka: needs at least 2 inputs")
    return cka_from_grams(centered_gram(x, debiased), centered_gram(y, debiased))


def _first_tensor(output: Any) -> torch.Tensor:
    """A block's output, or the first tensor of a tuple / model output (a transformer layer's
    hidden states)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        output = tuple(output.values())
    for item in output:
        if isinstance(item, torch.Tensor):
            return item
    raise TypeError(f"a block returned no tensor ({type(output).__name__})")


@torch.inference_mode()
def block_features(model: nn.Module, x: torch.Tensor, blocks: Sequence[str],
                   batch_size: int = 256) -> dict[str, np.ndarray]:
    """Each named backbone block's output on ``x``, flattened per input: {block: (n, d)} in
    float32 (the network's own precision; :func:`centered_gram` keeps it for its product).

    Taken with forward hooks on ``model.backbone.<block>``, so any backbone whose blocks are
    its named children works (a CNN's stages, a transformer's layers). The model runs in eval
    mode and is left in the mode it was in.
    """
    captured: dict[str, list[np.ndarray]] = {b: [] for b in blocks}
    handles, mask = [], [None]
    backbone = model.backbone
    for name in blocks:
        def hook(_m: nn.Module, _i: Any, out: Any, name: str = name) -> None:
            t = _first_tensor(out).detach()
            # a backbone that compacts its texts (a causal LM) says which mask its tokens have
            m = getattr(backbone, "token_mask", None)
            m = mask[0] if m is None else m
            if m is not None and t.dim() == 3 and t.shape[1] == m.shape[1]:
                # a text block's token states (B, L, H): the mean over the text's tokens,
                # padding left out (a flattened (L x H) vector would compare pad positions)
                w = m.to(t.dtype)[..., None]
                t = (t * w).sum(1) / w.sum(1).clamp(min=1)
            captured[name].append(t.reshape(len(t), -1).float().cpu().numpy())
        handles.append(model.backbone.get_submodule(name).register_forward_hook(hook))
    was_training = model.training
    # a causal LM's batch in one call (not chunks sorted by length): the hooks see its rows in
    # order, under one mask
    chunk = getattr(backbone, "length_chunk", None)
    if chunk is not None:
        backbone.length_chunk = 0
    model.eval()
    try:
        for start in range(0, len(x), batch_size):
            batch = x[start:start + batch_size]
            # token inputs are (B, 2, L): ids and attention mask
            mask[0] = batch[:, 1] if batch.dim() == 3 and batch.shape[1] == 2 else None
            model.features(batch)
    finally:
        for h in handles:
            h.remove()
        if chunk is not None:
            backbone.length_chunk = chunk
        model.train(was_training)
    return {b: np.concatenate(parts) for b, parts in captured.items()}


def block_drift(adapted: nn.Module, source: nn.Module, blocks: Sequence[str]
                ) -> dict[str, float]:
    """{block: ||w - w_source|| / ||w_source||} over each block's parameters (float64)."""
    ours = {n: p.detach() for n, p in adapted.backbone.named_parameters()}
    theirs = {n: p.detach() for n, p in source.backbone.named_parameters()}
    drift = {}
    for block in blocks:
        names = [n for n in ours if n.startswith(f"{block}.")]
        if not names or any(n not in theirs for n in names):
            raise KeyError(f"block {block!r}: the adapted and source networks do not share its "
                           f"parameters ({sorted(set(names) - set(theirs))[:3]} ...)")
        diff = sum(float(((ours[n].double() - theirs[n].double()) ** 2).sum()) for n in names)
        base = sum(float((theirs[n].double() ** 2).sum()) for n in names)
        drift[block] = float(np.sqrt(diff / base)) if base > 0 else float("nan")
    return drift


def probe_indices(pool_size: int, size: int = 256) -> list[int]:
    """A fixed probe set of the target pool: ``size`` evenly spaced indices (all of a smaller
    pool). The same inputs for every run and seed, and never a test input."""
    if pool_size < 2:
        raise ValueError(f"the target pool holds {pool_size} inputs; CKA needs at least 2")
    return np.linspace(0, pool_size - 1, min(size, pool_size)).round().astype(int).tolist()


def _same_backbone(a: nn.Module, b: nn.Module) -> bool:
    """Equal backbone parameters and buffers (BatchNorm statistics): the same features."""
    ta, tb = a.backbone.state_dict(), b.backbone.state_dict()
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def source_grams(source: nn.Module, probe: torch.Tensor, blocks: Sequence[str],
                 debiased: bool = False) -> dict[str, np.ndarray]:
    """The source's centred (``debiased``: U-centred) Gram matrix per block on the probe:
    computed once per source."""
    return {b: centered_gram(f, debiased)
            for b, f in block_features(source, probe, blocks).items()}


def what_transferred(adapted: nn.Module, source: nn.Module, probe: torch.Tensor,
                     blocks: Sequence[str], grams: Mapping[str, np.ndarray] | None = None,
                     same: bool | None = None, debiased: bool = False
                     ) -> dict[str, dict[str, float]]:
    """{block: {"cka": linear CKA of the block's features, "drift": relative weight drift}} of
    an adapted network against its source, on the ``probe`` inputs. ``grams``: the source's
    :func:`source_grams` on the same probe (of the same estimator), where already computed
    (one source serves many runs); ``same``: whether the two backbones are equal, where the
    caller has checked it already (None: checked here); ``debiased``: the unbiased-HSIC
    estimator of CKA."""
    drift = block_drift(adapted, source, blocks)
    if same is None:
        same = _same_backbone(adapted, source)
    if same:  # a probe, source_only: nothing moved, CKA is 1 (either estimator)
        return {b: {"cka": 1.0, "drift": drift[b]} for b in blocks}
    theirs = grams or source_grams(source, probe, blocks, debiased)
    ours = block_features(adapted, probe, blocks)
    return {b: {"cka": cka_from_grams(theirs[b], centered_gram(ours[b], debiased)),
                "drift": drift[b]} for b in blocks}


def summarize(rows: Sequence[Mapping[str, Any]], confidence: float = 0.95
              ) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """Per curve, budget and block, the mean CKA and drift over seeds with their intervals.

    Args:
        rows: one per run, {"curve", "budget", "seed", "blocks": {block: {"cka", "drift"}}}.
    Returns:
        {curve: {budget: {block: {"cka": mean_ci, "drift": mean_ci, "n": seeds}}}}, budgets as
        strings (JSON keys).
    """
    grouped: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        grouped.setdefault((row["curve"], str(row["budget"])), []).append(row)
    out: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for (curve, budget), group in sorted(grouped.items()):
        blocks = list(group[0]["blocks"])
        out.setdefault(curve, {})[budget] = {
            block: {metric: _mean_ci([r["blocks"][block][metric] for r in group], confidence)
                    for metric in ("cka", "drift")} | {"n": len(group)}
            for block in blocks}
    return out


def _mean_ci(values: Sequence[float], confidence: float) -> dict[str, Any]:
    """:func:`~transferlab.evaluation.stats.mean_ci` of the finite values (a constant block
    has no CKA: NaN); all undefined: a NaN mean over n = 0."""
    finite = [float(v) for v in values if np.isfinite(v)]
    if not finite:
        return {"mean": float("nan"), "std": float("nan"), "ci_low": float("nan"),
                "ci_high": float("nan"), "n": 0, "method": "t"}
    return mean_ci(finite, confidence)


# -- the evaluate stage's "what transferred" ---------------------------------------------------

def study_similarity(runs: Sequence[Mapping[str, Any]], sources: Mapping[str, Any],
                     probe: torch.Tensor | Callable[[str | None], torch.Tensor],
                     confidence: float = 0.95, group: str = "class",
                     estimator: str = "debiased", load: Callable | None = None
                     ) -> dict[str, Any]:
    """Per-block CKA and drift of every run of a strategy that starts from its source, against
    that source, summarized over seeds per curve and budget, with the sentences the report
    prints.

    Args:
        runs: the run folders' ``runs.json`` contents with their ``folder``
            (:func:`transferlab.evaluation.evaluate.discover_runs`).
        sources: source name -> its checkpoint path.
        probe: the fixed probe inputs (:func:`probe_indices` of the target pool), or a function
            of a source's architecture giving them as that source reads them (text sources
            of several tokenizers: the same texts in each one's encoding; None: as prepared).
        group: what a budget counts labels per, in the sentences: ``class``, or a regression
            target's ``stratum``.
        estimator: ``debiased`` or ``biased`` CKA (:data:`CKA_ESTIMATORS`).
        load: how a checkpoint is loaded, ``path -> (model, config)`` (None:
            :func:`~transferlab.models.nets.load_checkpoint`; evaluate passes its
            :class:`~transferlab.evaluation.evaluate.LoadedModels`, so a checkpoint it has
            scored is not read twice).
    Returns:
        {"probe_size", "estimator", "blocks": {source: [block, ...]}, "curves": :func:`summarize`,
        "sentences": {budget: [sentence, ...]}, "unmoved": :func:`unmoved`,
        "chosen_blocks": {curve: {budget: ...}}, "not_compared": curves whose network's
        blocks are not the source's}; empty "curves" where no run starts from a source.
    """
    from transferlab.adapt import strategies
    from transferlab.models.nets import block_names, checkpoint_config, load_checkpoint

    if estimator not in CKA_ESTIMATORS:
        raise ValueError(f"evaluate.similarity_cka: unknown estimator {estimator!r}; expected "
                         f"one of {', '.join(CKA_ESTIMATORS)}")
    config_of = getattr(load, "config", checkpoint_config)  # a kept model's, or from the file
    load = load or load_checkpoint
    rows, blocks_of, loaded, not_compared = [], {}, {}, set()
    # the probe's Gram products are small (n x n, n = the probe): one BLAS thread. Two would
    # leave OpenBLAS's second thread spinning after each product, on the core the next
    # network's forward pass needs (in the stage, that slowed what transferred 2 to 4x)
    with threadpool_limits(1, user_api="blas"):
        for info in runs:
            name = info["source"]
            if name not in sources or not strategies.get(info["strategy"]).uses_source:
                continue
            if name not in loaded:
                source, source_cfg = load_checkpoint(sources[name])
                blocks_of[name] = block_names(source)
                # the source's Gram matrices: computed at the first run whose backbone moved (a
                # probe's never does; on a causal LM the probe's pass is most of the cost)
                loaded[name] = {"source": source, "grams": None, "lm": _lm_record(source_cfg),
                                "debiased": estimator == "debiased",
                                "unmoved": None, "probe": probe(source_cfg["arch"])
                                if callable(probe) else probe}
            entry = loaded[name]
            seen: dict[str, dict | None] = {}  # checkpoints shared by replicates: measured once
            for run in info["runs"]:
                ckpt = str(info["folder"] / run["checkpoint"])
                if ckpt not in seen:
                    seen[ckpt] = _compare(ckpt, config_of(ckpt), entry, entry["probe"],
                                          blocks_of[name], load)
                if seen[ckpt] is None:
                    not_compared.add(f"{name}/{info['strategy']}")
                    continue
                rows.append({"curve": f"{name}/{info['strategy']}", "budget": run["budget"],
                             "seed": run["seed"], "blocks": seen[ckpt],
                             "chosen_block": ((run.get("search") or {}).get("chosen") or {}).get(
                                 "block")})
    curves = summarize(rows, confidence)
    return {"probe_size": len(probe(None) if callable(probe) else probe),
            "estimator": estimator, "blocks": blocks_of,
            "curves": curves,
            "sentences": sentences(curves, group), "unmoved": unmoved(curves),
            "chosen_blocks": _chosen_blocks(rows, curves), "not_compared": sorted(not_compared)}


def _lm_record(config: dict) -> tuple[str, str] | None:
    """(init, sha256) of a checkpoint whose whole backbone is a causal LM restored from its
    init (``save_checkpoint``'s ``weights`` record), else None."""
    weights = config.get("weights") or {}
    if weights.get("module") != "backbone" or "prompt" in config:
        return None
    return weights["init"], weights["sha256"]


def _compare(ckpt: str, config: dict, entry: dict, probe: torch.Tensor, blocks: list[str],
             load: Any) -> dict | None:
    """One checkpoint's per-block CKA and drift against its source (``entry``), or None where
    its network is not the source's blocks. Read from the checkpoint's config alone where
    that settles it (no model built): the source's LM read through a prompt as it is (nothing
    to compare), or a backbone that is the source's LM restored from the same init and digest
    (CKA 1 and drift 0 by construction, as :func:`what_transferred` finds them). An LM trained
    through its prompt (``lora_prompt``) is compared block by block, without the prompt."""
    from transferlab.models.nets import block_names

    if "prompt" in config and config.get("weights"):  # the source's LM, read through a prompt
        return None
    if entry["lm"] is not None and _lm_record(config) == entry["lm"]:
        if entry["unmoved"] is None:
            source = entry["source"]
            entry["unmoved"] = what_transferred(source, source, probe, blocks,
                                                debiased=entry["debiased"])
        return entry["unmoved"]
    model, _ = load(ckpt)
    if "prompt" in config:  # an LM trained through its prompt (lora_prompt): its own blocks
        model = _inner_lm(model, entry["source"])
    if model is None or block_names(model) != blocks:
        return None
    same = _same_backbone(model, entry["source"])
    if entry["grams"] is None and not same:
        entry["grams"] = source_grams(entry["source"], probe, blocks, entry["debiased"])
    return what_transferred(model, entry["source"], probe, blocks, entry["grams"], same,
                            entry["debiased"])


def _inner_lm(prompted: nn.Module, source: nn.Module) -> nn.Module | None:
    """The causal LM behind a prompt as a network of the source's shape (the source's input
    normalisation, that LM as the backbone), so its blocks compare with the source's on the
    same probe texts; None where there is no inner LM."""
    from transferlab.models.nets import TransferNet

    lm = getattr(prompted.backbone, "lm", None)
    if lm is None:
        return None
    with torch.random.fork_rng(devices=[]):  # its head is never read: keep the global RNG
        return TransferNet(source.normalize, lm, source.feature_dim, 1).eval()


KEPT = 0.95  # a block whose mean CKA with the source is at least this is called "kept"


def _same_weights(entry: Mapping[str, Any]) -> bool:
    """Every block's weights as the source's (drift 0 in every seed)."""
    return all(e["drift"]["mean"] == 0 for e in entry.values())


def _still(entry: Mapping[str, Any]) -> bool:
    """Nothing changed: the source's weights and, in every seed, its features (CKA exactly 1,
    as :func:`what_transferred` gives a backbone equal to the source's, statistics included)."""
    return _same_weights(entry) and all(e["cka"]["mean"] == 1.0 for e in entry.values())


def unmoved(curves: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, list[str]]:
    """{curve: the budgets at which its backbone is the source's in every seed, weights and
    BatchNorm statistics} (a probe, a source model as it is: CKA 1 by construction). A
    backbone whose weights are the source's but whose statistics are not (AdaBN) is not."""
    out = {curve: sorted((b for b, entry in by_budget.items() if _still(entry)),
                         key=budget_order)
           for curve, by_budget in curves.items()}
    return {curve: budgets for curve, budgets in out.items() if budgets}


def sentences(curves: Mapping[str, Mapping[str, Mapping[str, Any]]], group: str = "class"
              ) -> dict[str, list[str]]:
    """Per budget, where adaptation happened, in words: for each curve whose backbone moved,
    its lowest-CKA block (CKA and drift), and which curves kept every block at CKA ≥ 0.95.
    Curves whose backbone did not move are :func:`unmoved`'s, said once for all budgets."""
    out: dict[str, list[str]] = {}
    budgets = sorted({b for by_budget in curves.values() for b in by_budget}, key=budget_order)
    for budget in budgets:
        moved, kept = [], []
        for curve, by_budget in curves.items():
            entry = by_budget.get(budget)
            if not entry or _still(entry):
                continue
            cka = {b: e["cka"]["mean"] for b, e in entry.items()}
            drift = {b: e["drift"]["mean"] for b, e in entry.items()}
            low = min(cka, key=lambda b: (not np.isfinite(cka[b]), cka[b]))
            profile = " → ".join(f"{cka[b]:.2f}" for b in cka)
            how = ("through its BatchNorm statistics alone (weights as the source's; "
                   if _same_weights(entry) else "(")
            moved.append(f"`{curve}` changed `{low}` most {how}CKA {cka[low]:.2f}, drift "
                         f"{drift[low]:.3f}; CKA per block {profile})")
            if all(v >= KEPT for v in cka.values()):
                kept.append(f"`{curve}`")
        per = "label" if budget == "1" else "labels"
        lines = [f"At {budget} {per} per {group}, " + "; ".join(moved) + "."] if moved else []
        if kept:
            lines.append(f"Every block stayed at CKA ≥ {KEPT} with the source in "
                         f"{', '.join(kept)}.")
        if lines:
            out[budget] = lines
    return out


def _chosen_blocks(rows: Sequence[Mapping[str, Any]], curves: Mapping[str, Any]
              ) -> dict[str, dict[str, dict[str, Any]]]:
    """For runs whose search chose a block (``surgical``): per curve and budget, how often
    each block was chosen, beside the block whose mean CKA fell most."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        if row.get("chosen_block"):
            entry = out.setdefault(row["curve"], {}).setdefault(str(row["budget"]),
                                                                 {"chosen": {}})
            entry["chosen"][row["chosen_block"]] = entry["chosen"].get(row["chosen_block"],
                                                                       0) + 1
    for curve, by_budget in out.items():
        for budget, entry in by_budget.items():
            blocks = curves[curve][budget]
            entry["lowest_cka"] = min(blocks, key=lambda b: blocks[b]["cka"]["mean"])
    return out
