"""The prepared store: manifests, sha256 checks, label mapping, budgets, scenarios."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import scenario_params
from transferlab.config.params import load_params
from transferlab.core.errors import DataError
from transferlab.core.runtime import sha256_file
from transferlab.data.prepare import label_mapping, prepare_all
from transferlab.data.store import PreparedDataset


def small(params_dict: dict) -> dict:
    params_dict["prepare"]["sources"]["printed_digits"]["n_per_class"] = 12
    return params_dict


@pytest.fixture
def prepared(tmp_path: Path, params_dict: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(small(params_dict)))
    out = tmp_path / "prepared"
    prepare_all(load_params(path), out)
    return out


def test_layout_and_manifest(prepared: Path) -> None:
    target = PreparedDataset.open(prepared / "target")
    m = target.manifest
    assert m["class_names"] == [str(i) for i in range(10)]
    assert all(n == 30 for n in m["counts"]["test"].values())
    assert all(n == 10 for n in m["counts"]["val"].values())
    for name, digest in m["sha256"].items():
        assert sha256_file(prepared / "target" / name) == digest
    assert 0 < m["normalization"]["mean"] < 1 and m["normalization"]["std"] > 0
    test = target.load("test")
    assert test.examples.dtype == np.uint8 and test.examples.shape[1:] == (16, 16)
    source = PreparedDataset.open(prepared / "sources" / "printed_digits")
    assert source.manifest["aligned"] is True
    assert source.manifest["source_to_target"] == {str(i): i for i in range(10)}
    null = PreparedDataset.open(prepared / "sources" / "random_init")
    assert not null.has_data and null.manifest["aligned"] is False


def test_budgets_nested_in_pool(prepared: Path) -> None:
    target = PreparedDataset.open(prepared / "target")
    pool = target.load("train")
    budgets = target.budgets()
    assert set(budgets) == {"0", "1"}
    for subsets in budgets.values():
        assert set(subsets["1"]) <= set(subsets["10"]) <= set(subsets["all"])
        assert np.bincount(pool.labels[subsets["10"]]).tolist() == [10] * 10


def test_splits_do_not_overlap(prepared: Path) -> None:
    target = PreparedDataset.open(prepared / "target")
    rows = {s: {a.tobytes() for a in target.load(s).examples} for s in ("train", "val", "test")}
    # sklearn digits has a few exact duplicate images; overlap must stay at that level
    assert len(rows["train"] & rows["test"]) <= 3 and len(rows["val"] & rows["test"]) <= 1


@pytest.mark.parametrize("edit", ["corrupt", "hand_edit", "delete"])
def test_tampered_array_is_named(prepared: Path, edit: str) -> None:
    path = prepared / "target" / "test_x.npy"
    if edit == "corrupt":
        path.write_bytes(path.read_bytes()[:-10])
    elif edit == "hand_edit":
        arr = np.load(path)
        arr[0, 0, 0] ^= 1
        np.save(path, arr)
    else:
        path.unlink()
    with pytest.raises(DataError, match=r"target/test_x\.npy"):
        PreparedDataset.open(prepared / "target").load("test")


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="manifest not found"):
        PreparedDataset.open(tmp_path)


def test_budget_larger_than_pool(tmp_path: Path, params_dict: dict) -> None:
    params_dict["prepare"]["budgets"] = [1, 500]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(small(params_dict)))
    with pytest.raises(DataError, match=r"budget 500 labels per class is larger than the pool"):
        prepare_all(load_params(path), tmp_path / "out")


def test_new_classes_scenario_is_not_aligned(tmp_path: Path, params_dict: dict) -> None:
    scenario = scenario_params("new_classes")
    params_dict["prepare"]["target"] = scenario["prepare"]["target"]
    params_dict["prepare"]["sources"] = scenario["prepare"]["sources"]
    params_dict["grid"]["methods"] = scenario["grid"].get("methods", {})
    params_dict["prepare"].update(test_per_class=20, val_per_class=5)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params_dict))
    prepare_all(load_params(path), tmp_path / "out")
    target = json.loads((tmp_path / "out" / "target" / "manifest.json").read_text())
    assert target["class_names"] == ["5", "6", "7", "8", "9"]
    source = json.loads((tmp_path / "out" / "sources" / "handwritten_0_4" / "manifest.json")
                        .read_text())
    assert source["class_names"] == ["0", "1", "2", "3", "4"]
    assert source["aligned"] is False and source["source_to_target"] == {}


def test_label_mapping_partial() -> None:
    m = label_mapping(("a", "b", "c"), ("c", "a", "z"))
    assert m == {"source_to_target": {"a": 1, "c": 0}, "aligned": False,
                 "unmapped_target_classes": ["z"]}


def test_more_seeds_where_budgets_ask_for_them(tmp_path: Path, params_dict: dict) -> None:
    """prepare.seeds_per_budget: the extra seeds (after the largest common seed) are drawn at
    the budgets that ask for them only, nested as every seed's are; the common seeds' subsets
    are those of a run without extra seeds."""
    params_dict["common"]["seeds"] = [0, 1]
    params_dict["prepare"]["budgets"] = [1, 10, "all"]
    params_dict["prepare"]["seeds_per_budget"] = {1: 4}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(small(params_dict)))
    prepare_all(load_params(path), tmp_path / "more")
    budgets = PreparedDataset.open(tmp_path / "more" / "target").budgets()
    assert {s: sorted(b) for s, b in budgets.items()} == {
        "0": ["1", "10", "all"], "1": ["1", "10", "all"], "2": ["1"], "3": ["1"]}
    del params_dict["prepare"]["seeds_per_budget"]
    path.write_text(yaml.safe_dump(params_dict))
    prepare_all(load_params(path), tmp_path / "plain")
    plain = PreparedDataset.open(tmp_path / "plain" / "target").budgets()
    assert {s: budgets[s] for s in plain} == plain
    assert budgets["2"]["1"] != budgets["0"]["1"]  # a seed of its own


@pytest.mark.parametrize(("value", "message"), [
    ({5: 4}, r"prepare\.seeds_per_budget\.5: not a budget; expected one of 1, 10, all"),
    ({1: 2}, r"prepare\.seeds_per_budget\.1: 2 seeds: at least the 3 of common\.seeds"),
    ({1: 0}, r"prepare\.seeds_per_budget\.1"),
])
def test_seeds_per_budget_errors_name_the_key(tmp_path: Path, params_dict: dict, value,
                                              message) -> None:
    from transferlab.core.errors import ParamsError
    params_dict["common"]["seeds"] = [0, 1, 2]
    params_dict["prepare"]["budgets"] = [1, 10, "all"]
    params_dict["prepare"]["seeds_per_budget"] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params_dict))
    with pytest.raises(ParamsError, match=message):
        load_params(path)
