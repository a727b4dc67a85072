"""Tests for transferlab.reporting.report, transferlab.reporting.figures and
transferlab.provenance.record.

The inputs are a small, hand-written set of evaluate outputs (two sources, three budgets, three
curves) with NaN and null in known places, so every expected string below can be traced to one
input value. At 1 label per class nothing is recommended (no selection score), as the pipeline
does where no labels can be held out of the budget.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from transferlab.config.params import load_params
from transferlab.core.errors import DataError
from transferlab.provenance.record import PACKAGES, collect_provenance, machine_provenance
from transferlab.reporting.report import SECTIONS, ReportInputError, load_inputs, write_report

ROOT = Path(__file__).resolve().parents[2]
NAN = math.nan
PARAMS = """\
common: {seeds: [0, 1]}
tracking: {enabled: false}
prepare:
  budgets: [1, 2, all]
  target: {kind: sklearn_digits, classes: [0, 1]}
  sources:
    glyphs: {kind: fonts, chars: "01", n_per_class: 4}
    blank: {kind: none}
pretrain: {}
transfer: {}
evaluate: {}
selection: {}
execution: {}
grid: {strategies: [source_only, linear_probe, partial_finetune, finetune]}
"""


def _acc(mean: float, std: float, low: float, high: float) -> dict:
    return {"mean": mean, "std": std, "ci_low": low, "ci_high": high, "n": 2, "method": "t"}


def _gain(diff, low, high, p, p_adj, verdict, n=2, note=None) -> dict:
    out = {"diff": diff, "ci_low": low, "ci_high": high, "p_value": p, "p_adjusted": p_adj,
           "verdict": verdict, "n": n, "seeds": list(range(n)), "method": "paired t over seeds"}
    return out | ({"note": note} if note else {})


def _sel(mean: float) -> dict:
    return {"mean": mean, "std": 0.01, "ci_low": mean - 0.1, "ci_high": mean + 0.1, "n": 2,
            "method": "t"}


NO_SELECTION = ("no curve has a finite selection score at this budget (too few labels per "
                "class to hold any out of the budget), so nothing is recommended; the test split "
                "does not choose instead")


EVALUATE = {
    "summary": {
        "scratch": {"1": {"accuracy": _acc(0.2503, 0.0405, -0.1101, 0.6107)},
                    "2": {"accuracy": _acc(0.4201, 0.0312, 0.1401, 0.7001)},
                    "all": {"accuracy": _acc(0.8551, 0.0109, 0.7571, 0.9531),
                            "selection_score": _sel(0.8812)}},
        "glyphs/finetune": {
            # significant alone (p < 0.05), not after Holm over the family of 7
            "1": {"accuracy": _acc(0.5504, 0.0302, 0.2801, 0.8207),
                  "gain": _gain(0.3001, 0.0011, 0.5991, 0.0491, 0.2455, "no detectable effect")
                  | {"mde": 0.4123, "interval_excludes_zero": True}},
            "2": {"accuracy": _acc(0.6543, 0.0211, 0.6001, 0.7101),
                  "gain": _gain(0.2346, 0.1004, 0.3004, 0.004, 0.0241, "positive transfer")},
            "all": {"accuracy": _acc(0.8432, 0.0151, 0.7071, 0.9791),
                    "selection_score": _sel(0.8713),
                    "gain": _gain(-0.0121, -0.0502, 0.0201, 0.5104, 1.0,
                                  "no detectable effect")}},
        "glyphs/linear_probe": {
            "1": {"accuracy": _acc(0.2001, 0.0101, 0.1101, 0.2901),
                  "gain": _gain(-0.0502, NAN, NAN, NAN, NAN, "no detectable effect", n=1,
                                note="1 paired seed(s): too few for a test")},
            "2": {"accuracy": _acc(0.3012, 0.0413, 0.2301, 0.3701),
                  "gain": _gain(-0.1189, -0.2102, -0.0301, 0.001, 0.007, "negative transfer")},
            "all": {"accuracy": _acc(0.5012, 0.0614, 0.3901, 0.6101),
                    "gain": _gain(-0.3539, -0.4402, -0.2701, 0.001, 0.007,
                                  "negative transfer")}},
    },
    "label_efficiency": {"target_accuracy": 0.8123, "curves": {
        "scratch": {"labels_to_reach": 5.6789, "reached": True, "aulc": 0.6312},
        "glyphs/finetune": {"labels_to_reach": 3.2101, "reached": True, "aulc": 0.7411},
        "glyphs/linear_probe": {"labels_to_reach": None, "reached": False, "aulc": 0.4012}}},
    "transferability": {
        "scores": {
            "glyphs": {"2": {"logme": 1.2346, "leep": -0.5012, "nce": NAN, "hscore": 1.5101},
                       "all": {"logme": 1.4012, "leep": -0.4013, "nce": -0.3014,
                               "hscore": 1.6015}},
            "blank": {"2": {"logme": 0.9016, "leep": None, "nce": None, "hscore": 1.1017},
                      "all": {"logme": 1.0018, "leep": None, "nce": None, "hscore": 1.2019}}},
        "agreement": {b: {s: {"finetune": {"kendall_tau": 1.0, "weighted_tau": 1.0,
                                           "pearson_r": NAN},
                              "linear_probe": {"kendall_tau": None, "weighted_tau": None,
                                               "pearson_r": None}}
                          for s in ("logme", "leep", "nce", "hscore")} for b in ("2", "all")},
        "picks": {},
    },
    "recommendations": {
        "1": {"best": None, "reason": NO_SELECTION, "selection_score": None, "accuracy": None,
              "runner_up": None, "vs_runner_up": None, "significantly_better": False,
              "negative_transfer": [], "best_source_by_finetune": "glyphs", "score_picks": {}},
        "2": {"best": "glyphs/finetune", "accuracy": _acc(0.6543, 0.0211, 0.6001, 0.7101),
              "selection_score": _sel(0.7012), "runner_up": "scratch",
              "runner_up_selection_score": _sel(0.6013),
              "vs_runner_up": _gain(0.2346, 0.1004, 0.3004, 0.004, 0.0361, "better"),
              "significantly_better": True, "negative_transfer": ["glyphs/linear_probe"],
              "best_source_by_finetune": "glyphs",
              "score_picks": {"logme": {"source": "glyphs", "correct": True},
                              "hscore": {"source": "blank", "correct": False}}},
        "all": {"best": "scratch", "accuracy": _acc(0.8551, 0.0109, 0.7571, 0.9531),
                "selection_score": _sel(0.8812), "runner_up": "glyphs/finetune",
                "indistinguishable": ["glyphs/finetune", "scratch"],
                "runner_up_selection_score": _sel(0.8713),
                "vs_runner_up": _gain(0.0121, -0.0201, 0.0502, 0.5104, 1.0,
                                      "no detectable difference"),
                "significantly_better": False, "negative_transfer": ["glyphs/linear_probe"],
                "best_source_by_finetune": "glyphs",
                "score_picks": {"logme": {"source": "glyphs", "correct": True}}},
    },
    "statistics": {"unit": "seed", "test": "paired t over seeds, S-1 df", "multiplicity": "holm",
                   "alpha": 0.05, "family_size": 7},
    "skipped": {"blank/source_only": "the source has no trained classifier (null source)"},
}
CURVES = ("scratch", "glyphs/finetune", "glyphs/linear_probe")


def _write_arrays(folder: Path, seed: int) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    digests = {}
    for name in ("train_x.npy", "train_y.npy"):
        np.save(folder / name, rng.integers(0, 255, size=(4, 8, 8), dtype=np.uint8))
        digests[name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    return digests


def _plots(folder: Path) -> None:
    folder.mkdir(parents=True)
    lpc = {"1": 1.0, "2": 2.0, "all": 6.0}
    summary = EVALUATE["summary"]
    pd.DataFrame([{"curve": c, "budget": b, "labels_per_class": lpc[b],
                   "accuracy": e["accuracy"]["mean"], "ci_low": e["accuracy"]["ci_low"],
                   "ci_high": e["accuracy"]["ci_high"]}
                  for c, by_b in summary.items() for b, e in by_b.items()]
                 ).to_csv(folder / "learning_curves.csv", index=False)
    pd.DataFrame([{"curve": c, "budget": b, "labels_per_class": lpc[b], "gain": e["gain"]["diff"],
                   "ci_low": e["gain"]["ci_low"], "ci_high": e["gain"]["ci_high"],
                   "p_value": e["gain"]["p_value"], "verdict": e["gain"]["verdict"]}
                  for c, by_b in summary.items() for b, e in by_b.items() if "gain" in e]
                 ).to_csv(folder / "gain.csv", index=False)
    pd.DataFrame({"actual": ["0", "0", "1", "1", "1"], "predicted": ["0", "1", "1", "1", "0"]}
                 ).to_csv(folder / "confusion.csv", index=False)
    pd.DataFrame([{"curve": c, "lower": lo, "upper": lo + 0.5, "count": 3,
                   "confidence": lo + 0.3, "accuracy": 0.6} for c in CURVES for lo in (0.0, 0.5)]
                 ).to_csv(folder / "reliability.csv", index=False)
    pd.DataFrame([
        {"curve": "glyphs/finetune", "accuracy": 0.8432, "shifted_accuracy": 0.7013,
         "shift_gap": 0.1419, "ece": 0.0514, "brier": 0.2017, "log_loss": 0.4016,
         "forgetting": 0.0717, "trainable_params": 94186, "train_flops": 1.2345e9},
        {"curve": "glyphs/linear_probe", "accuracy": 0.5012, "shifted_accuracy": 0.4413,
         "shift_gap": 0.0599, "ece": 0.1214, "brier": 0.6015, "log_loss": 1.1016,
         "forgetting": 0.0, "trainable_params": 1290, "train_flops": 0.0},
        {"curve": "scratch", "accuracy": 0.8551, "shifted_accuracy": 0.6012,
         "shift_gap": 0.2539, "ece": 0.0313, "brier": 0.1514, "log_loss": 0.3515,
         "forgetting": NAN, "trainable_params": 94186, "train_flops": 1.2345e9},
    ]).to_csv(folder / "per_curve.csv", index=False)
    scores = EVALUATE["transferability"]["scores"]
    pd.DataFrame([{"source": src, "budget": b, "score": s, "value": v,
                   "finetune_accuracy": summary.get(f"{src}/finetune", {}).get(b, {})
                   .get("accuracy", {}).get("mean", NAN), "linear_probe_accuracy": NAN}
                  for src, by_b in scores.items() for b, vals in by_b.items()
                  for s, v in vals.items()]).to_csv(folder / "transferability.csv", index=False)


def make_inputs(root: Path) -> dict[str, Path]:
    """Write every file the report stage reads under ``root``; returns the stage's paths."""
    paths = {"params": root / "params.yaml", "metrics": root / "metrics" / "evaluate.json",
             "runs_table": root / "metrics" / "runs.csv",
             "plots": root / "plots",
             "models": root / "models", "data": root / "data"}
    paths["params"].write_text(PARAMS)
    paths["metrics"].parent.mkdir(parents=True)
    paths["metrics"].write_text(json.dumps(EVALUATE, indent=1))  # NaN as NaN, None as null
    pd.DataFrame([{"source": c.split("/")[0] if c != "scratch" else "none",
                   "strategy": c.split("/")[-1], "budget": b, "seed": s, "curve": c,
                   "accuracy": 0.5} for c in CURVES for b in ("1", "2", "all") for s in (0, 1)]
                 ).to_csv(paths["runs_table"], index=False)
    _plots(paths["plots"])
    for name, metrics in {"glyphs": {"trained": True, "num_classes": 2,
                                     "test": {"accuracy": 0.8137}, "epochs_run": 7},
                          "blank": {"trained": False, "num_classes": 0}}.items():
        (paths["models"] / name).mkdir(parents=True)
        (paths["models"] / name / "metrics.json").write_text(json.dumps(metrics))
    data = paths["data"]
    target = {"class_names": ["0", "1"], "image_shape": [8, 8],
              "counts": {"train": {"0": 5, "1": 7}, "test": {"0": 3, "1": 3}},
              "sha256": _write_arrays(data / "target", 0)}
    (data / "target" / "manifest.json").write_text(json.dumps(target))
    glyphs = {"class_names": ["0", "1"], "aligned": True,
              "sha256": _write_arrays(data / "sources" / "glyphs", 1)}
    (data / "sources" / "glyphs" / "manifest.json").write_text(json.dumps(glyphs))
    (data / "sources" / "blank").mkdir(parents=True)
    (data / "sources" / "blank" / "manifest.json").write_text(
        json.dumps({"class_names": [], "sha256": {}}))
    return paths


