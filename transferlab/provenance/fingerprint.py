"""Kernel fingerprints: which CPU kernels give the same bits here as on another machine.

Every kind of kernel that training and evaluation use runs on fixed inputs (drawn from seeded
generators, so identical everywhere), under the project's CPU pins and a ``common.determinism``
mode, and the sha256 of each output's bytes is recorded: convolutions forward and backward at
the default's shapes, linear and matmul, batch norm, pooling, softmax and cross-entropy,
elementwise math, reductions, ``affine_grid`` and ``grid_sample``, torch's AdamW and the
project's (:mod:`transferlab.training.optim`), a 20-step training trace of a small CNN under each,
then the numpy/LAPACK kernels of the transferability scores. Two machines
whose fingerprints are equal in a mode train to the same bits in that mode; where they differ,
the first differing op, in the listed order, is where to look.

A record extends the format of ``shared/tools/kernel_fingerprint.py``, whose output on the Intel
machine of issue 23 is one of the goldens: ``{"machine": ..., <configuration>: {op: hash}}``,
one section per configuration of torch's convolution libraries (:data:`CONFIGURATIONS`). That
tool recorded ``onednn_on`` (torch's default: the ``fast`` mode) and ``onednn_off``, where torch
still runs forward convolutions of 16 or more images on NNPACK, whose blocking follows the L1
cache size; the ``portable`` mode switches NNPACK off too, and is its own section.

Usage (from the repository root)::

    python -m transferlab.provenance.fingerprint record [--out F | --golden-dir DIR]
    python -m transferlab.provenance.fingerprint compare [GOLDEN_OR_DIR ...] [--mode portable|fast]
    python -m transferlab.provenance.fingerprint lock        # dvc.lock's machine, after `dvc repro`

``compare`` exits 1 when a golden differs, naming the first differing op and both CPUs. On
CPUs of two vendors, a portable fingerprint that differs only in torch's own sqrt and AdamW
(:data:`CROSS_VENDOR_OPS`, which training does not use) is the same, and says so.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from transferlab.core import cpu_pinning
from transferlab.core.helptext import plain
from transferlab.core.logs import LogLevelError, configure

# configuration (a record's section) -> torch's CPU convolution libraries allowed in it; the
# first two are the shared tool's, the last is common.determinism: portable
CONFIGURATIONS = {"onednn_on": {"mkldnn": True, "nnpack": True},
                  "onednn_off": {"mkldnn": False, "nnpack": True},
                  "portable": {"mkldnn": False, "nnpack": False}}
# common.determinism mode -> its section
SECTIONS = {"portable": "portable", "fast": "onednn_on"}
GOLDEN_DIR = Path("tests/data/golden")  # relative to the repository root
LOCK_FINGERPRINT = Path("dvc.lock.fingerprint.json")
FINGERPRINT_THREADS = 2  # the goldens' thread count (reductions split by thread)
ENV_PREFIXES = ("ATEN_", "ONEDNN_", "DNNL_", "MKL_", "OMP_", "OPENBLAS_", "NPY_")

# named, not __name__ (which is "__main__" under python -m): under the transferlab logger
log = logging.getLogger("transferlab.provenance.fingerprint")


class FingerprintError(ValueError):
    """A golden or lock fingerprint that cannot be read or has no section for the mode."""


# -- the kernels -------------------------------------------------------------------------------

def _h(*tensors) -> str:  # noqa: ANN002 (tensors or arrays)
    m = hashlib.sha256()
    for t in tensors:
        m.update(t.tobytes() if hasattr(t, "tobytes") else
                 t.detach().contiguous().cpu().numpy().tobytes())
    return m.hexdigest()[:16]


def _data(*shape: int, seed: int = 0):  # noqa: ANN202
    import torch

    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def torch_ops() -> dict[str, str]:
    """The torch kernels of training, on the shared tool's inputs (same names and order)."""
    import torch
    import torch.nn.functional as F

    out = {}
    x = _data(128, 1, 16, 16, seed=1)
    for cin, cout, hw, s in [(1, 32, 16, 2), (32, 64, 8, 3), (64, 128, 4, 4)]:
        xi = _data(128, cin, hw, hw, seed=s).requires_grad_()
        w = _data(cout, cin, 3, 3, seed=s + 10).mul_(0.1).requires_grad_()
        b = _data(cout, seed=s + 20).requires_grad_()
        y = F.conv2d(xi, w, b, padding=1)
        out[f"conv2d_fwd_{cin}x{cout}"] = _h(y)
        gx, gw, gb = torch.autograd.grad(y, (xi, w, b), _data(*y.shape, seed=s + 30))
        out[f"conv2d_bwd_input_{cin}x{cout}"] = _h(gx)
        out[f"conv2d_bwd_weight_{cin}x{cout}"] = _h(gw)
        out[f"conv2d_bwd_bias_{cin}x{cout}"] = _h(gb)
    for n, k, m in [(128, 128, 10), (32, 128, 10), (128, 576, 128), (4096, 128, 10)]:
        a = _data(n, k, seed=n + k).requires_grad_()
        w = _data(m, k, seed=m + k).mul_(0.1).requires_grad_()
        y = F.linear(a, w)
        out[f"linear_fwd_{n}x{k}x{m}"] = _h(y)
        out[f"linear_bwd_{n}x{k}x{m}"] = _h(*torch.autograd.grad(y, (a, w), _data(n, m, seed=7)))
        out[f"matmul_{n}x{k}x{m}"] = _h(a.detach() @ w.detach().t())
    xb = _data(128, 64, 8, 8, seed=5).requires_grad_()
    wb, bb = torch.ones(64, requires_grad=True), torch.zeros(64, requires_grad=True)
    y = F.batch_norm(xb, torch.zeros(64), torch.ones(64), wb, bb, training=True)
    out["batch_norm_fwd"] = _h(y)
    out["batch_norm_bwd"] = _h(*torch.autograd.grad(y, (xb, wb, bb), _data(*y.shape, seed=6)))
    out["relu"] = _h(F.relu(xb.detach()))
    out["max_pool2d"] = _h(F.max_pool2d(xb.detach(), 2))
    out["adaptive_avg_pool2d"] = _h(F.adaptive_avg_pool2d(xb.detach(), 1))
    logits = _data(128, 10, seed=8).requires_grad_()
    loss = F.cross_entropy(logits, torch.arange(128) % 10)
    out["cross_entropy"] = _h(loss)
    out["cross_entropy_bwd"] = _h(torch.autograd.grad(loss, logits)[0])
    out["softmax"] = _h(torch.softmax(logits.detach(), 1))
    out["exp"] = _h(torch.exp(_data(100000, seed=9)))
    out["log"] = _h(torch.log(_data(100000, seed=10).abs() + 1e-3))
    out["tanh"] = _h(torch.tanh(_data(100000, seed=11)))
    out["sum_1e6"] = _h(_data(1000000, seed=12).sum())
    out["mean_dim"] = _h(_data(4096, 128, seed=13).mean(0))
    out["var_dim"] = _h(_data(4096, 128, seed=13).var(0))
    theta = torch.tensor([[[1.0, 0.1, 0.05], [-0.1, 1.0, -0.02]]]).repeat(128, 1, 1)
    grid = F.affine_grid(theta, x.shape, align_corners=False)
    out["affine_grid"] = _h(grid)
    out["grid_sample"] = _h(F.grid_sample(x, grid, align_corners=False))
    from transferlab.training.optim import AdamW

    # torch's own: its sqrt (MKL) differs between Intel and AMD; the project's must not
    out["adamw_3_steps"] = _adamw_3_steps(torch.optim.AdamW)
    out.update(optimizer_ops())
    out["transferlab_adamw_3_steps"] = _adamw_3_steps(AdamW)
    return out


