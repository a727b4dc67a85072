"""``zero_shot`` and ``in_context`` on a tiny causal LM the tests write: the classes' scores
against transformers' own model on the whole prompt, contextual calibration against a hand
computation, the prefix cache against recomputing the prefix, and both strategies end to end
through the replicate loop (checkpoints that rebuild the prompted model)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.adapt.strategies.helpers import CPU, SELECTION
from tests.llm_fixtures import write_tiny_causal_lm
from tests.text_fixtures import sentiment_rows
from transferlab.adapt.replicates import run_replicates
from transferlab.adapt.strategies import get
from transferlab.adapt.strategies._prompting import prompted_model
from transferlab.adapt.strategies.in_context import demonstrations
from transferlab.adapt.target import TargetData
from transferlab.config.typed import from_dict
from transferlab.core.errors import ParamsError
from transferlab.data.checkpoints import load_causal_tokenizer
from transferlab.data.kinds.base import tokenize
from transferlab.models.nets import build_model, load_checkpoint, load_init, save_checkpoint
from transferlab.models.prompting import calibrated, encode_template
from transferlab.training.loop import predict_logits, predict_proba

TEMPLATE = "Review:\n{text}\nSentiment:"
WORDS = {"neg": "bad", "pos": "good"}
CLASSES = ("neg", "pos")


@pytest.fixture(scope="module", name="tiny")
def tiny_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_causal_lm(tmp_path_factory.mktemp("tiny_lm"))


@pytest.fixture(scope="module", name="tokenizer")
def tokenizer_fixture(tiny: Path):
    return load_causal_tokenizer(f"llm:{tiny}")


@pytest.fixture(scope="module", name="source_path")
def source_path_fixture(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny LM as a source checkpoint, as ``pretrain`` saves one (its head unused)."""
    model = build_model(f"llm:{tiny}", 2, 0.0, 1.0, seed=0)
    load_init(model, f"llm:{tiny}")
    path = tmp_path_factory.mktemp("source") / "source.pt"
    save_checkpoint(model, path, {"arch": f"llm:{tiny}", "width": 0, "num_classes": 2,
                                  "mean": 0.0, "std": 1.0, "source_classes": []})
    return path