def build(paths: dict[str, Path], out: Path) -> dict[str, Path]:
    params = load_params(paths["params"])
    inputs = load_inputs(paths["metrics"], paths["runs_table"], paths["plots"],
                         paths["models"], paths["data"], sorted(params.prepare.sources))
    provenance = collect_provenance(paths["params"], paths["data"])
    return write_report(out, inputs, params, provenance)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict, str, str]:
    root = tmp_path_factory.mktemp("inputs")
    paths = make_inputs(root)
    written = build(paths, root / "reports")
    md = written["markdown"].read_text(encoding="utf-8")
    page = written["html"].read_text(encoding="utf-8")
    return paths, written, md, page


def test_every_section_is_in_markdown_and_html(built) -> None:
    _, _, md, page = built
    for title in SECTIONS:
        assert f"\n## {title}\n" in md
        assert f">{html.escape(title)}</h2>" in page
    positions = [md.index(f"\n## {title}\n") for title in SECTIONS]
    assert positions == sorted(positions)


def test_html_is_self_contained(built) -> None:
    _, written, _, page = built
    assert 'src="http' not in page and "<script" not in page and "<link" not in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == len(list(written["figures"].glob("*.png"))) == 8
    assert all(base64.b64decode(b).startswith(b"\x89PNG\r\n\x1a\n") for b in images)