def _adamw_3_steps(optimizer: type) -> str:
    """The hash of one tensor after 3 steps of ``optimizer`` on fixed gradients."""
    import torch

    p = torch.nn.Parameter(_data(64, 32, 3, 3, seed=14))
    opt = optimizer([p], lr=3e-3, weight_decay=5e-4)
    for i in range(3):
        p.grad = _data(64, 32, 3, 3, seed=15 + i)
        opt.step()
    return _h(p)


# the elementwise kernels an optimizer step is made of (newer than the first goldens): where
# adamw_3_steps differs between two CPUs, these say which kernel does
OPTIMIZER_OPS = ("opt_lerp", "opt_addcmul", "opt_addcdiv", "opt_sqrt", "opt_div_scalar",
                 "opt_mul_scalar", "opt_add_alpha")
# torch's AdamW and the training trace under it: known to differ between Intel and AMD (opt_sqrt,
# torch's MKL square root), kept to show that gap; the project trains with its own AdamW, whose
# kernels (the TRAINING_OPS) must agree on every CPU
TORCH_ADAMW_OPS = ("adamw_3_steps", "net_20_steps_params", "net_losses")
# what may differ between an Intel and an AMD CPU in the portable mode (measured 2026-12-06,
# docs/reproducibility.md): torch's CPU sqrt (MKL's vector math rounds per vendor) and so torch's
# own AdamW and the net trained with it. Training uses neither (the project's AdamW takes an
# exact sqrt, TRAINING_OPS), so these alone do not fail a comparison across vendors.
CROSS_VENDOR_OPS = frozenset({"opt_sqrt", *TORCH_ADAMW_OPS})
TRAINING_OPS = ("opt_exact_sqrt", "transferlab_adamw_3_steps", "transferlab_net_20_steps_params",
                "transferlab_net_losses")


