"""Shared fixtures: a shrunk config (tiny data, one or two epochs, CPU, no network, no tracking)."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
os.environ.setdefault("MPLBACKEND", "Agg")


def shrunk_params() -> dict:
    """params.yaml shrunk so the whole pipeline runs in about a minute on 2 CPU cores."""
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["common"].update(seeds=[0, 1], device="cpu")
    p["tracking"]["enabled"] = False
    p["prepare"].update(budgets=[1, 10, "all"], test_per_class=30, val_per_class=10)
    p["prepare"]["sources"] = {
        "printed_digits": {"kind": "fonts", "chars": "0123456789", "n_per_class": 120},
        "random_init": {"kind": "none"},
    }
    p["pretrain"].update(epochs=8, batch_size=32, width=16)
    for name in ("linear_probe", "partial_finetune", "finetune", "scratch"):
        p["transfer"][name]["epochs"] = 60 if name == "linear_probe" else 8
    p["evaluate"]["n_boot"] = 200
    return p


@pytest.fixture
def params_dict() -> dict:
    return copy.deepcopy(shrunk_params())


@pytest.fixture
def params_file(tmp_path: Path, params_dict: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params_dict, sort_keys=False))
    return path
