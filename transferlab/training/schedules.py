"""Learning-rate schedules, stepped once per optimizer step.

Each schedule is a multiplicative factor of the step, applied to every parameter group's own
base lr by ``torch.optim.lr_scheduler.LambdaLR`` (so groups with different lrs keep their ratio).
The factor is written in closed form rather than by chaining ``LinearLR`` and
``CosineAnnealingLR`` in a ``SequentialLR``: the same curve (the tests check it against that
chain), but exact at every step instead of accumulated by a recursive update.

Step ``s`` is the number of ``scheduler.step()`` calls so far; the ``s``-th optimizer step
(counting from 0) uses ``base_lr * lr_factor(s, ...)``. In a loop: ``optimizer.step()`` then
``scheduler.step()``, once per batch.
"""

from __future__ import annotations

import math
from functools import partial

import torch

SCHEDULES = ("constant", "cosine")


def _check(schedule: str, total_steps: int, warmup_steps: int) -> None:
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; expected one of {', '.join(SCHEDULES)}")
    if total_steps < 1:
        raise ValueError(f"total_steps must be at least 1, got {total_steps}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be at least 0, got {warmup_steps}")


def lr_factor(step: int, schedule: str, total_steps: int, warmup_steps: int) -> float:
    """The factor of the base lr at ``step``.

    Warmup (both schedules): ``(step + 1) / (warmup_steps + 1)`` for ``step < warmup_steps``,
    the curve of ``LinearLR(start_factor=1 / (warmup_steps + 1), total_iters=warmup_steps)``:
    small but non-zero at step 0 (no optimizer step is wasted), 1 at ``step = warmup_steps``.
    After it, ``constant`` stays at 1 and ``cosine`` decays as
    ``0.5 * (1 + cos(pi * (step - warmup_steps) / (total_steps - warmup_steps)))``, which is 1/2
    halfway and reaches 0 at ``step = total_steps`` (and stays 0 past it).

    ``warmup_steps >= total_steps`` is taken literally, as Hugging Face's schedules do: the whole
    run is warmup, the lr rises linearly and never reaches its base, and ``cosine`` never decays.
    Derive ``warmup_steps`` from a fraction of ``total_steps`` to avoid that on short runs.

    Args:
        step: scheduler steps taken so far (>= 0).
        schedule: one of :data:`SCHEDULES`.
        total_steps: optimizer steps in the whole run (>= 1).
        warmup_steps: linear-warmup steps (>= 0).
    Returns:
        The factor, in [0, 1].
    """
    _check(schedule, total_steps, warmup_steps)
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if schedule == "constant":
        return 1.0
    if step >= total_steps:
        return 0.0
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: str, total_steps: int,
                   warmup_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-step scheduler for ``optimizer``; see :func:`lr_factor` for the curve.

    Creating it sets every group's lr to ``initial_lr * lr_factor(0, ...)`` (``initial_lr`` is the
    group's lr at creation), as every torch scheduler does.

    Args:
        optimizer: its param groups' current lrs are the base lrs.
        schedule: one of :data:`SCHEDULES`.
        total_steps: optimizer steps in the whole run (>= 1).
        warmup_steps: linear-warmup steps (>= 0); 0 for none.
    Returns:
        A ``LambdaLR``; call ``.step()`` after each ``optimizer.step()``.
    """
    _check(schedule, total_steps, warmup_steps)
    # a partial of a module-level function (not a closure) keeps the scheduler picklable
    factor = partial(lr_factor, schedule=schedule, total_steps=total_steps,
                     warmup_steps=warmup_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
