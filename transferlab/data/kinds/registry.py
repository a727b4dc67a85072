"""The dataset-kind registry, in the manner of the strategy registry: each kind module registers
a :class:`DatasetKind`, which declares its keys (a frozen :class:`DatasetSpec` subclass: types,
defaults, checks) and its loader. ``prepare`` and the params resolution look kinds up here.

``params.yaml`` writes a dataset flat (``{kind: fonts, chars: ..., n_per_class: ...}``);
:func:`parse_spec` loads it into the kind's own spec class, naming the offending key and the
valid choices in every error (``prepare.target.kind: unknown value 'parquet'; expected one of
fonts, sklearn_digits, ...``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from transferlab.config.params import check_init
from transferlab.config.typed import check_range, fail, from_dict

if TYPE_CHECKING:
    from transferlab.data.raw import RawDataset

_REGISTRY: dict[str, DatasetKind] = {}
COMMON_KEYS = ("kind", "init", "task", "strata")  # keys every kind takes


@dataclass(frozen=True, kw_only=True)
class DatasetSpec:
    """One dataset block, typed by its kind. Each kind subclasses it with its own keys.

    ``DatasetSpec(kind="csv", path=...)`` builds the registered kind's own spec class.
    """

    kind: str
    init: str | None = None  # a source's own weights, overriding pretrain.init (any kind)
    task: Literal["classification", "regression"] | None = None  # target only (core.tasks)
    strata: int | None = None  # regression: quantile bins standing in for classes (default 4)

    def __new__(cls, *args: Any, **kwargs: Any) -> DatasetSpec:
        if cls is DatasetSpec and "kind" in kwargs:  # dispatch to the kind's own spec class
            cls = get(kwargs["kind"]).Spec
        return object.__new__(cls)

    @property
    def kind_info(self) -> DatasetKind:
        return get(self.kind)

    @property
    def modality(self) -> str | None:
        """``image`` or ``text``; None for the null source (it takes the target's)."""
        return self.kind_info.modality

    @property
    def task_name(self) -> str:
        """``classification`` or ``regression`` (:mod:`transferlab.core.tasks`)."""
        if self.kind_info.regression:
            return "regression"
        return self.task or "classification"

    def validate(self, key: str) -> None:
        """The checks every kind shares; a kind's spec extends this (calling super)."""
        info = self.kind_info
        if self.init is not None:
            check_init(f"{key}.init", self.init)
        if info.regression and self.task == "classification":
            fail(f"{key}.task", f"kind {self.kind!r} has numeric targets: it is a regression")
        if self.task == "regression" and not (info.regression or info.numeric_labels):
            numeric = sorted(k.name for k in _REGISTRY.values()
                             if k.regression or k.numeric_labels)
            fail(f"{key}.task", f"kind {self.kind!r} has class labels; regression targets come "
                 "from kinds " + ", ".join(numeric))
        if self.strata is not None:
            if self.task_name != "regression":
                fail(f"{key}.strata", "used by a regression target only (task: regression)")
            check_range(f"{key}.strata", self.strata, 1, 1000)


@dataclass(frozen=True)
class LoadContext:
    """What ``prepare`` passes a loader besides the spec."""

    key: str  # the params key of the spec, for error messages (prepare.sources.<name>)
    image_size: int = 16  # image kinds: side of the square output images
    seed: int = 0  # synthetic kinds: rendering / drawing seed
    tokenizer: Any = None  # text kinds: the tokenizer of prepare.tokenizer
    max_length: int = 64  # text kinds: tokens per example


class DatasetKind:
    """Base class of a dataset kind: its keys (``Spec``), what it holds, and its loader."""

    name: ClassVar[str] = ""
    Spec: ClassVar[type[DatasetSpec]] = DatasetSpec
    modality: ClassVar[str | None] = "image"  # None: no data (the null source)
    regression: ClassVar[bool] = False  # numeric targets by construction
    numeric_labels: ClassVar[bool] = False  # a label column may hold numbers (task: regression)
    rank: ClassVar[int] = 100  # order in error messages

    @property
    def has_data(self) -> bool:
        return self.modality is not None

    def own_keys(self) -> tuple[str, ...]:
        """The keys this kind adds to :data:`COMMON_KEYS`."""
        return tuple(f.name for f in dataclasses.fields(self.Spec) if f.name not in COMMON_KEYS)

    def required_keys(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self.Spec) if f.name not in COMMON_KEYS
                     and f.default is dataclasses.MISSING
                     and f.default_factory is dataclasses.MISSING)

    def load(self, spec: Any, ctx: LoadContext) -> RawDataset:
        """The dataset ``spec`` names. Errors are DataError naming ``ctx.key`` and the file."""
        raise NotImplementedError(f"kind {self.name!r} holds no data")


def register(cls: type[DatasetKind]) -> type[DatasetKind]:
    """Class decorator: add a dataset kind to the registry under ``cls.name``."""
    if not cls.name or cls.name in _REGISTRY:
        raise ValueError(f"dataset kind {cls.name!r} is empty or registered twice")
    if not (isinstance(cls.Spec, type) and issubclass(cls.Spec, DatasetSpec)):
        raise ValueError(f"dataset kind {cls.name}: Spec must subclass DatasetSpec")
    _REGISTRY[cls.name] = cls()
    return cls


def unregister(name: str) -> None:
    """Remove a kind (tests that register a toy one clean up with this)."""
    _REGISTRY.pop(name, None)


def names() -> tuple[str, ...]:
    """Every registered kind, in rank order (then by name)."""
    return tuple(sorted(_REGISTRY, key=lambda n: (_REGISTRY[n].rank, n)))


def get(name: str, key: str = "kind") -> DatasetKind:
    """The kind registered as ``name``.

    Raises:
        ParamsError: ``<key>: unknown value ...; expected one of <registered kinds>``.
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        fail(key, f"unknown value {name!r}; expected one of {', '.join(names())}")
    return _REGISTRY[name]


def parse_spec(data: Any, key: str) -> DatasetSpec:
    """Load a flat dataset block into its kind's spec: unknown kinds, keys the kind does not
    use, keys it requires, wrong types and bad values all fail naming the key."""
    if isinstance(data, DatasetSpec):
        return data
    if not isinstance(data, dict):
        fail(key, f"expected a mapping, got {type(data).__name__} {data!r}")
    if "kind" not in data:
        fail(f"{key}.kind", "missing required key")
    kind = get(data["kind"], f"{key}.kind")
    fields = {f.name for f in dataclasses.fields(kind.Spec)}
    used = ", ".join(kind.own_keys()) or "no other keys"
    for name in data:
        if str(name) not in fields:
            fail(f"{key}.{name}", f"not used by kind {kind.name!r} (it takes {used})")
    for name in kind.required_keys():
        if data.get(name) is None:
            fail(f"{key}.{name}", f"required for kind {kind.name!r}")
    return from_dict(kind.Spec, {str(k): v for k, v in data.items()}, key)