def test_numbers_come_from_the_inputs(built) -> None:
    _, _, md, _ = built
    expected = [
        "Best: `glyphs/finetune` with accuracy **0.654**, CI [0.600, 0.710] (n = 2 seeds); "
        "chosen by selection score 0.701 (mean over 2 seeds).",
        "Against the runner-up `scratch` (selection score 0.601): test difference +0.235, CI "
        "[0.100, 0.300], p = 0.004, adjusted p (Holm) = 0.036: significantly better.",
        "Against the runner-up `glyphs/finetune` (selection score 0.871): test difference "
        "+0.012, CI [-0.020, 0.050], p = 0.510, adjusted p (Holm) = 1.000: no detectable "
        "difference.",
        "Negative transfer: `glyphs/linear_probe`.",
        "Indistinguishable on held-out labels: `glyphs/finetune` (0.871), `scratch` (0.881); "
        "`scratch` is the cheapest of them.",
        f"- No recommendation: {NO_SELECTION}.\n- Negative transfer: none found.",
        "Confusion matrix of `scratch`, first seed, trained with all labels",
        "LogME → `glyphs` (right), H-score → `blank` (wrong)",
        "| glyphs/finetune | 0.550 ± 0.030 ○ ≥+0.412 | 0.654 ± 0.021 ▲ | 0.843 ± 0.015 ○ |",
        "| glyphs/linear_probe | 0.200 ± 0.010 ○ | 0.301 ± 0.041 ▼ | 0.501 ± 0.061 ▼ |",
        "| Curve | Budget | Gain | 95% CI (unadjusted) | Seeds | p | p (Holm) | Verdict |",
        "| glyphs/finetune | 1 | +0.300 | [0.001, 0.599] | 2 | 0.049 | 0.245 | no detectable "
        "effect (could detect ≥ +0.412) † |",
        "| glyphs/finetune | 2 | +0.235 | [0.100, 0.300] | 2 | 0.004 | 0.024 | positive transfer |",
        "The 7 verdicts of this report (every gain over scratch and every recommended curve "
        "against its runner-up) form one family, adjusted with Holm's step-down method",
        "paired t test and t interval on S - 1 degrees of freedom (S = 2 seeds)",
        "Holm-adjusted p against α = 0.05",
        "reach accuracy **0.812**",
        "| glyphs/finetune | 3.2 | 0.741 |",
        "| glyphs | 2 | 1.235 | -0.501 | n/a | 1.510 |",
        "| glyphs/finetune | 0.843 | 0.701 | 0.142 | 0.072 | 0.051 | 0.202 | 0.402 | 94,186 | "
        "1.23e+09 |",
        "| glyphs | fonts | 2 | 0.814 | 7 |",
        "| ATEN_CPU_CAPABILITY | avx2 |",
        "| blank | none | 0 | untrained | n/a |",
        "- `blank/source_only`: the source has no trained classifier (null source)",
        "all labels (6.0 per class on average)",
    ]
    for text in expected:
        assert text in md, text
    # machine-specific provenance and wall time are not in the report (a DVC output)
    for text in ("Git commit", "Seconds per run", "Pretraining seconds", "Device:"):
        assert text not in md, text


