"""compute_summary: wall time and memory per curve, and the transferability cost fractions,
against values worked out by hand from small timing files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from transferlab.compute import compute_summary


def _stage(root: Path, source: str, strategy: str, timing: dict) -> None:
    out = root / source / strategy
    out.mkdir(parents=True)
    (out / "timing.json").write_text(json.dumps(timing))
    (out / "runs.json").write_text(json.dumps({"source": source, "strategy": strategy}))


def test_compute_summary_against_hand_values(tmp_path: Path) -> None:
    runs, models = tmp_path / "runs", tmp_path / "models"
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
    (models / "glyphs").mkdir(parents=True)
    (models / "glyphs" / "timing.json").write_text(json.dumps({"seconds": 12.5}))
    scores = [
        {"source": "glyphs", "budget": "1", "seed": 0, "seconds": 0.02, "feature_seconds": 0.06,
         "cached": True},
        {"source": "glyphs", "budget": "all", "seed": 0, "seconds": 0.04,
         "feature_seconds": 0.36, "cached": True},
        {"source": "glyphs", "budget": "all", "seed": 1, "seconds": 9.0,  # no finetune run
         "feature_seconds": 0.0, "cached": True},
    ]
    summary = compute_summary(runs, models, scores)

    assert summary["curves"] == {
        "glyphs/finetune": {"seconds_per_run": 5.0, "peak_bytes": 950, "peak_added_bytes": 30,
                            "feature_extraction_seconds": None},
        "glyphs/linear_probe": {"seconds_per_run": pytest.approx(0.2), "peak_bytes": 810,
                                "peak_added_bytes": None, "feature_extraction_seconds": 0.5},
    }
    assert summary["pretrain"] == {"glyphs": 12.5}
    assert summary["transferability_fraction_of_finetune"] == {
        "glyphs": {"1": pytest.approx(0.01), "all": pytest.approx(0.005)}}
    assert summary["transferability_fraction_with_features"] == {
        "glyphs": {"1": pytest.approx(0.04), "all": pytest.approx(0.05)}}
    assert summary["transferability_features_cached"] == {"glyphs": True}
