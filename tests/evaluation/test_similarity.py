"""Linear CKA against the paper's formula, its invariances, and per-block drift and features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from transferlab.evaluation.similarity import (
    _chosen_blocks,
    block_drift,
    block_features,
    centered_gram,
    cka_from_grams,
    linear_cka,
    sentences,
    summarize,
    u_centered,
    unmoved,
    what_transferred,
)


def hsic_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al. (2019), eq. 3-4, written out: HSIC(K, L) = tr(K H L H) / (n - 1)^2 with
    linear kernels K = X Xᵀ, L = Y Yᵀ and the centring matrix H = I - 11ᵀ/n;
    CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, ell = x @ x.T, y @ y.T

    def hsic(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.trace(a @ h @ b @ h)) / (n - 1) ** 2

    return hsic(k, ell) / np.sqrt(hsic(k, k) * hsic(ell, ell))


@pytest.mark.parametrize("n,p,q", [(20, 5, 7), (10, 40, 3), (30, 30, 30), (8, 100, 200)])
def test_equals_the_papers_hsic_formula(n: int, p: int, q: int) -> None:
    rng = np.random.default_rng(n + p + q)
    x = rng.normal(size=(n, p))
    y = x[:, :min(p, q)] @ rng.normal(size=(min(p, q), q)) + 0.5 * rng.normal(size=(n, q))
    assert linear_cka(x, y) == pytest.approx(hsic_cka(x, y), rel=1e-10)
    xc, yc = x - x.mean(0), y - y.mean(0)  # eq. 5, the feature-space form
    feature_form = (np.linalg.norm(yc.T @ xc) ** 2
                    / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)))
    assert linear_cka(x, y) == pytest.approx(feature_form, rel=1e-10)


def test_invariant_to_orthogonal_transforms_and_isotropic_scaling_not_to_any_linear_map() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 6))
    y = np.tanh(x @ rng.normal(size=(6, 8)))
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    base = linear_cka(x, y)
    assert linear_cka(x, 3.7 * (y @ q)) == pytest.approx(base, rel=1e-10)
    assert linear_cka(x, y + 5.0) == pytest.approx(base, rel=1e-10)  # centring
    assert linear_cka(x @ np.linalg.qr(rng.normal(size=(6, 6)))[0], y) == pytest.approx(
        base, rel=1e-10)
    assert linear_cka(y, 2.0 * y @ q) == pytest.approx(1.0)
    stretched = y @ np.diag([10.0] + [0.1] * 7)  # invertible, not orthogonal: CKA changes
    assert abs(linear_cka(y, stretched) - 1.0) > 0.05


def test_bounds_and_errors() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(200, 4)), rng.normal(size=(200, 4))
    assert 0.0 <= linear_cka(x, y) < 0.1  # independent: near 0
    assert np.isnan(linear_cka(x, np.ones((200, 3))))  # constant: no similarity defined
    with pytest.raises(ValueError, match="same inputs"):
        linear_cka(x, y[:10])


def unbiased_hsic_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Song et al. (JMLR 2012)'s unbiased HSIC estimator, written out:
    [tr(K̃ L̃) + 1ᵀK̃1 1ᵀL̃1 / ((n-1)(n-2)) - 2/(n-2) 1ᵀK̃L̃1] / (n(n-3)) of the linear kernels
    with their diagonals zeroed (K̃), uncentred; CKA is its ratio as in Kornblith et al."""
    n = len(x)
    one = np.ones(n)

    def hsic(k: np.ndarray, ell: np.ndarray) -> float:
        k, ell = k - np.diag(np.diag(k)), ell - np.diag(np.diag(ell))
        return float(np.trace(k @ ell) + (one @ k @ one) * (one @ ell @ one) / ((n - 1) * (n - 2))
                     - 2 / (n - 2) * (one @ k @ ell @ one)) / (n * (n - 3))

    k, ell = x @ x.T, y @ y.T
    return hsic(k, ell) / np.sqrt(hsic(k, k) * hsic(ell, ell))


