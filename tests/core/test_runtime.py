"""transferlab.core.runtime: seeding and deterministic mode, canonical JSON, staged outputs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from transferlab.core.runtime import dumps_json, staged_outputs

_PROBE = """
import torch
from transferlab.core.runtime import seed_everything
g = seed_everything(7, num_threads=1)
print(torch.are_deterministic_algorithms_enabled(),
      torch.is_deterministic_algorithms_warn_only_enabled(),
      torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
      torch.get_num_threads(),
      torch.equal(torch.rand(3, generator=g),
                  torch.rand(3, generator=torch.Generator().manual_seed(7))))
import sys
print("torch._inductor" in sys.modules)  # not loaded for the switch (about 1.8 s)
import torch._inductor.config as inductor_config
seed_everything(7)
print(inductor_config.deterministic)  # loaded by someone else: its flag follows
"""


def test_seed_everything_switches_torch_to_deterministic_algorithms() -> None:
    """In a fresh interpreter (the flags are process-wide): deterministic algorithms on, not
    warn-only, cuDNN deterministic, the thread count set, and a generator seeded as asked;
    torch's compiler is not imported for it, and where it is loaded its flag is set too."""
    out = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "False", "True", "False", "1", "True", "False", "True"]


def test_dumps_json_is_canonical_and_strict() -> None:
    text = dumps_json({"b": 1.23456789, "a": [float("nan"), float("inf"), 2], "c": {"z": 0.5}})
    assert text == dumps_json({"c": {"z": 0.5}, "a": [float("nan"), float("inf"), 2],
                               "b": 1.23456789})  # key order does not matter
    assert json.loads(text) == {"a": [None, None, 2], "b": 1.234568, "c": {"z": 0.5}}
    assert text.endswith("\n") and text.index('"a"') < text.index('"b"')


def test_staged_outputs_move_into_place_only_on_success(tmp_path: Path) -> None:
    final = tmp_path / "out" / "model.pt"
    final.parent.mkdir()
    final.write_text("old")
    with pytest.raises(ValueError), staged_outputs(final) as (tmp,):
        tmp.write_text("half")
        raise ValueError("the stage failed")
    assert final.read_text() == "old" and not tmp.exists()  # nothing half-written remains
    with staged_outputs(final) as (tmp,):
        tmp.write_text("new")
    assert final.read_text() == "new" and not tmp.exists()


def test_staged_outputs_require_every_declared_output(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="b.json: the stage did not write this declared"), \
            staged_outputs(tmp_path / "a.json", tmp_path / "b.json") as (a, _):
        a.write_text("{}")
    assert list(tmp_path.iterdir()) == []  # neither the output nor its staged copy


def _capability(pinning: str, **caps: str) -> list[str]:
    """torch's ATen capability and OpenBLAS's core type in a fresh process that imports the
    package first (as every stage does), under an emulated lower instruction-set cap."""
    import os
    import subprocess
    import sys

    code = ("import transferlab, torch, numpy, threadpoolctl; "
            "print(torch.backends.cpu.get_cpu_capability()); "
            "print(next(i['architecture'] for i in threadpoolctl.threadpool_info() "
            "if i['internal_api'] == 'openblas'))")
    env = {**os.environ, **caps, "TRANSFERLAB_CPU_PINNING": pinning}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, check=True).stdout.split()


def test_cpu_pins_override_what_the_machine_would_choose() -> None:
    caps = {"ATEN_CPU_CAPABILITY": "default", "OPENBLAS_CORETYPE": "Nehalem"}
    assert _capability("off", **caps) == ["DEFAULT", "Nehalem"]  # the cap takes effect...
    assert _capability("on", **caps) == ["AVX2", "Haswell"]  # ...and the pins override it


def test_cpu_pinning_status_and_tags() -> None:
    from transferlab.core import cpu_pinning
    status = cpu_pinning.status()
    assert status["enabled"] and status["late"] == []  # conftest imports the package first
    assert status["pins"] == cpu_pinning.PINS and status["aten_capability"] == "AVX2"
    tags = cpu_pinning.tags()
    assert tags["transferlab.cpu.pinning"] == "on"
    assert tags["transferlab.cpu.OPENBLAS_CORETYPE"] == "Haswell"


_SWALLOWING_STAGE = """
import sys, time
from transferlab.core.runtime import run_stage

def busy(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass

class Collected:
    def __del__(self):  # Python swallows an exception raised in here ("Exception ignored in")
        print("collecting", flush=True)
        busy(0.4)

def main():
    try:
        while True:
            Collected()  # collected at once: the SIGTERM lands inside __del__
            busy(0.55)
    except KeyboardInterrupt as interrupt:
        print("cleaned up after:", interrupt, flush=True)
        raise

run_stage(main)
"""


def test_a_sigterm_swallowed_by_a_finalizer_is_raised_again() -> None:
    """A SIGTERM that lands in a ``__del__`` is printed and swallowed by Python; ``run_stage``
    raises it again until a handler cleans up, so the stage still ends (exit 130)."""
    proc = subprocess.Popen([sys.executable, "-c", _SWALLOWING_STAGE],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "collecting\n"
        proc.send_signal(signal.SIGTERM)  # the finalizer is still running for 0.4 s
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert "Exception ignored" in err  # the first delivery was swallowed ...
    assert "cleaned up after: signal 15 (raised again" in out  # ... and raised again
    assert proc.returncode == 130 and "error: interrupted" in err
