"""One way to seed, one way to pick a device, one way to write outputs safely."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from transferlab.core.errors import TransferlabError
from transferlab.core.logs import configure

if TYPE_CHECKING:  # torch is imported where it is used: the tracking CLI never needs it
    import torch

log = logging.getLogger(__name__)


def seed_everything(seed: int, num_threads: int | None = None,
                    gemm_branch: str | None = None,
                    determinism: str | None = None) -> torch.Generator:
    """Seed python, numpy and torch, switch torch to deterministic algorithms.

    The library itself never draws from global state (it passes explicit generators); seeding
    the globals only guards third-party code. ``gemm_branch`` (``common.gemm_branch``) sets
    MKL's reproducible GEMM branch, which must happen before the process's first matrix product
    (:func:`transferlab.core.cpu_pinning.set_gemm_branch`); None leaves the pinned one.
    ``determinism`` (``common.determinism``: portable | fast) says whether CPU convolutions may
    use oneDNN (:func:`transferlab.core.cpu_pinning.set_determinism`); None leaves it as it is.
    Returns a CPU generator seeded with ``seed``.
    """
    import torch

    if determinism is not None:
        from transferlab.core.cpu_pinning import set_determinism

        set_determinism(determinism)
    if gemm_branch is not None:
        from transferlab.core.cpu_pinning import set_gemm_branch

        set_gemm_branch(gemm_branch)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if num_threads is not None:
        torch.set_num_threads(num_threads)  # torch's OpenMP pool and MKL
        from threadpoolctl import threadpool_limits

        threadpool_limits(num_threads)  # numpy/scipy's OpenBLAS: its default is the core count
    # cuBLAS needs this for deterministic matmuls; harmless on CPU.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    use_deterministic_algorithms()
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    return torch.Generator().manual_seed(seed)


def use_deterministic_algorithms() -> None:
    """``torch.use_deterministic_algorithms(True)`` for eager PyTorch, without its import of
    torch._inductor (about 1.8 s per process, paid by every stage) to set the compiler's flag:
    nothing here compiles. Where the compiler is already loaded, its flag is set too."""
    import torch

    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None:  # a torch without the private switch: the public call does both
        torch.use_deterministic_algorithms(True, warn_only=False)
        return
    setter(True, warn_only=False)
    inductor_config = sys.modules.get("torch._inductor.config")
    if inductor_config is not None:
        inductor_config.deterministic = True


def resolve_device(name: str = "auto") -> torch.device:
    """Map ``auto | cpu | cuda | mps`` to an available device, failing clearly if absent."""
    import torch

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
    import torch

    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


TIMING_DIR = Path("timing")


def timing_path(output: str | Path) -> Path:
    """Where a stage writes the wall-clock measurements of a DVC output: ``timing/<output>.json``
    (e.g. ``timing/runs/digits/finetune.json``). Wall time and memory differ on every run and
    machine, so they are kept out of the DVC outputs; the folder is git-ignored and
    ``python -m transferlab.reporting.costs`` (run by ``make repro``) summarises it."""
    return TIMING_DIR / f"{Path(output).as_posix().strip('/')}.json"


# -- memory (Linux /proc; elsewhere the lifetime maximum) ------------------------------------

def _proc_status_bytes(field: str) -> int | None:
    """A memory field of /proc/self/status (Linux), in bytes; ``None`` where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return None


# the process's high-water mark just before each reset (by a Stopwatch): what
# :func:`process_peak_rss_bytes` adds back, so the stage's own peak survives the resets
_peak_before_resets = {"bytes": 0}


def reset_peak_rss() -> int | None:
    """Reset the high-water mark to the current resident memory and return that; ``None``
    where this is not possible (not Linux, or not permitted), and the peak stays the
    process's lifetime maximum."""
    before = _proc_status_bytes("VmHWM")
    if before is not None:
        _peak_before_resets["bytes"] = max(_peak_before_resets["bytes"], before)
    try:
        Path("/proc/self/clear_refs").write_text("5")  # 5: reset VmHWM to the current RSS
    except OSError:
        return None
    return _proc_status_bytes("VmRSS")