def optimizer_ops() -> dict[str, str]:
    """AdamW's and SGD's elementwise kernels, each alone on fixed inputs."""
    from transferlab.training.optim import exact_sqrt

    a, b = _data(64, 32, 3, 3, seed=40), _data(64, 32, 3, 3, seed=41)
    c = _data(64, 32, 3, 3, seed=42).abs().add_(0.1)
    values = (a.clone().lerp_(b, 0.1), a.clone().addcmul_(b, b, value=0.001),
              a.clone().addcdiv_(b, c, value=-0.003), c.sqrt(), c / 0.7, a * 0.999,
              a.clone().add_(b, alpha=-0.003))
    return {**{op: _h(v) for op, v in zip(OPTIMIZER_OPS, values, strict=True)},
            "opt_exact_sqrt": _h(exact_sqrt(c))}


def net_trace() -> dict:
    """20 AdamW steps of a small CNN like the project's on fixed data, under torch's AdamW and
    the project's: the parameters' hash and the loss after each step (where two machines part,
    the step says how early)."""
    import torch

    from transferlab.training.optim import AdamW

    return {**_net_trace(torch.optim.AdamW, ""), **_net_trace(AdamW, "transferlab_")}


def _net_trace(optimizer: type, prefix: str) -> dict:
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))
    opt = optimizer(net.parameters(), lr=3e-3, weight_decay=5e-4)
    x, y = _data(128, 1, 16, 16, seed=21), torch.arange(128) % 10
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {f"{prefix}net_20_steps_params": _h(*net.parameters()),
            f"{prefix}net_losses": [f"{v:.9g}" for v in losses]}


def numpy_ops() -> dict[str, str]:
    """The numpy/scipy kernels of the transferability scores (LogME's SVD, LEEP's and NCE's
    products, H-score's covariances), through the OpenBLAS and LAPACK the pins fix. Newer than
    the first golden: a golden without them is silent about them."""
    import numpy as np

    rng = np.random.default_rng(0)
    f = rng.standard_normal((512, 64))
    out = {"numpy_matmul_512x64x64": _h(f.T @ f),
           "numpy_svd_512x64": _h(np.linalg.svd(f, full_matrices=False)[1]),
           "numpy_eigh_64": _h(np.linalg.eigh(np.cov(f.T))[0]),
           "numpy_pinv_64": _h(np.linalg.pinv(np.cov(f.T), rcond=1e-15)),
           "numpy_exp_sum": _h(np.exp(f).sum(0))}
    return out


def fingerprint(configuration: str, num_threads: int = FINGERPRINT_THREADS) -> dict:
    """Every kernel's hash in a configuration of :data:`CONFIGURATIONS`, set up as a stage is
    (:func:`transferlab.core.runtime.seed_everything` with MKL's ``compatible`` branch)."""
    from transferlab.core.runtime import seed_everything

    seed_everything(0, num_threads, "compatible")
    cpu_pinning.set_conv_backends(**CONFIGURATIONS[configuration])
    return {**torch_ops(), **net_trace(), **numpy_ops()}


def machine() -> dict:
    """The CPU (model, vendor, family/model/stepping, ISA flags, caches), torch and the pins."""
    import torch

    info: dict[str, str] = {}
    flags: list[str] = []
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = (s.strip() for s in line.partition(":"))
            if key == "flags" and not flags:
                flags = sorted({f for f in value.split()
                                if f.startswith(("avx", "amx", "fma", "sse4"))})
            elif key in ("vendor_id", "cpu family", "model", "stepping", "cache size"):
                info.setdefault(key, value)
    return {"cpu": cpu_pinning.cpu_model() or platform.processor(), "flags": flags,
            "vendor": info.get("vendor_id"),
            "family_model_stepping": "/".join(info.get(k, "?") for k in
                                              ("cpu family", "model", "stepping")),
            "cache_size": info.get("cache size"),
            "torch": torch.__version__,
            "pins": {k: v for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIXES)}}


