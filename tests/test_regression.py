"""Regression targets (transferlab.core.tasks): metrics against scikit-learn, LogME of numeric
targets
against a direct implementation, the stratified store, the training loop, params errors."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import yaml
from sklearn import metrics as skm

from transferlab.adapt.replicates import run_replicates, target_scale
from transferlab.adapt.strategies import block, get, parse_blocks
from transferlab.adapt.target import TargetData, load_target
from transferlab.config.params import SelectionParams
from transferlab.core import tasks
from transferlab.core.errors import DataError, ParamsError
from transferlab.data.images import rotated_digits
from transferlab.data.kinds import DatasetSpec, parse_spec
from transferlab.data.store import ExampleSet, PreparedDataset, regression_set, write_dataset
from transferlab.evaluation.evaluate import predict_values
from transferlab.evaluation.transferability import logme_regression, score_regression, trusted
from transferlab.models.nets import build_model, in_target_units, load_checkpoint
from transferlab.models.resolved import load_params

REGRESSION = tasks.get("regression")


# ------------------------------------------------------------------------------ metrics
def test_regression_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(3.0, 2.0, 200)
    pred = y + rng.normal(0, 1.0, 200)
    m = tasks.regression_metrics(y, pred)
    assert m["mse"] == pytest.approx(skm.mean_squared_error(y, pred), rel=1e-12)
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(y, pred), rel=1e-12)
    assert m["r2"] == pytest.approx(skm.r2_score(y, pred), rel=1e-12)
    assert m["rmse"] == pytest.approx(math.sqrt(m["mse"]), rel=1e-12)


def test_per_example_scores_average_to_r2_and_differences_are_scaled_mse() -> None:
    rng = np.random.default_rng(1)
    y = rng.uniform(-45, 45, 300)
    a, b = y + rng.normal(0, 5, 300), y + rng.normal(0, 9, 300)
    sa, sb = REGRESSION.per_example(y, a), REGRESSION.per_example(y, b)
    assert sa.mean() == pytest.approx(skm.r2_score(y, a), abs=1e-12)
    # a paired R² difference is minus the MSE difference over the test variance
    mse_diff = skm.mean_squared_error(y, a) - skm.mean_squared_error(y, b)
    assert sa.mean() - sb.mean() == pytest.approx(-mse_diff / np.var(y), rel=1e-10)
    with pytest.raises(ValueError, match="constant"):
        REGRESSION.per_example(np.ones(5), np.zeros(5))


def test_validation_score_is_r2_and_defined_for_constant_targets() -> None:
    y = torch.tensor([0.0, 1.0, 2.0, 3.0])
    out = torch.tensor([[0.5], [1.0], [2.0], [2.5]])
    assert REGRESSION.val_score(out, y) == pytest.approx(skm.r2_score(y, out[:, 0]))
    assert REGRESSION.val_score(out, torch.ones(4)) == pytest.approx(
        -float(((out[:, 0] - 1) ** 2).mean()))
    assert REGRESSION.loss(out, y).item() == pytest.approx(
        float(((out[:, 0] - y) ** 2).mean()))
    assert REGRESSION.outputs(10) == 1 and tasks.get("classification").outputs(10) == 10


def test_unknown_task_names_the_choices() -> None:
    with pytest.raises(ValueError, match="classification, regression"):
        tasks.get("ranking")
    assert tasks.of({}).name == "classification"


# ------------------------------------------------------------------------------- strata
def test_quantile_strata_are_balanced_ordered_and_named() -> None:
    y = np.random.default_rng(2).uniform(-45, 45, 1000)
    labels, names = tasks.quantile_strata(y, 4)
    assert np.bincount(labels).tolist() == [250, 250, 250, 250]
    highs = [y[labels == k].max() for k in range(4)]
    lows = [y[labels == k].min() for k in range(4)]
    assert all(h < lo for h, lo in zip(highs[:-1], lows[1:], strict=True))
    assert names[0] == f"[{lows[0]:.4g}, {highs[0]:.4g}]"


def test_quantile_strata_merge_bins_of_tied_targets() -> None:
    labels, names = tasks.quantile_strata(np.array([0.0] * 8 + [1.0, 2.0]), 4)
    assert len(names) == len(np.unique(labels)) < 4
    assert labels.min() == 0 and labels.max() == len(names) - 1


def test_regression_set_round_trips_through_the_store(tmp_path) -> None:
    images = np.zeros((40, 8, 8), np.uint8)
    data = regression_set(images, np.linspace(-1, 1, 40), 4)
    idx = np.arange(40)
    write_dataset(tmp_path, {"train": data.subset(idx[:20]), "val": data.subset(idx[20:30]),
                             "test": data.subset(idx[30:])}, {"kind": "test"})
    opened = PreparedDataset.open(tmp_path)
    assert opened.task.name == "regression" and opened.manifest["task"] == "regression"
    test = opened.load("test")
    np.testing.assert_array_equal(test.targets, np.linspace(-1, 1, 40)[30:])
    _, truth = opened.inputs("test")
    assert truth.dtype == torch.float64
    (tmp_path / "test_t.npy").write_bytes((tmp_path / "val_t.npy").read_bytes())
    with pytest.raises(DataError, match="test_t.npy"):
        opened.load("test")


def test_regression_set_refuses_non_finite_targets() -> None:
    with pytest.raises(DataError, match="finite"):
        regression_set(np.zeros((3, 4, 4), np.uint8), np.array([0.0, np.nan, 1.0]), 2)


def test_rotated_digits_turn_each_digit_by_its_target() -> None:
    from scipy import ndimage

    spec = DatasetSpec(kind="rotated_digits", classes=(1, 7), max_rotation=30)
    data = rotated_digits(spec, 16, seed=3)
    again = rotated_digits(spec, 16, seed=3)
    np.testing.assert_array_equal(data.examples, again.examples)
    assert data.task == "regression" and np.abs(data.targets).max() <= 30
    assert np.abs(data.targets).max() > 25  # the range is used
    upright = rotated_digits(replace(spec, max_rotation=1e-9), 16, seed=3)  # no rotation
    k = 5
    turned = ndimage.rotate(upright.examples[k].astype(float), data.targets[k], reshape=False,
                            order=1, mode="grid-constant")
    np.testing.assert_array_equal(np.clip(turned, 0, 255).round().astype(np.uint8),
                                  data.examples[k])


# ------------------------------------------------------------------------------- LogME
def _logme_direct(f: np.ndarray, y: np.ndarray) -> float:
    """LogME of one real target with explicit D x D matrices (You et al., 2021, Alg. 1)."""
    n, d = f.shape
    ftf, eye = f.T @ f, np.eye(d)
    alpha, beta = 1.0, 1.0
    for _ in range(11):
        a_inv = np.linalg.inv(alpha * eye + beta * ftf)
        m = beta * a_inv @ f.T @ y
        gamma = d - alpha * np.trace(a_inv)
        m2, res2 = float(m @ m), float(np.sum((y - f @ m) ** 2))
        lam_old = alpha / beta
        alpha, beta = gamma / (m2 + 1e-5), (n - gamma) / (res2 + 1e-5)
        if abs(alpha / beta - lam_old) / lam_old <= 1e-3:
            break
    _, log_det = np.linalg.slogdet(alpha * eye + beta * ftf)
    return (d / 2 * math.log(alpha) + n / 2 * math.log(beta) - 0.5 * log_det
            - beta / 2 * res2 - alpha / 2 * m2 - n / 2 * math.log(2 * math.pi)) / n


@pytest.mark.parametrize(("n", "d", "seed"), [(40, 8, 0), (12, 30, 1), (100, 5, 2)])
def test_logme_regression_matches_direct_implementation(n: int, d: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, d))
    y = f @ rng.normal(size=d) + rng.normal(0, 0.5, n)
    assert logme_regression(f, y) == pytest.approx(_logme_direct(f, y), rel=1e-8)
    two = np.stack([y, -2 * y + 1], 1)  # K columns: the mean of their evidences
    assert logme_regression(f, two) == pytest.approx(
        (_logme_direct(f, two[:, 0]) + _logme_direct(f, two[:, 1])) / 2, rel=1e-8)


def test_logme_regression_ranks_a_predictive_source_first_in_any_units() -> None:
    rng = np.random.default_rng(4)
    n = 60
    y = rng.uniform(-45, 45, n)
    good = np.column_stack([y / 45 + rng.normal(0, 0.1, n), rng.normal(size=(n, 7))])
    noise = rng.normal(size=(n, 8))
    for scale, shift in ((1.0, 0.0), (1 / 45, 0.0), (1.0, 100.0)):
        t = y * scale + shift
        assert logme_regression(good, t) > logme_regression(noise, t)
    scores = score_regression(good, y)
    assert math.isnan(scores["leep"]) and math.isnan(scores["hscore"])
    with pytest.raises(ValueError, match="rows of features"):
        logme_regression(good, y[:-1])


def test_only_logme_is_trusted_on_a_regression() -> None:
    assert trusted("logme", 8, 64, 2, 10, regression=True) == (True, "")
    assert not trusted("logme", 2, 64, 1, 10, regression=True)[0]
    ok, why = trusted("leep", 800, 64, 100, 10, regression=True)
    assert not ok and "class labels" in why


# ------------------------------------------------------------------------------ params
def _spec(**kw) -> DatasetSpec:
    return parse_spec(kw, "prepare.target")


def test_params_errors_name_the_key() -> None:
    assert _spec(kind="rotated_digits").task_name == "regression"
    assert _spec(kind="csv", path="x", text_column="t", label_column="y",
                 task="regression", strata=3).task_name == "regression"
    cases = [
        ({"kind": "fonts", "chars": "AB", "n_per_class": 2, "task": "regression"},
         "prepare.target.task"),
        ({"kind": "sklearn_digits", "strata": 4}, "prepare.target.strata"),
        ({"kind": "rotated_digits", "task": "classification"}, "prepare.target.task"),
        ({"kind": "rotated_digits", "max_rotation": 0}, "prepare.target.max_rotation"),
        ({"kind": "csv", "path": "x", "text_column": "t", "label_column": "y",
          "task": "regression", "limit_per_class": 5}, "prepare.target.limit_per_class"),
    ]
    for raw, key in cases:
        with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
            _spec(**raw)


def test_a_source_cannot_be_a_regression(tmp_path, params_dict) -> None:
    import yaml

    params_dict["prepare"]["sources"]["rotated"] = {"kind": "rotated_digits"}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(params_dict))
    with pytest.raises(ParamsError, match=r"prepare\.sources\.rotated\.task"):
        load_params(path)


def test_rotation_augmentation_is_refused_on_rotated_digits(tmp_path, params_dict) -> None:
    import yaml

    from transferlab.adapt import strategies
    params_dict["prepare"]["target"] = {"kind": "rotated_digits"}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(params_dict))
    with pytest.raises(ParamsError, match=r"transfer\.\w+\.augment.*rotation angle"):
        strategies.resolve(load_params(path))


def test_the_built_in_regression_scenario_is_valid(tmp_path) -> None:
    from tests.conftest import scenario_params
    from transferlab.adapt import strategies
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(scenario_params("regression")))
    params = strategies.resolve(load_params(path))
    assert params.prepare.target.task_name == "regression"


# ------------------------------------------------------------------- training and adapt
def _linear_target(tmp_path, n: int = 240) -> TargetData:
    """Images whose mean brightness is the target: a CNN can regress it."""
    rng = np.random.default_rng(5)
    y = rng.uniform(10, 30, n)
    images = np.clip(rng.normal(y[:, None, None] * 4, 8, (n, 8, 8)), 0, 255).astype(np.uint8)
    data = regression_set(images, y, 4)
    idx = rng.permutation(n)
    splits = {"train": data.subset(idx[:160]), "val": data.subset(idx[160:200]),
              "test": data.subset(idx[200:])}
    write_dataset(tmp_path, splits, {"kind": "test"})
    from transferlab.data.splits import nested_budgets

    budgets = {"0": nested_budgets(splits["train"].labels, [10], 0,
                                   splits["train"].class_names)}
    (tmp_path / "budgets.json").write_text(json.dumps(budgets))
    return load_target(tmp_path)


def test_target_scale_standardises_the_budget() -> None:
    scale = target_scale(torch.tensor([10.0, 20.0, 30.0], dtype=torch.float64))
    assert scale == pytest.approx({"target_mean": 20.0, "target_std": math.sqrt(200 / 3)})
    assert target_scale(torch.tensor([5.0, 5.0]))["target_std"] == 1.0


def test_regression_replicates_train_on_z_scores_and_predict_in_target_units(
        tmp_path, params_dict, deterministic) -> None:
    target = _linear_target(tmp_path / "data")
    assert target.task == "regression" and target.num_classes == 1
    assert target.strata.dtype == torch.int64 and target.pool_y.dtype == torch.float64
    blocks = parse_blocks(params_dict["transfer"])
    cfg = replace(block(blocks, "scratch"), epochs=30, augment=False)
    out = tmp_path / "runs"
    out.mkdir()
    arch = {"arch": "small_cnn", "width": 8}
    result = run_replicates("scratch", cfg, None, target, torch.device("cpu"), out, arch,
                            SelectionParams())
    (record,) = result["runs"]
    assert "best_val_r2" in record and "best_val_accuracy" not in record
    assert record["selection_score"] == record["best_val_r2"]
    model, config = load_checkpoint(out / record["checkpoint"])
    assert config["target_mean"] == pytest.approx(record["target_scale"]["target_mean"])
    test = PreparedDataset.open(tmp_path / "data")
    x, y = test.inputs("test")
    pred = predict_values(model, config, x, torch.device("cpu"))
    r2 = skm.r2_score(y.numpy(), pred)
    assert r2 > 0.5, r2  # brightness is easy: the model learned it, in target units
    assert abs(pred.mean() - y.numpy().mean()) < 3.0
    wrapped = in_target_units(model, config)  # how a champion leaves the pipeline
    with torch.no_grad():
        np.testing.assert_allclose(wrapped(x).reshape(-1).double().numpy(), pred, rtol=1e-5)
    assert in_target_units(model, {"num_classes": 3}) is model


def test_classification_only_strategies_skip_a_regression(tmp_path) -> None:
    target = TargetData(torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.float64),
                        torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.float64), 1, {},
                        {"mean": 0.0, "std": 1.0}, "image", "regression",
                        torch.zeros(4, dtype=torch.int64))
    model = build_model("small_cnn", 3, 0.0, 1.0, seed=0, width=8)
    path = tmp_path / "source.pt"
    from transferlab.models.nets import save_checkpoint

    save_checkpoint(model, path, {"arch": "small_cnn", "width": 8, "num_classes": 3, "mean": 0.0,
                                  "std": 1.0, "source_classes": 3})
    result = run_replicates("delta", None, path, target, torch.device("cpu"), tmp_path,
                            {"arch": "small_cnn", "width": 8}, SelectionParams())
    assert result["skipped"] == ("defined for classification targets; the target is a "
                                 "regression")
    assert "regression" in get("source_only").task_reason("regression")
    for name in ("finetune", "lp_ft", "wise_ft", "linear_probe", "lora", "scratch"):
        assert get(name).task_reason("regression") is None


def test_example_sets_check_their_targets() -> None:
    with pytest.raises(DataError, match="targets of shape"):
        ExampleSet(np.zeros((3, 4, 4), np.uint8), np.zeros(3, np.int64), ("a",),
                   targets=np.zeros(2))


# ----------------------------------------------------------------------- simulation
def test_the_r2_gain_verdict_keeps_its_error_rate_under_the_null() -> None:
    """Two curves of equal quality: each seed draws its own fit (a seed-level effect the
    example-level noise does not show) and noisy predictions. The paired t over seeds on R²
    (analysis.paired_difference on the per-example scores) must reject at its nominal 5%:
    simulated over 3,000 comparisons, within 3 binomial standard errors."""
    from types import SimpleNamespace

    from transferlab.config.params import EvaluateParams
    from transferlab.evaluation.analysis import paired_difference

    rng = np.random.default_rng(11)
    y = rng.uniform(-45, 45, 200)
    p, sims, seeds, rejected = EvaluateParams(), 3000, 5, 0
    for _ in range(sims):
        runs = {}
        for curve in ("a", "b"):
            runs[curve] = []
            for seed in range(seeds):
                slope = 1.0 + rng.normal(0, 0.05)  # this seed's fit
                pred = slope * y + rng.normal(0, 12, len(y))
                runs[curve].append(SimpleNamespace(key={"seed": seed},
                                                   correct=REGRESSION.per_example(y, pred)))
        rejected += paired_difference(runs["a"], runs["b"], p)["p_value"] < 0.05
    rate, se = rejected / sims, math.sqrt(0.05 * 0.95 / sims)
    assert abs(rate - 0.05) < 3 * se, (rate, se)
