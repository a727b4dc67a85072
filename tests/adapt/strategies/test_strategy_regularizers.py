"""Tests for the regularizer strategies l2_sp, bss, delta and lwf: each penalty against its
definition on tiny tensors, the identity at strength 0 (bitwise the finetune model), and the
shared loop end to end (records, search, checkpoints, reproducibility)."""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.adapt.strategies.helpers import (
    ARCH,
    CPU,
    SELECTION,
    SOURCE_CLASSES,
    loaded_states,
    save_source,
    states_equal,
)
from transferlab.adapt.replicates import run_replicates
from transferlab.adapt.strategies import Context, by_role, get
from transferlab.adapt.strategies.bss import BSS, BSSParams, spectral_shrinkage
from transferlab.adapt.strategies.delta import (
    Delta,
    DeltaParams,
    attention_from_rises,
    channel_loss_rises,
    feature_map_distance,
)
from transferlab.adapt.strategies.finetune import FinetuneParams
from transferlab.adapt.strategies.l2_sp import L2SP, L2SPParams
from transferlab.adapt.strategies.lwf import LwF, LwFParams, distillation
from transferlab.adapt.strategies.registry import parse_blocks
from transferlab.adapt.target import TargetData
from transferlab.core.errors import ParamsError
from transferlab.models.nets import (
    Normalize,
    TransferNet,
    build_model,
    load_checkpoint,
)
from transferlab.training.loop import predict_logits

BASE = {"epochs": 2, "batch_size": 8, "patience": 5}
FINETUNE = FinetuneParams(**BASE)
# each strategy at strength 0 (must equal finetune) and with a small search over its strength
ZERO = {"l2_sp": L2SPParams(**BASE, alpha=0.0, beta=0.0),
        "bss": BSSParams(**BASE, eta=0.0),
        "delta": DeltaParams(**BASE, alpha=0.0, beta=0.0, attention=True, attention_steps=5),
        "lwf": LwFParams(**BASE, distill_weight=0.0)}
ONE = {**BASE, "epochs": 1}  # the end-to-end runs: two candidates and a refit, twice
SEARCH = {"l2_sp": L2SPParams(**ONE, weight_decay=0.0, search={"alpha": (0.01, 1.0)}),
          "bss": BSSParams(**ONE, search={"eta": (0.001, 1.0)}),
          "delta": DeltaParams(**ONE, weight_decay=0.0, attention_steps=5,
                               search={"alpha": (0.01, 1.0)}),
          "lwf": LwFParams(**ONE, search={"distill_weight": (0.1, 1.0)})}
NAMES = list(SEARCH)


# ------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def one_run(target: TargetData) -> TargetData:
    """The target with one replicate (seed 0, every label), to keep the loop's tests short."""
    return replace(target, budgets={"0": {"all": target.budgets["0"]["all"]}})


