"""Tests for transferlab.training.loop: augmentation, the fit loop, inference and FLOP counting."""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from transferlab.config.params import TrainParams
from transferlab.models.batchnorm import batchnorm_layers, recalibrate_batchnorm
from transferlab.models.nets import block_names, build_model, freeze
from transferlab.training.loop import (
    Stopwatch,
    augment_batch,
    extract_features,
    fit,
    flops_per_example,
    make_optimizer,
    predict_logits,
    predict_proba,
    to_tensor,
)
from transferlab.training.optim import AdamW

CPU = torch.device("cpu")


def _squares(n_per_class: int, seed: int, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 1, 16, 16) noisy images where class k has a bright 4x4 square at column 4k."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(classes).repeat_interleave(n_per_class)
    x = torch.rand(len(y), 1, 16, 16, generator=gen) * 0.3
    for i, k in enumerate(y.tolist()):
        x[i, 0, 6:10, 4 * k:4 * k + 4] += 0.7
    return x, y


def _model(seed: int = 0, classes: int = 3) -> nn.Module:
    return build_model("small_cnn", classes, 0.25, 0.3, seed=seed, width=8)


def _all_params(model: nn.Module) -> list[dict]:
    return [{"params": [p for p in model.parameters() if p.requires_grad]}]


def _clone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- small helpers
def test_to_tensor() -> None:
    images = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)  # (1, 2, 2)
    x = to_tensor(images)
    assert x.shape == (1, 1, 2, 2) and x.dtype == torch.float32
    torch.testing.assert_close(x[0, 0], torch.tensor([[0.0, 1.0], [0.2, 0.4]]))


@pytest.mark.parametrize(("name", "cls"), [("sgd", torch.optim.SGD), ("adamw", AdamW)])
def test_make_optimizer_keeps_group_lrs(name: str, cls: type) -> None:
    """AdamW is the project's (an exact square root: the same bits on Intel and AMD)."""
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    cfg = TrainParams(optimizer=name, lr=0.5, weight_decay=0.01)
    opt = make_optimizer([{"params": list(a.parameters()), "lr": 0.05},
                          {"params": list(b.parameters())}], cfg)
    assert isinstance(opt, cls)
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.5]
    assert all(g["weight_decay"] == 0.01 for g in opt.param_groups)


# ---------------------------------------------------------------------------- augmentation
def test_augment_batch_is_deterministic_given_the_generator() -> None:
    x, _ = _squares(2, seed=0)
    a = augment_batch(x, torch.Generator().manual_seed(5))
    b = augment_batch(x, torch.Generator().manual_seed(5))
    c = augment_batch(x, torch.Generator().manual_seed(6))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, x)


def test_augment_batch_leaves_global_rng_alone() -> None:
    x = torch.rand(3, 1, 16, 16)
    before = torch.random.get_rng_state()
    augment_batch(x, torch.Generator().manual_seed(0))
    assert torch.equal(torch.random.get_rng_state(), before)


def test_augment_batch_without_jitter_is_the_identity() -> None:
    x = torch.rand(4, 1, 16, 16)
    out = augment_batch(x, torch.Generator().manual_seed(0), max_rotation_deg=0.0,
                        max_scale=0.0, max_shift=0.0)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------- fit
def test_fit_two_seeded_runs_are_bitwise_identical(deterministic) -> None:
    train, val = _squares(8, seed=0), _squares(3, seed=1)
    cfg = TrainParams(epochs=3, batch_size=8, augment=True, patience=5)

    def run(gen_seed: int) -> tuple[dict, dict]:
        model = _model(seed=2)
        summary = fit(model, train, val, cfg, _all_params(model),
                      torch.Generator().manual_seed(gen_seed), CPU)
        return model.state_dict(), summary

    (state_a, sum_a), (state_b, sum_b) = run(0), run(0)
    state_c, _ = run(1)
    assert _states_equal(state_a, state_b)
    assert sum_a == sum_b
    assert not _states_equal(state_a, state_c)  # the generator does drive batch order / jitter


def test_fit_leaves_global_rng_alone() -> None:
    model = _model()
    before = torch.random.get_rng_state()
    fit(model, _squares(4, 0), _squares(2, 1), TrainParams(epochs=2, batch_size=4),
        _all_params(model), torch.Generator().manual_seed(0), CPU)
    assert torch.equal(torch.random.get_rng_state(), before)


def test_fit_with_zero_epochs_leaves_the_model_unchanged() -> None:
    model = _model()
    before = _clone_state(model)
    summary = fit(model, _squares(4, 0), _squares(2, 1), TrainParams(epochs=0),
                  _all_params(model), torch.Generator().manual_seed(0), CPU)
    assert _states_equal(model.state_dict(), before)
    assert summary["epochs_run"] == 0 and summary["steps"] == 0 and summary["history"] == []