def test_unreached_curve_says_more_than_the_largest_budget(built) -> None:
    _, _, md, _ = built
    assert "| glyphs/linear_probe | more than the largest budget | 0.401 |" in md


def test_nan_and_null_print_as_na(built) -> None:
    _, _, md, page = built
    # NaN (a one-seed gain's interval and p, forgetting, Pearson r) and null (LEEP of the null
    # source, the missing recommendation) alike
    assert "| glyphs/linear_probe | 1 | -0.050 | n/a | 1 | n/a | n/a | no detectable effect (1 " \
        "paired seed(s): too few for a test) |" in md
    assert "| blank | 2 | 0.902 | n/a | n/a | 1.102 |" in md
    assert "| 2 | LogME | n/a | n/a | 1.000 | 1.000 | n/a | n/a |" in md
    assert "| scratch | 0.855 | 0.601 | 0.254 | n/a |" in md
    for text in (md, page):  # "null" may only appear in the skipped run's own reason
        assert not re.search(r"\b(nan|NaN|None|inf)\b", text)
        assert not re.search(r"\bnull\b", text.replace("(null source)", ""))


def test_report_is_byte_identical_when_rerun(built, tmp_path: Path) -> None:
    paths, first, _, _ = built
    second = build(paths, tmp_path / "reports")
    assert second["markdown"].read_bytes() == first["markdown"].read_bytes()
    assert second["html"].read_bytes() == first["html"].read_bytes()
    for png in first["figures"].glob("*.png"):
        assert (second["figures"] / png.name).read_bytes() == png.read_bytes(), png.name


