"""Tests for the ``lora`` strategy (transferlab.strategies.lora) on a tiny target and source."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from transferlab.adaptation import TargetData, replicate_seed, run_replicates
from transferlab.errors import ParamsError
from transferlab.models import (
    TransferNet,
    build_model,
    load_checkpoint,
    reset_head,
    save_checkpoint,
)
from transferlab.params import SelectionParams
from transferlab.strategies import Context, parse_blocks
from transferlab.strategies.lora import Lora, LoraParams, lora_targets, wrap
from transferlab.training import fit, flops_per_example, predict_logits

CPU = torch.device("cpu")
ARCH = {"arch": "small_cnn", "width": 8}
SELECTION = SelectionParams()  # within_budget: budget 2 holds out 1 per class, then refits
CFG = LoraParams(epochs=2, batch_size=8, patience=5, rank=4, alpha=8.0)
CHECKPOINTS = {"0_2.pt", "0_all.pt", "1_2.pt", "1_all.pt"}


# ------------------------------------------------------- fixtures (as in test_strategies)
@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny convolutions run far faster on one thread on a shared 2-core machine."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _squares(n_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 1, 16, 16) noisy images where class k has a bright 4x4 square at column 4k."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(3).repeat_interleave(n_per_class)
    x = torch.rand(len(y), 1, 16, 16, generator=gen) * 0.3
    for i, k in enumerate(y.tolist()):
        x[i, 0, 6:10, 4 * k:4 * k + 4] += 0.7
    return x, y


def _budgets(labels: torch.Tensor) -> dict[str, dict[str, list[int]]]:
    out = {}
    for seed in ("0", "1"):
        rng = np.random.default_rng(int(seed))
        order = [rng.permutation(np.flatnonzero(labels.numpy() == k)).tolist() for k in range(3)]
        out[seed] = {"2": sorted(i for o in order for i in o[:2]),
                     "all": sorted(i for o in order for i in o)}
    return out


@pytest.fixture(scope="module")
def target() -> TargetData:
    pool_x, pool_y = _squares(10, seed=0)
    val_x, val_y = _squares(5, seed=1)
    return TargetData(pool_x, pool_y, val_x, val_y, 3, _budgets(pool_y),
                      {"mean": 0.1, "std": 0.3})


@pytest.fixture(scope="module")
def source_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("source") / "source.pt"
    model = build_model("small_cnn", 4, 0.5, 0.2, seed=42, width=8)
    model.train()
    with torch.no_grad():  # move the BN statistics away from their initial values
        model(torch.rand(16, 1, 16, 16))
    save_checkpoint(model, path, {"arch": "small_cnn", "width": 8, "num_classes": 4,
                                  "mean": 0.5, "std": 0.2, "source_classes": list("abcd")})
    return path


@pytest.fixture(scope="module")
def source(source_path: Path) -> nn.Module:
    return load_checkpoint(source_path)[0]


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _hand_trainable(model: nn.Module, rank: int, classes: int = 3) -> int:
    """LoRA parameters by hand (conv k x k: A is r x in x k x k, B is out x r x 1 x 1; linear:
    r * (in + out)) plus a whole new head for ``classes``."""
    n = 0
    for m in model.backbone.modules():
        if isinstance(m, nn.Conv2d):
            n += rank * m.in_channels * m.kernel_size[0] * m.kernel_size[1] + m.out_channels * rank
        elif isinstance(m, nn.Linear):
            n += rank * (m.in_features + m.out_features)
    return n + (model.feature_dim + 1) * classes


@pytest.fixture(scope="module")
def searched(target: TargetData, source_path: Path,
             tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, dict]:
    folder = tmp_path_factory.mktemp("lora")
    models = {}
    cfg = LoraParams(epochs=2, batch_size=8, patience=5, search={"rank": (2, 8)})
    result = run_replicates("lora", cfg, source_path, target, CPU, folder, ARCH, SELECTION,
                            on_result=lambda r, m: models.update({r["checkpoint"]: m}))
    return result, folder, models


# ---------------------------------------------------------------------------------- params
def test_params_validate_rank_and_alpha() -> None:
    blocks = parse_blocks({"lora": {"rank": 8, "alpha": 16, "search": {"rank": [2, 8]}}})
    assert blocks["lora"].rank == 8 and blocks["lora"].alpha == 16.0
    with pytest.raises(ParamsError, match=r"transfer\.lora\.rank: must be >= 1"):
        parse_blocks({"lora": {"rank": 0}})
    with pytest.raises(ParamsError, match=r"transfer\.lora\.alpha: must be > 0"):
        parse_blocks({"lora": {"alpha": 0}})


# ------------------------------------------------------------------------------ reference
def test_lora_targets_every_backbone_conv_and_refuses_grouped(source: nn.Module) -> None:
    assert lora_targets(source) == ["backbone.block1.0", "backbone.block2.0",
                                    "backbone.block3.0"]
    grouped = copy.deepcopy(source)
    grouped.backbone.block2[0] = nn.Conv2d(8, 16, 3, padding=1, groups=8, bias=False)
    with pytest.raises(ValueError, match=r"backbone\.block2\.0 is a grouped convolution"):
        lora_targets(grouped)


def test_wrapped_model_starts_exactly_at_the_unwrapped_one(source: nn.Module,
                                                           target: TargetData) -> None:
    model = reset_head(copy.deepcopy(source), 3, seed=0)
    x = target.val_x
    with torch.no_grad():
        before = model.eval()(x)
        net = wrap(model, rank=4, alpha=8.0, seed=0).eval()
        assert torch.equal(net(x), before)  # B = 0: the adapters add exactly nothing
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    assert trainable and all(("lora_A" in n or "lora_B" in n or "modules_to_save.default" in n)
                             for n in trainable)
    lora_b = [p for n, p in net.named_parameters() if "lora_B" in n]
    assert len(lora_b) == 3 and all(not p.any() for p in lora_b)


def test_training_changes_only_adapters_and_head_and_merge_is_exact(
        source: nn.Module, target: TargetData) -> None:
    strategy = Lora(CFG, Context(target, copy.deepcopy(source), None, None, ARCH, CPU, seed=7))
    model = strategy.initial_model()
    keys = list(model.state_dict())
    train = (target.pool_x, target.pool_y)
    generator = torch.Generator().manual_seed(7)
    model = strategy.before_fit(model, train, CFG, generator)
    net, groups = strategy.trainable(model, CFG)
    assert groups[0]["lr"] == CFG.lr
    assert sum(p.numel() for g in groups for p in g["params"]) == _hand_trainable(source, 4)
    start = copy.deepcopy(net.state_dict())
    fit(net, train, None, CFG, groups, generator, CPU)
    end = net.state_dict()
    changed = {k for k in start if not torch.equal(start[k], end[k])}
    assert changed and all(("lora_" in k or "modules_to_save" in k) for k in changed), changed
    assert any("lora_B" in k for k in changed)  # the adapters did learn
    assert all(torch.equal(start[k], end[k]) for k in start if "running_" in k)  # BN frozen
    adapted = predict_logits(net, target.val_x, CPU)
    merged, choices = strategy.after_fit(model, net, None, CFG, None)
    assert choices == {} and isinstance(merged, TransferNet)
    assert list(merged.state_dict()) == keys  # a plain TransferNet again
    torch.testing.assert_close(predict_logits(merged, target.val_x, CPU), adapted,
                               rtol=1e-5, atol=1e-5)
    src = source.state_dict()
    out = merged.state_dict()
    for k in src:
        if k.startswith("backbone."):
            same = torch.equal(src[k], out[k])
            # merged convolutions moved; BatchNorm parameters and statistics did not
            assert same != k.endswith(".0.weight"), k


# ----------------------------------------------------------------------------- end to end
def test_run_replicates_records_search_and_checkpoints(searched: tuple, target: TargetData,
                                                       source: nn.Module) -> None:
    result, folder, models = searched
    assert result["skipped"] is None
    assert {p.name for p in folder.glob("*.pt")} == CHECKPOINTS
    for r in result["runs"]:
        search = r["search"]
        assert [c["config"] for c in search["candidates"]] == [{"rank": 2}, {"rank": 8}]
        best = max(search["candidates"],
                   key=lambda c: (c["best_val_accuracy"], -c["best_val_loss"]))
        assert search["chosen"] == best["config"]
        # counted on the peft model of the refit, at the chosen rank
        assert r["trainable_params"] == _hand_trainable(source, search["chosen"]["rank"]) == (
            {2: 2 * (9 + 8) + 2 * (72 + 16) + 2 * (144 + 32), 8: 8 * (9 + 8) + 8 * (72 + 16)
             + 8 * (144 + 32)}[search["chosen"]["rank"]] + 32 * 3 + 3)
        model, config = load_checkpoint(folder / r["checkpoint"])
        assert config["strategy"] == "lora"
        assert model.state_dict().keys() == source.state_dict().keys()
        logits = predict_logits(model, target.val_x, CPU)
        assert torch.equal(logits, predict_logits(models[r["checkpoint"]], target.val_x, CPU))


def test_run_replicates_is_bitwise_reproducible_and_counts_flops(
        deterministic, target: TargetData, source_path: Path, source: nn.Module,
        tmp_path: Path) -> None:
    torch.set_num_threads(1)  # `deterministic` sets 2 (and restores the count afterwards)
    states, runs = [], []
    for i in range(2):
        folder = tmp_path / str(i)
        folder.mkdir()
        runs.append(run_replicates("lora", CFG, source_path, target, CPU, folder, ARCH,
                                   SELECTION)["runs"])
        states.append({p.name: load_checkpoint(p)[0].state_dict() for p in folder.glob("*.pt")})
    assert runs[0] == runs[1]
    assert states[0].keys() == states[1].keys() == CHECKPOINTS
    for name in CHECKPOINTS:
        assert _states_equal(states[0][name], states[1][name]), name
    assert not torch.equal(states[0]["0_2.pt"]["head.weight"], states[0]["1_2.pt"]["head.weight"])
    # FLOPs: measured on the adapter model (forward + backward), times examples x epochs
    for r in runs[0]:
        net = wrap(reset_head(copy.deepcopy(source), 3, replicate_seed(str(r["seed"]),
                                                                        r["budget"])), 4, 8.0, 0)
        per_example = flops_per_example(net, target.val_x[:1], train=True)
        n = len(target.budgets[str(r["seed"])][r["budget"]])
        fit_examples = r["fit_examples"]
        assert r["train_flops"] == per_example * (fit_examples * r["epochs_run"]
                                                  + n * r["best_epoch"])
        assert r["trainable_params"] == _hand_trainable(source, 4)
