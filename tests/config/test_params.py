"""params.yaml validation: every class of bad input gives an error naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from transferlab.adapt import strategies
from transferlab.config.params import Params, to_dict
from transferlab.core.errors import ParamsError
from transferlab.models.resolved import load_params

ROOT = Path(__file__).resolve().parents[2]


def load_all(path: Path) -> Params:
    """What a stage that runs strategies loads: the whole file, each strategy's block typed."""
    return strategies.resolve(load_params(path))


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_repo_params_load() -> None:
    params = load_params(ROOT / "params.yaml")
    assert isinstance(params, Params)
    assert set(params.prepare.sources) == {"printed_digits", "printed_letters", "random_init"}
    assert [str(b) for b in params.prepare.budgets] == ["1", "3", "8"]  # the small default


def test_round_trip(params_file: Path) -> None:
    params = load_all(params_file)
    again = load_all(write(params_file.parent, to_dict(params)))
    assert again == params


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        # unknown keys, with the valid choices named
        (lambda p: p["transfer"].update(fintune={}), r"transfer\.fintune: unknown key; "
         r"expected one of source_only, zero_shot, in_context, linear_probe, .*finetune, "
         r".*scratch"),
        (lambda p: p.update(bogus=1), r"bogus: unknown key"),
        (lambda p: p["transfer"]["finetune"].update(learning_rate=1),
         r"transfer\.finetune\.learning_rate: unknown key"),
        # wrong types
        (lambda p: p["transfer"]["finetune"].update(epochs="ten"),
         r"transfer\.finetune\.epochs: expected an integer"),
        (lambda p: p["transfer"]["finetune"].update(lr="fast"),
         r"transfer\.finetune\.lr: expected a number"),
        (lambda p: p["tracking"].update(enabled="yes"),
         r"tracking\.enabled: expected true or false"),
        (lambda p: p["common"].update(seeds=3), r"common\.seeds: expected a list"),
        (lambda p: p["common"].update(determinism="exact"),
         r"common\.determinism: .*portable.*fast"),
        (lambda p: p["common"].update(gemm_branch="avx2"),
         r"common\.gemm_branch: 'avx2' gives other bits on other CPUs .* cannot be portable; "
         r"set common\.gemm_branch: compatible, or common\.determinism: fast"),
        # unknown choices
        (lambda p: p["pretrain"].update(arch="vgg99"),
         r"pretrain\.arch: unknown architecture 'vgg99'; expected one of small_cnn, resnet18"),
        (lambda p: p["prepare"]["target"].update(kind="parquet"),
         r"prepare\.target\.kind: unknown value 'parquet'; expected one of fonts, sklearn_digits"),
        (lambda p: p["transfer"]["finetune"].update(optimizer="adam"),
         r"transfer\.finetune\.optimizer: unknown value 'adam'; expected one of sgd, adamw"),
        (lambda p: p["common"].update(device="tpu"), r"common\.device: unknown value 'tpu'"),
        # ranges and sizes
        (lambda p: p["transfer"]["finetune"].update(lr=-0.1), r"transfer\.finetune\.lr: must be >"),
        (lambda p: p["transfer"]["finetune"].update(batch_size=0),
         r"transfer\.finetune\.batch_size: must be >= 1"),
        (lambda p: p["prepare"].update(image_size=4), r"prepare\.image_size: must be >= 8"),
        (lambda p: p["prepare"]["sources"]["printed_digits"].update(n_per_class=10**12),
         r"n_per_class: must be <="),
        (lambda p: p["evaluate"].update(confidence=float("nan")), r"evaluate\.confidence"),
        # empty lists and ordering
        (lambda p: p["common"].update(seeds=[]), r"common\.seeds: must list at least one seed"),
        (lambda p: p["prepare"].update(budgets=[]), r"prepare\.budgets: must list at least one"),
        (lambda p: p["prepare"].update(budgets=[10, 3, "all"]),
         r"prepare\.budgets: must be strictly increasing"),
        (lambda p: p["prepare"].update(sources={}), r"prepare\.sources: must name at least one"),
        # kind-specific keys
        (lambda p: p["prepare"]["target"].update(chars="abc"),
         r"prepare\.target\.chars: not used by kind 'sklearn_digits'"),
        (lambda p: p["prepare"]["sources"]["printed_digits"].pop("chars"),
         r"prepare\.sources\.printed_digits\.chars: required for kind 'fonts'"),
        (lambda p: p["prepare"].update(target={"kind": "imagefolder"}),
         r"prepare\.target\.root: required for kind 'imagefolder'"),
        (lambda p: p["pretrain"].update(init="imagenet"), r"pretrain\.init: expected 'random'"),
        (lambda p: p["transfer"]["linear_probe"].update(augment=True),
         r"transfer\.linear_probe\.augment"),
        (lambda p: p["prepare"].pop("target"), r"prepare\.target: missing required key"),
    ],
)
def test_bad_params_name_the_key(tmp_path: Path, params_dict: dict, edit, match: str) -> None:
    edit(params_dict)
    with pytest.raises(ParamsError, match=match):
        load_all(write(tmp_path, params_dict))


def test_yaml_syntax_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("common: [seeds: 1\n")
    with pytest.raises(ParamsError, match=r"params\.yaml: not valid YAML"):
        load_params(path)


def test_repeated_key_is_an_error_not_the_last_value(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    text = (ROOT / "params.yaml").read_text()
    path.write_text(text.replace("    epochs: 25\n", "    epochs: 25\n    epochs: 2\n", 1))
    with pytest.raises(ParamsError, match=r"params\.yaml: not valid YAML: line \d+, column 5: "
                                          r"found duplicate key 'epochs'"):
        load_params(path)
    # YAML merge keys may still override what they merge in
    path.write_text(text + "x: &a {k: 1}\ny: {<<: *a, k: 2}\n")
    with pytest.raises(ParamsError, match="^x: unknown key"):  # parsed; then the unknown block
        load_params(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")


def test_stage_exits_cleanly_and_writes_nothing(tmp_path: Path, params_dict: dict) -> None:
    params_dict["transfer"]["fintune"] = {}
    path = write(tmp_path, params_dict)
    out = tmp_path / "prepared"
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / "transfer.py"), "--params",
                           str(path), "--strategy", "finetune", "--stage", "t",
                           "--target", str(tmp_path / "target"), "--out", str(out)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1
    assert "transfer.fintune: unknown key" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["params.yaml"]
