"""A tiny causal LM written locally: a 2-layer Llama with a word-level tokenizer, saved as a
Hugging Face checkpoint directory. Nothing is downloaded, so tests of the LLM path run in
seconds and offline.

The vocabulary is the text fixtures' words (:mod:`tests.text_fixtures`) plus a prompt's words;
every word is one token, so label words such as ``good`` and ``bad`` are single tokens.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tests.text_fixtures import FILLER, NEGATIVE, POSITIVE

SPECIAL = ["<pad>", "<unk>", "<s>", "</s>"]
PROMPT = ["Review", "Sentiment", ":", "N/A", "[MASK]", "\n", "positive", "negative"]
VOCAB = [*SPECIAL, *POSITIVE, *NEGATIVE, *FILLER, *PROMPT]


def write_tiny_causal_lm(folder: Path, tied: bool = True, seed: int = 0) -> Path:
    """A 2-layer, 32-wide Llama (4 heads, 2 key/value heads) and its tokenizer in ``folder``.

    The tokenizer splits on whitespace and punctuation (a newline is a token of its own),
    adds ``<s>`` before every text and pads with ``<pad>`` on the right."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {word: i for i, word in enumerate(VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex("[ \t]+"), behavior="removed"),
        pre_tokenizers.Split("\n", behavior="isolated"),
        pre_tokenizers.Split(":", behavior="isolated")])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[
        ("<s>", vocab["<s>"])])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                            bos_token="<s>", eos_token="</s>").save_pretrained(folder)
    config = LlamaConfig(vocab_size=len(VOCAB), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, tie_word_embeddings=tied,
                         pad_token_id=0, bos_token_id=2, eos_token_id=3)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        LlamaForCausalLM(config).save_pretrained(folder)
    return folder
