"""Transfer strategies as plugins: one module per strategy, each registering itself by name.

Every module of this package except ``base`` and ``registry`` is a strategy and is imported
here, so that it registers. Dropping a strategy is deleting its module and its params block.
"""

import dataclasses
import importlib
import pkgutil
from typing import Any

from transferlab.adapt.strategies.base import (  # noqa: F401
    Context,
    Strategy,
    TransferTrainParams,
    UntrainedParams,
)
from transferlab.adapt.strategies.registry import block, by_role, get, names, parse_blocks  # noqa: F401
from transferlab.config.typed import fail
from transferlab.models import resolved


def resolve(params: Any) -> Any:
    """``params`` with its ``transfer`` block loaded into each strategy's params dataclass, and
    the grid's strategy names checked (every strategy the grid runs needs its block), after the
    dataset kinds and backbones (:func:`transferlab.models.resolved.resolve`). Stages that run
    or evaluate strategies call this on the params they load.

    Raises:
        ParamsError: naming the offending key and the valid choices.
    """
    params = resolved.resolve(params)  # the dataset kinds and backbones first (idempotent)
    blocks = parse_blocks(params.transfer)
    baseline = by_role("baseline")
    valid = [s for s in names() if s != baseline]
    grid = params.grid
    for key, listed in (("grid.strategies", grid.strategies),
                        ("grid.methods.strategies", grid.methods.strategies)):
        for i, name in enumerate(listed):
            if name not in valid:
                fail(f"{key}[{i}]", f"unknown strategy {name!r}; expected one of "
                     f"{', '.join(valid)} ({baseline} always runs, as the baseline)")
    image = params.prepare.target.modality == "image"
    for name in (*grid.strategies, *grid.methods.strategies, baseline):
        cfg = block(blocks, name)
        if not image and getattr(cfg, "augment", False) not in (False, "none"):
            fail(f"transfer.{name}.augment", f"{cfg.augment!r} augments images; "
                 f"{params.prepare.target.modality} data needs false")
        if params.prepare.target.kind == "rotated_digits" and getattr(
                cfg, "augment", False) not in (False, "none"):
            fail(f"transfer.{name}.augment", f"{cfg.augment!r} rotates images, and the target "
                 "of kind rotated_digits is the rotation angle: augmenting would change the "
                 "labels; set false")
    return dataclasses.replace(params, transfer=blocks)


def grid_strategies(grid: Any, source: str | None) -> list[str]:
    """The strategies the grid runs on ``source``, in order: ``grid.strategies``, then
    ``grid.methods.strategies`` where ``grid.methods.sources`` lists the source (what one
    ``transfer@<source>`` stage of ``dvc.yaml`` runs).

    Raises:
        ParamsError: without a source (the baseline is named with ``--strategy``).
    """
    if not source:
        fail("grid", "without a source the grid runs nothing; name the baseline's strategy")
    methods = grid.methods.strategies if source in grid.methods.sources else ()
    return [*grid.strategies, *methods]


_INFRASTRUCTURE = {"base", "registry"}
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _INFRASTRUCTURE and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