@pytest.mark.parametrize("relative", ["metrics/evaluate.json", "metrics/runs.csv",
                                      "plots/gain.csv",
                                      "models/glyphs/metrics.json",
                                      "data/target/manifest.json"])
def test_missing_input_names_its_path(tmp_path: Path, relative: str) -> None:
    paths = make_inputs(tmp_path)
    (tmp_path / relative).unlink()
    with pytest.raises(ReportInputError, match=re.escape(str(tmp_path / relative))) as err:
        build(paths, tmp_path / "reports")
    assert isinstance(err.value, DataError)  # so run_stage prints one line and exits 1


def test_malformed_inputs_are_named(tmp_path: Path) -> None:
    paths = make_inputs(tmp_path)
    (paths["models"] / "glyphs" / "metrics.json").write_text("{not json")
    with pytest.raises(ReportInputError, match="metrics.json: not valid JSON"):
        build(paths, tmp_path / "reports")
    (tmp_path / "again").mkdir()
    paths = make_inputs(tmp_path / "again")
    paths["metrics"].write_text(json.dumps({"summary": {}}))
    with pytest.raises(ReportInputError, match="missing key.*label_efficiency"):
        build(paths, tmp_path / "again" / "reports")


def test_provenance_records_params_data_and_software(tmp_path: Path) -> None:
    paths = make_inputs(tmp_path)
    prov = collect_provenance(paths["params"], paths["data"])
    assert prov["params"]["text"] == PARAMS
    assert prov["cpu_pins"]["ATEN_CPU_CAPABILITY"] == "avx2"
    assert prov["determinism"] == "portable"  # the default; the params name no other
    assert not {"git", "packages", "device", "python"} & set(prov)  # machine-specific: timing/
    machine = machine_provenance(2, repo=tmp_path)
    assert machine["git"]["commit"] is None and "not a git work tree" in machine["git"]["note"]
    assert set(machine["packages"]) == set(PACKAGES)
    assert machine["device"] and machine["cpu"]["pinning"] == "on"
    rows = {(d["dataset"], d["file"]): d for d in prov["data"]}
    assert set(rows) == {(ds, f) for ds in ("target", "sources/glyphs")
                         for f in ("train_x.npy", "train_y.npy")}
    assert all(d["matches_file"] for d in rows.values())
    np.save(paths["data"] / "target" / "train_y.npy", np.zeros(3))  # the array changed
    changed = collect_provenance(paths["params"], paths["data"])["data"]
    assert [(d["dataset"], d["file"]) for d in changed if not d["matches_file"]] == [
        ("target", "train_y.npy")]


