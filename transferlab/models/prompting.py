"""A causal LM as a classifier through a prompt: each class is a label word, and a text's class
scores are the label words' log-probabilities as the next token after
``<prefix> <text> <suffix>``.

The prefix is the same for every text (a template's opening, and for in-context learning the
demonstrations before it), so its key/value cache is computed once
(:meth:`~transferlab.models.causal_lm.CausalLMBackbone.prefix`) and every batch of texts runs
after it. Contextual calibration (Zhao, Wallace, Feng, Klein and Singh 2021, "Calibrate Before
Use: Improving Few-Shot Performance of Language Models") divides the label words' renormalised
probabilities by those of content-free inputs ("N/A", "", "[MASK]") in the same prompt: in log
space, the content-free log-prior is subtracted (:func:`calibrated`).

Label words must be single tokens (the one next-token distribution scores them all).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from transferlab.models.causal_lm import CausalLMBackbone, Prefix, by_length, compact

CONTENT_FREE = ("N/A", "", "[MASK]")  # Zhao et al. 2021's content-free inputs


@dataclass(frozen=True)
class Prompt:
    """A prompt as token ids: ``prefix`` + text + ``suffix``, then one label token per class."""

    prefix: tuple[int, ...]  # before each text: BOS, demonstrations, the template's opening
    suffix: tuple[int, ...]  # after each text, before the label word
    labels: tuple[int, ...]  # the label word's token of each class, in class order
    drop: tuple[int, ...] = ()  # special tokens stripped from the stored texts (BOS, EOS, ...)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Prompt:
        return cls(**{k: tuple(int(i) for i in v) for k, v in data.items()})


def calibrated(label_log_probs: torch.Tensor, content_free: torch.Tensor | None
               ) -> torch.Tensor:
    """Contextual calibration in log space.

    Args:
        label_log_probs: (B, C) log-probabilities of the label words, renormalised over them.
        content_free: (K, C) the same for K content-free inputs, or None (no calibration).
    Returns:
        (B, C) ``log p(c | x) - log mean_k p(c | content-free k)``: the logits whose softmax is
        Zhao et al.'s ``softmax(W p)`` with ``W = diag(mean_k p_cf)^-1`` (b = 0).
    """
    if content_free is None:
        return label_log_probs
    return label_log_probs - content_free_prior(content_free)


def content_free_prior(content_free: torch.Tensor) -> torch.Tensor:
    """(K, C) content-free label log-probabilities -> (C,) the log of their mean probability
    (Zhao et al. average the probabilities of the content-free inputs, not their logs)."""
    return content_free.exp().mean(0).log()


class PromptedLM(nn.Module):
    """(B, 2, L) ids and mask -> (B, C) calibrated label-word log-probabilities.

    ``log_prior`` (a buffer, zeros until :meth:`calibrate`) is subtracted. With ``use_cache``
    (the default) the prefix's key/value cache is computed on the first call in eval mode and
    reused for every later batch until the module is moved or its mode set again (so once per
    :func:`~transferlab.training.loop.predict_logits` pass, which does both: the weights it
    was computed from cannot have changed); without it every call runs the prefix again with
    each text (the reference the cache is checked against).
    """

    def __init__(self, lm: CausalLMBackbone, prompt: Prompt) -> None:
        super().__init__()
        if not prompt.prefix and not prompt.suffix:
            raise ValueError("a prompt needs a prefix or a suffix: an empty text leaves "
                             "nothing to predict the label word after")
        self.lm = lm
        self.prompt = prompt
        self.num_classes = len(prompt.labels)
        self.register_buffer("log_prior", torch.zeros(self.num_classes))
        self.use_cache = True
        self._prefix: Prefix | None = None

    def train(self, mode: bool = True) -> PromptedLM:
        self._prefix = None
        return super().train(mode)

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> PromptedLM:
        self._prefix = None  # moved or cast: the cache is recomputed where the weights are
        return super()._apply(fn, *args, **kwargs)

    def label_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 2, L) -> (B, C) label-word log-probabilities, renormalised over the label words,
        uncalibrated (on CPU in chunks of texts of like length,
        :func:`~transferlab.models.causal_lm.by_length`)."""
        return by_length(self._label_log_probs, x)

    def _label_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        ids, mask = x[:, 0], x[:, 1].long()
        if self.prompt.drop:
            mask = mask * ~torch.isin(ids, torch.tensor(self.prompt.drop, device=ids.device))
        ids, mask = compact(ids, mask, pad_id=0)
        ids, mask, last = self._with_suffix(ids, mask)
        prefix = torch.tensor(self.prompt.prefix, dtype=ids.dtype, device=ids.device)
        if self.use_cache and len(prefix) and not self.training:
            if self._prefix is None:
                self._prefix = self.lm.prefix(prefix)
            hidden = self.lm.token_states(ids, mask, self._prefix)
        else:
            ids = torch.cat([prefix.expand(len(ids), -1), ids], 1)
            mask = torch.cat([mask.new_ones(len(ids), len(prefix)), mask], 1)
            hidden = self.lm.token_states(ids, mask)
            last = last + len(prefix)
        logits = self.lm.logits(hidden[torch.arange(len(ids), device=ids.device), last])
        label = torch.log_softmax(logits.float(), -1)[:, list(self.prompt.labels)]  # (B, C)
        return label - torch.logsumexp(label, 1, keepdim=True)

    def _with_suffix(self, ids: torch.Tensor, mask: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Right-padded texts (B, L) with the suffix right after each: (ids, mask, index of each
        row's last token)."""
        suffix = torch.tensor(self.prompt.suffix, dtype=ids.dtype, device=ids.device)
        lengths = mask.sum(1, keepdim=True)  # (B, 1)
        cols = torch.arange(ids.shape[1] + len(suffix), device=ids.device)[None]
        text = ids.gather(1, cols.clamp(max=ids.shape[1] - 1).expand(len(ids), -1))
        if len(suffix):
            after = suffix[(cols - lengths).clamp(0, len(suffix) - 1)]
            text = torch.where(cols < lengths, text, after)
        out_mask = (cols < lengths + len(suffix)).long()
        text = torch.where(out_mask.bool(), text, torch.zeros_like(text))
        return text, out_mask, lengths[:, 0] + len(suffix) - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 2, L) -> (B, C) calibrated log-probabilities (the class logits)."""
        return self.label_log_probs(x) - self.log_prior

    @torch.no_grad()
    def calibrate(self, content_free: list[list[int]]) -> torch.Tensor:
        """Set ``log_prior`` from content-free inputs given as token ids (an empty list is the
        empty text). Returns their (K, C) label log-probabilities."""
        width = max([1, *(len(c) for c in content_free)])
        x = torch.zeros(len(content_free), 2, width, dtype=torch.long)
        for i, ids in enumerate(content_free):
            x[i, 0, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            x[i, 1, :len(ids)] = 1
        device = self.log_prior.device
        free = self.label_log_probs(x.to(device))
        self.log_prior.copy_(content_free_prior(free))
        return free


@dataclass(frozen=True)
class Template:
    """A prompt template as token ids, from :func:`encode_template`."""

    bos: tuple[int, ...]  # the tokenizer's BOS where it starts every sequence with one
    opening: tuple[int, ...]  # the template before {text}
    closing: tuple[int, ...]  # the template after {text}
    labels: tuple[int, ...]  # one token per class
    separator: tuple[int, ...]  # between in-context demonstrations
    content_free: tuple[tuple[int, ...], ...]
    drop: tuple[int, ...]  # the tokenizer's BOS, EOS, CLS and SEP

    def zero_shot(self) -> Prompt:
        return Prompt(self.bos + self.opening, self.closing, self.labels, self.drop)

    def in_context(self, demos: list[tuple[list[int], int]]) -> Prompt:
        """The prompt with demonstrations (text ids, class index) before the query, in order."""
        prefix = list(self.bos)
        for text, label in demos:
            prefix += [*self.opening, *text, *self.closing, self.labels[label], *self.separator]
        return Prompt(tuple(prefix + list(self.opening)), self.closing, self.labels, self.drop)


def encode_template(tokenizer: Any, template: str, label_words: list[str], separator: str,
                    content_free: tuple[str, ...] = CONTENT_FREE, key: str = "transfer"
                    ) -> Template:
    """Token ids of a template with one ``{text}``, its label words (each one token) and the
    content-free inputs.

    Raises:
        ValueError: naming ``<key>.template`` or ``<key>.label_words`` and what is wrong.
    """
    if template.count("{text}") != 1:
        raise ValueError(f"{key}.template: needs exactly one {{text}}, got {template!r}")
    opening, closing = template.split("{text}")

    def encode(text: str) -> tuple[int, ...]:
        return tuple(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else ()

    labels = []
    for word in label_words:
        ids = encode(word)
        if len(ids) != 1:
            raise ValueError(f"{key}.label_words: {word!r} is {len(ids)} tokens "
                             f"{list(ids)}; each label word must be one token")
        labels.append(ids[0])
    if len(set(labels)) != len(labels):
        raise ValueError(f"{key}.label_words: two classes share a token: {label_words}")
    bos_id = getattr(tokenizer, "bos_token_id", None)
    starts = tokenizer("a")["input_ids"]
    bos = (bos_id,) if bos_id is not None and starts and starts[0] == bos_id else ()
    # the tokens a tokenizer adds around a text (not [UNK]: an unknown word is content)
    special = tuple(sorted({int(i) for i in (getattr(tokenizer, f"{name}_token_id", None)
                                             for name in ("bos", "eos", "cls", "sep"))
                            if i is not None}))
    return Template(bos, encode(opening), encode(closing), tuple(labels), encode(separator),
                    tuple(encode(c) for c in content_free), special)