def test_fit_counts_steps_and_history() -> None:
    model = _model()
    train = _squares(7, 0)  # 21 examples, batch 8 -> 3 steps per epoch
    summary = fit(model, train, _squares(2, 1), TrainParams(epochs=3, batch_size=8, patience=10),
                  _all_params(model), torch.Generator().manual_seed(0), CPU)
    assert summary["epochs_run"] == 3
    assert summary["steps"] == 3 * math.ceil(21 / 8)
    assert [h["epoch"] for h in summary["history"]] == [1, 2, 3]
    for h in summary["history"]:
        assert set(h) == {"epoch", "train_loss", "val_loss", "val_accuracy"}
        assert math.isfinite(h["train_loss"]) and math.isfinite(h["val_loss"])


def _check_selection(model: nn.Module, val: tuple, summary: dict, cfg: TrainParams) -> None:
    """best_epoch = argmax of (val accuracy, -val loss); stopping rule; restored weights."""
    hist = summary["history"]
    best_i = max(range(len(hist)), key=lambda i: (hist[i]["val_accuracy"], -hist[i]["val_loss"]))
    assert summary["best_epoch"] == hist[best_i]["epoch"] == best_i + 1
    assert summary["best_val_accuracy"] == hist[best_i]["val_accuracy"]
    assert summary["best_val_loss"] == hist[best_i]["val_loss"]
    # early stopping: stop after `patience` epochs in a row without improvement
    best, since, stop_at = (-1.0, math.inf), 0, cfg.epochs
    for h in hist:
        if (h["val_accuracy"], -h["val_loss"]) > (best[0], -best[1]):
            best, since = (h["val_accuracy"], h["val_loss"]), 0
        else:
            since += 1
            if since >= cfg.patience:
                stop_at = h["epoch"]
                break
    assert summary["epochs_run"] == len(hist) == stop_at
    # the restored weights are the best epoch's: recompute on the validation set
    logits = predict_logits(model, val[0], CPU)
    assert float((logits.argmax(1) == val[1]).double().mean()) == summary["best_val_accuracy"]
    assert float(F.cross_entropy(logits, val[1])) == summary["best_val_loss"]


def test_fit_restores_the_best_epoch_and_stops_early() -> None:
    train = _squares(8, 0)
    x_val, _ = _squares(4, 1)
    y_val = torch.randint(0, 3, (12,), generator=torch.Generator().manual_seed(3))  # noise
    cfg = TrainParams(epochs=30, batch_size=8, lr=0.02, augment=True, patience=3)
    model = _model()
    summary = fit(model, train, (x_val, y_val), cfg, _all_params(model),
                  torch.Generator().manual_seed(0), CPU)
    # the construction: the last epoch is not the best one, and training stopped early
    assert summary["best_epoch"] < summary["epochs_run"] < cfg.epochs
    _check_selection(model, (x_val, y_val), summary, cfg)


def test_fit_ties_in_accuracy_go_to_the_lower_val_loss() -> None:
    # the same image twice, labelled 0 and 1: validation accuracy is 0.5 at every epoch, so
    # only the validation loss can pick the best epoch
    x_train, y_train = _squares(6, 0, classes=2)
    x_val = x_train[:1].repeat(2, 1, 1, 1)
    y_val = torch.tensor([0, 1])
    cfg = TrainParams(epochs=8, batch_size=4, lr=0.02, patience=8)
    model = _model(classes=2)
    summary = fit(model, (x_train, y_train), (x_val, y_val), cfg, _all_params(model),
                  torch.Generator().manual_seed(0), CPU)
    hist = summary["history"]
    assert all(h["val_accuracy"] == 0.5 for h in hist)
    assert len({h["val_loss"] for h in hist}) == len(hist)
    assert summary["best_epoch"] == 1 + int(np.argmin([h["val_loss"] for h in hist]))
    assert summary["best_epoch"] != len(hist)  # construction: the last epoch is not the best
    _check_selection(model, (x_val, y_val), summary, cfg)


def test_fit_keeps_frozen_parameters_and_bn_statistics() -> None:
    model = _model()
    freeze(model, ["block1"], bn_stats=True)
    before = {k: v.clone() for k, v in model.backbone.block1.state_dict().items()}
    fit(model, _squares(4, 0), _squares(2, 1), TrainParams(epochs=2, batch_size=4),
        _all_params(model), torch.Generator().manual_seed(0), CPU)
    assert _states_equal(model.backbone.block1.state_dict(), before)


def _bn_stats(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()
            if k.endswith(("running_mean", "running_var"))}