def _inputs(rows: list[tuple[str, str]], tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(tokenize([t for t, _ in rows], tokenizer, 16).astype(np.int64))
    return x, torch.tensor([CLASSES.index(label) for _, label in rows])


@pytest.fixture(scope="module", name="target")
def target_fixture(tokenizer) -> TargetData:
    """8 texts per class in the pool, 5 in the validation set; budgets 2 and 4 per class."""
    pool_x, pool_y = _inputs(sentiment_rows(8, seed=0), tokenizer)
    val_x, val_y = _inputs(sentiment_rows(5, seed=1), tokenizer)
    budgets = {}
    for seed in ("0", "1"):
        rng = np.random.default_rng(int(seed))
        order = [rng.permutation(np.flatnonzero(pool_y.numpy() == k)).tolist() for k in (0, 1)]
        budgets[seed] = {b: sorted(i for o in order for i in o[:int(b)]) for b in ("2", "4")}
    return TargetData(pool_x, pool_y, val_x, val_y, 2, budgets, {"mean": 0.0, "std": 1.0},
                      "text", "classification", None, CLASSES)


def _cfg(name: str, **overrides: object):
    return from_dict(get(name).Params, {"template": TEMPLATE, "label_words": WORDS,
                                        **overrides}, f"transfer.{name}")


def _reference_scores(tiny: Path, sequences: list[list[int]], labels: list[int]) -> torch.Tensor:
    """Label-word log-probabilities, renormalised over the label words, after each whole token
    sequence: transformers' own model on the full prompt, no cache."""
    from transformers import AutoModelForCausalLM

    net = AutoModelForCausalLM.from_pretrained(str(tiny)).eval()
    out = []
    with torch.inference_mode():
        for ids in sequences:
            logits = net(input_ids=torch.tensor([ids])).logits[0, -1]
            out.append(torch.log_softmax(torch.log_softmax(logits, -1)[labels], -1))
    return torch.stack(out)


# ------------------------------------------------------------------------------- calibration
def test_calibration_matches_a_hand_computation() -> None:
    """p(x) = (0.7, 0.3) and (0.4, 0.6); content-free p = (0.8, 0.2) and (0.6, 0.4), mean
    (0.7, 0.3). Calibrated: log(0.7/0.7), log(0.3/0.3) = (0, 0); log(0.4/0.7) = -0.5596158,
    log(0.6/0.3) = log 2. Zhao et al.'s softmax(W p), W = diag(1/0.7, 1/0.3): (2/9, 7/9)."""
    scores = calibrated(torch.tensor([[0.7, 0.3], [0.4, 0.6]], dtype=torch.float64).log(),
                        torch.tensor([[0.8, 0.2], [0.6, 0.4]], dtype=torch.float64).log())
    torch.testing.assert_close(scores, torch.tensor([[0.0, 0.0], [-0.5596157879354227,
                                                                  math.log(2)]],
                                                    dtype=torch.float64))
    torch.testing.assert_close(torch.softmax(scores[1], 0),
                               torch.tensor([2 / 9, 7 / 9], dtype=torch.float64))
    # the uncalibrated prediction of row 0 (class 0) becomes a tie: its bias was the prior's
    assert calibrated(scores, None) is scores


# --------------------------------------------------------------------------------- zero_shot
def test_zero_shot_scores_are_the_models_calibrated_label_log_probs(
        tiny: Path, tokenizer, source_path: Path, target: TargetData, tmp_path: Path) -> None:
    """End to end: the one saved model scores every text as transformers' model does on the
    whole prompt (BOS, template, text, label word next), minus the log of the content-free
    inputs' mean label probabilities; every replicate is scored on its held-out labels."""
    result = run_replicates("zero_shot", _cfg("zero_shot"), source_path, target, CPU, tmp_path,
                            {"arch": f"llm:{tiny}", "width": 0}, SELECTION)
    assert result["skipped"] is None and result["prompt"]["calibrated"] is True
    assert [r["checkpoint"] for r in result["runs"]] == ["model.pt"] * 4
    assert all(0 <= r["selection_score"] <= 1 for r in result["runs"])
    model, config = load_checkpoint(tmp_path / "model.pt")
    assert config["prompt"]["labels"] == [tokenizer.convert_tokens_to_ids(w) for w in
                                          ("bad", "good")]
    got = predict_logits(model, target.val_x, CPU)

    labels = config["prompt"]["labels"]
    bos, = tokenizer("x")["input_ids"][:1]
    opening = tokenizer("Review:\n", add_special_tokens=False)["input_ids"]
    closing = tokenizer("\nSentiment:", add_special_tokens=False)["input_ids"]
    texts = [[int(i) for i, m in zip(*row.tolist(), strict=True) if m and i != bos]
             for row in target.val_x]
    scores = _reference_scores(tiny, [[bos, *opening, *t, *closing] for t in texts], labels)
    free = [tokenizer(c, add_special_tokens=False)["input_ids"] if c else []
            for c in ("N/A", "", "[MASK]")]
    prior = _reference_scores(tiny, [[bos, *opening, *f, *closing] for f in free], labels)
    expected = scores - prior.exp().mean(0).log()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_zero_shot_without_calibration_and_its_skips(tiny: Path, source_path: Path,
                                                      target: TargetData,
                                                      tmp_path: Path) -> None:
    result = run_replicates("zero_shot", _cfg("zero_shot", calibrate=False), source_path,
                            target, CPU, tmp_path, {"arch": f"llm:{tiny}", "width": 0},
                            SELECTION)
    model, _ = load_checkpoint(tmp_path / "model.pt")
    assert result["prompt"]["calibrated"] is False
    assert torch.equal(model.backbone.log_prior, torch.zeros(2))
    # a backbone without next-token logits cannot be prompted
    reason = get("zero_shot").skip_reason({"arch": "hf:x"}, None)
    assert reason and "language-model head" in reason
    with pytest.raises(ParamsError, match=r"transfer.zero_shot.template: needs exactly one"):
        _cfg("zero_shot", template="no slot")


def test_label_words_must_be_the_classes_and_single_tokens(tokenizer, tiny: Path,
                                                            source_path: Path,
                                                            target: TargetData,
                                                            tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"transfer.zero_shot.label_words: 'good film' is 2"):
        encode_template(tokenizer, TEMPLATE, ["bad", "good film"], "", key="transfer.zero_shot")
    cfg = _cfg("zero_shot", label_words={"neg": "bad", "pos": "good film"})
    with pytest.raises(ParamsError, match=r"^transfer.zero_shot.label_words: 'good film' is 2 "
                                          r"tokens"):  # at the stage's setup, before any run
        run_replicates("zero_shot", cfg, source_path, target, CPU, tmp_path,
                       {"arch": f"llm:{tiny}", "width": 0}, SELECTION)
    from transferlab.adapt.strategies._prompting import label_words

    with pytest.raises(ParamsError, match=r"label_words: needs exactly the target's classes"):
        label_words(_cfg("zero_shot", label_words={"neg": "bad", "good": "good"}), CLASSES,
                    "transfer.zero_shot")


# -------------------------------------------------------------------------------- in_context
def test_prefix_cache_gives_the_same_scores_as_recomputing(tiny: Path, tokenizer,
                                                           source_path: Path,
                                                           target: TargetData) -> None:
    """An in-context prompt: with the prefix's key/value cache (computed once, reused for
    every batch) and without it (the prefix run again with each text), the same scores and
    predictions; both equal transformers' model on the whole prompt."""
    template = encode_template(tokenizer, TEMPLATE, ["bad", "good"], "\n\n")
    demos = [(text_row, int(target.pool_y[i])) for i, text_row in
             ((i, [int(t) for t, m in zip(*target.pool_x[i].tolist(), strict=True)
                   if m and t not in template.drop]) for i in (0, 3, 5))]
    prompt = template.in_context(demos)
    source, _ = load_checkpoint(source_path)
    model = prompted_model(source, prompt, template.content_free)
    cached = predict_logits(model, target.val_x, CPU, batch_size=4)  # 3 batches, one prefix
    assert model.backbone._prefix is not None and model.backbone._prefix.length == len(
        prompt.prefix)
    model.backbone.use_cache = False
    recomputed = predict_logits(model, target.val_x, CPU)
    torch.testing.assert_close(cached, recomputed, atol=1e-5, rtol=1e-5)
    assert torch.equal(cached.argmax(1), recomputed.argmax(1))
    texts = [[int(t) for t, m in zip(*row.tolist(), strict=True) if m and t not in template.drop]
             for row in target.val_x]
    reference = _reference_scores(tiny, [[*prompt.prefix, *t, *prompt.suffix] for t in texts],
                                  list(prompt.labels))
    torch.testing.assert_close(cached, reference - model.backbone.log_prior,
                               atol=1e-5, rtol=1e-5)


def test_demonstrations_per_class_and_order() -> None:
    labels = torch.tensor([0, 1, 0, 1, 0, 1, 1])
    g = torch.Generator().manual_seed(0)
    rows = demonstrations(labels, 2, "interleaved", g)
    assert [int(labels[r]) for r in rows] == [0, 1, 0, 1] and len(set(rows)) == 4
    shuffled = demonstrations(labels, 3, "shuffled", torch.Generator().manual_seed(0))
    assert sorted(int(labels[r]) for r in shuffled) == [0, 0, 0, 1, 1, 1]
    again = demonstrations(labels, 3, "shuffled", torch.Generator().manual_seed(0))
    assert shuffled == again  # drawn from the generator alone


def test_in_context_end_to_end_shows_only_budget_texts(tiny: Path, tokenizer,
                                                        source_path: Path, target: TargetData,
                                                        tmp_path: Path) -> None:
    """Every replicate's checkpoint rebuilds its prompted model; its demonstrations are texts of
    that replicate's budget, ``shots`` per class; the order is chosen on held-out labels."""
    cfg = _cfg("in_context", shots=1, search={"order": ["shuffled", "interleaved"]})
    result = run_replicates("in_context", cfg, source_path, target, CPU, tmp_path,
                            {"arch": f"llm:{tiny}", "width": 0}, SELECTION)
    assert result["skipped"] is None and len(result["runs"]) == 4
    template = encode_template(tokenizer, TEMPLATE, ["bad", "good"], "\n\n")
    for run in result["runs"]:
        assert run["trainable_params"] == 0 and run["steps"] == 0
        assert len(run["search"]) == 2  # both orders scored on the held-out labels
        model, config = load_checkpoint(tmp_path / run["checkpoint"])
        prefix = config["prompt"]["prefix"]
        budget = target.budgets[str(run["seed"])][run["budget"]]
        shown = _shown_texts(prefix, template)
        assert len(shown) == 2  # one per class
        budget_texts = [[int(t) for t, m in zip(*target.pool_x[i].tolist(), strict=True)
                         if m and t not in template.drop] for i in budget]
        assert all(text in budget_texts for text in shown)
        logits = predict_logits(model, target.val_x, CPU)
        assert logits.shape == (len(target.val_x), 2) and torch.isfinite(logits).all()


def _shown_texts(prefix: list[int], template) -> list[list[int]]:
    """The demonstrations' texts in a prompt prefix: what stands between each template
    opening and the closing that a label word follows."""
    out, body = [], prefix[len(template.bos):]
    opening, closing = list(template.opening), list(template.closing)
    while body[:len(opening)] == opening:
        body = body[len(opening):]
        end = next((i for i in range(len(body)) if body[i:i + len(closing)] == closing
                    and i + len(closing) < len(body)
                    and body[i + len(closing)] in template.labels), None)
        if end is None:
            break
        out.append(body[:end])
        body = body[end + len(closing) + 1 + len(template.separator):]
    return out


# ------------------------------------------- the trained strategies on the causal LM's blocks
@pytest.mark.parametrize("name", ["linear_probe", "lora", "llrd"])
def test_trained_strategies_run_on_the_causal_lm(name: str, tiny: Path, source_path: Path,
                                                 target: TargetData, tmp_path: Path) -> None:
    """A probe on the pooled states, LoRA on the decoder's linear layers and per-block learning
    rates run through the shared loop on an ``llm:`` source, as on the other backbones."""
    cfg = from_dict(get(name).Params, {"epochs": 2, "batch_size": 8, "augment": False},
                    f"transfer.{name}")
    result = run_replicates(name, cfg, source_path, target, CPU, tmp_path,
                            {"arch": f"llm:{tiny}", "width": 0}, SELECTION)
    assert result["skipped"] is None and len(result["runs"]) == 4
    source, _ = load_checkpoint(source_path)
    model, _ = load_checkpoint(tmp_path / result["runs"][0]["checkpoint"])
    moved = {n for n, p in model.backbone.state_dict().items()
             if not torch.equal(p, source.backbone.state_dict()[n])}
    if name == "linear_probe":
        assert not moved  # the causal LM stays as it was
    else:
        assert any(n.startswith("layer") for n in moved), moved
    assert predict_logits(model, target.val_x, CPU).shape == (len(target.val_x), 2)


def test_scratch_model_config_trains_a_smaller_lm_of_the_family(tiny: Path, target: TargetData,
                                                               tmp_path: Path) -> None:
    """scratch with ``model_config``: every replicate trains a 1-layer, 16-wide LM on the same
    token ids from random weights, and its checkpoint rebuilds that model."""
    cfg = from_dict(get("scratch").Params, {
        "epochs": 2, "batch_size": 8, "augment": False,
        "model_config": {"num_hidden_layers": 1, "hidden_size": 16, "intermediate_size": 24}},
        "transfer.scratch")
    result = run_replicates("scratch", cfg, None, target, CPU, tmp_path,
                            {"arch": f"llm:{tiny}", "width": 0}, SELECTION)
    assert result["skipped"] is None and len(result["runs"]) == 4
    model, config = load_checkpoint(tmp_path / result["runs"][0]["checkpoint"])
    assert config["hf_config"]["num_hidden_layers"] == 1 and model.feature_dim == 16
    assert predict_logits(model, target.val_x, CPU).shape == (len(target.val_x), 2)


# ------------------------------------------------ prompt-based fine-tuning (LM-BFF) with LoRA
def test_lora_prompt_starts_at_the_zero_shot_classifier_and_trains_the_decoder_only(
        tiny: Path, source_path: Path, target: TargetData, tmp_path: Path) -> None:
    """``lora_prompt``: before any step the adapted model is the uncalibrated zero-shot
    classifier (LoRA's B is zero); training moves only the decoder blocks' linear layers (the
    embeddings, final norm and LM head stay the source's); the merged checkpoint holds the moved
    LM and scores every text as the model did when it was saved."""
    from transferlab.adapt.strategies import lora_prompt

    cfg = _cfg("lora_prompt", epochs=3, batch_size=4, lr=0.01)
    source, _ = load_checkpoint(source_path)
    template = encode_template(load_causal_tokenizer(f"llm:{tiny}"), TEMPLATE,
                               [WORDS[c] for c in CLASSES], "", (), "transfer.lora_prompt")
    zero = prompted_model(load_checkpoint(source_path)[0], template.zero_shot(), None)
    start = prompted_model(load_checkpoint(source_path)[0], template.zero_shot(), None)
    net = lora_prompt.wrap(start, cfg.rank, cfg.alpha, seed=0)
    assert all(n.startswith("backbone.lm.layer") for n in lora_prompt.decoder_linears(start))
    net.eval()
    assert torch.allclose(net(target.val_x), predict_logits(zero, target.val_x, CPU), atol=1e-6)

    saved = {}
    result = run_replicates("lora_prompt", cfg, source_path, target, CPU, tmp_path,
                            {"arch": f"llm:{tiny}", "width": 0}, SELECTION,
                            on_result=lambda record, model, _: saved.setdefault(
                                record["checkpoint"], predict_logits(model, target.val_x, CPU)))
    assert result["skipped"] is None and len(result["runs"]) == 4 and saved
    lm = source.backbone.state_dict()
    for checkpoint, logits in saved.items():
        model, _ = load_checkpoint(tmp_path / checkpoint)
        assert torch.equal(predict_logits(model, target.val_x, CPU), logits)
        state = model.backbone.lm.state_dict()
        moved = {n for n, t in state.items() if not torch.equal(t, lm[n])}
        assert moved and all(n.startswith("layer") for n in moved), moved
        assert not any(n.endswith(".bias") and "norm" in n for n in moved)
        assert torch.equal(model.head.weight, torch.eye(2))  # the label words are the head
    # what transferred compares the LM behind the prompt with the source's, block by block:
    # the embeddings kept (drift 0, CKA 1), the decoder blocks moved
    from transferlab.evaluation.similarity import study_similarity

    out = study_similarity([{**result, "source": "lm", "strategy": "lora_prompt",
                             "folder": tmp_path}], {"lm": source_path}, target.pool_x[:6])
    assert out["not_compared"] == [] and set(out["curves"]) == {"lm/lora_prompt"}
    for by_block in out["curves"]["lm/lora_prompt"].values():
        assert by_block["embeddings"]["drift"]["mean"] == 0.0
        assert by_block["embeddings"]["cka"]["mean"] == pytest.approx(1.0)
        assert any(e["drift"]["mean"] > 0 for b, e in by_block.items()
                   if b.startswith("layer"))


def test_lora_prompt_refuses_a_head() -> None:
    with pytest.raises(ParamsError, match=r"transfer\.lora_prompt\.head"):
        _cfg("lora_prompt", head="mlp")


# ------------------------------------------------------------------------ prompted checkpoints
@pytest.mark.parametrize("name", ["zero_shot", "in_context"])
def test_a_prompted_checkpoint_records_its_weights_instead_of_holding_them(
        name: str, source_path: Path, tiny: Path, target: TargetData, tmp_path: Path) -> None:
    """A prompted model trains nothing: its checkpoint holds the prompt, the calibration prior
    and the head, not the causal LM (whose init and sha256 it records); loading it scores every
    text exactly as the model did when it was saved."""
    saved = {}
    cfg = _cfg(name) if name == "zero_shot" else _cfg(name, shots=1)
    result = run_replicates(name, cfg, source_path, target, CPU, tmp_path,
                            {"arch": f"llm:{tiny}", "width": 0}, SELECTION,
                            on_result=lambda record, model, _: saved.setdefault(
                                record["checkpoint"], predict_logits(model, target.val_x, CPU)))
    assert result["skipped"] is None and saved
    lm_bytes = sum(t.numel() * t.element_size()
                   for t in load_checkpoint(source_path)[0].backbone.state_dict().values())
    for checkpoint, logits in saved.items():
        path = tmp_path / checkpoint
        stored = torch.load(path, weights_only=True)
        assert stored["config"]["weights"]["init"] == f"llm:{tiny}"
        assert stored["config"]["weights"]["module"] == "backbone.lm"
        assert not [k for k in stored["state_dict"] if k.startswith("backbone.lm.")]
        assert "backbone.log_prior" in stored["state_dict"]
        assert path.stat().st_size < min(1_000_000, lm_bytes // 2)
        model, _ = load_checkpoint(path)
        assert torch.equal(predict_logits(model, target.val_x, CPU), logits)


def test_a_checkpoint_whose_lm_moved_keeps_its_weights(source_path: Path, tiny: Path,
                                                       target: TargetData,
                                                       tmp_path: Path) -> None:
    """LoRA moves the LM: its checkpoint holds every weight and records no init to rebuild
    from; a recorded sha256 that the init no longer gives is an error naming the checkpoint."""
    cfg = from_dict(get("lora").Params, {"epochs": 1, "batch_size": 8, "augment": False},
                    "transfer.lora")
    (tmp_path / "lora").mkdir()
    result = run_replicates("lora", cfg, source_path, target, CPU, tmp_path / "lora",
                            {"arch": f"llm:{tiny}", "width": 0}, SELECTION)
    stored = torch.load(tmp_path / "lora" / result["runs"][0]["checkpoint"], weights_only=True)
    assert "weights" not in stored["config"]
    assert any(k.startswith("backbone.layer0.") for k in stored["state_dict"])

    run_replicates("zero_shot", _cfg("zero_shot"), source_path, target, CPU, tmp_path,
                   {"arch": f"llm:{tiny}", "width": 0}, SELECTION)
    stored = torch.load(tmp_path / "model.pt", weights_only=True)
    stored["config"]["weights"]["sha256"] = "0" * 64
    torch.save(stored, tmp_path / "altered.pt")
    with pytest.raises(ValueError, match=r"altered\.pt.*sha256 mismatch"):
        load_checkpoint(tmp_path / "altered.pt")


def test_what_transferred_skips_a_prompted_network_and_compares_a_probe(
        tiny: Path, source_path: Path, target: TargetData, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The evaluate stage's per-block comparison on a causal LM: the prompted network (the LM
    behind a prompt, its blocks not the source's) is named as not compared, and a linear probe
    on the same LM keeps every block, CKA 1 and drift 0, without a pass of the source over the
    probe (no backbone moved: nothing to compare the source's features with)."""
    from transferlab.evaluation import similarity
    from transferlab.evaluation.similarity import study_similarity

    passes = []
    monkeypatch.setattr(similarity, "source_grams",
                        lambda *a, **k: passes.append(a) or pytest.fail("a source pass"))

    arch = {"arch": f"llm:{tiny}", "width": 0}
    runs = []
    for strategy in ("zero_shot", "linear_probe"):
        folder = tmp_path / strategy
        folder.mkdir()
        cfg = _cfg("zero_shot") if strategy == "zero_shot" else from_dict(
            get(strategy).Params, {"epochs": 2}, "transfer.linear_probe")
        result = run_replicates(strategy, cfg, source_path, target, CPU, folder, arch,
                                SELECTION)
        runs.append({**result, "source": "lm", "strategy": strategy, "folder": folder})
    out = study_similarity(runs, {"lm": source_path}, target.pool_x[:6])
    assert out["not_compared"] == ["lm/zero_shot"]
    assert set(out["curves"]) == {"lm/linear_probe"}
    assert out["unmoved"] == {"lm/linear_probe": sorted(out["curves"]["lm/linear_probe"],
                                                        key=int)}
    assert not passes
    # the probe's checkpoints were settled from their config (the source's LM, restored from
    # the same init and digest): the same numbers as building and comparing each network
    from transferlab.models.nets import checkpoint_config

    probe_ckpt = runs[1]["folder"] / runs[1]["runs"][0]["checkpoint"]
    assert similarity._lm_record(checkpoint_config(source_path)) is not None
    assert similarity._lm_record(checkpoint_config(probe_ckpt)) == similarity._lm_record(
        checkpoint_config(source_path))
    monkeypatch.setattr(similarity, "_lm_record", lambda config: None)
    built = study_similarity(runs, {"lm": source_path}, target.pool_x[:6])
    assert built == out
    for by_block in out["curves"]["lm/linear_probe"].values():
        assert all(e["cka"]["mean"] == 1.0 and e["drift"]["mean"] == 0.0
                   for e in by_block.values() if isinstance(e, dict))


def test_shared_backbone_keys_tell_prompts_apart_and_stand_in_for_a_restored_lm(
        tiny: Path, source_path: Path, target: TargetData, tmp_path: Path) -> None:
    """evaluate's backbone sharing: two prompted models on the same LM weights but with other
    prompts (uncalibrated, so their states are equal) get other keys; a checkpoint restored
    from its init is keyed by its recorded digest, and its shared predictions are the model's
    own, bit for bit."""
    from transferlab.evaluation.evaluate import _SharedBackbones

    template = encode_template(load_causal_tokenizer(f"llm:{tiny}"), TEMPLATE,
                               [WORDS[c] for c in CLASSES], "\n\n", (), "transfer.in_context")
    demo = [(list(template.opening), 0)]
    plain = prompted_model(load_checkpoint(source_path)[0], template.zero_shot(), None)
    shown = prompted_model(load_checkpoint(source_path)[0], template.in_context(demo), None)
    shared = _SharedBackbones(CPU)
    assert shared.key(plain) != shared.key(shown)

    run_replicates("zero_shot", _cfg("zero_shot"), source_path, target, CPU, tmp_path,
                   {"arch": f"llm:{tiny}", "width": 0}, SELECTION)
    first, _ = load_checkpoint(tmp_path / "model.pt")
    again, _ = load_checkpoint(tmp_path / "model.pt")
    assert first.arch_config["weights"]["module"] == "backbone.lm"
    assert shared.key(first) == shared.key(again)
    assert np.array_equal(shared.proba(first, "val", target.val_x),
                          predict_proba(again, target.val_x, CPU))
