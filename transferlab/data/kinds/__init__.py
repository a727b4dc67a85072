"""Dataset kinds as plugins: one module per kind, each registering itself by name.

Every module of this package except ``base`` and ``registry`` is a kind and is imported here,
so that it registers. Adding a kind is one file: its keys (a frozen :class:`DatasetSpec`
subclass with types, defaults and checks) and its loader::

    @dataclass(frozen=True, kw_only=True)
    class StripesSpec(DatasetSpec):
        n_per_class: int = 10

    @register
    class Stripes(ImageKind):
        name = "stripes"
        Spec = StripesSpec

        def load(self, spec, ctx):
            ...  # -> RawDataset of uint8 (N, ctx.image_size, ctx.image_size) images

``params.yaml``'s dataset blocks are typed by :func:`resolve`, as the strategies' blocks are by
:func:`transferlab.adapt.strategies.resolve`.
"""

import dataclasses
import importlib
import pkgutil
from typing import Any

from transferlab.config.params import check_hf
from transferlab.config.typed import fail
from transferlab.data.kinds.base import ImageKind, TextKind, TextSpec  # noqa: F401
from transferlab.data.kinds.registry import (  # noqa: F401
    DatasetKind,
    DatasetSpec,
    LoadContext,
    get,
    names,
    parse_spec,
    register,
    unregister,
)


def resolve_prepare(prepare: Any, key: str = "prepare") -> Any:
    """``prepare`` with its target and sources typed by their kinds, and the checks that need
    the kinds: the target has data, one modality, a tokenizer for text, sources classify."""
    target = parse_spec(_flat(prepare.target), f"{key}.target")
    sources = {name: parse_spec(_flat(spec), f"{key}.sources.{name}")
               for name, spec in prepare.sources.items()}
    if not target.kind_info.has_data:
        fail(f"{key}.target.kind", f"the target needs data; {target.kind!r} is only for sources")
    modality = target.modality
    for name, spec in sources.items():
        if spec.modality not in (None, modality):
            fail(f"{key}.sources.{name}.kind", f"{spec.kind!r} is {spec.modality} data but "
                 f"the target ({target.kind!r}) is {modality}; a scenario has one modality")
        if spec.task_name != "classification" or spec.strata is not None:
            fail(f"{key}.sources.{name}." + ("task" if spec.strata is None else "strata"),
                 "a source is pretrained as a classifier; only prepare.target may be a "
                 "regression")
    if modality == "text":
        if prepare.tokenizer is None:
            fail(f"{key}.tokenizer", "text data needs a tokenizer: hf:<checkpoint directory "
                 "or installed package> or llm:<checkpoint directory, .gguf file or package>")
        if not prepare.tokenizer.startswith("llm:"):  # a causal LM's: checked by PrepareParams
            check_hf(f"{key}.tokenizer", prepare.tokenizer)
    elif prepare.tokenizer is not None:
        fail(f"{key}.tokenizer", f"only text data is tokenized; remove it for {modality} data")
    return dataclasses.replace(prepare, target=target, sources=sources)


def resolve(params: Any) -> Any:
    """``params`` with ``prepare``'s datasets typed by their kinds (:func:`resolve_prepare`).
    Idempotent. Raises ParamsError naming the key and the valid choices."""
    return dataclasses.replace(params, prepare=resolve_prepare(params.prepare))


def _flat(block: Any) -> Any:
    """A dataset block as the flat mapping params.yaml writes (a typed spec passes through)."""
    return block if isinstance(block, DatasetSpec) else getattr(block, "flat", lambda: block)()


_INFRASTRUCTURE = {"base", "registry"}
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _INFRASTRUCTURE and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
