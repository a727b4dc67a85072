"""The GPU-sized variant of the ``llm_text`` scenario (issue 27): every LLM way to transfer, all
budgets, more seeds, on a lent GPU; runnable on CPU as a shrunk dry run.

On the GPU machine, from the repository root (writes gpu_llm.json, gpu_llm.md and report.md to
--out):

    bash benchmarks/gpu_check.sh --llm --out "$OUT"          # --device cuda, --timeout 540 s
    bash benchmarks/gpu_check.sh --llm --device cpu --dry-run   # anywhere: a shrunk dry run

The params are ``scenarios/llm_text.yaml`` composed on params.yaml (as ``make study`` composes
them), then :data:`GPU_OVERRIDES`: five seeds, 2 to 64 labels per class, and beside the
prompts and the probe the ways that train the LM: ``lora`` (a new head), ``lora_prompt``
(through the label words, LM-BFF) and ``finetune`` (every weight), on SmolLM2. One ``dvc repro``
from nothing in a temporary copy of the working tree, killed at ``--timeout``; its report and
accuracy per curve and budget come back, whatever part of the pipeline finished.

``--dry-run`` shrinks it to 1 seed, budget 2, 40 texts per class, one epoch, and tracking off:
its numbers say that the path works, not what a GPU gives.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

import transferlab  # noqa: F401  (pins the CPU kernels first)

# isort: split
import torch

from transferlab import scenarios
from transferlab.core.run_context import git_state
from transferlab.core.workspace import run_repro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from gpu_check import make_copy  # noqa: E402  (the same fresh copy as the other parts)

DEFAULT_TIMEOUT_S = 540.0
WORDS = "{fresh:' positive',rotten:' negative'}"
GPU_OVERRIDES = (
    "common.seeds=[0,1,2,3,4]",
    "prepare.budgets=[2,4,8,16,64]",
    "grid.methods.strategies=['zero_shot','zero_shot_raw','in_context','lora','lora_prompt',"
    "'finetune']",
    f"+transfer.lora_prompt.label_words={WORDS}",  # + : params.yaml's is empty
    "transfer.lora_prompt.epochs=6",
    "transfer.lora_prompt.batch_size=8",
    "transfer.finetune.epochs=4",
    "transfer.finetune.batch_size=8",
    "transfer.finetune.lr=0.00002",
    "transfer.finetune.augment=false",
    "transfer.finetune.patience=2",
)
DRY_RUN_OVERRIDES = (
    "common.seeds=[0]",
    "tracking.enabled=false",
    "prepare.budgets=[2]",
    "prepare.target.limit_per_class=40",
    "prepare.test_per_class=10",
    "prepare.val_per_class=4",
    "grid.methods.strategies=['zero_shot','lora_prompt']",
    "transfer.lora_prompt.epochs=1",
    "transfer.linear_probe.epochs=5",
    "transfer.scratch.epochs=1",
)


def llm_params(device: str, dry_run: bool, out: Path) -> dict:
    """``llm_text`` composed on params.yaml with the GPU overrides (and the dry run's), on
    ``device``; validated as every stage validates; also written to ``out``."""
    base = scenarios.load("llm_text")
    overrides = (*base.overrides, *GPU_OVERRIDES, f"common.device='{device}'",
                 *(DRY_RUN_OVERRIDES if dry_run else ()))
    scenario = scenarios.Scenario("llm_text_gpu", base.question, overrides)
    scenarios.compose(scenario, ROOT / "params.yaml", out)
    return yaml.safe_load(out.read_text())


def accuracy_table(repo: Path) -> dict[str, dict[str, float]]:
    """{curve: {budget: mean test accuracy}} from the copy's evaluate output, where it ran."""
    path = repo / "metrics" / "evaluate.json"
    if not path.is_file():
        return {}
    summary = json.loads(path.read_text())["summary"]
    return {curve: {b: round(e["accuracy"]["mean"], 4) for b, e in by_budget.items()
                    if isinstance(e, dict) and "accuracy" in e}
            for curve, by_budget in summary.items()}


def render_markdown(summary: dict) -> str:
    lines = [f"# LLM GPU check: {summary['device_name']} ({summary['device']})", ""]
    if summary["dry_run"]:
        lines += ["**Dry run: these are not GPU numbers** (1 seed, budget 2, 40 texts per "
                  "class, one epoch).", ""]
    run = summary["run"]
    lines += [f"{summary['time_utc']}, commit {summary['git']['commit']}"
              f"{' (dirty)' if summary['git']['dirty'] else ''}: `dvc repro` {run['status']} "
              f"in {run['seconds']:.1f} s (limit {summary['timeout_s']:.0f} s).", "",
              "Seconds per stage: " + (", ".join(f"{s} {t:.1f}" for s, t in
                                                 run["stage_seconds"].items()) or "none"), ""]
    table = summary["accuracy"]
    budgets = sorted({b for row in table.values() for b in row}, key=lambda b: float(b))
    if table:
        lines += ["| curve | " + " | ".join(budgets) + " |",
                  "|---|" + "---|" * len(budgets)]
        lines += [f"| {curve} | " + " | ".join(f"{row[b]:.3f}" if b in row else "n/a"
                                               for b in budgets) + " |"
                  for curve, row in sorted(table.items())]
    else:
        lines.append("The evaluate stage did not finish: no accuracy to show.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "gpu_check")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help="wall-clock limit of the pipeline run, seconds")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_llm: --device cuda, but CUDA is not available on this machine. To test the "
              "check itself on CPU, run: bash benchmarks/gpu_check.sh --llm --device cpu "
              "--dry-run", file=sys.stderr)
        return 2
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    device_name = (torch.cuda.get_device_name(0) if args.device == "cuda"
                   else "cpu")
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="transferlab-gpu-llm-"))
    try:
        params = llm_params(args.device, args.dry_run, tmp / "params.yaml")
        repo = make_copy(tmp / "repo", params)
        run = run_repro(repo, [], args.out / "logs" / "llm_text.log",
                        args.timeout - (time.perf_counter() - start))
        accuracy = accuracy_table(repo)
        if (repo / "reports" / "report.md").is_file():
            shutil.copyfile(repo / "reports" / "report.md", args.out / "report.md")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary = {"dry_run": args.dry_run, "device": args.device, "device_name": device_name,
               "timeout_s": args.timeout, "wall_s": time.perf_counter() - start,
               "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "git": git_state(ROOT), "torch": torch.__version__,
               "overrides": list(GPU_OVERRIDES), "run": run, "accuracy": accuracy}
    (args.out / "gpu_llm.json").write_text(json.dumps(summary, indent=2) + "\n")
    (args.out / "gpu_llm.md").write_text(render_markdown(summary))
    print(f"wrote {args.out / 'gpu_llm.json'} and {args.out / 'gpu_llm.md'}: "
          f"{run['status']} in {summary['wall_s']:.1f} s")
    return 0 if run["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
