"""One prepared check for a lent GPU (written for an NVIDIA H200), runnable on CPU as a dry run.

On the GPU machine, from the repository root (writes gpu_check.json and gpu_check.md to --out):

    bash benchmarks/gpu_check.sh --out "$OUT"               # --device cuda, under 8 minutes
    bash benchmarks/gpu_check.sh --device cpu --dry-run     # anywhere: the same code paths,
                                                            # a shrunk scenario, about 2-3 min

Parts, in this order, each given a share of ``--timeout`` (default 420 s, which leaves a minute
for start-up, copies and the summary). A part's own limit is its share of the time still left,
so what one part leaves unused goes to the ones after it. The throughput part runs a fixed
number of steps in this process and is only timed; every other part is killed at its limit:

  throughput      in this process: ``transferlab.training.loop.fit`` on synthetic data of the
                  pipeline's image size and pretraining batch size, small_cnn and resnet18, timed
                  between two ``torch.cuda.synchronize()`` calls; samples/s, FLOPs per sample
                  (``flops_per_example``) and achieved FLOP/s against the device's dense bf16 peak
  determinism_a   ``dvc repro transfer@printed_digits`` (and upstream) in copy A
  determinism_b   the same in a fresh copy B; the stages' outputs are compared by sha256
  default         ``dvc repro`` of the rest of the default scenario (params.yaml), in copy A
  resnet18        ``dvc repro`` of the same params with ``pretrain.arch: resnet18``, in copy C

Every pipeline run happens in a temporary copy of the working tree (``copy_worktree``), with
``common.device`` set to the checked device (on CUDA the library trains under bf16 autocast), so
the workspace's outputs are never touched. A part that fails or runs out of time is recorded as
such, the others still run, and the exit status is then 1 (2: CUDA asked for but absent).

``--dry-run`` shrinks every scenario (1 seed, budgets [1, 3], one source, 2 epochs, one
strategy, tracking off); its numbers say that the check works, not how fast a GPU is.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

import transferlab  # noqa: F401  (pins the CPU kernels first)

# isort: split
import torch

from transferlab.config.params import TrainParams, load_params
from transferlab.core.run_context import git_state
from transferlab.core.runtime import seed_everything, sha256_file
from transferlab.core.workspace import copy_worktree, run_repro
from transferlab.models.nets import build_model
from transferlab.provenance.record import cpu_model
from transferlab.tracking.mirror import outputs_digest
from transferlab.training.loop import fit, flops_per_example

# Dense (no sparsity) bf16 tensor-core peaks, FLOP/s, from the vendor's data sheets. Matched as
# substrings of torch.cuda.get_device_name, first match wins (so "H200 NVL" before "H200").

ROOT = Path(__file__).resolve().parents[1]
BF16_DENSE_PEAK = (
    ("H200 NVL", 835e12),
    ("H200", 989e12),
    ("H100 NVL", 835e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM
    ("A100", 312e12),
)

# (part, share of the time budget): the seconds each gets of the default --timeout
PARTS = (("throughput", 30), ("determinism_a", 60), ("determinism_b", 60), ("default", 160),
         ("resnet18", 110))
DEFAULT_TIMEOUT_S = float(sum(share for _, share in PARTS))  # 420 s: under 8 min in all
MIN_PART_S = 5.0  # below this much time a part is skipped, not started

DETERMINISM_TARGET = "transfer@printed_digits"
# the outputs of that stage and its upstream (prepare, pretrain@printed_digits), as in dvc.yaml
DETERMINISM_OUTS = ("data/prepared", "models/printed_digits", "runs/printed_digits/finetune")

THROUGHPUT_ARCHS = ("small_cnn", "resnet18")


def peak_bf16_flops(device_name: str) -> float | None:
    """The dense bf16 peak FLOP/s of a CUDA device by its name; None if not in the table."""
    for key, peak in BF16_DENSE_PEAK:
        if key.lower() in device_name.lower():
            return peak
    return None


def part_timeout(remaining_s: float, part: str, done: set[str]) -> float:
    """``part``'s share of ``remaining_s`` among the parts not yet done (``part`` included)."""
    shares = {name: share for name, share in PARTS if name not in done or name == part}
    return max(0.0, remaining_s) * shares[part] / sum(shares.values())


