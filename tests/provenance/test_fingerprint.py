"""Portable CPU determinism, proved by kernel fingerprints (issue 23).

This machine's fingerprint in the portable mode must equal every golden in tests/data/golden
that recorded it (goldens are named by their CPU); a mismatch names the first differing op and
both CPUs. The golden of issue 23's Intel Xeon predates the portable mode (it recorded oneDNN on
and off, NNPACK on): on a machine of its kind every one of its configurations must match, which
ties the portable golden recorded here to that machine. The converse: in the fast mode (oneDNN
on) a forced instruction-set difference is caught, while the portable mode does not move.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from transferlab.core import cpu_pinning
from transferlab.provenance import fingerprint as fp

GOLDENS = sorted((ROOT / fp.GOLDEN_DIR).glob("*.json"))
ISSUE_23_GOLDEN = "intel-xeon-avx512-amx.json"  # ../shared/golden, from issue 23's machine


def _record(env: dict[str, str] | None = None) -> dict:
    """This machine's fingerprint, in a fresh process as a stage would compute it."""
    proc = subprocess.run([sys.executable, "-m", "transferlab.provenance.fingerprint", "record"],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def here() -> dict:
    return _record()


PORTABLE = [p for p in GOLDENS if fp.SECTIONS["portable"] in fp.load(p)]


def test_the_goldens_include_issue_23s_intel_machine() -> None:
    assert ISSUE_23_GOLDEN in {p.name for p in GOLDENS}
    assert PORTABLE, "no golden records the portable mode"
    assert ISSUE_23_GOLDEN not in {p.name for p in PORTABLE}  # it predates the mode


# Across vendors only torch's own sqrt and AdamW may differ (fp.CROSS_VENDOR_OPS says why);
# the project's training kernels (fp.TRAINING_OPS) must agree on every CPU.


@pytest.mark.parametrize("golden", PORTABLE, ids=[p.stem for p in PORTABLE])
def test_portable_fingerprint_equals_every_golden(here: dict, golden: Path) -> None:
    gold = fp.load(golden)
    equal, line = fp.verdict(here, gold, "portable", golden.name)
    if here["machine"].get("vendor") == gold["machine"].get("vendor"):
        assert equal, line
        return
    differ = {d.op for d in fp.differences(here, gold, "portable")}
    assert differ <= fp.CROSS_VENDOR_OPS, line
    assert fp.vendor_only(here, gold, "portable") == bool(differ)


def test_vendor_only_differences_pass_only_across_vendors(here: dict) -> None:
    """`make fingerprint` on an AMD CPU against an Intel golden: torch's own sqrt and AdamW may
    differ and the comparison still passes; any other op fails it, and so does the same
    difference between two CPUs of one vendor."""
    portable = fp.SECTIONS["portable"]
    other = json.loads(json.dumps(here))
    other["machine"]["vendor"] = "GenuineOther"
    for op in fp.CROSS_VENDOR_OPS & set(other[portable]):
        other[portable][op] = "0" * 16 if isinstance(other[portable][op], str) else ["0"]
    assert fp.differences(here, other, "portable")
    assert fp.vendor_only(here, other, "portable")
    same_vendor = json.loads(json.dumps(other))
    same_vendor["machine"]["vendor"] = here["machine"].get("vendor")
    assert not fp.vendor_only(here, same_vendor, "portable")
    other[portable]["softmax"] = "f" * 16
    assert not fp.vendor_only(here, other, "portable")


def test_a_golden_records_the_project_adamw() -> None:
    """The project's optimizer kernels are pinned by at least one golden, so a machine of the
    other vendor checks them against it (an AMD golden with them is still to be recorded)."""
    with_training = [p for p in PORTABLE
                     if set(fp.TRAINING_OPS) <= set(fp.section(fp.load(p), "portable", p.name))]
    assert with_training, "no golden records the project's AdamW (fp.TRAINING_OPS)"


def test_the_project_adamw_trace_is_the_same_net_as_torchs() -> None:
    """Both traces start from the same net and data: the first loss is equal, so a difference
    later is the optimizer's alone."""
    trace = fp.net_trace()
    assert trace["net_losses"][0] == trace["transferlab_net_losses"][0]


def _same_kind(a: dict, b: dict) -> bool:
    return a.get("cpu") == b.get("cpu") and a.get("flags") == b.get("flags")


@pytest.mark.parametrize("configuration", ["onednn_on", "onednn_off"])
def test_issue_23s_machine_kind_matches_in_its_own_configurations(here: dict,
                                                                  configuration: str) -> None:
    """On a CPU of the kind that recorded the issue-23 golden, every kernel of each of its
    configurations (oneDNN on; oneDNN off with NNPACK) is equal: the portable golden recorded
    on such a machine is that machine's. On another kind these configurations are expected to
    differ (they are not portable): the portable test above is the one that speaks."""
    golden = fp.load(ROOT / fp.GOLDEN_DIR / ISSUE_23_GOLDEN)
    if not _same_kind(here["machine"], golden["machine"]):
        pytest.skip(f"this CPU ({fp.describe_machine(here['machine'])}) is not of the kind of "
                    f"{ISSUE_23_GOLDEN} ({fp.describe_machine(golden['machine'])})")
    equal, line = fp.verdict(here, golden, configuration, ISSUE_23_GOLDEN)
    assert equal, line


def test_the_fast_mode_catches_a_forced_isa_difference(here: dict) -> None:
    """oneDNN capped at SSE4.1 (every x86-64 CPU has it) instead of AVX2: the fast mode's
    convolutions change and the fingerprint says which; the portable mode stays as it is."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(fp.ENV_PREFIXES)}
    env.update(cpu_pinning.PINS, ONEDNN_MAX_CPU_ISA="SSE41", DNNL_MAX_CPU_ISA="SSE41")
    env[cpu_pinning.SWITCH] = "off"  # the pins by hand, one of them changed
    capped = _record(env)
    assert capped["machine"]["pins"]["ONEDNN_MAX_CPU_ISA"] == "SSE41"
    equal, line = fp.verdict(capped, here, "fast", "uncapped")
    assert not equal
    diffs = fp.differences(capped, here, "fast")
    assert diffs[0].op.startswith("conv2d_"), line
    assert "conv2d_fwd_1x32" in line and here["machine"]["cpu"] in line
    equal, line = fp.verdict(capped, here, "portable", "uncapped")
    assert equal, line


def test_a_mismatch_names_the_first_op_and_both_cpus(here: dict) -> None:
    other = json.loads(json.dumps(here))
    other["machine"].update(cpu="AMD EPYC 9R14 96-Core Processor", vendor="AuthenticAMD")
    section = other[fp.SECTIONS["portable"]]
    section["linear_fwd_128x128x10"] = "0" * 16
    section["net_losses"] = section["net_losses"][:5] + ["2.5"] * 15
    equal, line = fp.verdict(here, other, "portable", "amd.json")
    assert not equal
    assert "2 of" in line and "first linear_fwd_128x128x10" in line
    assert "AMD EPYC 9R14" in line and here["machine"]["cpu"] in line
    assert "all: linear_fwd_128x128x10, net_losses" in line
    diffs = fp.differences(here, other, "portable")
    assert diffs[1].describe().startswith("net_losses (from step 5: ")
    # an op newer than the golden is not a difference; one the golden has and we lack is
    del section["linear_fwd_128x128x10"], section["net_losses"]
    assert fp.differences(here, other, "portable") == []
    section["retired_op"] = "abc"
    assert [d.describe() for d in fp.differences(here, other, "portable")] == [
        "retired_op (not computed here)"]
    with pytest.raises(fp.FingerprintError, match="no 'onednn_on' section"):
        fp.verdict(here, {"machine": {}}, "fast", "old.json")


def test_compare_exits_1_naming_the_differing_golden(here: dict, tmp_path: Path) -> None:
    tampered = json.loads(json.dumps(here))
    tampered[fp.SECTIONS["portable"]]["softmax"] = "f" * 16
    (tmp_path / "tampered.json").write_text(json.dumps(tampered))
    proc = subprocess.run([sys.executable, "-m", "transferlab.provenance.fingerprint", "compare",
                           str(ROOT / fp.GOLDEN_DIR / ISSUE_23_GOLDEN),
                           str(tmp_path / "tampered.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"NONE {ISSUE_23_GOLDEN}: portable: no 'portable' section"), \
        proc.stdout
    assert lines[1].startswith("DIFF tampered.json: portable: 1 of "), proc.stdout
    assert "first softmax" in lines[1]
    proc = subprocess.run([sys.executable, "-m", "transferlab.provenance.fingerprint", "compare",
                           str(tmp_path / "missing")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1 and "missing: no such golden" in proc.stderr


def test_golden_names_say_the_cpu() -> None:
    m = {"cpu": "Intel(R) Xeon(R) Processor", "family_model_stepping": "6/167/1",
         "flags": ["avx2", "avx512f", "amx_tile"]}
    assert fp.machine_name(m) == "intel-xeon-processor-6-167-1-avx512-amx"
    m = {"cpu": "AMD EPYC 7R13 Processor", "family_model_stepping": "25/1/1", "flags": ["avx2"]}
    assert fp.machine_name(m) == "amd-epyc-7r13-processor-25-1-1-avx2"


def test_the_lock_fingerprint_is_rewritten_only_with_a_new_lock(here: dict,
                                                                 tmp_path: Path) -> None:
    lock, out = tmp_path / "dvc.lock", tmp_path / "dvc.lock.fingerprint.json"
    lock.write_text("schema: '2.0'\nstages: {}\n")
    assert fp.write_lock_fingerprint(lock, out, "portable", here)
    written = json.loads(out.read_text())
    assert written["lock_sha256"] == fp.lock_sha256(lock) and written["determinism"] == "portable"
    assert written[fp.SECTIONS["portable"]] == here[fp.SECTIONS["portable"]]
    other = {**here, "machine": {**here["machine"], "cpu": "another"}}
    assert not fp.write_lock_fingerprint(lock, out, "portable", other)  # same lock: kept
    assert json.loads(out.read_text())["machine"]["cpu"] == here["machine"]["cpu"]
    lock.write_text("schema: '2.0'\nstages: {a: {}}\n")
    assert fp.write_lock_fingerprint(lock, out, "portable", other)
    assert json.loads(out.read_text())["machine"]["cpu"] == "another"
    assert not list(tmp_path.glob("*.tmp"))


def test_determinism_modes_are_the_fingerprinted_configurations() -> None:
    import torch

    before = (torch.backends.mkldnn.enabled, torch._C._get_nnpack_enabled())
    try:
        for mode, configuration in fp.SECTIONS.items():
            assert cpu_pinning.DETERMINISM_MODES[mode] == fp.CONFIGURATIONS[configuration]
            cpu_pinning.set_determinism(mode)
            status = cpu_pinning.status()
            assert status["mkldnn_enabled"] == fp.CONFIGURATIONS[configuration]["mkldnn"]
            assert status["nnpack_enabled"] == fp.CONFIGURATIONS[configuration]["nnpack"]
            assert cpu_pinning.tags()["transferlab.cpu.determinism"] == mode
        with pytest.raises(ValueError, match="expected one of portable, fast"):
            cpu_pinning.set_determinism("exact")
    finally:
        cpu_pinning.set_conv_backends(*before)
