"""compute_summary: wall time and memory per curve, and the transferability cost fractions,
against values worked out by hand from small timing files; the timing files stay out of the DVC
outputs and the summary is written beside them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from transferlab.core.runtime import timing_path, write_timing
from transferlab.reporting.costs import compute_summary, write_summary


def _stage(root: Path, source: str, strategy: str, timing: dict) -> None:
    write_timing(root / "runs" / source / f"{strategy}.json",
                 {**timing, "source": source, "strategy": strategy})


def test_timing_path_mirrors_the_dvc_output() -> None:
    assert timing_path("runs/glyphs/finetune") == Path("timing/runs/glyphs/finetune.json")
    assert timing_path("runs/scratch/") == Path("timing/runs/scratch.json")
    assert timing_path("/m/evaluate.json") == Path("timing/m/evaluate.json.json")


def test_compute_summary_against_hand_values(tmp_path: Path) -> None:
    runs = tmp_path
    _stage(runs, "glyphs", "finetune", {
        "0_1": {"seconds": 2.0, "peak_bytes": 900, "peak_added_bytes": 90},  # pays one-offs
        "0_all": {"seconds": 8.0, "peak_bytes": 950, "peak_added_bytes": 10},
        "1_1": {"seconds": 5.0, "peak_bytes": 940, "peak_added_bytes": 30},
    })
    _stage(runs, "glyphs", "linear_probe", {
        "feature_extraction_seconds": 0.5,
        "0_1": {"seconds": 0.1, "peak_bytes": 800, "peak_added_bytes": 5},
        "0_all": {"seconds": 0.3, "peak_bytes": 810, "peak_added_bytes": None},  # no /proc
    })
    _stage(runs, "glyphs", "source_only", {})  # trains nothing: no curve
    write_timing(tmp_path / "models" / "glyphs.json", {"seconds": 12.5, "source": "glyphs"})
    write_timing(tmp_path / "runs" / "scratch.json", {
        "0_1": {"seconds": 1.0, "peak_bytes": 700, "peak_added_bytes": 1}, "source": "none",
        "strategy": "scratch"})
    scores = [
        {"source": "glyphs", "budget": "1", "seed": 0, "seconds": 0.02, "feature_seconds": 0.06,
         "cached": True},
        {"source": "glyphs", "budget": "all", "seed": 0, "seconds": 0.04,
         "feature_seconds": 0.36, "cached": True},
        {"source": "glyphs", "budget": "all", "seed": 1, "seconds": 9.0,  # no finetune run
         "feature_seconds": 0.0, "cached": True},
    ]
    write_timing(tmp_path / "metrics" / "evaluate.json", {"scores": scores})
    summary = compute_summary(runs)

    assert summary["curves"] == {
        "glyphs/finetune": {"seconds_per_run": 5.0, "peak_bytes": 950, "peak_added_bytes": 30,
                            "feature_extraction_seconds": None},
        "glyphs/linear_probe": {"seconds_per_run": pytest.approx(0.2), "peak_bytes": 810,
                                "peak_added_bytes": None, "feature_extraction_seconds": 0.5},
        "scratch": {"seconds_per_run": 1.0, "peak_bytes": 700, "peak_added_bytes": 1,
                    "feature_extraction_seconds": None},
    }
    assert summary["pretrain"] == {"glyphs": 12.5}
    assert summary["transferability_fraction_of_finetune"] == {
        "glyphs": {"1": pytest.approx(0.01), "all": pytest.approx(0.005)}}
    assert summary["transferability_fraction_with_features"] == {
        "glyphs": {"1": pytest.approx(0.04), "all": pytest.approx(0.05)}}
    assert summary["transferability_features_cached"] == {"glyphs": True}
    # write_timing records each stage process's peak RSS, keyed by the stage's output
    peaks = summary["stage_peak_rss_bytes"]
    assert set(peaks) == {"runs/glyphs/finetune", "runs/glyphs/linear_probe",
                          "runs/glyphs/source_only", "models/glyphs", "runs/scratch",
                          "metrics/evaluate"}
    assert all(v > 10 * 2**20 for v in peaks.values())  # this pytest process: torch is loaded


def test_write_summary_records_provenance_and_renders(tmp_path: Path) -> None:
    from tests.conftest import ROOT

    _stage(tmp_path, "glyphs", "finetune",
           {"0_1": {"seconds": 2.0, "peak_bytes": 2**20, "peak_added_bytes": 2**19}})
    paths = write_summary(tmp_path, ROOT / "params.yaml")
    prov = json.loads(paths["provenance.json"].read_text())
    assert prov["cpu"]["pinning"] == "on" and prov["cpu"]["pinned_late"] == []
    assert prov["cpu"]["pins"]["ATEN_CPU_CAPABILITY"] == "avx2"
    assert prov["git"]["commit"] and prov["time_utc"].endswith("Z")
    md = paths["summary.md"].read_text()
    assert "| glyphs/finetune | 2.00 | 1 | 0.5 |" in md
    assert json.loads(paths["compute.json"].read_text())["curves"]["glyphs/finetune"][
        "seconds_per_run"] == 2.0
