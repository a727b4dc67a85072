"""Where a report's numbers came from, in two parts.

:func:`collect_provenance` is what the report (a DVC output) records: the params file, the data
hashes and the CPU pins, all functions of the params, code and data, so a rerun on another
machine writes the same report. :func:`machine_provenance` is where and when it ran (git commit,
device, CPU, threads, software, time): machine-specific, so ``python -m
transferlab.reporting.costs``
writes it to ``timing/provenance.json`` and ``make repro`` mirrors it to MLflow.

Pure data: both return dicts and print nothing.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

from transferlab.core import cpu_pinning
from transferlab.core.run_context import git_state, package_versions
from transferlab.core.runtime import sha256_file

PACKAGES = ("torch", "torchvision", "numpy", "pandas", "scikit-learn", "scipy", "mlflow", "dvc",
            "matplotlib")
REPRODUCE = ("Check out the commit, fetch the cached data and models with `dvc pull` (or let "
             "them be rebuilt), then run `make repro`; `dvc metrics diff` and `dvc plots diff` "
             "compare with the committed metrics and plots, and `make audit` says how far any "
             "number moved. Where and when this run was made (git commit, device, CPU, package "
             "versions) and what it cost (wall time, memory) is machine-specific and kept out "
             "of this report: `timing/summary.md` and `timing/provenance.json` after "
             "`make repro`, and the tags of the MLflow `pipeline` run.")


def collect_provenance(params_path: str | Path, data_dir: str | Path) -> dict:
    """What the report records about its inputs: identical on every machine that reproduces it.

    Args:
        params_path: the params file the pipeline ran with; its full text is recorded.
        data_dir: the prepared data root (``target/`` and ``sources/<name>/``, each with a
            ``manifest.json`` that lists the sha256 of its arrays).
    Returns:
        {"params": {"path", "text", "sha256"}, "data": [{"dataset", "file", "sha256",
         "matches_file"}], "cpu_pins": {variable: value}, "determinism": the
         ``common.determinism`` mode the params name, "reproduce": str}.
    """
    import yaml

    params_path = Path(params_path)
    common = (yaml.safe_load(params_path.read_text()) or {}).get("common") or {}
    return {
        "params": {"path": str(params_path), "text": params_path.read_text(),
                   "sha256": sha256_file(params_path)},
        "data": data_hashes(Path(data_dir)),
        "cpu_pins": dict(cpu_pinning.PINS),
        "determinism": common.get("determinism", "portable"),
        "reproduce": REPRODUCE,
    }


def machine_provenance(num_threads: int | None = None, repo: str | Path | None = None) -> dict:
    """Where and when a run was made: differs between machines and reruns.

    Args:
        num_threads: ``common.num_threads``, as the stages set it.
        repo: the git work tree to describe; defaults to the one holding this package.
    Returns:
        {"git": {"commit", "dirty", "note"}, "python": str, "packages": {name: version},
         "device": str, "cpu": {"model", "isa", "pinning", "pins", "aten_capability"},
         "threads": {"num_threads", "cpu_count"}, "time_utc": str}.
    """
    repo = Path(repo) if repo is not None else Path(__file__).resolve().parents[2]
    status = cpu_pinning.status()
    return {
        "git": git_state(repo),
        "python": platform.python_version(),
        "packages": package_versions(PACKAGES),
        "device": device_name(),
        "cpu": {"model": cpu_model(), "isa": " ".join(cpu_isa()),
                "pinning": "on" if status["enabled"] else "off", "pins": status["pins"],
                "pinned_late": status["late"], "aten_capability": status["aten_capability"]},
        "threads": {"num_threads": num_threads, "cpu_count": os.cpu_count()},
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (else the platform's processor string)."""
    info = Path("/proc/cpuinfo")
    for line in info.read_text().splitlines() if info.is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def cpu_isa() -> list[str]:
    """The vector instruction-set flags the CPU reports (avx2, fma, avx512f, amx_tile, ...)."""
    info = Path("/proc/cpuinfo")
    for line in info.read_text().splitlines() if info.is_file() else []:
        if line.startswith("flags"):
            flags = line.split(":", 1)[1].split()
            return sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "sse4")))
    return []


def data_hashes(data_dir: Path) -> list[dict]:
    """The sha256 of every array each manifest lists, checked against the file on disk.

    Raises:
        FileNotFoundError: naming the manifest, if ``target/manifest.json`` is missing.
    """
    manifests = [("target", data_dir / "target" / "manifest.json")]
    manifests += [(f"sources/{p.parent.name}", p)
                  for p in sorted((data_dir / "sources").glob("*/manifest.json"))]
    rows = []
    for dataset, manifest in manifests:
        if not manifest.is_file():
            raise FileNotFoundError(f"{manifest}: manifest not found")
        listed = json.loads(manifest.read_text()).get("sha256", {})
        for name, digest in sorted(listed.items()):
            array = manifest.parent / name
            rows.append({"dataset": dataset, "file": name, "sha256": digest,
                         "matches_file": array.is_file() and sha256_file(array) == digest})
    return rows


def device_name() -> str:
    """The CUDA device's name when one is visible, else ``cpu``."""
    import torch  # deferred: importing torch is slow and only this needs it

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