def _stage(paths: dict[str, Path], out: Path) -> subprocess.CompletedProcess:
    args = ["--params", paths["params"], "--metrics", paths["metrics"], "--runs-table",
            paths["runs_table"], "--plots", paths["plots"],
            "--models", paths["models"], "--data", paths["data"], "--out", out]
    # cwd: the stage's timing file (timing/<out>.json, relative) lands in the test's folder
    return subprocess.run([sys.executable, str(ROOT / "stages" / "report.py"),
                           *map(str, args)], capture_output=True, text=True, check=False,
                          cwd=out.parent)


def test_stage_writes_the_report_directory_or_nothing(tmp_path: Path) -> None:
    paths = make_inputs(tmp_path)
    done = _stage(paths, tmp_path / "reports")
    assert done.returncode == 0, done.stderr
    out = tmp_path / "reports"
    assert {p.name for p in out.iterdir()} == {"report.md", "report.html", "figures"}
    assert len(list((out / "figures").glob("*.png"))) == 8
    paths["runs_table"].unlink()
    failed = _stage(paths, tmp_path / "reports2")
    assert failed.returncode == 1
    assert failed.stderr.strip() == f"error: {paths['runs_table']}: report input not found"
    assert not (tmp_path / "reports2").exists()


def test_analysis_output_renders_through_json() -> None:
    """The report reads what analysis writes (not only the hand-written EVALUATE above): real
    summary, recommendations and statistics, through evaluate.json's JSON (NaN as null)."""
    from transferlab.config.params import EvaluateParams
    from transferlab.core.runtime import dumps_json
    from transferlab.evaluation import analysis
    from transferlab.evaluation.evaluate import RunResult
    from transferlab.reporting.results import accuracy, gain, recommendations, statistics_text

    def run(curve: str, budget: str, seed: int, acc: float, sel: float) -> RunResult:
        source, strategy = ("none", "scratch") if curve == "scratch" else curve.split("/")
        correct = np.arange(100) < round(acc * 100)
        return RunResult({"source": source, "strategy": strategy, "budget": budget,
                          "seed": seed}, {"accuracy": correct.mean(), "trainable_params": 10,
                                          "train_flops": 1.0}, correct, np.zeros((100, 2)), sel)

    results = [run(c, b, s, 0.5 + 0.1 * s + (0.2 if c != "scratch" else 0.0) + 0.01 * (b == "2"),
                   NAN if b == "1" else 0.6 + 0.1 * (c == "scratch"))
               for c in ("scratch", "glyphs/finetune") for b in ("1", "2", "all")
               for s in (0, 1)]
    params = load_params_text(PARAMS)
    p = EvaluateParams(multiplicity="bh", contrasts=(("glyphs/finetune", "scratch"),))
    summary = analysis.summarize(results, ["1", "2", "all"], 6.0, p)
    recs = analysis.recommend(summary, results, ["1", "2", "all"], {"picks": {}}, p)
    ev = json.loads(dumps_json(analysis.control_family(
        summary, recs, p, analysis.contrasts(results, ["1", "2", "all"], p))))
    assert ev["recommendations"]["1"]["best"] is None
    assert ev["recommendations"]["2"]["best"] == "scratch"  # by selection score, not by test
    blocks = (recommendations(ev, {}, params, {"confusion": "c.png"})
              + accuracy(ev, params, {"learning_curves": "l.png"})
              + gain(ev, params, {"gain": "g.png"}) + [statistics_text(ev, params)])
    text = "\n".join(str(b) for b in blocks)
    assert "No recommendation: no curve has a finite selection score" in text
    assert "Best: `scratch` with accuracy **0.560**" in text  # seeds 0.51, 0.61
    assert "p (BH)" in text and "Benjamini-Hochberg" in text
    # 3 gains, 2 runner-up comparisons, 3 head-to-head (one contrast at 3 budgets)
    assert "The 8 verdicts of this report" in text and "every head-to-head contrast" in text
    assert "Head to head" in text and "('`glyphs/finetune`', '`scratch`', '2', '+0.200'" in text
    assert not re.search(r"\b(nan|NaN|None|inf)\b", text)


def load_params_text(text: str):
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "params.yaml"
        path.write_text(text)
        return load_params(path)
