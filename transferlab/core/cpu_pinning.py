"""Pin what the CPU math libraries dispatch on, so one x86-64 machine's outputs are another's.

torch, numpy and scipy each pick SIMD kernels for the CPU they find: ATen's kernels (default,
AVX2 or AVX-512), oneDNN's JIT convolutions (SSE4.1 ... AVX-512/AMX), MKL's GEMM branch, the
OpenBLAS core type of numpy/scipy and numpy's own dispatched loops. Two CPUs that pick different
kernels sum in different orders and round differently, so a checkpoint trained on an AVX2
machine differs in its last bits from one trained on an AVX-512 machine, and everything
downstream moves. Each library reads its switch from the environment ONCE, when it is loaded or
first used, so :func:`apply` must run before numpy or torch is imported. ``transferlab/__init__``
calls it: every stage, ``python -m transferlab.*``, benchmark and test imports the package
before numpy or torch.

The pins cap every library at AVX2 + FMA, the instruction set every x86-64 machine of this kind
has (an AVX2 machine has nothing to cap; an AVX-512/AMX machine gives up its wider kernels).
MKL's branch is ``COMPATIBLE``, the only conditional-numerical-reproducibility branch MKL
documents as identical on Intel and AMD CPUs; its other branches are Intel-only and fall back to
``AUTO`` (CPU-dependent) elsewhere. Thread counts are fixed by ``common.num_threads``
(:func:`transferlab.core.runtime.seed_everything`), which MKL's reproducibility also requires.
``TRANSFERLAB_CPU_PINNING=off`` switches the pins off (benchmarks/isa_pinning.py compares).

The pins are not enough on their own. Two convolution libraries that torch calls choose how
they split a sum from the cache sizes they detect on the CPU, so two vendors' caches give two
summation orders: oneDNN's JIT convolutions, even capped at AVX2 (``jit_avx2_conv_kernel_f32``'s
``init_conf`` reads ``get_per_core_cache_size``), and NNPACK, which torch uses for forward
convolutions of 16 or more images when oneDNN is off (``nnp_convolution_output`` blocks input
channels by ``nnp_hwinfo.blocking.l1``). ``common.determinism`` (:func:`set_determinism`)
chooses: ``portable`` (the default) switches both off, so convolutions run ATen's own im2col +
GEMM under MKL ``COMPATIBLE`` and every kernel's bits depend only on the pins and the thread
count; ``fast`` keeps torch's default (oneDNN), whose bits hold on one machine only.
``python -m transferlab.provenance.fingerprint`` checks both against the goldens in
``tests/data/golden``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SWITCH = "TRANSFERLAB_CPU_PINNING"
# variable -> pinned value, with who reads it and when (all: once, at load or first use)
PINS: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",  # torch: ATen kernel dispatch, on the first CPU kernel call
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # torch's oneDNN (conv, ...), before its first JIT kernel
    "DNNL_MAX_CPU_ISA": "AVX2",  # the same switch under oneDNN's older name
    "MKL_CBWR": "COMPATIBLE",  # torch's MKL GEMM: reproducible branch, Intel and AMD alike
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",  # MKL outside its reproducibility mode
    "MKL_DYNAMIC": "FALSE",  # MKL may not change its thread count at run time (CNR needs it)
    "OMP_DYNAMIC": "FALSE",  # nor may OpenMP
    "OPENBLAS_CORETYPE": "Haswell",  # numpy/scipy OpenBLAS kernels (AVX2), at library load
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",  # numpy's AVX-512 loops, import
}
# the libraries whose import reads the pins; loaded earlier means pinned too late
PINNED_LIBRARIES = ("numpy", "torch", "scipy")

_state: dict[str, object] = {}


def enabled() -> bool:
    """Whether the pins apply (``TRANSFERLAB_CPU_PINNING`` is not off/0/false/no)."""
    return os.environ.get(SWITCH, "on").strip().lower() not in ("off", "0", "false", "no")


def apply() -> dict[str, str]:
    """Set every pin in ``os.environ`` (overriding what was there), once per process.

    Returns:
        The pins set ({} when switched off). Records which of numpy/torch/scipy were already
        imported, where the pins came too late (:func:`status`).
    """
    if "applied" in _state:
        return dict(_state["applied"])  # type: ignore[arg-type]
    late = [lib for lib in PINNED_LIBRARIES if lib in sys.modules]
    applied = dict(PINS) if enabled() else {}
    os.environ.update(applied)
    _state.update(applied=applied, late=late)
    return dict(applied)


# common.gemm_branch -> (MKL_CBWR value, the code mkl_serv_cbwr_get reports for it)
GEMM_BRANCHES = {"compatible": ("COMPATIBLE", 3), "avx2": ("AVX2", 10)}


# common.determinism -> whether torch may use oneDNN and NNPACK on CPU (the CPU kernels whose
# bits depend on what the CPU reports beyond the pinned instruction set: its cache sizes)
DETERMINISM_MODES = {"portable": {"mkldnn": False, "nnpack": False},
                     "fast": {"mkldnn": True, "nnpack": True}}


def set_determinism(mode: str) -> str:
    """Apply ``common.determinism`` to this process: ``portable`` switches torch's oneDNN and
    NNPACK off (convolutions run ATen's im2col + MKL GEMM, whose bits are the same on every
    x86-64 CPU under the pins), ``fast`` switches them on, torch's default (faster convolutions;
    bits that hold on this machine only). It can change between calls; a GPU's kernels are not
    affected (cuDNN keeps its deterministic settings,
    :func:`transferlab.core.runtime.seed_everything`).

    Returns:
        ``mode``.
    Raises:
        ValueError: naming the valid modes.
    """
    if mode not in DETERMINISM_MODES:
        raise ValueError(f"common.determinism: unknown mode {mode!r}; expected one of "
                         + ", ".join(DETERMINISM_MODES))
    set_conv_backends(**DETERMINISM_MODES[mode])
    _state["determinism"] = mode
    return mode


def set_conv_backends(mkldnn: bool, nnpack: bool) -> None:
    """Allow or forbid torch's oneDNN and NNPACK convolutions on CPU (for this process)."""
    import torch

    torch.backends.mkldnn.enabled = mkldnn
    torch.backends.nnpack.set_flags(nnpack)