@pytest.mark.parametrize("n,p,q", [(20, 5, 7), (10, 40, 3), (30, 30, 30), (8, 100, 200), (4, 3, 2)])
def test_the_debiased_cka_equals_the_unbiased_hsic_formula(n: int, p: int, q: int) -> None:
    rng = np.random.default_rng(10 * n + p + q)
    x = rng.normal(1.0, 1.0, size=(n, p))  # not centred: the formula's kernels are raw
    y = x[:, :min(p, q)] @ rng.normal(size=(min(p, q), q)) + 0.5 * rng.normal(size=(n, q))
    assert linear_cka(x, y, debiased=True) == pytest.approx(unbiased_hsic_cka(x, y), rel=1e-9)
    # the pipeline's path: float32 features, their Gram U-centred in float64
    fast = cka_from_grams(centered_gram(x.astype(np.float32), debiased=True),
                          centered_gram(y.astype(np.float32), debiased=True))
    assert fast == pytest.approx(unbiased_hsic_cka(x, y), abs=1e-5)


def test_the_debiased_cka_keeps_the_invariances_and_removes_the_small_sample_bias() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 6))
    y = np.tanh(x @ rng.normal(size=(6, 8)))
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    base = linear_cka(x, y, debiased=True)
    assert linear_cka(x, 3.7 * (y @ q) + 5.0, debiased=True) == pytest.approx(base, rel=1e-9)
    assert linear_cka(y, 2.0 * y @ q, debiased=True) == pytest.approx(1.0)
    stretched = y @ np.diag([10.0] + [0.1] * 7)
    assert abs(linear_cka(y, stretched, debiased=True) - 1.0) > 0.05
    # two independent representations with more features than inputs (a CNN block's on a
    # small probe): the plug-in estimator sees similarity that is not there, the debiased not
    biased, debiased = [], []
    for seed in range(20):
        r = np.random.default_rng(100 + seed)
        a, b = r.normal(size=(64, 1000)), r.normal(size=(64, 1000))
        biased.append(linear_cka(a, b))
        debiased.append(linear_cka(a, b, debiased=True))
    assert np.mean(biased) > 0.8
    assert abs(np.mean(debiased)) < 0.01 and np.max(np.abs(debiased)) < 0.05
    with pytest.raises(ValueError, match="at least 4 inputs"):
        u_centered(np.eye(3))


def test_the_evaluate_params_refuse_a_probe_the_estimator_cannot_use() -> None:
    from transferlab.config.params import EvaluateParams

    EvaluateParams(similarity_probe=3, similarity_cka="biased").validate("evaluate")
    EvaluateParams(similarity_probe=0).validate("evaluate")  # off
    with pytest.raises(ValueError, match=r"evaluate.similarity_probe: 3; the debiased CKA "
                                         r"needs at least 4"):
        EvaluateParams(similarity_probe=3).validate("evaluate")


def test_loaded_models_reads_each_small_checkpoint_once_and_holds_a_bounded_number(
        tmp_path, monkeypatch) -> None:
    from transferlab.evaluation import evaluate

    reads = []

    def fake_load(path):
        reads.append(str(path))
        return nn.Linear(10, 10), {"arch": "x"}  # 110 weights

    monkeypatch.setattr(evaluate, "load_checkpoint", fake_load)
    monkeypatch.setattr(evaluate, "checkpoint_config", lambda path: {"from": "file"})
    models = evaluate.LoadedModels(max_params=250)  # two of them
    assert models.config(tmp_path / "a.pt") == {"from": "file"} and not reads
    a = models(tmp_path / "a.pt")
    assert models(tmp_path / "a.pt")[0] is a[0] and reads == [str(tmp_path / "a.pt")]
    assert models.config(tmp_path / "a.pt") is a[1]  # a kept model's config: no file read
    models(tmp_path / "b.pt")
    models(tmp_path / "a.pt")  # a used last: b goes first
    models(tmp_path / "c.pt")
    assert models.held == 220 and list(models.kept) == [str(tmp_path / "a.pt"),
                                                         str(tmp_path / "c.pt")]
    models(tmp_path / "b.pt")
    assert reads.count(str(tmp_path / "b.pt")) == 2
    big = evaluate.LoadedModels(max_params=100)  # a model over the bound is never held
    big(tmp_path / "a.pt")
    big(tmp_path / "a.pt")
    assert not big.kept and reads.count(str(tmp_path / "a.pt")) == 3


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = nn.Sequential()
            self.backbone.add_module("block1", nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU()))
            self.backbone.add_module("block2", nn.Sequential(nn.Conv2d(4, 4, 3), nn.ReLU()))
            self.backbone.add_module("pool", nn.Flatten())
            self.head = nn.Linear(4 * 4 * 4, 3)

        def features(self, x: torch.Tensor) -> torch.Tensor:
            return self.backbone(x)

    return Net()


