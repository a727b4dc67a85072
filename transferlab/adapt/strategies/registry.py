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

from typing import TYPE_CHECKING, Any

from transferlab.config.typed import fail, from_dict

if TYPE_CHECKING:
    from transferlab.adapt.strategies.base import Strategy

_REGISTRY: dict[str, type[Strategy]] = {}
ROLES = ("baseline", "reference", "feature_probe")


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


def names() -> tuple[str, ...]:
    """Every registered strategy name, ordered from least to most trained (then by name)."""
    return tuple(sorted(_REGISTRY, key=lambda n: (_REGISTRY[n].rank, n)))


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
    strategy's own frozen params dataclass (unknown keys and wrong types rejected)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        fail(key, f"expected a mapping of strategy blocks, got {type(data).__name__}")
    blocks = {}
    for name, block in data.items():
        if str(name) not in _REGISTRY:
            fail(f"{key}.{name}", f"unknown key; expected one of {', '.join(names())}")
        blocks[str(name)] = from_dict(_REGISTRY[str(name)].Params, block, f"{key}.{name}")
        blocks[str(name)].search_grid(f"{key}.{name}")  # every candidate is a valid block
    return blocks


def block(blocks: dict[str, Any], name: str, key: str = "transfer") -> Any:
    """The params of strategy ``name``; its block must be in ``params.yaml`` if it is run."""
    get(name)
    if name not in blocks:
        fail(f"{key}.{name}", "missing block: every strategy that runs needs its params block")
    return blocks[name]