@pytest.mark.parametrize("mode", ["precise", "auto"])
def test_precise_batchnorm_sets_the_exact_statistics_of_the_training_inputs(mode: str) -> None:
    """An untrained network's fit (scratch) ends with each layer's statistics equal to its
    inputs' over the training images (unaugmented, layer by layer), not the moving averages;
    the weights are the same bits as with ``running``, and the passes are counted."""
    train = _squares(4, 0)
    fits = {}
    for bn_stats in ("running", mode):
        model = _model()
        cfg = TrainParams(epochs=3, batch_size=4, augment="jitter", bn_stats=bn_stats)
        summary = fit(model, train, None, cfg, _all_params(model),
                      torch.Generator().manual_seed(0), CPU)
        fits[bn_stats] = (model, summary)
    (running, ran), (precise, pre) = fits["running"], fits[mode]
    weights = {k: v for k, v in running.state_dict().items() if k not in _bn_stats(running)}
    assert _states_equal(weights, {k: precise.state_dict()[k] for k in weights})
    exact = copy.deepcopy(running)
    recalibrate_batchnorm(exact, train[0], CPU)
    assert _states_equal(_bn_stats(precise), _bn_stats(exact))
    assert not _states_equal(_bn_stats(precise), _bn_stats(running))
    layers = len(batchnorm_layers(precise))
    assert pre["flops"] - ran["flops"] == layers * len(train[0]) * _backbone_flops(precise)


def test_held_out_labels_score_each_epoch_with_precise_statistics() -> None:
    """With held-out labels, each epoch is scored with the statistics it would be used with:
    the restored best epoch's statistics are the exact ones of its weights on the training
    inputs, and each validation pass and statistics pass is counted."""
    train, val = _squares(4, 0), _squares(2, 1)
    model = _model()
    cfg = TrainParams(epochs=4, batch_size=4, patience=10, bn_stats="precise")
    summary = fit(model, train, val, cfg, _all_params(model), torch.Generator().manual_seed(0),
                  CPU)
    exact = copy.deepcopy(model)
    recalibrate_batchnorm(exact, train[0], CPU)
    assert _states_equal(_bn_stats(model), _bn_stats(exact))
    running = _model()
    ran = fit(running, train, val, dataclasses.replace(cfg, bn_stats="running"),
              _all_params(running), torch.Generator().manual_seed(0), CPU)
    passes = len(batchnorm_layers(model)) * len(train[0]) * summary["epochs_run"]
    assert summary["flops"] - ran["flops"] == passes * _backbone_flops(model)


def test_auto_keeps_statistics_that_data_estimated_before_the_fit() -> None:
    """``auto``: a network whose BatchNorm saw data before (a source) keeps the moving
    averages, as ``running``; ``precise`` recomputes them too."""
    train = _squares(4, 0)
    results = {}
    for bn_stats in ("running", "auto", "precise"):
        model = _model()
        with torch.no_grad():  # a "source": its statistics estimated on other data
            model.train()(_squares(6, 5)[0])
        fit(model, train, None, TrainParams(epochs=2, batch_size=4, bn_stats=bn_stats),
            _all_params(model), torch.Generator().manual_seed(0), CPU)
        results[bn_stats] = _bn_stats(model)
    assert _states_equal(results["auto"], results["running"])
    assert not _states_equal(results["precise"], results["running"])


def test_precise_batchnorm_leaves_frozen_statistics_alone() -> None:
    model = _model()
    freeze(model, ["block1"], bn_stats=True)
    before = {k: v.clone() for k, v in model.backbone.block1.state_dict().items()}
    fit(model, _squares(4, 0), None, TrainParams(epochs=2, batch_size=4, bn_stats="precise"),
        _all_params(model), torch.Generator().manual_seed(0), CPU)
    assert _states_equal(model.backbone.block1.state_dict(), before)


def _backbone_flops(model: nn.Module) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval().features(_squares(1, 0)[0][:1])
    return int(counter.get_total_flops())


# ------------------------------------------------------------------------------- inference
def test_predict_proba_rows_sum_to_one_and_model_stays_in_eval_mode() -> None:
    model = _model().train()
    x, _ = _squares(3, 0)
    proba = predict_proba(model, x, CPU)
    assert not model.training
    assert proba.shape == (9, 3) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-12)
    with torch.no_grad():
        want = torch.softmax(model(x).double(), dim=1).numpy()
    np.testing.assert_allclose(proba, want, rtol=1e-6, atol=1e-7)


def test_predict_logits_batches_agree_with_one_pass() -> None:
    model = _model()
    x, _ = _squares(5, 0)
    torch.testing.assert_close(predict_logits(model, x, CPU, batch_size=4),
                               predict_logits(model, x, CPU, batch_size=64))