def record(configurations: Iterable[str] = tuple(CONFIGURATIONS)) -> dict:
    """This machine's fingerprint in each configuration, in the goldens' format."""
    rec = {"machine": machine()}
    for configuration in configurations:
        rec[configuration] = fingerprint(configuration)
    return rec


def machine_name(m: dict) -> str:
    """A file name for a golden: vendor, model words, family/model/stepping and the widest ISA,
    e.g. ``intel-xeon-processor-6-167-1-avx512-amx``."""
    model = re.sub(r"\((r|tm)\)|\bcpu\b|@.*", " ", m.get("cpu", "unknown").lower())
    words = re.sub(r"[^a-z0-9]+", "-", model).strip("-")
    isa = [tag for tag, flag in (("avx512", "avx512f"), ("amx", "amx_tile"))
           if flag in m.get("flags", [])] or (["avx2"] if "avx2" in m.get("flags", []) else [])
    fms = (m.get("family_model_stepping") or "").replace("/", "-")
    return "-".join(p for p in (words, fms, *isa) if p)


# -- comparing ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Difference:
    op: str
    here: object
    golden: object

    def describe(self) -> str:
        if isinstance(self.here, list) and isinstance(self.golden, list):
            step = next((i for i, (a, b) in enumerate(zip(self.here, self.golden, strict=False))
                         if a != b), min(len(self.here), len(self.golden)))
            return f"{self.op} (from step {step}: {self.here[step:step + 1]} here, " \
                   f"{self.golden[step:step + 1]} in the golden)"
        return f"{self.op} ({self.here} here, {self.golden} in the golden)" \
            if self.here is not None else f"{self.op} (not computed here)"


def section(rec: dict, mode: str, where: str) -> dict:
    """The ops of a mode (``portable``, ``fast``) or configuration (``onednn_off``)."""
    name = SECTIONS.get(mode, mode)
    if name not in CONFIGURATIONS:
        raise FingerprintError(f"unknown mode {mode!r}; expected one of "
                               f"{', '.join([*SECTIONS, *CONFIGURATIONS])}")
    got = rec.get(name)
    if not isinstance(got, dict):
        raise FingerprintError(f"{where}: no {name!r} section (the {mode} mode)")
    return got


def differences(here: dict, golden: dict, mode: str, where: str = "golden") -> list[Difference]:
    """The ops whose hash differs, in the golden's order. An op only one side computed (newer
    than the golden) is not a difference; one the golden has and this code lacks is."""
    mine, gold = section(here, mode, "this fingerprint"), section(golden, mode, where)
    return [Difference(op, mine.get(op), value) for op, value in gold.items()
            if mine.get(op) != value]


def load(path: Path) -> dict:
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise FingerprintError(f"{path}: not a readable fingerprint ({err})") from None
    if not isinstance(rec, dict) or not isinstance(rec.get("machine"), dict):
        raise FingerprintError(f"{path}: not a fingerprint (no 'machine' record)")
    return rec


def goldens(paths: Iterable[Path]) -> list[Path]:
    """The golden files named, directories expanded to their ``*.json``, sorted."""
    out = []
    for p in paths:
        if p.is_dir():
            out += sorted(p.glob("*.json"))
        elif p.is_file():
            out.append(p)
        else:
            raise FingerprintError(f"{p}: no such golden file or directory")
    return out


def verdict(here: dict, golden: dict, mode: str, where: str) -> tuple[bool, str]:
    """(equal, one line naming both CPUs and, if any, the first differing op)."""
    diffs = differences(here, golden, mode, where)
    ops = len(section(golden, mode, where))
    cpus = f"here: {describe_machine(here['machine'])}; {where}: " \
           f"{describe_machine(golden['machine'])}"
    if not diffs:
        return True, f"{mode}: all {ops} kernels equal ({cpus})"
    return False, (f"{mode}: {len(diffs)} of {ops} kernels differ, first "
                   f"{diffs[0].describe()}; all: {', '.join(d.op for d in diffs)} ({cpus})")


def vendor_only(here: dict, golden: dict, mode: str) -> bool:
    """The portable mode on CPUs of two vendors, differing only in :data:`CROSS_VENDOR_OPS`:
    the same training kernels."""
    if mode != "portable" or here["machine"].get("vendor") == golden["machine"].get("vendor"):
        return False
    return {d.op for d in differences(here, golden, mode)} <= CROSS_VENDOR_OPS


