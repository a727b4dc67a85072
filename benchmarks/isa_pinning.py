"""Do the CPU pins (transferlab.core.cpu_pinning) make outputs independent of the instruction sets a
machine offers, and what do they cost? Emulates other machines on this one by capping each
library's dispatch through its own environment switch, and trains a short real workload under
each cap with the pins off and on, each configuration in fresh processes (the switches are read
once, at load).

Workload (the real stages, on a shrunk config in a temporary directory): pretrain the
``printed_digits`` source (small_cnn) for 2 epochs, then one ``finetune`` run (10 labels per
class, seed 0); plus a numpy/scipy probe (the four transferability scores of fixed random
features). Prints per configuration the sha256 prefixes of the source checkpoint, the finetune
run folder and the probe, whether each equals the native run of the same pinning, and the
training wall time; then the cost of pinning on the native machine, pinned / unpinned, from
alternating repeats.

Emulation can only cap DOWN (an AVX2 machine cannot run AVX-512 kernels), so it shows which
switches move the numbers and that the pins override them; it cannot show what an AVX-512/AMX
CPU's own kernels would produce, nor differences no switch controls (cache-size-dependent
blocking, a different libm, another compiler).

    python benchmarks/isa_pinning.py [--repeats 2] [--configs native,aten_default,...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "printed_digits"
# emulated machines: the switches a CPU without these instruction sets would leave each library
MACHINES: dict[str, dict[str, str]] = {
    "native": {},
    "aten_default": {"ATEN_CPU_CAPABILITY": "default"},
    "onednn_sse41": {"ONEDNN_MAX_CPU_ISA": "SSE41", "DNNL_MAX_CPU_ISA": "SSE41"},
    "mkl_sse4_2": {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "MKL_CBWR": "SSE4_2"},
    "openblas_numpy_sse": {"OPENBLAS_CORETYPE": "Nehalem", "NPY_DISABLE_CPU_FEATURES": "X86_V3"},
    "all_sse": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
                "DNNL_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
                "MKL_CBWR": "SSE4_2", "OPENBLAS_CORETYPE": "Nehalem",
                "NPY_DISABLE_CPU_FEATURES": "X86_V3"},
}
# the package first, as every stage does: numpy reads its switches when it loads (a probe that
# imported numpy first ran unpinned in a first version of this benchmark)
PROBE = """
import transferlab
import hashlib, numpy as np
from transferlab.evaluation.transferability import score_all
rng = np.random.default_rng(0)
feats = rng.normal(size=(400, 64))
labels = rng.integers(0, 10, 400)
probs = np.exp(rng.normal(size=(400, 10))); probs /= probs.sum(1, keepdims=True)
scores = score_all(feats, probs, labels)
print(hashlib.sha256(repr(sorted(scores.items())).encode()).hexdigest())
"""


def shrunk_params(path: Path) -> None:
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["common"].update(seeds=[0], device="cpu")
    p["tracking"]["enabled"] = False
    p["prepare"].update(budgets=[10], test_per_class=30, val_per_class=10)
    p["prepare"]["sources"] = {SOURCE: {"kind": "fonts", "chars": "0123456789",
                                        "n_per_class": 200}}
    p["pretrain"].update(epochs=2)
    p["transfer"]["finetune"]["epochs"] = 5
    path.write_text(yaml.safe_dump(p, sort_keys=False))


def sha_tree(path: Path) -> str:
    digest = hashlib.sha256()
    for f in sorted(p for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()):
        digest.update(f.relative_to(path.parent).as_posix().encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()[:12]


def run(cmd: list[str], env: dict) -> str:
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return proc.stdout


def workload(tmp: Path, name: str, caps: dict, pinned: bool) -> dict:
    """Pretrain + one finetune run + the numpy probe under ``caps``; hashes and seconds."""
    env = {**os.environ, **caps, "TRANSFERLAB_CPU_PINNING": "on" if pinned else "off",
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}"}
    out = tmp / f"{name}-{'pinned' if pinned else 'unpinned'}"
    params, data = str(tmp / "params.yaml"), tmp / "data"
    py = sys.executable
    run([py, "stages/pretrain_source.py", "--params", params, "--source", SOURCE,
         "--data", str(data / "sources" / SOURCE), "--model", str(out / "model.pt"),
         "--metrics", str(out / "metrics.json"), "--history", str(out / "history.json"),
         "--timing", str(out / "timing_pretrain.json")], env)
    run([py, "stages/transfer.py", "--params", params, "--strategy", "finetune",
         "--source", SOURCE, "--source-model", str(out / "model.pt"),
         "--source-data", str(data / "sources" / SOURCE), "--target", str(data / "target"),
         "--run-dir", str(out / "finetune"), "--timing", str(out / "timing_finetune.json")], env)
    probe = run([py, "-c", PROBE], env).strip()[:12]
    pre = json.loads((out / "timing_pretrain.json").read_text())["seconds"]
    ft = json.loads((out / "timing_finetune.json").read_text())
    ft_s = sum(v["seconds"] for v in ft.values() if isinstance(v, dict) and "seconds" in v)
    accuracy = json.loads((out / "metrics.json").read_text())["test"]["accuracy"]
    return {"checkpoint": sha_tree(out / "model.pt"), "finetune": sha_tree(out / "finetune"),
            "probe": probe, "seconds": pre + ft_s, "source_accuracy": accuracy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2,
                        help="alternating native pinned/unpinned repeats for the cost ratio")
    parser.add_argument("--configs", default=",".join(MACHINES), help="emulated machines")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="isa-pinning-") as name:
        tmp = Path(name)
        shrunk_params(tmp / "params.yaml")
        run([sys.executable, "stages/prepare.py", "--params", str(tmp / "params.yaml"),
             "--out", str(tmp / "data")], {**os.environ})
        rows = {}
        for config in args.configs.split(","):
            for pinned in (False, True):
                rows[config, pinned] = workload(tmp, config, MACHINES[config], pinned)
                print(f"  done {config} pinned={pinned}: {rows[config, pinned]}", flush=True)
        print("\n| machine (caps) | pins | checkpoint | finetune | numpy probe | same as native "
              "(ckpt/ft/probe) | source acc | train s |")
        print("|---|---|---|---|---|---|---|---|")
        for (config, pinned), r in rows.items():
            base = rows.get(("native", pinned))
            same = "/".join("=" if base and r[k] == base[k] else "≠"
                            for k in ("checkpoint", "finetune", "probe"))
            caps = " ".join(f"{k}={v}" for k, v in MACHINES[config].items()) or "-"
            print(f"| {config} ({caps}) | {'on' if pinned else 'off'} | {r['checkpoint']} | "
                  f"{r['finetune']} | {r['probe']} | {same} | {r['source_accuracy']:.4f} | "
                  f"{r['seconds']:.1f} |")
        times: dict[bool, list[float]] = {False: [rows["native", False]["seconds"]]
                                          if ("native", False) in rows else [],
                                          True: [rows["native", True]["seconds"]]
                                          if ("native", True) in rows else []}
        for i in range(args.repeats - 1):
            for pinned in (True, False):
                times[pinned].append(workload(tmp, f"repeat{i}", {}, pinned)["seconds"])
        if times[False] and times[True]:
            off, on = statistics.median(times[False]), statistics.median(times[True])
            print(f"\ncost of pinning on this machine (native, median of {len(times[True])}): "
                  f"unpinned {off:.1f} s, pinned {on:.1f} s, ratio pinned/unpinned "
                  f"{on / off:.2f}  (runs: off {times[False]}, on {times[True]})")


if __name__ == "__main__":
    main()
