"""Cost of "what transferred" (per-block linear CKA and weight drift against the source) beside
the transfer stages it describes, side by side in one run.

Needs the outputs of a finished `dvc repro` (or `make repro`) of the default. In one process:
  - transfer: `dvc repro --force --single-item` of every transfer@<source> stage, in a copy of
    the working tree with its prepared data and source models (the stages' wall time, start-up
    included, as `dvc repro` pays it);
  - similarity: the evaluate stage's own call, ``what_transferred_report``: for every distinct
    checkpoint of those stages, its per-block CKA against its source on a fixed probe of
    target pool inputs and its per-block drift. As evaluate runs it, after the scoring pass
    (``evaluate_runs``, not timed here), whose :class:`LoadedModels` keeps the checkpoints it
    read (``--fresh``: every checkpoint read from disk again, as before evaluate shared them).
It prints similarity / transfer (the target is under 2 %), and where the similarity's time
goes: loading checkpoints, reading a checkpoint's config alone, the blocks' features on the
probe, the centred Gram matrices, the weight drift, the check that a backbone did not move
(the rest: CKA from the Grams and the summaries). Every ``--probe`` size with every
``--cka`` estimator is timed, one after another, against the same transfer time.

    python benchmarks/similarity_cost.py [--probe 64 [--probe 256 ...]] [--cka debiased
        [--cka biased]] [--fresh]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from transferlab.adapt import strategies
from transferlab.config.params import load_params
from transferlab.core.runtime import seed_everything
from transferlab.core.workspace import copy_worktree, run_repro
from transferlab.evaluation import evaluate, similarity
from transferlab.evaluation.study import StudyInputs, what_transferred_report
from transferlab.models import nets

ROOT = Path(__file__).resolve().parents[1]
# where the time goes: the (module, function) pairs timed while the report runs; none calls
# another, so the parts do not overlap
PARTS = {"loading checkpoints": ((nets, "load_checkpoint"), (evaluate, "load_checkpoint")),
         "reading checkpoint configs": ((nets, "checkpoint_config"),
                                        (evaluate, "checkpoint_config")),
         "block features on the probe": ((similarity, "block_features"),),
         "centred Gram matrices": ((similarity, "centered_gram"),),
         "weight drift": ((similarity, "block_drift"),),
         "backbone equality check": ((similarity, "_same_backbone"),)}


@contextlib.contextmanager
def timed_parts() -> Iterator[dict[str, float]]:
    """Wrap each of :data:`PARTS` with a timer for the duration; yields {part: seconds}."""
    spent: dict[str, float] = defaultdict(float)
    originals = {(module, name): getattr(module, name)
                 for targets in PARTS.values() for module, name in targets}

    def timer(part, fn):
        def wrapped(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[part] += time.perf_counter() - start
        return wrapped

    for part, targets in PARTS.items():
        for module, name in targets:
            setattr(module, name, timer(part, originals[module, name]))
    try:
        yield spent
    finally:
        for (module, name), original in originals.items():
            setattr(module, name, original)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--probe", type=int, action="append",
                        help="probe inputs from the pool (repeatable; default params.yaml's)")
    parser.add_argument("--cka", action="append", choices=similarity.CKA_ESTIMATORS,
                        help="CKA estimator (repeatable; default params.yaml's)")
    parser.add_argument("--fresh", action="store_true",
                        help="read every checkpoint from disk again (no models kept by the "
                             "scoring pass)")
    args = parser.parse_args()
    params = strategies.resolve(load_params(ROOT / "params.yaml"))
    probes = args.probe or [params.evaluate.similarity_probe]
    estimators = args.cka or [params.evaluate.similarity_cka]
    sources = [s for s in params.prepare.sources]
    stages = [f"transfer@{s}" for s in sources]
    with tempfile.TemporaryDirectory(prefix="transferlab-similarity-") as tmp:
        repo = Path(tmp) / "repo"
        copy_worktree(ROOT, repo)
        for out in ("data/prepared", "models", "runs"):  # beside git's small files there
            shutil.copytree(ROOT / out, repo / out, dirs_exist_ok=True)
        row = run_repro(repo, ["--force", "--single-item", *stages], repo / "repro.log")
        if row["status"] != "ok":
            raise SystemExit("dvc repro failed:\n" + "\n".join(row["log_tail"]))
    transfer_s = sum(row["stage_seconds"].values())

    seed_everything(0, params.common.num_threads, params.common.gemm_branch,
                    params.common.determinism)
    start = time.perf_counter()
    inputs = StudyInputs.open(params, ROOT / "data" / "prepared", ROOT / "models", ROOT / "runs")
    open_s = time.perf_counter() - start
    print(f"transfer stages ({', '.join(stages)}), dvc repro: {transfer_s:.2f} s "
          f"(opening the study's inputs, which evaluate does anyway: {open_s:.2f} s)")
    import torch  # after transferlab, whose import pins the CPU kernels (as in a stage)

    device = torch.device("cpu")
    for probe in probes:
        for estimator in estimators:
            models = None
            if not args.fresh:  # the scoring pass, as evaluate runs it first (not timed)
                models = evaluate.LoadedModels()
                evaluate.evaluate_runs(inputs.runs, inputs.target, inputs.sources,
                                       inputs.source_data, params.evaluate, device, load=models)
            with timed_parts() as spent:
                start = time.perf_counter()
                found = what_transferred_report(inputs, probe, params.evaluate.confidence,
                                                estimator, models)
                similarity_s = time.perf_counter() - start
            checkpoints = {str(info["folder"] / run["checkpoint"]) for info in inputs.runs
                           for run in info["runs"] if info["source"] in found.get("blocks", {})}
            parts = ", ".join(f"{part} {spent[part]:.2f} s" for part in PARTS)
            kept = "read afresh" if args.fresh else "kept from the scoring pass"
            print(f"what_transferred_report, {estimator} CKA, {len(checkpoints)} checkpoints "
                  f"({kept}) on {probe} probe inputs: {similarity_s:.3f} s ({parts}); "
                  f"similarity / transfer: {similarity_s / transfer_s:.2%}")


if __name__ == "__main__":
    main()