def test_float32_grams_give_the_float64_cka() -> None:
    """The pipeline's path: float32 block outputs, their Gram product in float32. On features
    like a CNN block's (ReLU: large positive means, 256 inputs, 6,272 features) the CKA is the
    float64 reference's to 1e-5, also for two nearly equal representations."""
    rng = np.random.default_rng(3)
    x = np.maximum(rng.normal(0.5, 1.0, size=(256, 6272)), 0.0)
    for y in (np.maximum(x + rng.normal(0, 0.05, size=x.shape), 0.0),  # CKA near 1
              np.maximum(rng.normal(0.5, 1.0, size=x.shape), 0.0)):  # unrelated
        reference = linear_cka(x, y)
        fast = cka_from_grams(centered_gram(x.astype(np.float32)),
                              centered_gram(y.astype(np.float32)))
        assert centered_gram(y.astype(np.float32)).dtype == np.float64
        assert fast == pytest.approx(reference, abs=1e-5)


def test_block_features_are_each_blocks_output_and_drift_is_relative() -> None:
    net = _net(0)
    x = torch.randn(9, 1, 8, 8)
    feats = block_features(net, x, ["block1", "block2"], batch_size=4)
    assert feats["block1"].shape == (9, 4 * 6 * 6) and feats["block1"].dtype == np.float32
    with torch.no_grad():
        expected = net.backbone.block2(net.backbone.block1(x)).reshape(9, -1).double().numpy()
    np.testing.assert_allclose(feats["block2"], expected, rtol=1e-5, atol=1e-6)  # batches of 4

    moved = _net(0)
    with torch.no_grad():
        for p in moved.backbone.block2.parameters():
            p.mul_(1.5)
    drift = block_drift(moved, net, ["block1", "block2"])
    assert drift["block1"] == 0.0 and drift["block2"] == pytest.approx(0.5)
    same = what_transferred(net, net, x, ["block1", "block2"])
    assert all(v["cka"] == pytest.approx(1.0) and v["drift"] == 0.0 for v in same.values())
    other = what_transferred(_net(1), net, x, ["block1", "block2"])
    assert all(v["cka"] < 1.0 and v["drift"] > 0.1 for v in other.values())


def test_summarize_means_over_seeds_with_intervals() -> None:
    rows = [{"curve": "src/finetune", "budget": 3, "seed": s,
             "blocks": {"block1": {"cka": c, "drift": d}}}
            for s, (c, d) in enumerate([(0.9, 0.1), (0.8, 0.2), (0.7, 0.3)])]
    out = summarize(rows)["src/finetune"]["3"]["block1"]
    assert out["n"] == 3 and out["cka"]["mean"] == pytest.approx(0.8)
    assert out["cka"]["ci_low"] < 0.8 < out["cka"]["ci_high"]
    assert out["drift"]["mean"] == pytest.approx(0.2)


def _entry(cka: float, drift: float) -> dict:
    return {"cka": {"mean": cka, "ci_low": cka - 0.01, "ci_high": cka + 0.01},
            "drift": {"mean": drift, "ci_low": drift, "ci_high": drift}, "n": 3}


