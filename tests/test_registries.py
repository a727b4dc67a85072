"""Dataset kinds and backbones are registries: a toy member registered from this test is
validated, loaded and built like the shipped ones; unknown names list the registered ones; a
corrupt file of a file-based kind is one clean error naming the file and the key."""

from __future__ import annotations

import subprocess
import sys
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from transferlab.config.typed import check_range
from transferlab.core.errors import DataError, ParamsError
from transferlab.data import kinds
from transferlab.data.kinds import DatasetSpec, ImageKind, LoadContext, register
from transferlab.data.prepare import prepare_all
from transferlab.data.raw import RawDataset
from transferlab.data.store import ExampleSet, PreparedDataset
from transferlab.models import backbones
from transferlab.models.backbones import Backbone, Built
from transferlab.models.nets import build_model
from transferlab.models.resolved import load_params

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ a toy kind, one definition
@dataclass(frozen=True, kw_only=True)
class StripesSpec(DatasetSpec):
    n_per_class: int = 12  # images per class: horizontal vs vertical stripes

    def validate(self, key: str) -> None:
        check_range(f"{key}.n_per_class", self.n_per_class, 4, 1000)
        super().validate(key)


class Stripes(ImageKind):
    name = "toy_stripes"
    Spec = StripesSpec

    def load(self, spec: StripesSpec, ctx: LoadContext) -> RawDataset:
        rng = np.random.default_rng(ctx.seed)
        s, n = ctx.image_size, spec.n_per_class
        rows = (np.arange(s) % 4 < 2)[:, None].repeat(s, 1)
        base = np.stack([rows] * n + [rows.T] * n).astype(np.uint8) * 200
        images = (base + rng.integers(0, 40, base.shape)).astype(np.uint8)
        return RawDataset(ExampleSet(images, np.repeat(np.arange(2), n).astype(np.int64),
                                     ("horizontal", "vertical")))


# -------------------------------------------------------------- a toy backbone, one definition
class Tiny(Backbone):
    name = "toy_tiny"

    def build(self, arch: str, width: int, arch_config: dict | None) -> Built:
        blocks = OrderedDict(conv=nn.Conv2d(1, width, 3, padding=1),
                             pool=nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
        return Built(nn.Sequential(blocks), width, channels=1)


@pytest.fixture
def toys():
    register(Stripes)
    backbones.register(Tiny)
    yield
    kinds.unregister(Stripes.name)
    backbones.unregister(Tiny.name)


def toy_params(tmp_path: Path, params_dict: dict, **target) -> Path:
    params_dict["prepare"]["target"] = {"kind": "toy_stripes", **target}
    params_dict["prepare"]["sources"] = {"own": {"kind": "toy_stripes", "n_per_class": 20},
                                         "random_init": {"kind": "none"}}
    params_dict["prepare"].update(budgets=[1, "all"], test_per_class=4, val_per_class=2)
    params_dict["pretrain"]["arch"] = "toy_tiny"
    params_dict["grid"]["methods"]["sources"] = ["own"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params_dict, sort_keys=False))
    return path


def test_toy_kind_and_backbone_validate_prepare_and_build(toys, tmp_path, params_dict) -> None:
    params = load_params(toy_params(tmp_path, params_dict, n_per_class=16))
    assert isinstance(params.prepare.target, StripesSpec)
    assert params.prepare.target.n_per_class == 16 and params.prepare.target.modality == "image"
    assert "toy_stripes" in kinds.names() and "toy_tiny" in backbones.names()

    manifests = prepare_all(params, tmp_path / "prepared")  # the registry's loader dispatch
    assert manifests["target"]["kind"] == "toy_stripes"
    target = PreparedDataset.open(tmp_path / "prepared" / "target")
    assert target.manifest["class_names"] == ["horizontal", "vertical"]
    assert manifests["sources/own"]["aligned"]

    model = build_model(params.pretrain.arch, 2, 0.5, 0.25, seed=0, width=4)
    assert model(torch.zeros(3, 1, 16, 16)).shape == (3, 2)
    assert [n for n, _ in model.backbone.named_children()] == ["conv", "pool"]


def test_toy_kind_keys_are_checked(toys, tmp_path, params_dict) -> None:
    with pytest.raises(ParamsError, match=r"prepare\.target\.n_per_class: must be >= 4"):
        load_params(toy_params(tmp_path, params_dict, n_per_class=2))
    with pytest.raises(ParamsError, match=r"prepare\.target\.chars: not used by kind "
                                          r"'toy_stripes' \(it takes n_per_class\)"):
        load_params(toy_params(tmp_path, params_dict, chars="AB"))


def test_unknown_kind_and_arch_list_the_registered_ones(toys, tmp_path, params_dict) -> None:
    path = toy_params(tmp_path, params_dict)
    data = yaml.safe_load(path.read_text())
    data["prepare"]["target"]["kind"] = "parquet"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ParamsError, match=r"prepare\.target\.kind: unknown value 'parquet'; "
                                          r"expected one of fonts, .*toy_stripes"):
        load_params(path)
    data["prepare"]["target"]["kind"] = "toy_stripes"
    data["pretrain"]["arch"] = "vgg99"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ParamsError, match=r"pretrain\.arch: unknown architecture 'vgg99'; "
                                          r"expected one of small_cnn, .*toy_tiny.*, or hf:"):
        load_params(path)
    with pytest.raises(ValueError, match=r"unknown architecture 'vgg99'.*toy_tiny"):
        build_model("vgg99", 2, 0.0, 1.0, seed=0)


def test_toy_kind_is_not_left_registered() -> None:
    assert "toy_stripes" not in kinds.names() and "toy_tiny" not in backbones.names()


# ------------------------------------------------------------------------------ corrupt files
def _tree(root: Path) -> Path:
    from PIL import Image

    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(root / name / f"{i}.png")
    bad = root / "dog" / "9.png"
    bad.write_bytes(b"not a png at all")
    return bad


def test_corrupt_image_is_one_error_naming_file_and_key(tmp_path) -> None:
    from transferlab.data.images import load_dataset

    bad = _tree(tmp_path / "tree")
    with pytest.raises(DataError) as err:
        load_dataset(DatasetSpec(kind="imagefolder", root=str(tmp_path / "tree")), 8, 0,
                     "prepare.target")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("prepare.target.root: cannot read image ") and str(bad) in message


def test_corrupt_csv_is_one_error_naming_file_and_key(tmp_path) -> None:
    from transferlab.data.text import load_texts

    path = tmp_path / "bad.csv"
    path.write_bytes(b'text,label\n"unclosed quote,a\n' + b"\xff\xfe\x00" * 50)
    with pytest.raises(DataError) as err:
        load_texts(DatasetSpec(kind="csv", path=str(path), text_column="text",
                               label_column="label"), "prepare.sources.reviews")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("prepare.sources.reviews.path: cannot read ") and str(path) in message


def test_prepare_stage_reports_a_corrupt_image_cleanly(tmp_path, params_dict) -> None:
    bad = _tree(tmp_path / "tree")
    params_dict["prepare"]["target"] = {"kind": "imagefolder", "root": str(tmp_path / "tree")}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params_dict, sort_keys=False))
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / "prepare.py"), "--params",
                           str(path), "--out", str(tmp_path / "prepared")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr
    assert "prepare.target.root: cannot read image" in lines[0] and str(bad) in lines[0]
    assert not (tmp_path / "prepared").exists()