def determinism() -> str | None:
    """The ``common.determinism`` mode this process runs in (None: never set; torch's default,
    oneDNN on, is then in force)."""
    return _state.get("determinism")  # type: ignore[return-value]


def set_gemm_branch(name: str) -> str | None:
    """Choose MKL's reproducible GEMM branch (``common.gemm_branch``), before the first GEMM.

    MKL reads ``MKL_CBWR`` once, at its first GEMM or branch query, and keeps it for the
    process, so this runs before any matrix product (the stages call it from
    :func:`transferlab.core.runtime.seed_everything`). ``compatible`` (the pin) is MKL's branch that
    gives the same results on every x86-64 CPU it supports; ``avx2`` is the branch that gives the
    same results on CPUs with AVX2 (MKL's conditional numerical reproducibility) and is faster:
    ``benchmarks/text_speed.py`` measured 2.8x on a GEMM of the encoder's shape, 1.8x for
    training and 2.3x for inference of all-MiniLM-L6-v2 (2026-12-01, Intel Xeon, 2 cores). It
    pays for transformers, whose time is GEMMs; the small CNN's time is oneDNN convolutions.

    MKL offers its branches other than ``compatible`` on Intel CPUs only: on others (an AMD
    EPYC was seen) it refuses ``avx2`` and would run its automatic, machine-dependent branch.
    That is refused here, with the choice that works on every x86-64 CPU.

    Returns:
        The ``MKL_CBWR`` value in effect, or None where pinning is off or torch has no MKL.
    Raises:
        RuntimeError: when this CPU has no such branch in MKL, or MKL had already chosen
            another branch (a GEMM ran earlier).
    """
    if name not in GEMM_BRANCHES:
        raise ValueError(f"unknown GEMM branch {name!r}; expected one of "
                         + ", ".join(GEMM_BRANCHES))
    if not enabled():
        return None
    value, code = GEMM_BRANCHES[name]
    query = _mkl_branch_query()
    if query is None:
        return None
    os.environ["MKL_CBWR"] = value  # status() and the provenance tags read it back
    got = query(1)  # MKL_CBWR_BRANCH; the first query also fixes the branch from the variable
    if got != code:
        if not branch_supported(name):
            raise RuntimeError(
                f"common.gemm_branch: {name!r}: MKL has no {value} branch on this CPU "
                f"({cpu_model()}; MKL offers it on Intel CPUs with AVX2 only), so results would "
                "depend on the machine; set common.gemm_branch: compatible (the same results on "
                "every x86-64 CPU)")
        raise RuntimeError(f"common.gemm_branch: MKL runs branch {got}, not {value} ({code}): "
                           "a matrix product ran before the branch was set")
    return value