def test_extract_features_matches_the_backbone() -> None:
    model = _model().train()
    x, _ = _squares(3, 0)
    feats = extract_features(model, x, CPU, batch_size=4)
    assert feats.shape == (9, model.feature_dim) and not model.training
    with torch.no_grad():
        torch.testing.assert_close(feats, model.features(x))


def test_predict_proba_on_an_empty_batch() -> None:
    proba = predict_proba(_model(), torch.empty(0, 1, 16, 16), CPU)
    assert proba.shape == (0, 3)


# ----------------------------------------------------------------------------------- FLOPs
def _small_cnn_forward_flops(width: int, classes: int, side: int = 16) -> int:
    """2 * multiply-adds of the convolutions and the head (what the flop counter counts)."""
    total, c_in = 0, 1
    for i in range(3):
        c_out = width * 2**i
        total += 2 * c_out * side * side * c_in * 9
        c_in, side = c_out, side // 2
    return total + 2 * c_in * classes


def test_flops_of_a_linear_head_by_hand() -> None:
    head = nn.Linear(8, 3)
    assert flops_per_example(head, torch.rand(1, 8), train=False) == 2 * 8 * 3
    # backward: the weight gradient only (the input needs no gradient)
    assert flops_per_example(head, torch.rand(1, 8), train=True) == 2 * (2 * 8 * 3)


def test_flops_of_small_cnn_by_hand() -> None:
    model = _model()
    forward = _small_cnn_forward_flops(8, 3)
    assert flops_per_example(model, torch.rand(1, 1, 16, 16), train=False) == forward
    # everything frozen but the head: forward + the head's weight gradient
    freeze(model, block_names(model))
    assert flops_per_example(model, torch.rand(1, 1, 16, 16), train=True) == forward + 2 * 32 * 3


def test_flops_train_exceeds_eval_and_shrinks_with_frozen_blocks() -> None:
    x = torch.rand(1, 1, 16, 16)
    train_flops = []
    for k in range(4):
        model = _model()
        freeze(model, block_names(model)[:k])
        eval_flops = flops_per_example(model, x, train=False)
        train_flops.append(flops_per_example(model, x, train=True))
        assert eval_flops > 0 and train_flops[-1] > eval_flops
    assert train_flops == sorted(train_flops, reverse=True) and len(set(train_flops)) == 4


def test_flops_leave_the_model_untouched() -> None:
    model = _model()
    model.eval()
    before = _clone_state(model)
    flops_per_example(model, torch.rand(1, 1, 16, 16) * 5, train=True)
    assert _states_equal(model.state_dict(), before)  # BN running stats included
    assert not model.training
    assert all(p.grad is None for p in model.parameters())


def test_flops_of_resnet18_at_16px_train() -> None:
    model = build_model("resnet18", 3, 0.25, 0.3, seed=0)
    x = torch.rand(1, 1, 16, 16)
    assert flops_per_example(model, x, train=True) > flops_per_example(model, x, train=False)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists() or torch.cuda.is_available(),
                    reason="per-block CPU peak memory needs Linux /proc (and no CUDA)")
def test_stopwatch_peak_memory_is_per_block_on_cpu() -> None:
    with Stopwatch() as before:
        big = np.ones(400 * 2**20 // 8)  # 400 MiB, touched
    del big
    with Stopwatch() as small:
        x = np.ones(8 * 2**20 // 8)  # 8 MiB
    with Stopwatch() as large:
        y = np.ones(200 * 2**20 // 8)  # 200 MiB
    del x, y
    assert large.peak_bytes - small.peak_bytes >= 150 * 2**20  # the block's own allocation shows
    assert before.peak_bytes - small.peak_bytes >= 300 * 2**20  # and the earlier peak does not
    # memory added above the block's start: about each block's own array
    assert before.peak_added_bytes >= 380 * 2**20
    assert small.peak_added_bytes <= 60 * 2**20
    assert 190 * 2**20 <= large.peak_added_bytes <= 260 * 2**20


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists() or torch.cuda.is_available(),
                    reason="per-block CPU peak memory needs Linux /proc (and no CUDA)")
def test_process_peak_survives_the_stopwatch_resets() -> None:
    from transferlab.core.runtime import peak_rss_bytes, process_peak_rss_bytes

    with Stopwatch():
        big = np.ones(300 * 2**20 // 8)  # 300 MiB, touched: the process's peak
    del big
    with Stopwatch() as after:  # resets the high-water mark to today's (smaller) RSS
        pass
    assert after.peak_bytes < process_peak_rss_bytes() - 200 * 2**20  # the kernel forgot it
    assert peak_rss_bytes() < process_peak_rss_bytes() - 200 * 2**20