def peak_rss_bytes() -> int:
    """The process's high-water mark of resident memory since the last reset, in bytes."""
    peak = _proc_status_bytes("VmHWM")
    if peak is not None:
        return peak
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, kB on Linux
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale


def process_peak_rss_bytes() -> int:
    """The whole process's peak resident memory so far (a stage's peak RSS), in bytes: the
    largest high-water mark, including those that
    :class:`~transferlab.training.loop.Stopwatch` reset."""
    return max(_peak_before_resets["bytes"], peak_rss_bytes())


def write_timing(path: str | Path, timing: dict) -> Path:
    """Write a timing file atomically (a temporary sibling, then rename), with the stage
    process's peak resident memory so far (``process_peak_rss_bytes``: call it at the end of
    the stage). Returns the path."""
    timing = {**timing, "process_peak_rss_bytes": process_peak_rss_bytes()}
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


#: Mean seconds between re-deliveries of a SIGTERM that nothing has handled yet (`run_stage`).
INTERRUPT_RETRY_SECONDS = 1.0


def _retry_delay(attempt: int) -> float:
    """Between 0.5 and 1.5 x :data:`INTERRUPT_RETRY_SECONDS`, never periodic (golden-ratio
    steps), so a retry cannot lock onto the phase of a loop whose finalizer swallowed the last."""
    return INTERRUPT_RETRY_SECONDS * (0.5 + (attempt * 0.6180339887) % 1.0)


def _handling_interrupt() -> bool:
    """True while an except/finally block (or a context manager's exit) is handling a
    KeyboardInterrupt, directly or as the context of another exception."""
    exc = sys.exc_info()[1]
    while exc is not None:
        if isinstance(exc, KeyboardInterrupt):
            return True
        exc = exc.__context__
    return False


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's ``main``: expected user errors become one clear line and exit 1.

    Logging is configured first (:func:`transferlab.core.logs.configure`), so every stage
    honours ``$TRANSFERLAB_LOG_LEVEL``; a value that names no level is such a user error. The
    ``error: ...`` line is written to stderr whatever the level.

    SIGTERM is turned into ``KeyboardInterrupt`` so that open MLflow runs end KILLED and staged
    outputs are cleaned up, exactly as for Ctrl-C. Python runs a signal handler between any two
    bytecodes, also inside a ``__del__`` or a weakref callback, where the exception is printed
    ("Exception ignored in ...") and swallowed; the stage would then train on. So the interrupt
    is raised again, about every :data:`INTERRUPT_RETRY_SECONDS` (SIGALRM), until a handler is
    seen cleaning up after it, and the timer stops when the stage exits.
    """

    attempts = [0]

    def _terminate(signum: int, frame: object) -> None:
        signal.signal(signal.SIGALRM, _again)
        signal.setitimer(signal.ITIMER_REAL, _retry_delay(0))
        raise KeyboardInterrupt(f"signal {signum}")

    def _again(signum: int, frame: object) -> None:
        attempts[0] += 1
        signal.setitimer(signal.ITIMER_REAL, _retry_delay(attempts[0]))
        if _handling_interrupt():  # the cleanup is under way: let it finish
            return
        raise KeyboardInterrupt("signal 15 (raised again: the first was swallowed)")

    signal.signal(signal.SIGTERM, _terminate)
    try:
        configure()
        main()
    except TransferlabError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def progress(line: str) -> None:
    """Log one progress line at INFO (the ``transferlab`` logger's handler writes it to stderr as
    a plain line, flushed at once): readable in a terminal, in a log file and in ``dvc queue
    logs``, where a progress bar (tqdm draws only in a terminal) shows nothing."""
    log.info(line)