CURVES = {
    "src/finetune": {"10": {"block1": _entry(0.99, 0.01), "block2": _entry(0.97, 0.02),
                            "block3": _entry(0.62, 0.30)}},
    "src/lora": {"10": {"block1": _entry(0.99, 0.01), "block2": _entry(0.98, 0.01),
                        "block3": _entry(0.96, 0.02)}},
    "src/linear_probe": {"10": {"block1": _entry(1.0, 0.0), "block2": _entry(1.0, 0.0),
                                "block3": _entry(1.0, 0.0)}},
}


def test_sentences_name_the_block_that_changed_most_and_the_curves_that_kept_every_block() -> None:
    (moved, kept) = sentences(CURVES)["10"]
    assert "`src/finetune` changed `block3` most (CKA 0.62, drift 0.300" in moved
    assert "`src/lora` changed `block3` most (CKA 0.96" in moved
    assert "linear_probe" not in moved
    assert kept == "Every block stayed at CKA ≥ 0.95 with the source in `src/lora`."
    # a backbone that did not move is said once, for every budget, not once per budget
    assert unmoved(CURVES) == {"src/linear_probe": ["10"]}
    assert sentences({"src/linear_probe": CURVES["src/linear_probe"]}) == {}
    # weights as the source's but other BatchNorm statistics (AdaBN): its features moved, so
    # it is not unmoved, and the sentence says how
    adabn = {"src/adabn": {"10": {"block1": _entry(0.99, 0.0), "block2": _entry(0.96, 0.0),
                                  "block3": _entry(0.93, 0.0)}}}
    assert unmoved(adabn) == {}
    assert "`src/adabn` changed `block3` most through its BatchNorm statistics alone (weights "\
        "as the source's; CKA 0.93" in sentences(adabn)["10"][0]
    # a regression target's budgets count labels per stratum
    assert moved.startswith("At 10 labels per class, ")
    assert sentences(CURVES, "stratum")["10"][0].startswith("At 10 labels per stratum, ")


def test_surgical_sets_the_chosen_block_beside_the_lowest_cka_block() -> None:
    rows = [{"curve": "src/finetune", "budget": 10, "seed": s, "chosen_block": b,
             "blocks": {}} for s, b in enumerate(["block1", "block1", "block2"])]
    out = _chosen_blocks(rows, CURVES)["src/finetune"]["10"]
    assert out == {"chosen": {"block1": 2, "block2": 1}, "lowest_cka": "block3"}


def test_the_report_section_and_heat_map(tmp_path) -> None:
    from transferlab.reporting import similarity as report

    ev = {"what_transferred": {"probe_size": 256, "curves": CURVES,
                               "blocks": {"src": ["block1", "block2", "block3"]},
                               "sentences": sentences(CURVES), "unmoved": unmoved(CURVES),
                               "chosen_blocks": {}}}
    png = report.heat_map(ev["what_transferred"], ["10"], tmp_path / "h.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    blocks = report.section(ev, ["10"], "h.png")
    table = blocks[-1]
    assert table.header == ("curve", "budget", "block1: CKA / drift", "block2: CKA / drift",
                            "block3: CKA / drift")
    assert ("src/finetune", "10", "0.990 [0.980, 1.000] / 0.010",
            "0.970 [0.960, 0.980] / 0.020", "0.620 [0.610, 0.630] / 0.300") in table.rows
    assert any("changed `block3` most" in b for b in blocks if isinstance(b, str))
    # the probe's backbone is the source's at every budget: said once, and not in the table
    said = [b for b in blocks if isinstance(b, str) and "`src/linear_probe`" in b]
    assert len(said) == 1 and "CKA 1 by construction" in said[0]
    assert not any(row[0] == "src/linear_probe" for row in table.rows)
    # an AdaBN curve (weights kept, statistics not) stays in the table
    curves = {**CURVES, "src/adabn": {"10": {b: _entry(0.95, 0.0)
                                             for b in ("block1", "block2", "block3")}}}
    ev["what_transferred"].update(curves=curves, unmoved=unmoved(curves))
    rows = report.section(ev, ["10"], "h.png")[-1].rows
    assert any(row[0] == "src/adabn" for row in rows)
    assert report.section({}, ["10"], None)[0].startswith("Not measured")