_UNSUPPORTED_BRANCH = -3  # MKL_CBWR_ERR_UNSUPPORTED_BRANCH


def branch_supported(name: str) -> bool:
    """Whether MKL offers the GEMM branch ``name`` on this CPU (``compatible``: always). Asks
    MKL through ``mkl_serv_cbwr_set``, which may switch the branch: call it only to explain a
    failure, or in a process that runs no GEMM after (e.g. a test's subprocess)."""
    code = GEMM_BRANCHES[name][1]
    if name == "compatible":
        return True
    setter = _mkl_function("mkl_serv_cbwr_set")
    return setter is None or setter(code) != _UNSUPPORTED_BRANCH


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), or the platform's processor string."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _mkl_branch_query():  # noqa: ANN202 (a ctypes function, or None)
    return _mkl_function("mkl_serv_cbwr_get")


def _mkl_function(name: str):  # noqa: ANN202 (a ctypes function, or None)
    """An ``int f(int)`` of the MKL linked into torch, or None (no torch, no MKL)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.backends.mkl.is_available():
        return None
    import ctypes

    try:
        lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib",
                                       "libtorch_cpu.so"))
        function = getattr(lib, name)
    except (OSError, AttributeError):
        return None
    function.restype, function.argtypes = ctypes.c_int, [ctypes.c_int]
    return function


def status() -> dict:
    """What this process runs under, for provenance and MLflow tags.

    Returns:
        {"enabled": bool, "pins": {var: value in effect}, "late": [libraries imported before
        the pins were set], "aten_capability": torch's chosen capability or None if torch is not
        loaded, "mkldnn_enabled"/"nnpack_enabled": whether torch may use oneDNN / NNPACK (None
        likewise), "determinism":
        the ``common.determinism`` mode set (None: never set)}.
    """
    apply()
    torch = sys.modules.get("torch")
    return {
        "enabled": bool(_state["applied"]),
        "pins": {k: os.environ.get(k) for k in PINS},
        "late": list(_state["late"]),  # type: ignore[call-overload]
        "aten_capability": torch.backends.cpu.get_cpu_capability() if torch else None,
        "mkldnn_enabled": bool(torch.backends.mkldnn.enabled) if torch else None,
        "nnpack_enabled": bool(torch._C._get_nnpack_enabled()) if torch else None,
        "determinism": determinism(),
    }


def tags() -> dict[str, str]:
    """``status()`` as flat MLflow tags ``transferlab.cpu.<key>``."""
    s = status()
    out = {"transferlab.cpu.pinning": "on" if s["enabled"] else "off",
           "transferlab.cpu.pinned_late": ",".join(s["late"]) or "none",
           "transferlab.cpu.aten_capability": str(s["aten_capability"]),
           "transferlab.cpu.determinism": str(s["determinism"]),
           "transferlab.cpu.mkldnn_enabled": str(s["mkldnn_enabled"]),
           "transferlab.cpu.nnpack_enabled": str(s["nnpack_enabled"])}
    out.update({f"transferlab.cpu.{k}": str(v) for k, v in s["pins"].items()})
    return out