def describe_machine(m: dict) -> str:
    extra = [m.get("vendor"), m.get("family_model_stepping"), m.get("cache_size")]
    flags = m.get("flags", [])
    isa = "AMX" if "amx_tile" in flags else "AVX-512" if "avx512f" in flags else \
        "AVX2" if "avx2" in flags else "no AVX2"
    return f"{m.get('cpu')} [{isa}" + "".join(f", {e}" for e in extra if e) + "]"


# -- the lock's machine --------------------------------------------------------------------------

def lock_sha256(lock: Path) -> str:
    return hashlib.sha256(lock.read_bytes()).hexdigest()


def write_lock_fingerprint(lock: Path, out: Path, determinism: str,
                           rec: dict | None = None) -> bool:
    """Record this machine's fingerprint (``rec``, default :func:`record`) as the lock's, unless
    ``out`` already belongs to this very ``dvc.lock`` (a rerun that reproduced the lock keeps
    the machine that made it).

    Returns:
        Whether ``out`` was (re)written.
    """
    digest = lock_sha256(lock)
    if out.is_file():
        try:
            if json.loads(out.read_text()).get("lock_sha256") == digest:
                return False
        except ValueError:
            pass
    rec = {"lock_sha256": digest, "determinism": determinism, **(rec or record())}
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(rec, indent=1) + "\n")
    tmp.replace(out)
    return True


# -- command line --------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="transferlab fingerprint",
                                     description=plain(__doc__),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="print (or write) this machine's fingerprint")
    out = rec.add_mutually_exclusive_group()
    out.add_argument("--out", type=Path, help="write it to this file")
    out.add_argument("--golden-dir", type=Path,
                     help="write it to DIR/<this CPU's name>.json (a new golden)")
    cmp = sub.add_parser("compare", help="compare this machine with goldens; exit 1 if any differ")
    cmp.add_argument("goldens", nargs="*", type=Path, default=[GOLDEN_DIR],
                     help=f"golden files or directories (default: {GOLDEN_DIR})")
    cmp.add_argument("--mode", choices=[*SECTIONS, "onednn_off"], action="append",
                     help="the mode(s) to compare (default: portable)")
    lock = sub.add_parser("lock", help="record this machine as dvc.lock's, if the lock changed")
    lock.add_argument("--lock", type=Path, default=Path("dvc.lock"))
    lock.add_argument("--out", type=Path, default=LOCK_FINGERPRINT)
    lock.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    try:
        configure()
        # the fingerprint (record) and the comparison (compare) are the answers: stdout; what
        # was written where is a log message
        if args.command == "record":
            text = json.dumps(record(), indent=1) + "\n"
            target = args.out or (args.golden_dir / f"{machine_name(machine())}.json"
                                  if args.golden_dir else None)
            if target is None:
                sys.stdout.write(text)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
                log.info("wrote %s", target)
        elif args.command == "compare":
            modes = args.mode or ["portable"]
            files = goldens(args.goldens)
            if not files:
                raise FingerprintError(f"no golden *.json in {', '.join(map(str, args.goldens))}")
            here = record(dict.fromkeys(SECTIONS.get(m, m) for m in modes))
            bad = 0
            for path in files:
                golden = load(path)
                for mode in modes:
                    name = SECTIONS.get(mode, mode)
                    if name not in golden:
                        print(f"NONE {path.name}: {mode}: no {name!r} section (recorded before "
                              f"this configuration existed; {describe_machine(golden['machine'])})")
                        continue
                    equal, line = verdict(here, golden, mode, path.name)
                    if not equal and vendor_only(here, golden, mode):
                        equal = True
                        line += ("; only torch's own sqrt and AdamW, which differ by vendor and "
                                 "which training does not use")
                    bad += not equal
                    print(f"{'SAME' if equal else 'DIFF'} {path.name}: {line}")
            raise SystemExit(1 if bad else 0)
        else:
            if not args.lock.is_file():
                raise FingerprintError(f"{args.lock}: no lock file; run `dvc repro` first")
            from transferlab.config.params import load_params

            mode = load_params(args.params).common.determinism
            wrote = write_lock_fingerprint(args.lock, args.out, mode)
            log.info("%s: %s", args.out, "recorded this machine as the lock's" if wrote else
                     "already this lock's machine fingerprint; unchanged")
    except (FingerprintError, LogLevelError) as err:
        sys.exit(f"fingerprint: {err}")


if __name__ == "__main__":
    main()
