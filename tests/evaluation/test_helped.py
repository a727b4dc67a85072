"""Tests for transferlab.evaluation.helped ("What helped") on hand-built RunResults: each method's
gain is
the method minus the reference of the same source, paired by seed; the family is adjusted; the
choice uses selection scores only; search candidates are averaged over seeds."""

from __future__ import annotations

import dataclasses
import math

import pytest
from scipy import stats as sps

from tests.evaluation.test_analysis import curve_runs
from transferlab.adapt.strategies.base import config_label
from transferlab.config.params import EvaluateParams
from transferlab.evaluation import analysis
from transferlab.evaluation.helped import helped_rows, what_helped

NONE = EvaluateParams(multiplicity="none")
BH = EvaluateParams(multiplicity="bh")


def _results(extra_sel: list[float] | None = None) -> list:
    runs = []
    runs += curve_runs("scratch", "10", [0.50, 0.52, 0.51])
    runs += curve_runs("a/finetune", "10", [0.70, 0.72, 0.71], [0.80, 0.80, 0.80])
    runs += curve_runs("a/lora", "10", [0.75, 0.78, 0.76], extra_sel or [0.70, 0.70, 0.70])
    runs += curve_runs("a/linear_probe", "10", [0.60, 0.61, 0.62], [0.60, 0.60, 0.60])
    return runs


def _helped(results: list, p: EvaluateParams = NONE) -> dict:
    summary = analysis.summarize(results, ["10"], 100.0, p)
    return what_helped(results, summary, ["10"], p)


def test_gain_is_method_minus_reference_paired_by_seed() -> None:
    block = _helped(_results())
    assert block["reference"] == "finetune"
    g = block["sources"]["a"]["10"]["methods"]["lora"]["gain"]
    diffs = [0.05, 0.06, 0.05]
    assert g["diff"] == pytest.approx(sum(diffs) / 3)
    assert g["p_value"] == pytest.approx(sps.ttest_1samp(diffs, 0).pvalue)
    assert g["verdict"] == "helped"  # p ~ 0.0013 < 0.05, unadjusted
    lp = block["sources"]["a"]["10"]["methods"]["linear_probe"]["gain"]
    assert lp["diff"] == pytest.approx(-0.1) and lp["verdict"] == "hurt"
    assert "finetune" not in block["sources"]["a"]["10"]["methods"]  # not against itself
    assert block["sources"]["a"]["10"]["reference_accuracy"]["mean"] == pytest.approx(0.71)


def test_the_family_is_adjusted() -> None:
    raw = _helped(_results(), NONE)["sources"]["a"]["10"]["methods"]
    adjusted = _helped(_results(), BH)
    methods = adjusted["sources"]["a"]["10"]["methods"]
    ps = sorted(m["gain"]["p_value"] for m in raw.values())
    assert adjusted["statistics"]["family_size"] == 2 and adjusted["statistics"][
        "multiplicity"] == "bh"
    # BH with 2 p-values: the larger stays, the smaller becomes min(2 p1, p2)
    assert sorted(m["gain"]["p_adjusted"] for m in methods.values()) == pytest.approx(
        [min(2 * ps[0], ps[1]), ps[1]])


def test_the_choice_reads_selection_scores_not_test_accuracy() -> None:
    block = _helped(_results())
    chosen = block["sources"]["a"]["10"]["chosen"]
    # finetune has the best selection score (0.80) though lora has the best test accuracy
    assert chosen["strategy"] == "finetune"
    assert chosen["accuracy"]["mean"] == pytest.approx(0.71)
    flipped = _helped(_results(extra_sel=[0.9, 0.9, 0.9]))["sources"]["a"]["10"]["chosen"]
    assert flipped["strategy"] == "lora"


def test_no_choice_without_held_out_labels() -> None:
    runs = curve_runs("scratch", "1", [0.2, 0.2]) + curve_runs("a/finetune", "1", [0.3, 0.3]) \
        + curve_runs("a/lora", "1", [0.4, 0.4])
    summary = analysis.summarize(runs, ["1"], 100.0, NONE)
    entry = what_helped(runs, summary, ["1"], NONE)["sources"]["a"]["1"]
    assert entry["chosen"] is None and "no held-out labels" in entry["reason"]


