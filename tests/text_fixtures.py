"""Text fixtures written locally: a tiny BERT checkpoint and small labelled CSV corpora.

Nothing is downloaded: the checkpoint's vocabulary, config and weights are written here, so
tests of the text path run in seconds and offline.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from tests.conftest import scenario_params

POSITIVE = ["good", "great", "fun", "moving", "brilliant", "charming"]
NEGATIVE = ["bad", "awful", "dull", "boring", "clumsy", "tedious"]
FILLER = ["the", "film", "movie", "was", "is", "a", "very", "plot", "acting", "and", "story",
          "it", "but", "quite", "really", "cast", "ending", "speech", "vote", "tax", "law"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *POSITIVE, *NEGATIVE, *FILLER]


def write_tiny_checkpoint(folder: Path, normalize: bool = True) -> Path:
    """A 2-layer, 32-wide BERT with a word-level vocabulary, saved as a Hugging Face checkpoint
    directory with a sentence-transformers pooling config (mean pooling, then ``Normalize``)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    vocab = {word: i for i, word in enumerate(VOCAB)}
    BertTokenizerFast(vocab=vocab, do_lower_case=True).save_pretrained(folder)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                        pad_token_id=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    modules = [{"idx": 0, "name": "0", "path": "",
                "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling",
                "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True}))
    return folder


def sentiment_rows(n_per_class: int, seed: int) -> list[tuple[str, str]]:
    """(text, label) rows: a sentiment word among filler words decides ``pos`` / ``neg``."""
    rng = random.Random(seed)
    rows = []
    for label, words in (("pos", POSITIVE), ("neg", NEGATIVE)):
        for _ in range(n_per_class):
            text = rng.sample(FILLER, rng.randint(3, 9)) + [rng.choice(words)]
            rng.shuffle(text)
            rows.append((" ".join(text), label))
    rng.shuffle(rows)
    return rows


def write_csv(path: Path, rows: list[tuple[str, str]], text: str = "text",
              label: str = "label") -> Path:
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=[text, label]).to_csv(path, index=False)
    return path


def text_params(checkpoint: Path, data: Path) -> dict:
    """``scenarios/text.yaml`` shrunk to the tiny checkpoint and CSV corpora in ``data``:
    2 seeds, budgets 2 and 4, 2 epochs, tracking off, the compatible GEMM branch."""
    p = scenario_params("text")
    hf = f"hf:{checkpoint}"
    # compatible: MKL's avx2 branch exists on Intel CPUs only (cpu_pinning.set_gemm_branch)
    p["common"].update(seeds=[0, 1], device="cpu", gemm_branch="compatible")
    p["tracking"]["enabled"] = False
    p["prepare"].update(tokenizer=hf, max_length=16, budgets=[2, 4], test_per_class=20,
                        val_per_class=4)
    p["prepare"]["target"] = {"kind": "csv", "path": str(data / "target.csv"),
                              "text_column": "review", "label_column": "sentiment"}
    p["prepare"]["sources"] = {
        "pretrained": {"kind": "none", "init": hf},
        "intermediate": {"kind": "csv", "path": str(data / "source.csv"), "text_column": "text",
                         "label_column": "label", "init": hf},
        "random_init": {"kind": "none"},
    }
    p["grid"]["methods"] = {"sources": ["pretrained"], "strategies": ["lora", "adabn"]}
    p["pretrain"].update(arch=hf, epochs=2, batch_size=16)
    for name, block in p["transfer"].items():
        if "epochs" in block:
            block["epochs"] = 30 if name == "linear_probe" else 2
    return p
