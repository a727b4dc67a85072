"""The strategy registry, in the manner of timm's ``register_model``: each strategy module
registers its class by name; everything else looks strategies up here, by name or by role.

Roles are what the shared code needs to know of a strategy without naming it:

- ``baseline``: the curve every transfer gain is measured against (target data only).
- ``reference``: the plain adaptation every method's gain ("What helped") is measured against,
  and whose realised accuracy judges the transferability scores.
- ``feature_probe``: trains on backbone features cached once per source; the pool features it
  caches are reused by ``evaluate``.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Any

from transferlab.config.typed import fail, from_dict

if TYPE_CHECKING:
    from transferlab.adapt.strategies.base import Strategy

_REGISTRY: dict[str, type[Strategy]] = {}
_VARIANTS: dict[str, str] = {}  # variant name -> the strategy it is a variant of
ROLES = ("baseline", "reference", "feature_probe")
VARIANT_NAME = re.compile(r"[a-z][a-z0-9_]*")


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: add a strategy to the registry under ``cls.name``."""
    if not cls.name or cls.name in _REGISTRY:
        raise ValueError(f"strategy name {cls.name!r} is empty or registered twice")
    unknown = set(cls.roles) - set(ROLES)
    if unknown:
        raise ValueError(f"strategy {cls.name}: unknown roles {sorted(unknown)}; "
                         f"expected some of {', '.join(ROLES)}")
    _REGISTRY[cls.name] = cls
    return cls


def variant(name: str, base: str, key: str = "transfer") -> type[Strategy]:
    """Register ``name`` as a variant of strategy ``base``: the same code under its own name,
    curve and params block (e.g. ``finetune_src: {strategy: finetune, head_init: source}``),
    so that it runs beside its base and is compared with it. Registering the same variant again
    is a no-op. A variant plays no role (only its base does).

    Raises:
        ParamsError: naming ``<key>.<name>``, where the name is taken or ill-formed, or
            ``base`` is not a strategy or is the baseline.
    """
    where = f"{key}.{name}"
    if _VARIANTS.get(name) == base:
        return _REGISTRY[name]
    if name in _REGISTRY:
        fail(f"{where}.strategy", f"{name} is a strategy of its own (or a variant of "
             f"{_VARIANTS[name]}); a variant needs a new name")
    if not VARIANT_NAME.fullmatch(name):
        fail(where, "a variant's name is lowercase letters, digits and _, starting with a letter")
    if base not in _REGISTRY or base in _VARIANTS:
        fail(f"{where}.strategy", f"unknown strategy {base!r}; expected one of "
             f"{', '.join(names(variants=False))}")
    parent = _REGISTRY[base]
    if "baseline" in parent.roles:
        fail(f"{where}.strategy", f"{base} is the baseline every gain is measured against; it "
             "has no variants")
    # its params: the base's, with the ``strategy`` key, so that a block written back
    # (to_dict) names its base and loads again
    params = dataclasses.make_dataclass(
        f"{parent.Params.__name__}_{name}", [("strategy", str, dataclasses.field(default=base))],
        bases=(parent.Params,), frozen=True, namespace={"validate": _variant_validate(base)})
    cls = type(f"{parent.__name__}_{name}", (parent,), {
        "name": name, "variant_of": base, "roles": frozenset(), "Params": params,
        "__module__": parent.__module__,
        "__doc__": f"``{name}``: a variant of ``{base}`` (its own params block)."})
    _REGISTRY[name] = cls
    _VARIANTS[name] = base
    return cls


def _variant_validate(base: str) -> Any:
    """A variant's params ``validate``: its base's checks, and ``strategy`` is that base."""
    def validate(self: Any, key: str) -> None:
        if self.strategy != base:
            fail(f"{key}.strategy", f"this variant is of {base}, got {self.strategy!r}")
        parent = getattr(super(type(self), self), "validate", None)
        if parent is not None:
            parent(key)
    return validate


def names(variants: bool = True) -> tuple[str, ...]:
    """Every registered strategy name (with ``variants=False``, not the variants params
    registered), ordered from least to most trained, then by name."""
    return tuple(sorted((n for n in _REGISTRY if variants or n not in _VARIANTS),
                        key=lambda n: (_REGISTRY[n].rank, n)))


def get(name: str) -> type[Strategy]:
    """The strategy class registered as ``name``.

    Raises:
        ValueError: naming the valid strategies.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown strategy {name!r}; expected one of {', '.join(names())}")
    return _REGISTRY[name]


def by_role(role: str) -> str | None:
    """The name of the strategy that plays ``role``, or None where no registered one does."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    found = [n for n in names() if role in _REGISTRY[n].roles]
    if len(found) > 1:
        raise ValueError(f"role {role!r} is claimed by several strategies: {', '.join(found)}")
    return found[0] if found else None


def parse_blocks(data: Any, key: str = "transfer") -> dict[str, Any]:
    """Validate the ``transfer`` params block: one sub-block per strategy, each loaded into that
    strategy's own frozen params dataclass (unknown keys and wrong types rejected).

    A block under a new name with a ``strategy`` key is a variant of that strategy
    (:func:`variant`): its keys override the base strategy's block, e.g.
    ``finetune_src: {strategy: finetune, head_init: source}``."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        fail(key, f"expected a mapping of strategy blocks, got {type(data).__name__}")
    blocks = {}
    for name, block in data.items():
        name = str(name)
        if isinstance(block, dict) and "strategy" in block:
            base = str(block["strategy"])
            variant(name, base, key)
            inherited = data.get(base) if isinstance(data.get(base), dict) else {}
            # the base's block where params.yaml has one, with the variant's keys on top
            block = {**inherited, **block}
        elif name not in _REGISTRY or name in _VARIANTS:
            fail(f"{key}.{name}", f"unknown key; expected one of {', '.join(names(False))}, or a "
                 "variant: a block with strategy: <one of them>")
        blocks[name] = from_dict(_REGISTRY[name].Params, block, f"{key}.{name}")
        blocks[name].search_grid(f"{key}.{name}")  # every candidate is a valid block
        _REGISTRY[name].check_params(blocks[name], f"{key}.{name}")
    return blocks


def block(blocks: dict[str, Any], name: str, key: str = "transfer") -> Any:
    """The params of strategy ``name``; its block must be in ``params.yaml`` if it is run."""
    get(name)
    if name not in blocks:
        fail(f"{key}.{name}", "missing block: every strategy that runs needs its params block")
    return blocks[name]