def test_search_candidates_are_averaged_over_seeds() -> None:
    runs = _results()
    search = [{"chosen": {"rank": 8}, "candidates": [
        {"config": {"rank": 2}, "best_val_accuracy": 0.5 + s / 10},
        {"config": {"rank": 8}, "best_val_accuracy": 0.7}]} for s in range(3)]
    runs = [dataclasses.replace(r, search=search[r.key["seed"]])
            if r.key["strategy"] == "lora" else r for r in runs]
    block = _helped(runs, NONE)
    assert block["sources"]["a"]["10"]["methods"]["lora"]["search"] == pytest.approx(
        {"rank=2": 0.6, "rank=8": 0.7})
    flipped = _helped([dataclasses.replace(r, selection_score=0.95)
                       if r.key["strategy"] == "lora" else r for r in runs])
    assert flipped["sources"]["a"]["10"]["chosen"]["configs"] == {
        "0": {"rank": 8}, "1": {"rank": 8}, "2": {"rank": 8}}


def test_sources_without_the_reference_are_left_out() -> None:
    runs = curve_runs("scratch", "10", [0.5, 0.5]) + curve_runs("b/lora", "10", [0.6, 0.6])
    assert _helped(runs)["sources"] == {}


def test_rows_and_labels() -> None:
    rows = helped_rows(_helped(_results()))
    assert {(r["source"], r["strategy"]) for r in rows} == {("a", "lora"), ("a", "linear_probe")}
    assert all(math.isfinite(r["gain"]) for r in rows)
    assert config_label({"lr": 0.01, "block": "block2"}) == "block=block2, lr=0.01"
    assert config_label({}) == "as set"


def test_a_variant_is_also_compared_with_its_base_in_the_same_family() -> None:
    from transferlab.adapt.strategies import parse_blocks
    parse_blocks({"lora_src": {"strategy": "lora", "head_init": "source"},
                  "finetune_src": {"strategy": "finetune", "head_init": "source"}})
    runs = _results()
    runs += curve_runs("a/lora_src", "10", [0.80, 0.81, 0.80], [0.9, 0.9, 0.9])
    runs += curve_runs("a/finetune_src", "10", [0.73, 0.74, 0.74], [0.9, 0.9, 0.9])
    block = _helped(runs, BH)
    methods = block["sources"]["a"]["10"]["methods"]
    vs = methods["lora_src"]["vs_base"]
    assert vs["base"] == "lora"
    diffs = [0.05, 0.03, 0.04]  # lora_src - lora, paired by seed
    assert vs["diff"] == pytest.approx(sum(diffs) / 3)
    assert vs["p_value"] == pytest.approx(sps.ttest_1samp(diffs, 0).pvalue)
    assert "p_adjusted" in vs and "verdict" in vs
    # a variant of the reference: its gain over the reference is already its row
    assert "vs_base" not in methods["finetune_src"]
    # lora, linear_probe, lora_src, finetune_src against finetune, and lora_src against lora
    assert block["statistics"]["family_size"] == 5


def test_a_null_verdict_says_what_the_family_could_have_detected() -> None:
    """A method whose gain the seeds cannot tell from zero carries its mde, at this family's
    marginal level (BH: one of two rejected -> alpha * 2 / 2)."""
    from transferlab.evaluation.stats import marginal_level, minimum_detectable_effect
    runs = _results()
    runs += curve_runs("a/wise_ft", "10", [0.70, 0.74, 0.69], [0.6, 0.6, 0.6])  # -0.01..+0.02
    block = _helped(runs, BH)
    methods = block["sources"]["a"]["10"]["methods"]
    g = methods["wise_ft"]["gain"]
    assert g["verdict"] == "no detectable difference"
    st = block["statistics"]
    level = marginal_level("bh", 0.05, st["family_size"], st["rejected"])
    assert st["marginal_level"] == pytest.approx(level)
    assert g["mde"] == pytest.approx(minimum_detectable_effect(g["sd"], 3, level, 0.8))
    assert all("mde" not in m["gain"] for m in methods.values()
               if m["gain"]["verdict"] != "no detectable difference")
