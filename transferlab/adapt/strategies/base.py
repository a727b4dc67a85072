"""The small protocol every transfer strategy implements, and its shared params.

A strategy is one class in one module of this package, registered with
:func:`~transferlab.adapt.strategies.registry.register`. The shared loop
(:func:`transferlab.adapt.replicates.adapt`) calls these hooks in this order for every candidate
configuration of a replicate, and once more for the refit on the whole budget:

1. :meth:`Strategy.initial_model` (once per replicate; each run trains a copy),
2. :meth:`Strategy.before_fit` (a phase before the main fit: a probe, statistics recalibration),
3. :meth:`Strategy.trainable` (which module trains, its parameter groups and learning rates),
4. :meth:`Strategy.loss_term` (an extra loss term with its own state: a regularizer),
5. :func:`transferlab.training.loop.fit`, calling :meth:`Strategy.on_epoch` before every epoch,
6. :meth:`Strategy.after_fit` (a phase after: weight interpolation, merging adapters). What it
   chooses on the held-out labels is recorded and replayed by the refit.

Every hook has a default that does nothing special, so a strategy overrides only what it changes.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import nn

from transferlab.config.params import TrainParams
from transferlab.config.typed import check_range, fail, from_dict, to_dict
from transferlab.core import tasks as tasks_registry
from transferlab.core.tasks import Task
from transferlab.models.nets import TRAITS, TransferNet, backbone_traits, reset_head

if TYPE_CHECKING:
    from transferlab.adapt.target import TargetData

MAX_SEARCH = 64  # candidate configurations per replicate: a guard against a grid typo

# (features (B, D), logits (B, C), inputs (B, ...), labels (B,)) -> scalar loss term
LossTerm = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class UntrainedParams:
    """A strategy that trains nothing has no knobs."""

    def search_grid(self, key: str = "") -> list[tuple[dict, Any]]:
        return [({}, self)]


@dataclass(frozen=True)
class TransferTrainParams(TrainParams):
    """Knobs every trained strategy shares, on top of the optimiser's.

    ``search`` is the strategy's in-stage search space: a grid over keys of this same block,
    e.g. ``{lr: [0.001, 0.003], weight_decay: [0.0001, 0.01]}``. Each candidate is trained on
    the budget's training part and scored on its held-out labels; the best is refit.
    """

    normalization: Literal["source", "target"] = "source"  # input statistics the model uses
    head: Literal["linear", "mlp"] = "linear"  # the new head (mlp: Linear-ReLU-Linear)
    head_hidden: int = 128  # mlp head: hidden units
    # the linear head's start: fresh (drawn from the replicate seed) | source (the source head's
    # rows of the target classes that a source class maps onto; fresh rows for the others)
    head_init: Literal["fresh", "source"] = "fresh"
    search: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    # a few steps on a few labels leave the moving averages of an untrained network's
    # BatchNorm far from the data's statistics (TrainParams.bn_stats; docs/strategies.md)
    bn_stats: Literal["running", "precise", "auto"] = "auto"

    def validate(self, key: str) -> None:
        super().validate(key)
        check_range(f"{key}.head_hidden", self.head_hidden, 1, 65_536)
        if self.head_init == "source" and self.head != "linear":
            fail(f"{key}.head_init", f"source copies rows of the source's linear head; it needs "
                 f"head: linear, got head: {self.head} (use head_init: fresh)")
        # the search grid is checked by registry.parse_blocks, once the whole block (a
        # subclass's own keys too) is valid: an error then names the key that is wrong

    def search_grid(self, key: str = "") -> list[tuple[dict, TransferTrainParams]]:
        """Every candidate of ``search`` as (override, full params), in the grid's order (the
        last key varies fastest). Without a search space: [({}, self)]."""
        if not self.search:
            return [({}, self)]
        where = f"{key}.search" if key else "search"
        names = list(self.search)
        for name in names:
            if name == "search" or name not in self.__dataclass_fields__:
                valid = ", ".join(f for f in self.__dataclass_fields__ if f != "search")
                fail(f"{where}.{name}", f"not a key of this block; expected one of {valid}")
            if not self.search[name]:
                fail(f"{where}.{name}", "must list at least one value")
        grid = list(itertools.product(*(self.search[n] for n in names)))
        if len(grid) > MAX_SEARCH:
            fail(where, f"{len(grid)} candidates; at most {MAX_SEARCH} per replicate")
        base = {k: v for k, v in to_dict(self).items() if k != "search"}
        out = [(dict(zip(names, values, strict=True)), from_dict(type(self), {
            **base, **dict(zip(names, values, strict=True))}, where)) for values in grid]
        if len({repr(sorted(o.items())) for o, _ in out}) != len(out):
            fail(where, "repeats a candidate")
        return out


@dataclass
class Context:
    """What a strategy may use for one replicate: the target, the source, the device."""

    target: TargetData
    source: TransferNet | None  # a fresh copy of the source model with its source head
    source_config: dict | None
    mapping: dict | None  # source -> target label mapping (source manifest)
    arch: dict  # {"arch", "width", "pooling"} of the source architecture (scratch builds one)
    device: torch.device
    seed: int = 0  # the replicate's seed: head init, batch order
    shared: dict = field(default_factory=dict)  # per-stage state from Strategy.setup
    # the source's training images (N, 1, H, W) and labels, where the strategy declares
    # ``uses_source_data`` (e.g. domain-adversarial training); None otherwise
    source_data: tuple[torch.Tensor, torch.Tensor] | None = None
    # the source's own classifier as loaded (``initial_model`` replaces ``source.head``):
    # what ``head_init: source`` and a kept source head read
    source_head: nn.Module | None = None

    @classmethod
    def build(cls, target: TargetData, source: TransferNet | None, *, arch: dict,
              device: torch.device, seed: int = 0, source_config: dict | None = None,
              mapping: dict | None = None, shared: dict | None = None,
              source_data: tuple[torch.Tensor, torch.Tensor] | None = None) -> Context:
        """The one way a context is made: with a fresh deep copy of ``source`` (hooks may
        train it or change its head), so that every strategy and replicate starts from the
        same weights. ``shared`` is kept as it is (the same dict for a stage's replicates)."""
        copied = copy_source(source) if source is not None else None
        return cls(target, copied, source_config, mapping, arch, device, seed,
                   {} if shared is None else shared, source_data,
                   copy.deepcopy(copied.head) if copied is not None else None)


class Strategy:
    """Base class of a transfer strategy: plain fine-tuning of a new head and the backbone.

    Class attributes declare what it needs and how it is shown; hooks change how it trains.
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type] = TransferTrainParams
    trains: ClassVar[bool] = True  # False: the source model as it is (no replicate training)
    uses_source: ClassVar[bool] = True  # False: the network starts from random init
    needs_source_head: ClassVar[bool] = False  # skip where the source has no classifier
    needs_aligned_labels: ClassVar[bool] = False  # skip unless every target class has a source one
    uses_unlabeled: ClassVar[bool] = False  # reads the target pool's images without labels
    uses_source_data: ClassVar[bool] = False  # reads the source's training images
    needs_backbone: ClassVar[frozenset[str]] = frozenset()  # models.TRAITS the backbone must have
    # the target tasks it is defined for (transferlab.core.tasks): a strategy whose own code uses
    # class logits (a cross-entropy probe, accuracy of an interpolation) is classification-only
    tasks: ClassVar[frozenset[str]] = frozenset({"classification", "regression"})
    roles: ClassVar[frozenset[str]] = frozenset()
    style: ClassVar[tuple[str, str]] = ("-", ".")  # matplotlib line style and marker
    rank: ClassVar[int] = 100  # order in tables and figures: least trained first
    variant_of: ClassVar[str | None] = None  # a variant (registry.variant): its base strategy

    def __init__(self, cfg: Any, ctx: Context) -> None:
        self.cfg = cfg
        self.ctx = ctx

    # ----------------------------------------------------------------- what it needs
    @classmethod
    def trains_with(cls, cfg: Any) -> bool:
        """Whether a run with this params block trains (``trains``, unless a knob such as
        adabn's ``then: none`` makes it a model that trains nothing)."""
        return cls.trains

    @classmethod
    def needs_aligned_labels_with(cls, cfg: Any) -> bool:
        """Whether this params block needs every target class to have a source class."""
        return cls.needs_aligned_labels

    @classmethod
    def skip_reason(cls, source_config: dict | None, mapping: dict | None,
                    cfg: Any = None) -> str | None:
        """Why this strategy (with params block ``cfg``, where given) cannot run for a source,
        or None if it can."""
        if cls.needs_source_head and (not source_config or not source_config.get(
                "source_classes")):
            return "the source has no trained classifier (null source)"
        if cls.uses_source_data and (not mapping or not mapping.get("class_names")):
            return "the source has no data (null source)"
        missing = sorted(cls.needs_backbone - backbone_traits(source_config)) \
            if source_config else []
        if missing:
            return (f"the {source_config.get('arch')} backbone has no "
                    + " and no ".join(TRAITS[t] for t in missing))
        aligned = cls.needs_aligned_labels if cfg is None else cls.needs_aligned_labels_with(cfg)
        if aligned and (not mapping or not mapping.get("aligned")):
            missing = (mapping or {}).get("unmapped_target_classes", [])
            return ("label spaces differ: the source has no class for target classes "
                    + ", ".join(map(str, missing)))
        return None

    @classmethod
    def check_params(cls, cfg: Any, key: str) -> None:
        """Checks of a params block that need the strategy, not only the block (e.g. a knob
        this strategy cannot honour). Fails with the block's ``key``."""
        values = {getattr(cfg, "head_init", "fresh"), *getattr(cfg, "search", {}).get(
            "head_init", ())}
        if "source" in values and not cls.uses_source:
            fail(f"{key}.head_init", f"{cls.name} starts from random weights and has no source "
                 "head to start from; only fresh is valid")

    def source_head_rows(self, key: str = "") -> dict[int, int]:
        """{target class index: source head row} for every target class that a source class
        maps onto (the source manifest's mapping): what ``head_init: source`` copies. Fails
        (naming ``<key>.head_init``) where the source has no classifier or no class maps."""
        where = f"{key or f'transfer.{self.name}'}.head_init"
        classes = (self.ctx.source_config or {}).get("source_classes")
        if self.ctx.source_head is None or not classes:
            fail(where, "source needs a source with a trained classifier; this source has none "
                 "(the null source); only fresh is valid here")
        mapping = (self.ctx.mapping or {}).get("source_to_target") or {}
        rows = {int(t): classes.index(s) for s, t in mapping.items() if s in classes}
        if not rows:
            fail(where, "source needs target classes that a source class maps onto; no class "
                 "of this source maps onto the target's (unrelated label spaces), so only fresh "
                 "is valid (search head_init: [source, fresh] to try it where it applies)")
        return rows

    def start_head(self, model: TransferNet, cfg: Any) -> TransferNet:
        """The run's head before any phase: the fresh head of :meth:`initial_model`, or with
        ``head_init: source`` the source head's rows copied onto the mapped target classes."""
        if getattr(cfg, "head_init", "fresh") != "source":
            return model
        with torch.no_grad():
            for t_idx, s_row in self.source_head_rows().items():
                model.head.weight[t_idx].copy_(self.ctx.source_head.weight[s_row])
                model.head.bias[t_idx].copy_(self.ctx.source_head.bias[s_row])
        return model

    def target_task(self) -> Task:
        """The target's task (:mod:`transferlab.core.tasks`): its loss and validation score."""
        return tasks_registry.get(getattr(self.ctx.target, "task", "classification"))

    @classmethod
    def task_reason(cls, task: str) -> str | None:
        """Why this strategy cannot run for a target of this task, or None if it can."""
        if task not in cls.tasks:
            return (f"defined for {' and '.join(sorted(cls.tasks))} targets; the target is a "
                    f"{task}")
        return None

    def setup(self) -> dict:
        """Once per stage, before any replicate (e.g. cache features in ``ctx.shared``).
        Returns entries for the stage's ``runs.json``."""
        return {}

    # ----------------------------------------------------------------------- hooks
    def initial_model(self) -> TransferNet:
        """The replicate's starting point: the source with a new head for the target classes."""
        model = reset_head(self.ctx.source, self.ctx.target.num_classes, self.ctx.seed,
                           self.cfg.head, self.cfg.head_hidden)
        if self.cfg.normalization == "target":
            norm = self.ctx.target.normalization
            model.normalize.mean.fill_(norm["mean"])
            model.normalize.std.fill_(norm["std"])
        return model

    def inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(pool inputs, validation inputs) the trained module sees; raw images by default."""
        return self.ctx.target.pool_x, self.ctx.target.val_x

    def before_fit(self, model: TransferNet, train: tuple[torch.Tensor, torch.Tensor],
                   cfg: Any, generator: torch.Generator) -> TransferNet:
        """A phase before the main fit, on the run's training labels. Returns the model."""
        return model

    def trainable(self, model: TransferNet, cfg: Any) -> tuple[nn.Module, list[dict]]:
        """(the module :func:`~transferlab.training.loop.fit` trains, its optimizer groups)."""
        return model, [{"params": [p for p in model.parameters() if p.requires_grad]}]

    def loss_term(self, model: TransferNet, cfg: Any) -> LossTerm | None:
        """An extra loss term added to the cross-entropy, or None."""
        return None

    def on_epoch(self, model: TransferNet, epoch: int, cfg: Any) -> None:
        """Called before each epoch (1-based), e.g. to unfreeze the next block."""

    def fit(self, net: nn.Module, train: tuple[torch.Tensor, torch.Tensor],
            val: tuple[torch.Tensor, torch.Tensor] | None, cfg: Any, groups: list[dict],
            generator: torch.Generator, label: str, **hooks: Any) -> dict:
        """The main fit: the shared loop's :func:`~transferlab.training.loop.fit` (``hooks``:
        its ``loss_term``, ``on_epoch`` and ``task``). A strategy that trains otherwise (DP-SGD)
        returns the same summary keys."""
        from transferlab.training.loop import fit

        return fit(net, train, val, cfg, groups, generator, self.ctx.device, label, **hooks)

    def after_fit(self, model: TransferNet, net: nn.Module,
                  val: tuple[torch.Tensor, torch.Tensor] | None, cfg: Any,
                  chosen: dict | None) -> tuple[TransferNet, dict]:
        """A phase after the fit. With ``val`` it may choose (e.g. an interpolation weight) and
        returns what it chose; the refit passes those choices back as ``chosen``, with no
        ``val``. Returns (the final model, the choices). Two keys of the choices are read by the
        loop and not replayed: ``selection`` ({"best_val_accuracy", "best_val_loss"} of the
        model returned, where it differs from the fit's best epoch: it then ranks the candidate
        and is the run's selection score) and ``diagnostics`` (recorded with the candidate)."""
        return model, {}

    # ----------------------------------------------------- untrained strategies only
    def untrained_model(self) -> TransferNet:
        """The model of a strategy that does not train (``trains = False``)."""
        raise NotImplementedError(f"{self.name} trains; it has no untrained model")


def source_head_model(source: TransferNet, source_classes: list, mapping: dict,
                      num_classes: int) -> TransferNet:
    """``source`` with its head rows picked and ordered by the source->target mapping (every
    target class has a source class): the source's classifier, speaking the target's labels."""
    rows = [0] * num_classes
    for s_name, t_idx in mapping["source_to_target"].items():
        rows[t_idx] = source_classes.index(s_name)
    with torch.random.fork_rng(devices=[]):  # its init is overwritten: keep global RNG
        head = nn.Linear(source.feature_dim, num_classes)
    with torch.no_grad():
        head.weight.copy_(source.head.weight[rows])
        head.bias.copy_(source.head.bias[rows])
    source.head = head
    return source


def config_label(config: dict) -> str:
    """A search candidate or choice as text: ``{"lr": 0.01, "block": "block2"}`` ->
    ``"block=block2, lr=0.01"``; {} (the block as written) -> ``"as set"``."""
    return ", ".join(f"{k}={v}" for k, v in sorted(config.items())) or "as set"


def copy_source(source: TransferNet) -> TransferNet:
    """A deep copy of the source model, for hooks that keep its weights as a reference."""
    return copy.deepcopy(source)


def check_multiplier(key: str, value: float) -> None:
    """A learning-rate multiplier is positive and at most 10."""
    check_range(key, value, 0, 10, low_open=True)
