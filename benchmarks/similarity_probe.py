"""How many probe inputs "what transferred" needs: the per-block CKA of every adapted checkpoint
against its source on probes of several sizes, under both estimators, beside the CKA on the
whole target pool.

Needs the outputs of a finished `dvc repro` (or `make repro`). For every checkpoint of a
strategy that starts from its source and whose backbone moved, and every block, the CKA on a
probe of n evenly spaced pool inputs (``evaluate.similarity_probe``'s choice of inputs) is
compared with the debiased CKA on the whole pool (the reference: with a thousand inputs or more
both estimators agree closely, and the debiased one has no small-sample bias). It prints, per
estimator and probe size, the mean signed difference (the bias), the mean absolute difference
and the largest one, over checkpoints and blocks; and the per-curve means.

    python benchmarks/similarity_probe.py [--probe 64 --probe 256 ...]
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from transferlab.adapt import strategies
from transferlab.config.params import load_params
from transferlab.core.runtime import seed_everything
from transferlab.evaluation import similarity as S
from transferlab.evaluation.study import StudyInputs
from transferlab.models.nets import block_names, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--probe", type=int, action="append",
                        help="probe sizes to compare with the whole pool (default 64, 128, 256)")
    args = parser.parse_args()
    params = strategies.resolve(load_params(ROOT / "params.yaml"))
    seed_everything(0, params.common.num_threads, params.common.gemm_branch,
                    params.common.determinism)
    inputs = StudyInputs.open(params, ROOT / "data" / "prepared", ROOT / "models", ROOT / "runs")
    pool = inputs.target.load("train")
    x = inputs.target.modality.to_inputs(pool.examples)
    sizes = sorted(set(args.probe or [64, 128, 256]) | {len(x)})
    probes = {n: x[S.probe_indices(len(x), n)] for n in sizes}
    # (curve, budget, block) -> {(estimator, n): cka}
    found: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for name, path in sorted(inputs.sources.items()):
        source, _ = load_checkpoint(path)
        blocks = block_names(source)
        grams = {(est, n): S.source_grams(source, probes[n], blocks, est == "debiased")
                 for est in S.CKA_ESTIMATORS for n in sizes}
        for info in inputs.runs:
            if info["source"] != name or not strategies.get(info["strategy"]).uses_source:
                continue
            for run in info["runs"]:
                model, _ = load_checkpoint(info["folder"] / run["checkpoint"])
                if block_names(model) != blocks or S._same_backbone(model, source):
                    continue
                feats = {n: S.block_features(model, probes[n], blocks) for n in sizes}
                for b in blocks:
                    found[f"{name}/{info['strategy']}", str(run["budget"]), b].append(
                        {(est, n): S.cka_from_grams(grams[est, n][b],
                                                    S.centered_gram(feats[n][b],
                                                                    est == "debiased"))
                         for est in S.CKA_ESTIMATORS for n in sizes})
    whole = len(x)
    rows = [r for runs in found.values() for r in runs]
    print(f"{len(rows)} (checkpoint, block) pairs; reference: the debiased CKA on the whole "
          f"pool ({whole} inputs)")
    for est in S.CKA_ESTIMATORS:
        for n in sizes:
            d = np.array([r[est, n] - r["debiased", whole] for r in rows])
            print(f"  {est:8s} on {n:5d} inputs: bias {d.mean():+.4f}, mean |diff| "
                  f"{np.abs(d).mean():.4f}, largest |diff| {np.abs(d).max():.4f}")
    print("per curve, budget and block, the mean over seeds (debiased | biased at each size):")
    for (curve, budget, block), runs in sorted(found.items()):
        cells = " | ".join(" ".join(f"{np.mean([r[est, n] for r in runs]):.3f}"
                                    for n in sizes) for est in S.CKA_ESTIMATORS)
        print(f"  {curve} @ {budget}, {block}: {cells}")


if __name__ == "__main__":
    main()