@pytest.fixture(scope="module")
def finetune_run(one_run: TargetData, source_path: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    folder = tmp_path_factory.mktemp("finetune")
    return run_replicates("finetune", FINETUNE, source_path, one_run, CPU, folder, ARCH,
                          SELECTION), folder


def _context(target: TargetData, source: TransferNet, seed: int = 0) -> Context:
    config = {"arch": "small_cnn", "width": 8, "num_classes": 4, "mean": 0.5, "std": 0.2,
              "source_classes": SOURCE_CLASSES}
    return Context.build(target, source, arch=ARCH, device=CPU, seed=seed, source_config=config)


def _step_term(term, model: TransferNet, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The loss term as fit calls it on one training batch (train mode, with gradients)."""
    model.train()
    features = model.features(x)
    return term(features, model.head(features), x, y)


# ------------------------------------------------------------------- protocol and params
def test_registered_with_distinct_ranks_and_styles() -> None:
    assert by_role("reference") == "finetune"  # subclasses of Finetune do not inherit its role
    ranks = [get(n).rank for n in NAMES]
    assert all(40 <= r <= 90 for r in ranks) and len(set(ranks)) == len(ranks)
    others = ("source_only", "linear_probe", "partial_finetune", "finetune", "scratch")
    styles = [get(n).style for n in (*NAMES, *others)]
    assert len(set(styles[:len(NAMES)])) == len(NAMES)
    assert not set(styles[:len(NAMES)]) & set(styles[len(NAMES):])
    assert [n for n in NAMES if get(n).needs_source_head] == ["lwf"]


@pytest.mark.parametrize(("name", "block", "match"), [
    ("l2_sp", {"alpha": -0.1}, r"transfer\.l2_sp\.alpha: must be >= 0"),
    ("l2_sp", {"beta": float("nan")}, r"transfer\.l2_sp\.beta: must be finite"),
    ("bss", {"k": 0}, r"transfer\.bss\.k: must be >= 1"),
    ("bss", {"eta": -1}, r"transfer\.bss\.eta: must be >= 0"),
    ("delta", {"blocks": ["block1", "block1"]}, r"transfer\.delta\.blocks: repeats a block"),
    ("delta", {"attention_steps": 0}, r"transfer\.delta\.attention_steps: must be >= 1"),
    ("lwf", {"temperature": 0}, r"transfer\.lwf\.temperature: must be > 0"),
    ("lwf", {"lambda": 1.0}, r"transfer\.lwf\.lambda: unknown key; expected one of .*"
                             r"distill_weight"),
    ("lwf", {"search": {"distill_weight": [-1.0]}},
     r"transfer\.lwf\.search\.distill_weight: must be >= 0"),
])
def test_params_are_validated_by_key(name: str, block: dict, match: str) -> None:
    with pytest.raises(ParamsError, match=match):
        parse_blocks({name: block})


# ------------------------------------------------------------------------ l2_sp reference
def _tiny_model() -> TransferNet:
    """normalize -> block1 (Linear 2->2 without bias, BatchNorm1d) -> head Linear 2->2."""
    backbone = nn.Sequential(OrderedDict(block1=nn.Sequential(nn.Linear(2, 2, bias=False),
                                                              nn.BatchNorm1d(2))))
    model = TransferNet(Normalize(0.0, 1.0), backbone, 2, 2)
    with torch.no_grad():
        backbone.block1[0].weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        model.head.weight.copy_(torch.tensor([[0.5, -1.0], [2.0, 0.0]]))
        model.head.bias.copy_(torch.tensor([1.0, -1.0]))
    return model


def test_l2_sp_penalty_by_hand() -> None:
    model = _tiny_model()
    cfg = L2SPParams(alpha=0.2, beta=0.1)
    term = L2SP(cfg, None).loss_term(model, cfg)
    x, y = torch.zeros(3, 2), torch.zeros(3, dtype=torch.long)
    # at the start only the head term: beta/2 * (0.25 + 1 + 4 + 0 + 1 + 1)
    assert term(None, None, x, y).item() == pytest.approx(0.05 * 7.25)
    with torch.no_grad():
        model.backbone.block1[0].weight += torch.tensor([[0.5, 0.0], [0.0, -1.0]])
        model.backbone.block1[1].bias += torch.tensor([0.3, 0.0])
        model.backbone.block1[1].running_mean += 5.0  # a buffer: not a weight
        model.head.weight.zero_()
    # alpha/2 * (0.25 + 1 + 0.09) + beta/2 * (1 + 1)
    assert term(None, None, x, y).item() == pytest.approx(0.1 * 1.34 + 0.05 * 2.0)


def test_l2_sp_gradient_pulls_towards_the_source() -> None:
    model = _tiny_model()
    cfg = L2SPParams(alpha=2.0, beta=0.0)
    term = L2SP(cfg, None).loss_term(model, cfg)
    with torch.no_grad():
        model.backbone.block1[0].weight += 1.0
    term(None, None, None, None).backward()
    # d/dw alpha/2 ||w - w0||^2 = alpha (w - w0)
    assert torch.equal(model.backbone.block1[0].weight.grad, torch.full((2, 2), 2.0))
    assert model.head.weight.grad is None or not model.head.weight.grad.any()


# -------------------------------------------------------------------------- bss reference
def test_bss_penalty_matches_numpy_svd() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(6, 4))
    sigma = np.linalg.svd(features, compute_uv=False)  # descending
    t = torch.from_numpy(features)
    assert float(spectral_shrinkage(t, 1)) == pytest.approx(sigma[-1] ** 2, rel=1e-5)
    assert float(spectral_shrinkage(t, 2)) == pytest.approx((sigma[-2:] ** 2).sum(), rel=1e-5)
    # fewer singular values than k: all of them, i.e. the squared Frobenius norm
    assert float(spectral_shrinkage(t, 9)) == pytest.approx((features ** 2).sum(), rel=1e-5)
    cfg = BSSParams(eta=0.5, k=2)
    term = BSS(cfg, None).loss_term(None, cfg)
    assert float(term(t.float(), None, None, None)) == pytest.approx(
        0.5 * (sigma[-2:] ** 2).sum(), rel=1e-5)
    # a rank-deficient batch (two equal rows) has a zero singular value and finite gradients
    twin = torch.tensor(np.vstack([features[:3], features[:1]]), dtype=torch.float32,
                        requires_grad=True)
    spectral_shrinkage(twin, 1).backward()
    assert torch.isfinite(twin.grad).all()


# ------------------------------------------------------------------------ delta reference
def test_delta_feature_map_distance_by_hand() -> None:
    gen = torch.Generator().manual_seed(0)
    fm = [torch.randn(2, 3, 2, 2, generator=gen), torch.randn(2, 2, 1, 1, generator=gen)]
    ref = [torch.randn(2, 3, 2, 2, generator=gen), torch.randn(2, 2, 1, 1, generator=gen)]
    attention = torch.tensor([0.5, 0.3, 0.2])
    expected = 0.0
    for b in range(2):  # batch mean of: sum_c (C a_c) * mean over positions of squared diffs
        block1 = sum(3 * float(attention[c]) * float(((fm[0][b, c] - ref[0][b, c]) ** 2).mean())
                     for c in range(3))
        block2 = sum(float((fm[1][b, c, 0, 0] - ref[1][b, c, 0, 0]) ** 2) for c in range(2))
        expected += (block1 + block2) / 2
    got = feature_map_distance(fm, ref, [attention, None])
    assert float(got) == pytest.approx(expected, rel=1e-6)
    # uniform attention is the same as no attention
    uniform = feature_map_distance(fm, ref, [torch.full((3,), 1 / 3), torch.full((2,), 0.5)])
    assert float(uniform) == pytest.approx(float(feature_map_distance(fm, ref, [None, None])))


def test_delta_attention_from_rises_by_hand() -> None:
    rises = torch.tensor([0.1, 0.3, 0.2, 0.6])
    z = (np.array([0.1, 0.3, 0.2, 0.6]) - 0.3) / np.std([0.1, 0.3, 0.2, 0.6])
    expected = np.exp(z / 5) / np.exp(z / 5).sum()
    np.testing.assert_allclose(attention_from_rises(rises).numpy(), expected, rtol=1e-6)
    assert torch.equal(attention_from_rises(torch.full((4,), 0.7)), torch.full((4,), 0.25))


def test_delta_channel_rises_match_a_masked_forward(source: TransferNet) -> None:
    model = copy.deepcopy(source).eval()
    with torch.no_grad():  # channel 2 of block2 is dead (BN scale 0, shift -1: ReLU gives 0)
        model.backbone.block2[1].weight[2] = 0.0
        model.backbone.block2[1].bias[2] = -1.0
    x, y = torch.rand(7, 1, 16, 16), torch.tensor([0, 1, 2, 3, 0, 1, 2])
    rises = channel_loss_rises(model, ["block2", "block3"], (x, y))
    assert rises["block2"].shape == (16,) and rises["block3"].shape == (32,)
    assert rises["block2"][2] == 0  # zeroing a channel that is already zero changes nothing
    with torch.no_grad():
        base = nn.functional.cross_entropy(model(x), y)
        for block, c in (("block2", 5), ("block3", 0), ("block3", 31)):
            def mask(module, args, output, c=c):
                output = output.clone()
                output[:, c] = 0
                return output
            handle = model.backbone.get_submodule(block).register_forward_hook(mask)
            masked = nn.functional.cross_entropy(model(x), y)
            handle.remove()
            assert float(rises[block][c]) == pytest.approx(float(masked - base), abs=1e-5)


@pytest.mark.parametrize("attention", [True, False])
def test_delta_is_zero_at_initialisation(attention: bool, target: TargetData,
                                         source: TransferNet) -> None:
    cfg = DeltaParams(alpha=1.0, beta=0.0, attention=attention, attention_steps=3)
    strategy = Delta(cfg, _context(target, source))
    model = strategy.initial_model()
    x, y = target.pool_x[:9], target.pool_y[:9]
    model = strategy.before_fit(model, (x, y), cfg, torch.Generator().manual_seed(0))
    assert set(strategy.weights) == {"block1", "block2", "block3"}
    for w in strategy.weights.values():
        assert (w is None) != attention
        if attention:
            assert float(w.sum()) == pytest.approx(1.0) and (w > 0).all()
    term = strategy.loss_term(model, cfg)
    assert _step_term(term, model, x, y).item() == 0.0
    # a moved backbone: alpha/2 times the distance to the source's maps, both in train mode
    with torch.no_grad():  # (a rescale would be undone by the batch statistics of BN)
        model.backbone.block2[0].weight.add_(0.05)
    reference = copy.deepcopy(source).train()
    with torch.no_grad():
        h, hs = model.normalize(x), reference.normalize(x)
        maps, ref = [], []
        for block in ("block1", "block2", "block3"):
            h, hs = model.backbone.get_submodule(block)(h), reference.backbone.get_submodule(
                block)(hs)
            maps.append(h)
            ref.append(hs)
    expected = 0.5 * feature_map_distance(maps, ref, [strategy.weights[b] for b in
                                                      ("block1", "block2", "block3")])
    value = _step_term(term, model, x, y)
    assert value.item() > 0 and value.item() == pytest.approx(float(expected), rel=1e-5)
    assert float(ref[0].sub(maps[0]).abs().max()) == 0.0  # block1 did not move
    model, _ = strategy.after_fit(model, model, None, cfg, None)
    assert not any(m._forward_hooks for m in model.modules())


def test_delta_unknown_block_names_the_key(target: TargetData, source_path: Path,
                                           tmp_path: Path) -> None:
    cfg = DeltaParams(**BASE, blocks=("block2", "block9"))
    with pytest.raises(ValueError, match=r"transfer\.delta\.blocks: unknown block 'block9'; "
                                         r"expected some of block1, block2, block3"):
        run_replicates("delta", cfg, source_path, target, CPU, tmp_path, ARCH, SELECTION)


def test_delta_compares_only_the_chosen_blocks(target: TargetData, source: TransferNet) -> None:
    cfg = DeltaParams(alpha=1.0, beta=0.0, blocks=("block3", "block1"), attention=False)
    strategy = Delta(cfg, _context(target, source))
    model = strategy.initial_model()
    x, y = target.pool_x[:6], target.pool_y[:6]
    model = strategy.before_fit(model, (x, y), cfg, torch.Generator())
    assert strategy.blocks == ["block1", "block3"]  # forward order
    term = strategy.loss_term(model, cfg)
    with torch.no_grad():  # block3's output moves; block1's does not
        model.backbone.block3[1].bias.add_(0.5)
    assert _step_term(term, model, x, y).item() > 0
    strategy.after_fit(model, model, None, cfg, None)
    strategy = Delta(replace(cfg, blocks=("block1",)), _context(target, source))
    model = strategy.initial_model()
    model = strategy.before_fit(model, (x, y), replace(cfg, blocks=("block1",)),
                                torch.Generator())
    term = strategy.loss_term(model, cfg)
    with torch.no_grad():
        model.backbone.block3[1].bias.add_(0.5)
    assert _step_term(term, model, x, y).item() == 0.0


# -------------------------------------------------------------------------- lwf reference
def test_lwf_distillation_by_hand() -> None:
    student = np.array([[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]])
    teacher = np.array([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    t = 2.0

    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    p, q = softmax(teacher / t), softmax(student / t)
    expected = t * t * (p * np.log(p / q)).sum(1).mean()
    got = distillation(torch.tensor(student), torch.tensor(teacher), t)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    assert float(distillation(torch.tensor(teacher), torch.tensor(teacher), t)) == 0.0


def test_lwf_is_zero_at_initialisation_and_distils_the_source_head(
        target: TargetData, source: TransferNet) -> None:
    cfg = LwFParams(distill_weight=0.7, temperature=3.0)
    strategy = LwF(cfg, _context(target, source))
    model = strategy.initial_model()
    assert model.head.out_features == 3 and strategy.source_head.out_features == 4
    x, y = target.pool_x[:9], target.pool_y[:9]
    term = strategy.loss_term(model, cfg)
    assert _step_term(term, model, x, y).item() == 0.0
    with torch.no_grad():  # (a rescale would be undone by the batch statistics of BN)
        model.backbone.block3[0].weight.add_(0.05)
    value = _step_term(term, model, x, y)
    teacher = copy.deepcopy(source).train()  # the source network with its own 4-class head
    with torch.no_grad():
        expected = 0.7 * distillation(source.head(model.features(x)), teacher(x), 3.0)
    assert value.item() > 0 and value.item() == pytest.approx(float(expected), rel=1e-6)
    value.backward()  # through the features only: the new head takes no part
    assert model.head.weight.grad is None
    assert model.backbone.block3[0].weight.grad.abs().sum() > 0


def test_lwf_skips_a_source_without_classes(target: TargetData, tmp_path: Path) -> None:
    null = save_source(tmp_path / "null.pt", [])
    out = tmp_path / "out"
    out.mkdir()
    for path in (null, None):
        result = run_replicates("lwf", SEARCH["lwf"], path, target, CPU, out, ARCH, SELECTION)
        assert result["skipped"] == "the source has no trained classifier (null source)"
        assert result["runs"] == [] and list(out.iterdir()) == []


# ---------------------------------------------------------------- identity with finetune
@pytest.mark.parametrize("name", NAMES)
def test_strength_zero_is_bitwise_finetune(name: str, finetune_run: tuple[dict, Path],
                                           one_run: TargetData, source_path: Path,
                                           tmp_path: Path) -> None:
    result = run_replicates(name, ZERO[name], source_path, one_run, CPU, tmp_path, ARCH,
                            SELECTION)
    reference, folder = finetune_run
    # the same runs but for their cost: at strength 0 the term is still computed and counted
    # (l2_sp's penalty is elementwise, which FlopCounterMode does not count)
    assert ([{k: v for k, v in r.items() if k != "train_flops"} for r in result["runs"]]
            == [{k: v for k, v in r.items() if k != "train_flops"} for r in reference["runs"]])
    for r, ref in zip(result["runs"], reference["runs"], strict=True):
        assert (r["train_flops"] == ref["train_flops"] if name == "l2_sp"
                else r["train_flops"] > ref["train_flops"])
    mine, theirs = loaded_states(tmp_path), loaded_states(folder)
    assert mine.keys() == theirs.keys() == {"0_all.pt"}
    assert states_equal(mine["0_all.pt"], theirs["0_all.pt"])


# ---------------------------------------------------------------------- end to end, search
@pytest.mark.parametrize("name", NAMES)
def test_end_to_end_search_records_and_checkpoints(name: str, deterministic,
                                                   finetune_run: tuple[dict, Path],
                                                   one_run: TargetData, source_path: Path,
                                                   tmp_path: Path) -> None:
    cfg = SEARCH[name]
    seen: dict[str, TransferNet] = {}
    results, states = [], []
    for i in range(2):
        folder = tmp_path / str(i)
        folder.mkdir()
        results.append(run_replicates(
            name, cfg, source_path, one_run, CPU, folder, ARCH, SELECTION,
            on_result=lambda record, model, _device: seen.__setitem__(record["checkpoint"], model)))
        states.append(loaded_states(folder))
    result = results[0]
    assert result["strategy"] == name and result["skipped"] is None
    assert [(r["seed"], r["budget"]) for r in result["runs"]] == [(0, "all")]
    (key, values), = cfg.search.items()
    plain = build_model("small_cnn", 3, 0.5, 0.2, seed=0, width=8)
    for r in result["runs"]:
        assert r["refit"] is True and r["selection_method"] == "holdout"
        assert r["trainable_params"] == sum(p.numel() for p in plain.parameters())
        search = r["search"]
        assert [c["config"] for c in search["candidates"]] == [{key: v} for v in values]
        best = max(search["candidates"],
                   key=lambda c: (c["best_val_accuracy"], -c["best_val_loss"]))
        assert search["chosen"] == best["config"]
        assert r["best_val_accuracy"] == best["best_val_accuracy"]
    # two runs with the same seeds: the same records and bitwise the same weights
    assert results[0]["runs"] == results[1]["runs"]
    assert states[0].keys() == states[1].keys() == {"0_all.pt"}
    assert states_equal(states[0]["0_all.pt"], states[1]["0_all.pt"])
    # a plain TransferNet: same keys as any other, no hooks left, reloads to the same logits
    finetune_states = loaded_states(finetune_run[1])
    for ckpt, model in seen.items():
        assert type(model) is TransferNet and not model.training
        assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
        assert model.state_dict().keys() == plain.state_dict().keys()
        loaded, config = load_checkpoint(tmp_path / "1" / ckpt)
        assert config["strategy"] == name
        assert torch.equal(predict_logits(loaded, one_run.val_x, CPU),
                           predict_logits(model, one_run.val_x, CPU))
        # the regulariser changed the training: not the finetune model
        assert not states_equal(model.state_dict(), finetune_states[ckpt]), ckpt
