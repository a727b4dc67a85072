"""One way to seed, one way to pick a device, one way to write outputs safely."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transferlab.errors import TransferlabError


def seed_everything(seed: int, num_threads: int | None = None) -> torch.Generator:
    """Seed python, numpy and torch, switch torch to deterministic algorithms.

    The library itself never draws from global state (it passes explicit generators); seeding
    the globals only guards third-party code. Returns a CPU generator seeded with ``seed``.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if num_threads is not None:
        torch.set_num_threads(num_threads)  # torch's OpenMP pool and MKL
        from threadpoolctl import threadpool_limits

        threadpool_limits(num_threads)  # numpy/scipy's OpenBLAS: its default is the core count
    # cuBLAS needs this for deterministic matmuls; harmless on CPU.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=False)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    return torch.Generator().manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    """Map ``auto | cpu | cuda | mps`` to an available device, failing clearly if absent."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("common.device: 'cuda' requested but CUDA is not available")
    if name == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("common.device: 'mps' requested but MPS is not available")
    return torch.device(name)


def device_description(device: torch.device) -> str:
    """A human-readable name of the device, e.g. for provenance."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


TIMING_DIR = Path("timing")


def timing_path(output: str | Path) -> Path:
    """Where a stage writes the wall-clock measurements of a DVC output: ``timing/<output>.json``
    (e.g. ``timing/runs/digits/finetune.json``). Wall time and memory differ on every run and
    machine, so they are kept out of the DVC outputs; the folder is git-ignored and
    ``python -m transferlab.compute`` (run by ``make repro``) summarises it."""
    return TIMING_DIR / f"{Path(output).as_posix().strip('/')}.json"


def write_timing(path: str | Path, timing: dict) -> Path:
    """Write a timing file atomically (a temporary sibling, then rename). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(dumps_json(timing))
    tmp.replace(path)
    return path


def read_timing(path: str | Path) -> dict:
    """A timing file's content, or {} where it is absent (e.g. outputs restored by DVC)."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else {}


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def dumps_json(obj: Any) -> str:
    """Canonical JSON: sorted keys, floats rounded to 6 digits, NaN/inf as null (strict JSON),
    so reruns are byte-identical and any JSON reader can parse the file."""
    return json.dumps(_round_floats(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"


def _round_floats(obj: Any, digits: int = 6) -> Any:
    if isinstance(obj, float):
        return round(obj, digits) if np.isfinite(obj) else None
    if isinstance(obj, (np.floating, np.integer)):
        return _round_floats(obj.item(), digits)
    if isinstance(obj, dict):
        return {str(k): _round_floats(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_round_floats(v, digits) for v in obj]
    return obj


@contextlib.contextmanager
def staged_outputs(*paths: str | Path) -> Iterator[list[Path]]:
    """Write outputs into temporary siblings, then move them into place only on success.

    A failing stage therefore never leaves a half-written output where a later stage (or DVC)
    could pick it up. Yields the temporary paths in the order given.
    """
    finals = [Path(p) for p in paths]
    temps = [p.with_name(f".{p.name}.partial") for p in finals]
    for tmp in temps:
        _remove(tmp)
        tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield temps
    except BaseException:
        for tmp in temps:
            _remove(tmp)
        raise
    missing = [final for final, tmp in zip(finals, temps, strict=True) if not tmp.exists()]
    if missing:
        for tmp in temps:
            _remove(tmp)
        raise RuntimeError(f"{missing[0]}: the stage did not write this declared output")
    for final, tmp in zip(finals, temps, strict=True):
        _remove(final)
        tmp.replace(final)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's ``main``: expected user errors become one clear line and exit 1.

    SIGTERM is turned into ``KeyboardInterrupt`` so that open MLflow runs end KILLED and staged
    outputs are cleaned up, exactly as for Ctrl-C.
    """

    def _terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _terminate)
    try:
        main()
    except TransferlabError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
