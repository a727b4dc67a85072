"""Tests for transferlab.models.nets: shapes, seeding, head surgery, freezing, checkpoints, init."""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from transferlab.models.nets import (
    HEADS,
    MaxPool2d,
    MLPHead,
    block_names,
    build_model,
    count_trainable,
    freeze,
    load_checkpoint,
    load_torchvision_init,
    make_head,
    reset_head,
    save_checkpoint,
)

MEAN, STD = 0.1, 0.3


def _small(seed: int = 0, num_classes: int = 3) -> nn.Module:
    return build_model("small_cnn", num_classes, MEAN, STD, seed=seed, width=8)


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _bn(model: nn.Module, block: str) -> nn.modules.batchnorm._BatchNorm:
    (bn,) = [m for m in model.backbone.get_submodule(block).modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    return bn


# ---------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize(("arch", "width", "dim"), [("small_cnn", 8, 32), ("resnet18", 32, 512)])
def test_build_model_shapes(arch: str, width: int, dim: int) -> None:
    model = build_model(arch, 5, MEAN, STD, seed=0, width=width).eval()
    x = torch.rand(4, 1, 16, 16)
    with torch.no_grad():
        assert model(x).shape == (4, 5)
        assert model.features(x).shape == (4, dim)
    assert model.feature_dim == dim
    assert model.head.in_features == dim and model.head.out_features == 5


def test_build_model_normalizes_inputs() -> None:
    model = _small()
    x = torch.rand(2, 1, 16, 16)
    torch.testing.assert_close(model.normalize(x), (x - MEAN) / STD)


def test_build_model_unknown_arch() -> None:
    with pytest.raises(ValueError, match="unknown architecture 'resnet9'.*small_cnn.*resnet18"):
        build_model("resnet9", 3, MEAN, STD, seed=0)


# --------------------------------------------------------------------------------- seeding
@pytest.mark.parametrize("arch", ["small_cnn", "resnet18"])
def test_build_model_seeding_leaves_global_rng_alone(arch: str) -> None:
    torch.manual_seed(1234)
    before = torch.random.get_rng_state()
    a = build_model(arch, 3, MEAN, STD, seed=7, width=8)
    b = build_model(arch, 3, MEAN, STD, seed=7, width=8)
    c = build_model(arch, 3, MEAN, STD, seed=8, width=8)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert _states_equal(a.state_dict(), b.state_dict())
    params_a, params_c = dict(a.named_parameters()), dict(c.named_parameters())
    assert not torch.equal(params_a["head.weight"], params_c["head.weight"])
    assert not torch.equal(next(a.backbone.parameters()), next(c.backbone.parameters()))


def test_reset_head_changes_classes_and_is_seeded() -> None:
    model = _small()
    backbone = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    before = torch.random.get_rng_state()
    reset_head(model, 7, seed=3)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert model.head.out_features == 7 and model.head.in_features == model.feature_dim
    with torch.no_grad():
        assert model.eval()(torch.rand(2, 1, 16, 16)).shape == (2, 7)
    same = reset_head(_small(seed=5), 7, seed=3)
    other = reset_head(_small(seed=0), 7, seed=4)
    assert _states_equal(model.head.state_dict(), same.head.state_dict())
    assert not torch.equal(model.head.weight, other.head.weight)
    assert _states_equal(model.backbone.state_dict(), backbone)  # the backbone is untouched


def test_block_names() -> None:
    assert block_names(_small()) == ["block1", "block2", "block3"]
    resnet = build_model("resnet18", 3, MEAN, STD, seed=0)
    assert block_names(resnet) == ["stem", "layer1", "layer2", "layer3", "layer4"]


# ---------------------------------------------------------------------------------- freeze
def test_freeze_params_and_bn_stats() -> None:
    model = _small()
    frozen = freeze(model, ["block1"], bn_stats=True)
    want = [f"backbone.block1.{n}" for n, _ in model.backbone.block1.named_parameters()]
    assert frozen == want and len(want) == 3  # conv weight, BN weight, BN bias
    for name, p in model.named_parameters():
        assert p.requires_grad == (not name.startswith("backbone.block1.")), name
    model.train()
    assert not _bn(model, "block1").training
    assert _bn(model, "block2").training and model.backbone.block2.training
    frozen_mean = _bn(model, "block1").running_mean.clone()
    free_mean = _bn(model, "block2").running_mean.clone()
    model(torch.rand(8, 1, 16, 16) * 3)
    assert torch.equal(_bn(model, "block1").running_mean, frozen_mean)
    assert not torch.equal(_bn(model, "block2").running_mean, free_mean)
    model.eval()
    model.train()  # a later train() keeps the frozen statistics frozen
    assert not _bn(model, "block1").training


def test_freeze_without_bn_stats_lets_statistics_move() -> None:
    model = _small()
    freeze(model, ["block1"], bn_stats=False)
    assert not any(p.requires_grad for p in model.backbone.block1.parameters())
    model.train()
    assert _bn(model, "block1").training
    before = _bn(model, "block1").running_mean.clone()
    model(torch.rand(8, 1, 16, 16) * 3)
    assert not torch.equal(_bn(model, "block1").running_mean, before)


@pytest.mark.parametrize("bad", ["pool", "head", "block4"])
def test_freeze_unknown_block(bad: str) -> None:
    with pytest.raises(ValueError, match=f"unknown block '{bad}'; expected one of "
                                         "block1, block2, block3"):
        freeze(_small(), ["block1", bad])


def test_freeze_twice_keeps_earlier_bn_frozen() -> None:
    model = _small()
    freeze(model, ["block1"], bn_stats=True)
    freeze(model, ["block2"], bn_stats=True)
    model.train()
    assert not _bn(model, "block1").training and not _bn(model, "block2").training


def test_count_trainable() -> None:
    model = _small()
    total = sum(p.numel() for p in model.parameters())
    # small_cnn width 8: conv 1*8*9 + BN 2*8, conv 8*16*9 + BN 2*16, conv 16*32*9 + BN 2*32,
    # head 32*3 + 3
    assert total == 72 + 16 + 1152 + 32 + 4608 + 64 + 99
    assert count_trainable(model) == total
    freeze(model, ["block1", "block3"])
    manual = sum(p.numel() for n, p in model.named_parameters()
                 if not n.startswith(("backbone.block1.", "backbone.block3.")))
    assert count_trainable(model) == manual == total - (72 + 16) - (4608 + 64)


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = _small(seed=3, num_classes=4)
    model.train()
    model(torch.rand(8, 1, 16, 16))  # move the BN statistics away from their init
    config = {"arch": "small_cnn", "width": 8, "num_classes": 4, "mean": MEAN, "std": STD,
              "source_classes": ["a", "b", "c", "d"]}
    save_checkpoint(model, tmp_path / "m.pt", config)
    loaded, cfg = load_checkpoint(tmp_path / "m.pt")
    assert cfg == config
    assert not loaded.training
    assert _states_equal(loaded.state_dict(), model.state_dict())
    x = torch.rand(5, 1, 16, 16)
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


# ------------------------------------------------------------------------ torchvision init
@pytest.fixture(scope="module")
def r18_state() -> dict[str, torch.Tensor]:
    """A torchvision resnet18 state dict with every tensor set to a distinct seeded value."""
    gen = torch.Generator().manual_seed(11)
    net = torchvision.models.resnet18(weights=None)
    state = net.state_dict()
    for key, value in state.items():
        if value.is_floating_point():
            state[key] = torch.randn(value.shape, generator=gen)
    return state


def _check_loaded(model: nn.Module, state: dict, head_before: dict, loaded: list[str]) -> None:
    ours = model.backbone.state_dict()
    assert torch.equal(ours["stem.0.weight"], state["conv1.weight"])
    assert torch.equal(ours["stem.1.running_mean"], state["bn1.running_mean"])
    assert torch.equal(ours["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"])
    assert torch.equal(ours["layer4.1.bn2.weight"], state["layer4.1.bn2.weight"])
    assert torch.equal(ours["layer4.0.downsample.0.weight"],
                       state["layer4.0.downsample.0.weight"])
    for key, value in ours.items():  # every backbone tensor comes from the file
        tv_key = key.replace("stem.0.", "conv1.").replace("stem.1.", "bn1.")
        assert torch.equal(value, state[tv_key]), key
    assert _states_equal(model.head.state_dict(), head_before)  # the head stays new
    assert sorted(loaded) == sorted(ours)


def test_load_torchvision_init_local_file(tmp_path: Path, r18_state: dict) -> None:
    path = tmp_path / "r18.pt"
    torch.save(r18_state, path)
    model = build_model("resnet18", 3, MEAN, STD, seed=0)
    head = {k: v.clone() for k, v in model.head.state_dict().items()}
    loaded = load_torchvision_init(model, f"torchvision:resnet18:{path}")
    _check_loaded(model, r18_state, head, loaded)


def test_load_torchvision_init_weights_enum_from_cache(tmp_path: Path, r18_state: dict,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"tried to download {args[:1]}")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    monkeypatch.chdir(tmp_path)
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(r18_state, cache / os.path.basename(urllib.parse.urlparse(url).path))
    model = build_model("resnet18", 3, MEAN, STD, seed=0)
    head = {k: v.clone() for k, v in model.head.state_dict().items()}
    loaded = load_torchvision_init(model, "torchvision:resnet18:IMAGENET1K_V1")
    _check_loaded(model, r18_state, head, loaded)


def test_load_torchvision_init_unknown_weights(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    model = build_model("resnet18", 3, MEAN, STD, seed=0)
    with pytest.raises(ValueError, match="unknown weights 'IMAGENET9K'.*IMAGENET1K_V1"):
        load_torchvision_init(model, "torchvision:resnet18:IMAGENET9K")


# ----------------------------------------------------------------------------------- heads
def test_linear_head_is_the_manual_seeded_linear() -> None:
    """kind="linear" draws exactly what the head always drew: saved checkpoints keep their md5."""
    model = reset_head(_small(), 6, seed=11)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        manual = nn.Linear(model.feature_dim, 6)
    assert type(model.head) is nn.Linear
    assert _states_equal(model.head.state_dict(), manual.state_dict())
    explicit = reset_head(_small(), 6, seed=11, kind="linear", hidden=64)  # hidden is ignored
    assert _states_equal(explicit.head.state_dict(), manual.state_dict())


def test_mlp_head_shapes_seeding_and_global_rng() -> None:
    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    a = make_head("mlp", 32, 4, hidden=16, seed=2)
    b = make_head("mlp", 32, 4, hidden=16, seed=2)
    c = make_head("mlp", 32, 4, hidden=16, seed=3)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert isinstance(a, MLPHead) and a.hidden == 16
    assert [tuple(p.shape) for p in a.parameters()] == [(16, 32), (16,), (4, 16), (4,)]
    assert _states_equal(a.state_dict(), b.state_dict())
    assert not torch.equal(a[0].weight, c[0].weight)
    x = torch.randn(3, 32)
    with torch.no_grad():
        torch.testing.assert_close(a(x), a[2](torch.relu(a[0](x))))
        assert torch.equal(a.train()(x), a.eval()(x))  # no dropout: deterministic


def test_reset_head_mlp_forward_and_trainable_count() -> None:
    model = reset_head(_small(), 5, seed=0, kind="mlp", hidden=20)
    with torch.no_grad():
        assert model.eval()(torch.rand(2, 1, 16, 16)).shape == (2, 5)
    body = count_trainable(model.backbone)
    assert count_trainable(model) == body + 32 * 20 + 20 + 20 * 5 + 5


def test_unknown_head_and_bad_hidden() -> None:
    assert HEADS == ("linear", "mlp")
    with pytest.raises(ValueError, match="unknown head 'mpl'; expected one of linear, mlp"):
        reset_head(_small(), 3, seed=0, kind="mpl")
    with pytest.raises(ValueError, match="head_hidden must be at least 1.*got 0"):
        make_head("mlp", 32, 3, hidden=0, seed=0)


def test_mlp_checkpoint_round_trip(tmp_path: Path) -> None:
    model = reset_head(_small(seed=3, num_classes=4), 4, seed=9, kind="mlp", hidden=12)
    config = {"arch": "small_cnn", "width": 8, "num_classes": 4, "mean": MEAN, "std": STD}
    save_checkpoint(model, tmp_path / "m.pt", config)
    loaded, cfg = load_checkpoint(tmp_path / "m.pt")
    assert cfg == {**config, "head": "mlp", "head_hidden": 12}
    assert "head" not in config  # the caller's dict is not modified
    assert isinstance(loaded.head, MLPHead) and loaded.head.hidden == 12
    assert _states_equal(loaded.state_dict(), model.state_dict())
    x = torch.rand(5, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))


def test_linear_checkpoint_bytes_unchanged(tmp_path: Path) -> None:
    """A linear-head checkpoint is the very file the former save_checkpoint wrote."""
    model = _small(seed=1, num_classes=3)
    config = {"arch": "small_cnn", "width": 8, "num_classes": 3, "mean": MEAN, "std": STD}
    old, new = tmp_path / "old" / "model.pt", tmp_path / "new" / "model.pt"  # same file name:
    old.parent.mkdir()  # torch.save names the zip's records after it
    new.parent.mkdir()
    torch.save({"config": config, "state_dict": model.state_dict()}, old)
    save_checkpoint(model, new, config)
    assert new.read_bytes() == old.read_bytes()
    assert "head" not in load_checkpoint(new)[1]


def test_checkpoint_config_follows_the_actual_head(tmp_path: Path) -> None:
    """A config copied from an MLP-head source does not mislabel a new linear head."""
    config = {"arch": "small_cnn", "width": 8, "num_classes": 3, "mean": MEAN, "std": STD,
              "head": "mlp", "head_hidden": 12}
    model = reset_head(_small(), 3, seed=0)
    save_checkpoint(model, tmp_path / "m.pt", config)
    loaded, cfg = load_checkpoint(tmp_path / "m.pt")
    assert "head" not in cfg and "head_hidden" not in cfg
    assert type(loaded.head) is nn.Linear
    assert _states_equal(loaded.state_dict(), model.state_dict())


@pytest.mark.parametrize("relu", [False, True])  # after a ReLU, many windows tie at zero
def test_channels_last_max_pool_matches_torch_bitwise(relu: bool,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 16, 16, 16, generator=g)
    x[:, :, ::4, ::4] = x[:, :, 1::4, 1::4]  # exact ties inside windows that are not zero
    if relu:
        x = torch.relu(x)
    # the kernel itself, with gradients: the same maxima, the same element of each window
    grad_out = torch.randn(64, 16, 8, 8, generator=g)
    outs, grads = [], []
    for layout in (torch.contiguous_format, torch.channels_last):
        xi = x.clone().contiguous(memory_format=layout).requires_grad_(True)
        out = nn.functional.max_pool2d(xi, 2)
        out.backward(grad_out)
        outs.append(out.contiguous())
        grads.append(xi.grad.contiguous())
    assert torch.equal(outs[0], outs[1])
    assert torch.equal(grads[0], grads[1])
    # the module takes the channels-last path under inference mode, and returns NCHW
    layouts = []
    original = torch.Tensor.contiguous

    def spy(self: torch.Tensor, memory_format: torch.memory_format = torch.contiguous_format
            ) -> torch.Tensor:
        layouts.append(memory_format)
        return original(self, memory_format=memory_format)

    monkeypatch.setattr(torch.Tensor, "contiguous", spy)
    with torch.inference_mode():
        ours = MaxPool2d(2)(x)
    assert torch.channels_last in layouts and ours.is_contiguous()
    assert torch.equal(ours, nn.MaxPool2d(2)(x))


def test_our_max_pool_works_under_torch_func() -> None:
    x = torch.rand(3, 4, 2, 8, 8)  # (members, B, C, H, W)
    with torch.inference_mode():
        out = torch.func.vmap(MaxPool2d(2))(x)
    assert torch.equal(out, torch.stack([nn.MaxPool2d(2)(m) for m in x]))
