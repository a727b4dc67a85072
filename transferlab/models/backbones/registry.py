"""The backbone registry, in the manner of the strategy registry: each backbone module registers
a :class:`Backbone` under its name (or, for a family such as ``hf:<checkpoint>``, a prefix);
``build_model``, ``load_checkpoint`` and the params check look backbones up here.

A backbone builds the feature extractor of a :class:`~transferlab.models.nets.TransferNet`: an
``nn.Sequential`` of named blocks ending in a pooled feature vector, its width, and how many
input channels its :class:`~transferlab.models.nets.Normalize` feeds it (None: token ids pass
unchanged, a text encoder).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn

from transferlab.config.typed import fail

_REGISTRY: dict[str, Backbone] = {}


@dataclass
class Built:
    """What :meth:`Backbone.build` returns."""

    blocks: nn.Sequential  # named blocks, the last one pooling to (B, dim)
    dim: int
    channels: int | None  # input channels after Normalize; None: no normalisation (text)
    arch_config: dict[str, Any] = field(default_factory=dict)  # saved with a checkpoint


class Backbone:
    """Base class of a backbone family member.

    ``name`` is the architecture as ``pretrain.arch`` writes it; with ``prefix = True`` it is a
    prefix (``hf:``) and the rest of ``pretrain.arch`` names the checkpoint.
    """

    name: ClassVar[str] = ""
    prefix: ClassVar[bool] = False
    modality: ClassVar[str] = "image"  # the data it reads (transferlab.data.modalities)
    # what it offers that some strategies need (transferlab.models.nets.TRAITS)
    traits: ClassVar[frozenset[str]] = frozenset({"batchnorm", "channel_maps"})
    usage: ClassVar[str] = ""  # how an error lists a prefix family, e.g. "hf:<checkpoint ...>"
    rank: ClassVar[int] = 100  # order in error messages
    # the pooled features pretrain.pooling may choose, the default first (empty: not a knob)
    poolings: ClassVar[tuple[str, ...]] = ()

    def check(self, key: str, arch: str) -> None:
        """Raise ParamsError (naming ``key``) when ``arch`` is not a valid member."""

    def arch_config(self, arch: str, recorded: dict[str, Any] | None,
                    pooling: str | None = None) -> dict[str, Any] | None:
        """What the build needs beyond the name, read before the seeded build (no RNG use):
        ``recorded`` is what a checkpoint saved (None for a new model); ``pooling`` is
        ``pretrain.pooling`` (one of :attr:`poolings`; None: the default)."""
        return recorded

    def build(self, arch: str, width: int, arch_config: dict[str, Any] | None) -> Built:
        raise NotImplementedError

    def resize(self, key: str, arch: str, arch_config: dict[str, Any] | None,
               overrides: dict[str, Any]) -> dict[str, Any] | None:
        """``arch_config`` with the model config's keys in ``overrides`` changed (a smaller
        model of the same family, e.g. scratch's ``model_config``); ParamsError naming ``key``
        where this backbone has no such config or a key is not one of it."""
        fail(key, f"{arch!r} has no model config to override (an hf: or llm: architecture has "
                  "one; small_cnn's size is pretrain.width)")
        return arch_config


class HFConfigBackbone(Backbone):
    """A backbone whose ``arch_config["hf_config"]`` is a transformers config as a dict: its
    :meth:`resize` changes that config's keys."""

    def resize(self, key: str, arch: str, arch_config: dict[str, Any] | None,
               overrides: dict[str, Any]) -> dict[str, Any] | None:
        if not overrides:
            return arch_config
        config = dict(arch_config["hf_config"])
        unknown = sorted(set(overrides) - set(config))
        if unknown:
            valid = ", ".join(k for k in sorted(config) if isinstance(config[k], (int, float)))
            fail(key, f"{', '.join(map(repr, unknown))} not in the model config of {arch!r}; "
                      f"its numeric keys: {valid}")
        for name, value in overrides.items():
            if type(value) is not type(config[name]):
                fail(f"{key}.{name}", f"expected {type(config[name]).__name__} like the model "
                                      f"config's {config[name]!r}, got {value!r}")
        return {**arch_config, "hf_config": {**config, **overrides}}


def register(cls: type[Backbone]) -> type[Backbone]:
    """Class decorator: add a backbone to the registry under ``cls.name``."""
    if not cls.name or cls.name in _REGISTRY:
        raise ValueError(f"backbone name {cls.name!r} is empty or registered twice")
    _REGISTRY[cls.name] = cls()
    return cls


def unregister(name: str) -> None:
    """Remove a backbone (tests that register a toy one clean up with this)."""
    _REGISTRY.pop(name, None)


def names(modality: str | None = None) -> tuple[str, ...]:
    """Every registered architecture name (prefix families as their usage), rank order; with
    ``modality``, those that read it."""
    ordered = sorted((b for b in _REGISTRY.values() if modality in (None, b.modality)),
                     key=lambda b: (b.rank, b.name))
    return tuple(b.usage or b.name if b.prefix else b.name for b in ordered)


def find(arch: str) -> Backbone | None:
    if arch in _REGISTRY and not _REGISTRY[arch].prefix:
        return _REGISTRY[arch]
    for backbone in _REGISTRY.values():
        if backbone.prefix and arch.startswith(backbone.name):
            return backbone
    return None


def expected() -> str:
    ordered = sorted(_REGISTRY.values(), key=lambda b: (b.rank, b.name))
    exact = [b.name for b in ordered if not b.prefix]
    families = [b.usage or b.name for b in ordered if b.prefix]
    return ", ".join(exact) + "".join(f", or {f}" for f in families)


def get(arch: str, key: str = "pretrain.arch") -> Backbone:
    """The backbone that builds ``arch``.

    Raises:
        ParamsError: ``<key>: unknown architecture ...; expected one of <registered names>``.
    """
    backbone = find(arch)
    if backbone is None:
        fail(key, f"unknown architecture {arch!r}; expected one of {expected()}")
    return backbone


def check(key: str, arch: str) -> Backbone:
    """``arch`` is a registered backbone and a valid member of it (``pretrain.arch``)."""
    backbone = get(arch, key)
    backbone.check(key, arch)
    return backbone
