"""Tests for transferlab.evaluation.analysis (gains, verdicts, multiplicity, recommendation) and
transferlab.evaluation.evaluate.champion_checkpoints, on hand-built RunResults.

Every run is built from a test accuracy (and a selection score), so each expected number below
can be computed by hand from the table at the top of the test that uses it.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from transferlab.config.params import EvaluateParams
from transferlab.evaluation import analysis
from transferlab.evaluation.evaluate import RunResult, champion_checkpoints
from transferlab.evaluation.stats import holm_bonferroni

N_TEST = 200  # test examples per run: accuracies are multiples of 0.005
NAN = math.nan
HOLM, NONE = EvaluateParams(multiplicity="holm"), EvaluateParams(multiplicity="none")
NO_TRANSFER = {"picks": {}}  # transferability_summary's picks, not under test here


def run(curve: str, budget: str, seed: int, acc: float, sel: float = NAN,
        params: int = 1000, flops: float = 1e6, rng: np.random.Generator | None = None
        ) -> RunResult:
    """One run whose test accuracy is exactly ``acc`` (rounded to 1/N_TEST)."""
    source, strategy = ("none", "scratch") if curve == "scratch" else curve.split("/")
    k = round(acc * N_TEST)
    correct = np.arange(N_TEST) < k
    if rng is not None:  # the same accuracy, other examples right
        correct = rng.permutation(correct)
    proba = np.where(correct[:, None], [[0.9, 0.1]], [[0.1, 0.9]])
    return RunResult({"source": source, "strategy": strategy, "budget": budget, "seed": seed},
                     {"accuracy": k / N_TEST, "trainable_params": params, "train_flops": flops},
                     correct, proba, sel)


def curve_runs(curve: str, budget: str, accs: list[float], sels: list[float] | None = None,
               **kw) -> list[RunResult]:
    sels = sels or [NAN] * len(accs)
    return [run(curve, budget, s, a, sel, **kw) for s, (a, sel) in enumerate(zip(accs, sels,
                                                                               strict=True))]


def analyse(results: list[RunResult], budgets: list[str], p: EvaluateParams) -> dict:
    """What stages/evaluate.py composes: summarize, recommend, control_family."""
    summary = analysis.summarize(results, budgets, 100.0, p)
    recs = analysis.recommend(summary, results, budgets, NO_TRANSFER, p)
    return analysis.control_family(summary, recs, p)


# ------------------------------------------------------------------------- gain sign, pairing
def test_gain_is_curve_minus_scratch() -> None:
    # per seed: curve - scratch = +0.20, +0.21, +0.19
    results = curve_runs("src/finetune", "10", [0.80, 0.82, 0.78]) + \
        curve_runs("scratch", "10", [0.60, 0.61, 0.59])
    gain = analyse(results, ["10"], NONE)["summary"]["src/finetune"]["10"]["gain"]
    assert gain["diff"] == pytest.approx(0.20)
    assert gain["ci_low"] > 0 and gain["verdict"] == "positive transfer"
    ref = sps.ttest_rel([0.80, 0.82, 0.78], [0.60, 0.61, 0.59])
    assert gain["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert gain["n"] == 3 and gain["seeds"] == [0, 1, 2]
    # paired_difference itself: argument order is A minus B
    direct = analysis.paired_difference(results[:3], results[3:], NONE)
    assert direct["diff"] == pytest.approx(0.20)
    assert analysis.paired_difference(results[3:], results[:3], NONE)["diff"] == \
        pytest.approx(-0.20)


def test_negative_gain_is_negative_transfer() -> None:
    results = curve_runs("src/linear_probe", "10", [0.40, 0.42, 0.41]) + \
        curve_runs("scratch", "10", [0.60, 0.61, 0.59])
    out = analyse(results, ["10"], NONE)
    gain = out["summary"]["src/linear_probe"]["10"]["gain"]
    assert gain["diff"] == pytest.approx(-0.19) and gain["verdict"] == "negative transfer"
    assert out["recommendations"]["10"]["negative_transfer"] == ["src/linear_probe"]


def test_gain_pairs_by_seed_not_by_order() -> None:
    # seeds differ a lot (0.5 / 0.7 / 0.9) but the curve is consistently ~0.025 better; pairing
    # by seed gives a small sd of the differences, mispairing a huge one
    curve = [run("src/finetune", "10", s, a) for s, a in enumerate([0.52, 0.73, 0.925])]
    scratch = [run("scratch", "10", s, a) for s, a in enumerate([0.50, 0.70, 0.90])]
    ordered = analyse(curve + scratch, ["10"], NONE)["summary"]["src/finetune"]["10"]["gain"]
    shuffled_results = scratch[1:] + list(reversed(curve)) + scratch[:1]
    shuffled = analyse(shuffled_results, ["10"], NONE)["summary"]["src/finetune"]["10"]["gain"]
    assert shuffled == ordered
    ref = sps.ttest_rel([0.52, 0.73, 0.925], [0.50, 0.70, 0.90])
    assert ordered["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert ordered["diff"] == pytest.approx(0.025)
    assert ordered["ci_high"] - ordered["ci_low"] < 0.05  # a mispaired sd would be ~0.2


def test_missing_scratch_seed_is_left_out_of_the_pairing() -> None:
    results = curve_runs("src/finetune", "10", [0.80, 0.83, 0.70]) + \
        curve_runs("scratch", "10", [0.60, 0.61])  # no scratch at seed 2
    gain = analyse(results, ["10"], NONE)["summary"]["src/finetune"]["10"]["gain"]
    assert gain["n"] == 2 and gain["seeds"] == [0, 1]
    assert gain["diff"] == pytest.approx(0.21)  # (0.20 + 0.22) / 2: seed 2 not used
    assert "no baseline run at seed(s) [2]" in gain["note"]
    # one common seed: a difference but no test, so no verdict
    one = analyse(curve_runs("src/finetune", "10", [0.9, 0.9]) +
                  [run("scratch", "10", 1, 0.5)], ["10"], NONE)
    gain = one["summary"]["src/finetune"]["10"]["gain"]
    assert gain["diff"] == pytest.approx(0.4) and math.isnan(gain["p_value"])
    assert gain["verdict"] == "no detectable effect" and "too few" in gain["note"]
    assert one["statistics"]["family_size"] == 0


def test_summarize_needs_scratch() -> None:
    with pytest.raises(ValueError, match="no scratch runs"):
        analysis.summarize(curve_runs("src/finetune", "10", [0.8, 0.8]), ["10"], 100.0, NONE)


# ---------------------------------------------------------------------------- multiplicity
def _family_results() -> list[RunResult]:
    """One clear-ish gain (p = 0.0132 alone) and three null gains, one budget."""
    return (curve_runs("a/finetune", "10", [0.62, 0.635, 0.625]) +      # +0.02, +0.025, +0.03
            curve_runs("b/finetune", "10", [0.61, 0.60, 0.62]) +
            curve_runs("c/finetune", "10", [0.59, 0.62, 0.60]) +
            curve_runs("d/finetune", "10", [0.60, 0.60, 0.605]) +
            curve_runs("scratch", "10", [0.60, 0.61, 0.595]))


def test_significant_alone_but_not_after_holm() -> None:
    alone = analyse(_family_results(), ["10"], NONE)["summary"]["a/finetune"]["10"]["gain"]
    assert alone["p_value"] == pytest.approx(
        sps.ttest_rel([0.62, 0.635, 0.625], [0.60, 0.61, 0.595]).pvalue)
    assert alone["p_value"] < 0.05 and alone["verdict"] == "positive transfer"
    assert alone["p_adjusted"] == alone["p_value"]

    out = analyse(_family_results(), ["10"], HOLM)
    gain = out["summary"]["a/finetune"]["10"]["gain"]
    assert gain["p_value"] == alone["p_value"]  # the raw p and the t interval are kept
    assert (gain["ci_low"], gain["ci_high"]) == (alone["ci_low"], alone["ci_high"])
    assert gain["p_adjusted"] >= 0.05 and gain["verdict"] == "no detectable effect"
    # the family: four gains (no recommendation: no selection scores)
    raw = [out["summary"][c]["10"]["gain"]["p_value"] for c in
           ("a/finetune", "b/finetune", "c/finetune", "d/finetune")]
    assert out["statistics"]["family_size"] == 4
    assert [out["summary"][c]["10"]["gain"]["p_adjusted"] for c in
            ("a/finetune", "b/finetune", "c/finetune", "d/finetune")] == holm_bonferroni(raw)
    assert gain["p_adjusted"] == pytest.approx(4 * alone["p_value"])


def test_bh_is_the_other_choice() -> None:
    out = analyse(_family_results(), ["10"], EvaluateParams(multiplicity="bh"))
    assert out["statistics"]["multiplicity"] == "bh"
    gain = out["summary"]["a/finetune"]["10"]["gain"]
    assert gain["p_adjusted"] == pytest.approx(4 * gain["p_value"])  # smallest of 4: m p / 1


def test_statistics_block_and_runner_up_in_the_family() -> None:
    results = (curve_runs("a/finetune", "10", [0.8, 0.82, 0.79], [0.9, 0.9, 0.8]) +
               curve_runs("scratch", "10", [0.6, 0.61, 0.58], [0.5, 0.6, 0.5]))
    out = analyse(results, ["10"], HOLM)
    stats = out["statistics"]
    assert stats["unit"] == "seed" and stats["test"] == "paired t over seeds, S-1 df"
    assert stats["multiplicity"] == "holm" and stats["alpha"] == pytest.approx(0.05)
    assert stats["family_size"] == 2  # the gain and the runner-up comparison
    rec = out["recommendations"]["10"]
    assert rec["best"] == "a/finetune" and rec["runner_up"] == "scratch"
    # chosen minus runner-up is here the same comparison as the gain: two equal p-values,
    # Holm doubles both
    g = out["summary"]["a/finetune"]["10"]["gain"]
    assert rec["vs_runner_up"]["p_value"] == pytest.approx(g["p_value"])
    assert rec["vs_runner_up"]["p_adjusted"] == pytest.approx(min(1.0, 2 * g["p_value"]))


def test_control_family_does_not_modify_its_inputs() -> None:
    results = _family_results()
    summary = analysis.summarize(results, ["10"], 100.0, HOLM)
    recs = analysis.recommend(summary, results, ["10"], NO_TRANSFER, HOLM)
    before = copy.deepcopy((summary, recs))
    analysis.control_family(summary, recs, HOLM)
    assert (summary, recs) == before


def test_a_contrast_is_a_minus_b_paired_by_seed_and_judged_in_the_family() -> None:
    """evaluate.contrasts: per budget both curves ran, A - B paired by seed (the same numbers
    as a hand paired t), Holm-adjusted with the gains and the runner-up comparison; a curve no
    run has is named with the curves the study has."""
    a, b = [0.80, 0.84, 0.79], [0.70, 0.72, 0.71]
    results = (curve_runs("big/linear_probe", "10", a) + curve_runs("small/linear_probe", "10", b)
               + curve_runs("big/linear_probe", "20", a) + curve_runs("scratch", "10", b)
               + curve_runs("scratch", "20", b))
    p = dataclasses.replace(HOLM, contrasts=(("big/linear_probe", "small/linear_probe"),))
    raw = analysis.contrasts(results, ["10", "20"], p)
    assert [(t["a"], t["b"], t["budget"]) for t in raw] == [
        ("big/linear_probe", "small/linear_probe", "10")]  # small did not run at 20
    ref = sps.ttest_rel(a, b)
    assert raw[0]["diff"] == pytest.approx(np.mean(np.subtract(a, b)))
    assert raw[0]["p_value"] == pytest.approx(ref.pvalue)
    summary = analysis.summarize(results, ["10", "20"], 100.0, p)
    recs = analysis.recommend(summary, results, ["10", "20"], NO_TRANSFER, p)
    out = analysis.control_family(summary, recs, p, raw)
    family = [g["p_value"] for c in sorted(out["summary"]) for g in
              [out["summary"][c][bud].get("gain") for bud in out["summary"][c]] if g]
    family += [r["vs_runner_up"]["p_value"] for _, r in sorted(out["recommendations"].items())
               if r.get("vs_runner_up")]
    family.append(raw[0]["p_value"])
    assert out["statistics"]["family_size"] == len(family)
    judged = out["contrasts"][0]
    assert judged["p_adjusted"] == pytest.approx(holm_bonferroni(family)[-1])
    assert judged["verdict"] in ("better", "no detectable difference")
    assert "verdict" not in raw[0]  # the input list is not modified
    with pytest.raises(ValueError, match=r"contrasts\[0\]: no runs of curve 'gone/x'; this "
                                         r"study has big/linear_probe, scratch"):
        analysis.contrasts(results, ["10"], dataclasses.replace(
            HOLM, contrasts=(("gone/x", "big/linear_probe"),)))


# -------------------------------------------------------------------------- recommendation
def test_recommendation_follows_the_selection_score_not_the_test_split() -> None:
    # x is better on test (0.90 vs 0.80) but worse by selection score (0.60 vs 0.70)
    results = (curve_runs("x/finetune", "10", [0.90, 0.91, 0.89], [0.60, 0.60, 0.60]) +
               curve_runs("y/finetune", "10", [0.80, 0.82, 0.78], [0.70, 0.70, 0.70]) +
               curve_runs("scratch", "10", [0.50, 0.50, 0.51], [0.40, 0.40, 0.40]))
    rec = analyse(results, ["10"], NONE)["recommendations"]["10"]
    assert rec["best"] == "y/finetune" and rec["runner_up"] == "x/finetune"
    assert rec["selection_score"]["mean"] == pytest.approx(0.70)
    assert rec["runner_up_selection_score"]["mean"] == pytest.approx(0.60)
    assert rec["accuracy"]["mean"] == pytest.approx(0.80)  # the chosen curve's test accuracy
    assert rec["vs_runner_up"]["diff"] == pytest.approx(-0.10)  # chosen minus runner-up
    assert rec["vs_runner_up"]["verdict"] == "worse"
    assert rec["significantly_better"] is False


def test_choices_do_not_change_when_test_outcomes_do() -> None:
    """Any test outcome (accuracies and which examples are right) leaves every choice as it was:
    recommendation, runner-up and champion depend on selection scores only."""
    sels = {"x/finetune": [0.6, 0.7, 0.65], "y/linear_probe": [0.7, 0.6, 0.7],
            "scratch": [0.5, 0.55, 0.5]}
    rng = np.random.default_rng(0)
    choices = []
    for _ in range(5):
        results = [run(c, b, s, float(rng.uniform(0.3, 0.95)), sels[c][s], rng=rng)
                   for c in sels for b in ("3", "10") for s in range(3)]
        recs = analyse(results, ["3", "10"], HOLM)["recommendations"]
        choices.append({b: (r["best"], r["runner_up"]) for b, r in recs.items()})
    assert all(c == choices[0] for c in choices)
    # 0.6667 vs 0.65: a shortfall of 0.017 against its standard error of 0.060, so the two tie;
    # equal cost, so the name decides, and the runner-up is the best-ranked other curve
    assert choices[0]["10"] == ("x/finetune", "y/linear_probe")


def test_no_recommendation_without_selection_scores() -> None:
    results = (curve_runs("x/finetune", "1", [0.9, 0.9, 0.9]) +
               curve_runs("scratch", "1", [0.3, 0.3, 0.4]) +
               curve_runs("x/finetune", "10", [0.9, 0.9, 0.9], [0.8, 0.9, 0.8]) +
               curve_runs("scratch", "10", [0.7, 0.7, 0.8], [0.7, 0.7, 0.7]))
    out = analyse(results, ["1", "10"], HOLM)
    rec = out["recommendations"]["1"]
    assert rec["best"] is None and rec["accuracy"] is None and rec["runner_up"] is None
    assert "no curve has a finite selection score" in rec["reason"]
    assert rec["significantly_better"] is False
    assert out["recommendations"]["10"]["best"] == "x/finetune"
    # the family: two gains and one runner-up comparison (none at budget 1)
    assert out["statistics"]["family_size"] == 3
    score = out["summary"]["x/finetune"]["1"]["selection_score"]
    assert score["n"] == 0 and math.isnan(score["mean"])


def test_ties_go_to_the_cheaper_curve_then_the_name() -> None:
    # four curves tie at a mean selection score of 0.7 (x/finetune only to 12 decimals)
    results = (curve_runs("x/finetune", "10", [0.9] * 3, [0.7, 0.7, 0.7 + 1e-13], params=5000) +
               curve_runs("a/linear_probe", "10", [0.5] * 3, [0.7] * 3, params=100, flops=3e6) +
               curve_runs("x/linear_probe", "10", [0.5] * 3, [0.7] * 3, params=100, flops=2e6) +
               curve_runs("w/linear_probe", "10", [0.6] * 3, [0.7] * 3, params=100, flops=2e6) +
               curve_runs("scratch", "10", [0.8] * 3, [0.6] * 3))
    summary = analysis.summarize(results, ["10"], 100.0, HOLM)
    assert analysis.ranked_by_selection(summary, "10") == [
        "w/linear_probe", "x/linear_probe", "a/linear_probe", "x/finetune", "scratch"]


def test_a_single_scored_curve_has_no_runner_up() -> None:
    results = (curve_runs("x/finetune", "10", [0.9] * 3, [0.8] * 3) +
               curve_runs("scratch", "10", [0.7, 0.8, 0.75]))
    rec = analyse(results, ["10"], HOLM)["recommendations"]["10"]
    assert rec["best"] == "x/finetune" and rec["runner_up"] is None
    assert rec["vs_runner_up"] is None and rec["significantly_better"] is False


# -------------------------------------------------------------------------------- champion
def _runs_json(folder: Path) -> list[dict]:
    def record(budget: str, seed: int, sel, val: float) -> dict:
        return {"budget": budget, "seed": seed, "checkpoint": f"b{budget}_s{seed}.pt",
                "selection_score": sel, "best_val_accuracy": val}
    return [
        {"source": "x", "strategy": "finetune", "folder": folder / "x" / "finetune", "runs": [
            record("10", 0, 0.7, 0.99), record("10", 1, 0.9, 0.1), record("10", 2, 0.9, 0.2),
            record("1", 0, None, 0.9), record("1", 1, NAN, 0.5)]},
        {"source": "none", "strategy": "scratch", "folder": folder / "scratch", "runs": [
            record("10", 0, 0.95, 0.9), record("10", 1, 0.96, 0.9)]},
    ]


def test_champion_is_the_recommended_curve_at_its_best_selection_seed(tmp_path: Path) -> None:
    recs = {"10": {"best": "x/finetune"}, "1": {"best": None, "reason": "no scores"}}
    got = champion_checkpoints(recs, _runs_json(tmp_path))
    # seed 1 and 2 tie on selection score 0.9: the lowest seed; best_val_accuracy is ignored
    assert got == {"10": ("x/finetune", tmp_path / "x" / "finetune" / "b10_s1.pt")}
    # the scratch curve, when recommended, is found under its own folder
    got = champion_checkpoints({"10": {"best": "scratch"}}, _runs_json(tmp_path))
    assert got == {"10": ("scratch", tmp_path / "scratch" / "b10_s1.pt")}


def test_champion_follows_analysis_end_to_end(tmp_path: Path) -> None:
    results = (curve_runs("x/finetune", "10", [0.6, 0.6, 0.6], [0.7, 0.9, 0.9]) +
               curve_runs("scratch", "10", [0.9, 0.9, 0.95], [0.5, 0.5, 0.5]) +
               curve_runs("x/finetune", "1", [0.6, 0.6, 0.6]) +
               curve_runs("scratch", "1", [0.3, 0.3, 0.35]))
    recs = analyse(results, ["1", "10"], HOLM)["recommendations"]
    got = champion_checkpoints(recs, _runs_json(tmp_path))
    assert set(got) == {"10"}  # nothing recommended at 1 label per class: no champion
    assert got["10"][0] == "x/finetune" and got["10"][1].name == "b10_s1.pt"


def test_one_label_per_class_recommends_among_the_curves_that_read_no_label() -> None:
    """At a fixed-schedule budget only the zero-label curves (scored on every budget label)
    have a selection score: the recommendation is among them, follows their scores whatever
    the test outcomes, says so, and its selection accuracy is an audit on test."""
    rng = np.random.default_rng(1)
    for _ in range(4):
        results = (curve_runs("p/source_only", "1", list(rng.uniform(0.3, 0.9, 3)),
                              [0.5, 0.6, 0.5]) +
                   curve_runs("p/adabn_zero", "1", list(rng.uniform(0.3, 0.9, 3)),
                              [0.7, 0.6, 0.8]) +
                   curve_runs("p/finetune", "1", list(rng.uniform(0.3, 0.9, 3))) +
                   curve_runs("scratch", "1", list(rng.uniform(0.3, 0.9, 3))))
        rec = analyse(results, ["1"], NONE)["recommendations"]["1"]
        assert rec["best"] == "p/adabn_zero" and rec["runner_up"] == "p/source_only"
        assert rec["chosen_among"] == ["p/adabn_zero", "p/source_only"]
        audit = rec["selection_accuracy"]
        assert audit["candidates"] == 2 and audit["seeds"] == 3
        means = {c: np.mean([r.metrics["accuracy"] for r in results if
                             f"{r.key['source']}/{r.key['strategy']}" == c])
                 for c in ("p/source_only", "p/adabn_zero")}
        top = max(means, key=means.get)
        assert audit["best_on_test"] == top
        assert audit["hit"] == (top == "p/adabn_zero")
        assert audit["regret"] == pytest.approx(means[top] - means["p/adabn_zero"])


def test_unstable_refits_are_counted_with_the_seed_spread() -> None:
    results = curve_runs("x/lora", "10", [0.9, 0.5, 0.88]) + curve_runs(
        "scratch", "10", [0.5, 0.5, 0.5])
    results[1] = dataclasses.replace(results[1], unstable_refit=True)
    summary = analysis.summarize(results, ["10"], 100.0, NONE)
    flag = summary["x/lora"]["10"]["unstable_refits"]
    assert flag["seeds"] == [1] and flag["n"] == 3
    assert flag["sd"] == pytest.approx(np.std([0.9, 0.5, 0.88], ddof=1))
    assert "unstable_refits" not in summary["scratch"]["10"]


def test_a_single_scored_curve_has_no_selection_audit() -> None:
    results = (curve_runs("p/source_only", "1", [0.5, 0.5, 0.5], [0.4, 0.5, 0.6]) +
               curve_runs("scratch", "1", [0.4, 0.5, 0.45]))
    rec = analyse(results, ["1"], NONE)["recommendations"]["1"]
    assert rec["best"] == "p/source_only" and "selection_accuracy" not in rec


def test_every_null_verdict_carries_its_minimum_detectable_effect() -> None:
    """Holm over the four gains of _family_results: none is rejected, so each null verdict's mde
    is the paired t's at alpha / 4 from its own seeds' spread; a flagged interval disagrees."""
    from transferlab.evaluation.stats import minimum_detectable_effect
    out = analyse(_family_results(), ["10"], HOLM)
    assert out["statistics"]["rejected"] == 0
    assert out["statistics"]["marginal_level"] == pytest.approx(0.05 / 4)
    for curve, accs in (("a/finetune", [0.62, 0.635, 0.625]), ("c/finetune", [0.59, 0.62, 0.60])):
        gain = out["summary"][curve]["10"]["gain"]
        d = np.array(accs) - np.array([0.60, 0.61, 0.595])
        assert gain["verdict"] == "no detectable effect"
        assert gain["sd"] == pytest.approx(np.std(d, ddof=1))
        assert gain["mde"] == pytest.approx(minimum_detectable_effect(np.std(d, ddof=1), 3,
                                                                      0.05 / 4, 0.8))
    # a: the unadjusted interval excludes 0, the Holm verdict does not: flagged
    assert out["summary"]["a/finetune"]["10"]["gain"]["interval_excludes_zero"] is True
    assert out["summary"]["c/finetune"]["10"]["gain"]["interval_excludes_zero"] is False
    # unadjusted, a's gain is positive: no mde beside a verdict that was made
    alone = analyse(_family_results(), ["10"], NONE)["summary"]["a/finetune"]["10"]["gain"]
    assert alone["verdict"] == "positive transfer" and "mde" not in alone


@pytest.mark.parametrize("n_sources", [3, 5])
def test_rank_agreement_is_not_trusted_below_five_sources(n_sources: int) -> None:
    """Scores that order the sources perfectly: tau = 1 either way, but with 3 sources that is
    one chance in 6, so it is not trusted; with 5 it is (and has an interval)."""
    sources = [f"s{i}" for i in range(n_sources)]
    rows = [{"source": s, "budget": "10", "seed": 0, "n_examples": 200, "feature_dim": 16,
             "min_per_class": 20, "source_classes": 10,
             **dict.fromkeys(analysis.SCORES, float(i))} for i, s in enumerate(sources)]
    summary = {f"{s}/{j}": {"10": {"accuracy": {"mean": 0.5 + 0.01 * i}}}
               for i, s in enumerate(sources) for j in analysis.JUDGES}
    out = analysis.transferability_summary(rows, summary, ["10"])
    agree = out["agreement"]["10"]["logme"][analysis.JUDGES[0]]
    assert agree["kendall_tau"] == pytest.approx(1.0) and agree["n_sources"] == n_sources
    if n_sources < analysis.MIN_AGREEMENT_SOURCES:
        assert not agree["trusted"]
        assert agree["untrusted_reason"] == "n = 3 sources: too few to test agreement"
    else:
        assert agree["trusted"] and math.isfinite(agree["kendall_ci_low"])


def test_a_tie_on_held_out_labels_is_said_and_goes_to_the_cheapest() -> None:
    """Three curves whose selection scores differ by less than their seed noise, and one clearly
    behind: the three are indistinguishable and the one with the fewest trainable parameters is
    recommended, although another has the highest mean."""
    sels = {"a/finetune": [0.90, 0.96, 0.93, 0.95],       # mean 0.935 (the highest)
            "a/linear_probe": [0.93, 0.94, 0.91, 0.94],   # 0.930: within its noise
            "b/finetune": [0.95, 0.90, 0.94, 0.93],       # 0.930
            "scratch": [0.70, 0.72, 0.69, 0.71]}          # clearly behind
    cost = {"a/finetune": 90_000, "a/linear_probe": 170, "b/finetune": 90_000,
            "scratch": 90_000}
    results = [run(c, "10", s, 0.8, sel, params=cost[c]) for c in sels
               for s, sel in enumerate(sels[c])]
    rec = analyse(results, ["10"], HOLM)["recommendations"]["10"]
    assert rec["indistinguishable"] == ["a/finetune", "a/linear_probe", "b/finetune"]
    assert rec["best"] == "a/linear_probe" and rec["runner_up"] == "a/finetune"
    # clearly separated scores: no tie, the highest mean wins whatever it costs
    sels["a/linear_probe"] = [0.80, 0.81, 0.79, 0.80]
    sels["b/finetune"] = [0.85, 0.84, 0.86, 0.85]
    results = [run(c, "10", s, 0.8, sel, params=cost[c]) for c in sels
               for s, sel in enumerate(sels[c])]
    rec = analyse(results, ["10"], HOLM)["recommendations"]["10"]
    assert "indistinguishable" not in rec and rec["best"] == "a/finetune"


def test_the_design_says_what_it_can_detect_and_what_a_target_would_take() -> None:
    from transferlab.evaluation.stats import minimum_detectable_effect, seeds_for_power
    out = analyse(_family_results(), ["10"], HOLM)
    d = out["statistics"]["design"]["10"]
    sds = [out["summary"][c]["10"]["gain"]["sd"] for c in
           ("a/finetune", "b/finetune", "c/finetune", "d/finetune")]
    assert d["seeds"] == 3 and d["gains"] == 4
    assert d["median_sd"] == pytest.approx(float(np.median(sds)))
    assert d["mde"] == pytest.approx(minimum_detectable_effect(d["median_sd"], 3, 0.05 / 4))
    assert d["seeds_for_target"] == seeds_for_power(d["median_sd"], 0.05, 0.05 / 4)