def set_key(params: dict, dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested params dict, failing on a key params.yaml does not have."""
    *parents, last = dotted.split(".")
    node = params
    for key in parents:
        node = node[key]
    if last not in node:
        raise KeyError(f"{dotted}: no such key in params.yaml")
    node[last] = value


def dry_run_overrides(base: dict) -> dict[str, Any]:
    """The shrunk scenario of --dry-run: 1 seed, budgets [1, 3], one source, 2 epochs."""
    overrides: dict[str, Any] = {
        "common.seeds": [0],
        "tracking.enabled": False,
        "prepare.budgets": [1, 3],
        "prepare.test_per_class": 20,
        "prepare.sources": {"printed_digits": {"kind": "fonts", "chars": "0123456789",
                                               "n_per_class": 60}},
        "grid.strategies": ["finetune"],
        "grid.methods.strategies": [],
        "pretrain.epochs": 2,
    }
    for name, block in base["transfer"].items():
        if isinstance(block, dict) and "epochs" in block:
            overrides[f"transfer.{name}.epochs"] = 2
    return overrides


def scenario_params(base: dict, overrides: dict[str, Any]) -> dict:
    """A copy of ``base`` with the dotted-key ``overrides`` applied."""
    params = copy.deepcopy(base)
    for key, value in overrides.items():
        set_key(params, key, value)
    return params


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_throughput(arch: str, device: torch.device, image_size: int, batch_size: int,
                       steps_per_epoch: int, epochs: int, width: int) -> dict[str, Any]:
    """Training samples/s of ``fit`` (fixed schedule, no augmentation) on synthetic data that
    lives on ``device``, after one untimed warm-up epoch, and the FLOPs behind them."""
    model = build_model(arch, 10, 0.5, 0.25, seed=0, width=width)
    g = torch.Generator().manual_seed(0)
    n = batch_size * steps_per_epoch
    x = torch.rand(n, 1, image_size, image_size, generator=g).to(device)  # (N, 1, H, W)
    y = torch.randint(0, 10, (n,), generator=g).to(device)
    groups = [{"params": list(model.parameters())}]
    cfg = TrainParams(epochs=1, batch_size=batch_size, augment=False)
    fit(model, (x, y), None, cfg, groups, torch.Generator().manual_seed(0), device)  # warm-up
    _sync(device)
    start = time.perf_counter()
    result = fit(model, (x, y), None, replace(cfg, epochs=epochs), groups,
                 torch.Generator().manual_seed(1), device)
    _sync(device)
    seconds = time.perf_counter() - start
    samples = result["steps"] * batch_size
    flops = flops_per_example(model, x[:1].cpu(), train=True)
    return {"samples_per_s": samples / seconds, "flops_per_sample": flops,
            "achieved_flops_per_s": flops * samples / seconds, "seconds": seconds,
            "steps": result["steps"], "batch_size": batch_size, "image_size": image_size}


def make_copy(dest: Path, params: dict) -> Path:
    """A fresh copy of the working tree with ``params`` as its params.yaml (validated) and no
    dvc.lock, so everything runs from nothing."""
    dest.mkdir(parents=True)
    copy_worktree(ROOT, dest)
    (dest / "dvc.lock").unlink(missing_ok=True)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    load_params(dest / "params.yaml")  # a bad override fails here, naming the key
    return dest


def compare_outputs(a: Path, b: Path) -> dict[str, Any]:
    """sha256 of the determinism target's outputs in two copies, and the files that differ."""
    digests = [outputs_digest({rel: repo / rel for rel in DETERMINISM_OUTS}) for repo in (a, b)]
    files = sorted({p.relative_to(repo) for repo in (a, b) for rel in DETERMINISM_OUTS
                    for p in (repo / rel).rglob("*") if p.is_file()})
    differing = [str(f) for f in files if not ((a / f).is_file() and (b / f).is_file())
                 or sha256_file(a / f) != sha256_file(b / f)]
    runs = "runs/printed_digits/finetune/runs.json"
    return {"identical": digests[0] == digests[1] and not differing, "digest_a": digests[0],
            "digest_b": digests[1], "runs_json_sha256": [sha256_file(r / runs) for r in (a, b)],
            "differing_files": differing, "compared": list(DETERMINISM_OUTS),
            "target": DETERMINISM_TARGET}


def _fmt(value: float | None, scale: float = 1.0, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value / scale:,.{digits}f}"


def render_markdown(summary: dict[str, Any]) -> str:
    """The human-readable summary of a gpu_check.json dict."""
    lines = [f"# GPU check: {summary['device_name']} ({summary['device']})", ""]
    if summary["dry_run"]:
        lines += [f"**Dry run on {summary['device']}: these are not GPU numbers.** The scenarios "
                  "were shrunk (1 seed, budgets [1, 3], one source, 2 epochs); this run shows "
                  "that the check works, not how fast a GPU is.", ""]
    verdict = "all parts passed" if summary["ok"] else "SOME PARTS FAILED (see below)"
    lines += [f"{summary['time_utc']}, commit {summary['git']['commit']}"
              f"{' (dirty)' if summary['git']['dirty'] else ''}: {verdict}; "
              f"{summary['wall_s']:.1f} s in all against a budget of {summary['timeout_s']:.0f} s.",
              "", "| part | planned s | limit s | seconds | status |", "|---|---|---|---|---|"]
    for name, part in summary["parts"].items():
        lines.append(f"| {name} | {part['planned_s']:.0f} | {_fmt(part.get('timeout_s'), 1, 0)} "
                     f"| {_fmt(part.get('seconds'))} | {part['status']} |")
    lines += ["", "## Training throughput", "",
              "`transferlab.training.loop.fit` on synthetic data on the device, after a warm-up "
              "epoch, "
              "timed between two synchronisations: the pipeline's own loop with its bookkeeping, "
              "so the pipeline's throughput, not the device's ceiling. FLOPs count the forward "
              "and backward passes (`flops_per_example`), not the optimizer step.", "",
              "| arch | batch | steps | samples/s | GFLOP/sample | achieved TFLOP/s | "
              "bf16 peak TFLOP/s | fraction of peak |", "|---|---|---|---|---|---|---|---|"]
    peak = summary["peak_bf16_flops_per_s"]
    for arch, t in summary["throughput"].items():
        if "error" in t:
            lines.append(f"| {arch} | failed: {t['error']} | | | | | | |")
            continue
        fraction = "n/a" if t["peak_fraction"] is None else f"{t['peak_fraction']:.2%}"
        lines.append(f"| {arch} | {t['batch_size']} | {t['steps']} | {t['samples_per_s']:,.0f} "
                     f"| {t['flops_per_sample'] / 1e9:.4f} | {t['achieved_flops_per_s'] / 1e12:.4f}"
                     f" | {_fmt(peak, 1e12, 0)} | {fraction} |")
    det = summary["determinism"]
    lines += ["", "## Determinism", ""]
    if "identical" in det:
        lines.append(f"`dvc repro {det['target']}` in two fresh copies: outputs "
                     f"{'**identical**' if det['identical'] else '**DIFFERENT**'} "
                     f"(sha256 {det['digest_a'][:16]} vs {det['digest_b'][:16]}, over "
                     f"{', '.join(det['compared'])}).")
        if det["differing_files"]:
            lines.append("Differing files: " + ", ".join(det["differing_files"][:20]))
    else:
        lines.append(f"Not compared: {det['reason']}.")
    lines += ["", "## Scenarios (`dvc repro` from nothing)", "",
              "| scenario | status | seconds | stages run | overrides |", "|---|---|---|---|---|"]
    for name, s in summary["scenarios"].items():
        overrides = ", ".join(f"`{k}: {json.dumps(v)}`" for k, v in s["overrides"].items()
                              if k in ("common.device", "pretrain.arch"))
        lines.append(f"| {name} | {s['status']} | {_fmt(s.get('seconds'))} "
                     f"| {len(s.get('stages_run', []))} | {overrides} |")
    lines += ["", "Seconds per stage (each includes its Python start-up; logs in `logs/`):", ""]
    for name, run in summary["runs"].items():
        stages = ", ".join(f"{stage} {seconds:.1f}" for stage, seconds
                           in run["stage_seconds"].items())
        lines.append(f"- {name} ({run['status']}): {stages or 'none'}")
    return "\n".join(lines) + "\n"


class Budget:
    """The wall-clock budget of the parts: each one's planned share, its limit when it starts
    (its share of what is left, see :func:`part_timeout`), its status and seconds."""

    def __init__(self, total_s: float) -> None:
        self.total_s, self.start = total_s, time.perf_counter()
        scale = total_s / DEFAULT_TIMEOUT_S
        self.parts: dict[str, dict[str, Any]] = {
            name: {"planned_s": share * scale, "status": "not run"} for name, share in PARTS}

    def begin(self, name: str) -> float | None:
        """This part's limit in seconds, or None (the part marked skipped) if none is left."""
        done = {n for n, p in self.parts.items() if p["status"] != "not run"}
        limit = part_timeout(self.total_s - self.elapsed(), name, done)
        self.parts[name]["timeout_s"] = limit
        if limit < MIN_PART_S:
            self.parts[name]["status"] = "skipped: no time left"
            print(f"[{name}] skipped: {limit:.0f} s left for it", flush=True)
            return None
        print(f"[{name}] limit {limit:.0f} s", flush=True)
        return limit

    def end(self, name: str, status: str, seconds: float) -> None:
        self.parts[name].update(status=status, seconds=seconds)
        print(f"[{name}] {status} in {seconds:.1f} s", flush=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def throughput_part(budget: Budget, device: torch.device, base: dict, peak: float | None,
                    dry_run: bool) -> dict[str, dict[str, Any]]:
    """{arch: throughput row, or {"error": first line}} under the pipeline's deterministic
    settings, at the pipeline's image size, pretraining batch size and small_cnn width."""
    rows: dict[str, dict[str, Any]] = {}
    if budget.begin("throughput") is None:
        return rows
    start = time.perf_counter()
    seed_everything(0, base["common"]["num_threads"])
    steps, epochs = (4, 1) if dry_run else (64, 3)
    for arch in THROUGHPUT_ARCHS:
        try:
            row = measure_throughput(arch, device, base["prepare"]["image_size"],
                                     base["pretrain"]["batch_size"], steps, epochs,
                                     base["pretrain"]["width"])
            row["peak_fraction"] = None if peak is None else row["achieved_flops_per_s"] / peak
        except RuntimeError as err:  # e.g. an op without a deterministic CUDA kernel: recorded
            row = {"error": str(err).splitlines()[0]}
        rows[arch] = row
    if device.type == "cuda":
        torch.cuda.empty_cache()  # leave the device's memory to the pipeline's stages
    failed = [arch for arch, row in rows.items() if "error" in row]
    budget.end("throughput", f"failed: {', '.join(failed)}" if failed else "ok",
               time.perf_counter() - start)
    return rows


def pipeline_parts(budget: Budget, base: dict, scenarios: dict[str, dict[str, Any]],
                   logs: Path) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The determinism runs (copies a, b), the rest of the default scenario (copy a) and the
    resnet18 scenario (copy c). Returns ({part: run_repro row}, the determinism comparison)."""
    default = scenario_params(base, scenarios["default"])
    plan = [("determinism_a", "a", default, [DETERMINISM_TARGET]),
            ("determinism_b", "b", default, [DETERMINISM_TARGET]),
            ("default", "a", default, []),
            ("resnet18", "c", scenario_params(base, scenarios["resnet18"]), [])]
    tmp = Path(tempfile.mkdtemp(prefix="transferlab-gpu-check-"))
    runs: dict[str, dict[str, Any]] = {}
    try:
        for name, copy_name, params, targets in plan:
            limit = budget.begin(name)
            if limit is None:
                continue
            start, repo = time.perf_counter(), tmp / copy_name
            if not repo.exists():
                make_copy(repo, params)  # within the part's limit
            runs[name] = run_repro(repo, targets, logs / f"{name}.log",
                                   limit - (time.perf_counter() - start))
            budget.end(name, runs[name]["status"], time.perf_counter() - start)
        unfinished = [f"{n}: {runs[n]['status'] if n in runs else 'not run'}"
                      for n in ("determinism_a", "determinism_b")
                      if runs.get(n, {}).get("status") != "ok"]
        if unfinished:
            return runs, {"reason": "not both runs finished (" + "; ".join(unfinished) + ")"}
        return runs, compare_outputs(tmp / "a", tmp / "b")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def scenario_rows(runs: dict[str, dict[str, Any]], scenarios: dict[str, dict[str, Any]]
                  ) -> dict[str, dict[str, Any]]:
    """Each scenario's status, seconds and stages, from the parts that ran it."""
    rows = {}
    for name, run_parts in (("default", ("determinism_a", "default")), ("resnet18", ("resnet18",))):
        done = [runs[p] for p in run_parts if p in runs]
        statuses = [r["status"] for r in done] + ["not run"] * (len(run_parts) - len(done))
        rows[name] = {"status": next((s for s in statuses if s != "ok"), "ok"),
                      "seconds": sum(r["seconds"] for r in done) if done else None,
                      "stages_run": [s for r in done for s in r["stages_run"]],
                      "parts": list(run_parts), "overrides": scenarios[name]}
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--dry-run", action="store_true",
                        help="shrunk scenarios (1 seed, budgets [1, 3], one source, 2 epochs)")
    parser.add_argument("--out", type=Path, default=ROOT / "gpu_check",
                        help="where gpu_check.json, gpu_check.md and logs/ go")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help="wall-clock budget of all parts together, seconds")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: --device cuda, but CUDA is not available on this machine. To test "
              "the check itself on CPU, run: bash benchmarks/gpu_check.sh --device cpu "
              "--dry-run", file=sys.stderr)
        return 2
    budget = Budget(args.timeout)
    device = torch.device(args.device)
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    shrink = dry_run_overrides(base) if args.dry_run else {}
    scenarios = {"default": {**shrink, "common.device": args.device},
                 "resnet18": {**shrink, "common.device": args.device, "pretrain.arch": "resnet18"}}
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    peak = peak_bf16_flops(device_name) if device.type == "cuda" else None
    print(f"gpu_check on {device_name} ({args.device}){', DRY RUN' if args.dry_run else ''}; "
          f"time budget {args.timeout:.0f} s:")
    for name, part in budget.parts.items():
        print(f"  {name:14s} {part['planned_s']:6.0f} s")

    throughput = throughput_part(budget, device, base, peak, args.dry_run)
    runs, determinism = pipeline_parts(budget, base, scenarios, args.out / "logs")
    ok = (all(p["status"] == "ok" for p in budget.parts.values())
          and determinism.get("identical") is True)
    summary = {
        "dry_run": args.dry_run, "device": args.device, "device_name": device_name,
        "peak_bf16_flops_per_s": peak, "ok": ok, "timeout_s": args.timeout,
        "wall_s": budget.elapsed(), "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                              time.gmtime()),
        "git": git_state(ROOT), "torch": torch.__version__, "cuda": torch.version.cuda,
        "parts": budget.parts, "throughput": throughput, "determinism": determinism,
        "scenarios": scenario_rows(runs, scenarios), "runs": runs,
    }
    (args.out / "gpu_check.json").write_text(json.dumps(summary, indent=2) + "\n")
    (args.out / "gpu_check.md").write_text(render_markdown(summary))
    print(f"wrote {args.out / 'gpu_check.json'} and {args.out / 'gpu_check.md'}: "
          f"{'ok' if ok else 'NOT ok'} in {summary['wall_s']:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
