"""Training and inference loops. They return values (dicts, arrays) and never print.

All randomness (batch order, augmentation) comes from an explicit ``torch.Generator``; on CUDA
the forward pass runs under bfloat16 autocast.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from transferlab.config.params import TrainParams
from transferlab.core.runtime import peak_rss_bytes, reset_peak_rss
from transferlab.core.tasks import CLASSIFICATION, Task
from transferlab.data.modalities.image import to_tensor  # noqa: F401  (re-exported)
from transferlab.models.batchnorm import batches_tracked, recalibrate_batchnorm
from transferlab.training.distributed import SINGLE, World, all_sum, shard, sync_buffers, wrap
from transferlab.training.optim import AdamW


def augment_batch(x: torch.Tensor, generator: torch.Generator, max_rotation_deg: float = 10.0,
                  max_scale: float = 0.1, max_shift: float = 0.1) -> torch.Tensor:
    """Random affine jitter of a (B, C, H, W) batch, parameters drawn from ``generator``."""
    b = x.shape[0]
    u = torch.rand(b, 4, generator=generator) * 2 - 1  # (B, 4) in [-1, 1]
    angle = u[:, 0] * math.radians(max_rotation_deg)
    scale = 1 + u[:, 1] * max_scale
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, u[:, 2] * max_shift], 1),
                         torch.stack([sin, cos, u[:, 3] * max_shift], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def augment_inputs(x: torch.Tensor, augment: bool | str, generator: torch.Generator
                   ) -> torch.Tensor:
    """Apply a training-batch augmentation: ``true``/``jitter`` is :func:`augment_batch`,
    ``false``/``none`` nothing, ``light``/``strong`` the presets of
    :mod:`transferlab.training.augmentation` (torchvision transforms v2, one draw per image)."""
    if augment is False or augment == "none":
        return x
    if augment is True or augment == "jitter":
        return augment_batch(x, generator)
    from transferlab.training.augmentation import augment as preset

    return preset(x, augment, generator)


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class FlopTally:
    """What :func:`counted_flops` counted: ``total`` FLOPs (set when the block ends)."""

    total: int = 0


@contextlib.contextmanager
def counted_flops() -> Iterator[FlopTally]:
    """Count every FLOP the block runs, exactly, with ``torch.utils.flop_counter``.

    What counts is what FlopCounterMode knows: matrix products, convolutions and attention (2
    FLOPs per multiply-add), forward and backward; elementwise work, normalisation, optimizer
    updates and decompositions (e.g. ``svdvals``) are not counted. The block's results are
    bitwise those without counting (the same kernels run), but each operation pays Python
    dispatch: about 2.5x the time of a small CNN's training step. Counts nest: an enclosing
    count includes an inner one's.
    """
    from torch.utils.flop_counter import FlopCounterMode

    tally = FlopTally()
    counter = FlopCounterMode(display=False)
    with counter:
        yield tally
    tally.total = int(counter.get_total_flops())


def _trainable_signature(model: nn.Module) -> tuple[bool, ...]:
    return tuple(p.requires_grad for p in model.parameters())


def make_optimizer(groups: list[dict], cfg: TrainParams) -> torch.optim.Optimizer:
    """SGD with momentum or AdamW over parameter groups (each may carry its own ``lr``).

    AdamW is :class:`transferlab.training.optim.AdamW`: torch's update with a correctly rounded
    square root, so training gives the same bits on Intel and AMD CPUs.
    """
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    return AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


@torch.inference_mode()
def predict_logits(model: nn.Module, x: torch.Tensor, device: torch.device,
                   batch_size: int = 1024) -> torch.Tensor:
    """Logits (N, C) of ``model`` on inputs (N, ...), computed in eval mode, returned on CPU."""
    model.to(device).eval()
    out = []
    for start in range(0, max(len(x), 1), batch_size):  # an empty x still gives (0, C)
        with _autocast(device):
            out.append(model(x[start:start + batch_size].to(device)).float().cpu())
    return torch.cat(out)


def head_proba(model: nn.Module, features: torch.Tensor) -> np.ndarray:
    """Softmax of the head on already-extracted features (N, D): no second backbone pass."""
    with torch.inference_mode():
        return torch.softmax(model.head(features.float()).double(), dim=1).numpy()


def predict_proba(model: nn.Module, x: torch.Tensor, device: torch.device) -> np.ndarray:
    """Softmax probabilities (N, C) as float64 numpy."""
    return torch.softmax(predict_logits(model, x, device).double(), dim=1).numpy()


@torch.inference_mode()
def extract_features(model: nn.Module, x: torch.Tensor, device: torch.device,
                     batch_size: int = 1024) -> torch.Tensor:
    """Backbone features (N, D) of a :class:`~transferlab.models.nets.TransferNet`, on CPU."""
    model.to(device).eval()
    out = []
    for start in range(0, max(len(x), 1), batch_size):  # an empty x still gives (0, D)
        with _autocast(device):
            out.append(model.features(x[start:start + batch_size].to(device)).float().cpu())
    return torch.cat(out)


def fit(model: nn.Module, train: tuple[torch.Tensor, torch.Tensor],
        val: tuple[torch.Tensor, torch.Tensor] | None, cfg: TrainParams, groups: list[dict],
        generator: torch.Generator, device: torch.device, desc: str = "train", *,
        augment: bool | str | None = None,
        loss_term: Callable[..., torch.Tensor] | None = None,
        on_epoch: Callable[[int], None] | None = None,
        task: Task | None = None, world: World = SINGLE) -> dict:
    """Train with early stopping on validation accuracy; restore the best epoch's weights.

    Model selection uses ``val`` only (never a test set). Ties in validation accuracy go to the
    lower validation loss. Without ``val`` the schedule is fixed: all ``cfg.epochs`` run and the
    last epoch's weights are kept (``best_epoch`` = the last epoch, validation fields None).

    Args:
        model: the network (moved to ``device`` here).
        train: (inputs (N, ...), labels (N,)) on CPU.
        val: validation inputs and labels, or None for a fixed schedule.
        cfg: epochs, batch size, optimizer, lr, weight decay, augmentation, patience.
        groups: optimizer parameter groups (only parameters that should train).
        generator: drives batch order and augmentation.
        device: where to train.
        desc: progress-bar label.
        augment: overrides ``cfg.augment`` (e.g. False for feature-space heads).
        loss_term: an extra term added to the cross-entropy, called with (features (B, D),
            logits (B, C), inputs (B, ...), labels (B,)); ``model`` must then have ``features``
            and ``head`` (a :class:`~transferlab.models.nets.TransferNet`, possibly wrapped).
        on_epoch: called with the 1-based epoch before it starts (e.g. gradual unfreezing).
        task: what a label is (:mod:`transferlab.core.tasks`; default classification). A regression
            trains on the MSE and stops early on validation R² (``best_val_r2``,
            ``val_r2``); its labels are float targets.
        world: this process's rank among the processes that train this run together
            (:mod:`transferlab.training.distributed`); each trains on its shard of every batch.
    Returns:
        {"best_epoch", "epochs_run", "steps", "best_val_accuracy", "best_val_loss", "history",
        "flops"}: ``flops`` is what the fit computed (:func:`counted_flops`), its training steps
        (an extra loss term's work included) and validation passes, summed over the ranks.
    """
    if world.distributed and loss_term is not None:  # it calls the model's parts, not DDP
        raise ValueError("an extra loss term is not supported under DDP (execution.ddp_procs)")
    run = _FitRun.start(model, cfg, groups, len(train[0]), generator, device,
                        cfg.augment if augment is None else augment, loss_term,
                        task or CLASSIFICATION, world)
    precise = (_PreciseBatchNorm(model, train[0], device, untrained_only=cfg.bn_stats == "auto")
               if cfg.bn_stats != "running" else None)
    score_key = run.task.val_key.removeprefix("best_")  # val_accuracy | val_r2
    history, best, flops = [], _BestEpoch(), _FlopBook()
    bar = tqdm(range(1, cfg.epochs + 1), desc=desc, leave=False, disable=None, unit="ep")
    for epoch in bar:
        if on_epoch is not None:
            on_epoch(epoch)
        flops.check_trainable(model)
        row = {"epoch": epoch, "train_loss": _train_epoch(run, train, flops)}
        history.append(row)
        if val is None:  # fixed schedule: nothing to choose with
            continue
        if precise is not None:  # scored with the statistics it would be used with
            flops.total += precise.apply()
        val_loss, score = _validate(run, val, flops)
        row.update({"val_loss": val_loss, score_key: score})
        bar.set_postfix({score_key: f"{score:.3f}"})
        if best.stop_after(epoch, score, val_loss, model, cfg.patience):
            break
    if precise is not None and val is None:  # with val, the best epoch's were set before it
        flops.total += precise.apply()
    return _fit_summary(run, val, history, best, flops)


class _PreciseBatchNorm:
    """Precise BatchNorm statistics for one fit (``TrainParams.bn_stats``): the running
    statistics of the BatchNorm layers the fit moved (frozen ones keep theirs; under ``auto``
    only those whose statistics had seen no batch before the fit) set to the exact statistics
    of the fit's training inputs, unaugmented (:func:`recalibrate_batchnorm`). Training in
    train mode normalises with batch statistics, so this changes no weight: only what the
    network predicts in eval mode, where the held-out labels score it and where it is used.
    Every rank computes them from all the inputs, so they agree."""

    def __init__(self, model: nn.Module, inputs: torch.Tensor, device: torch.device,
                 untrained_only: bool) -> None:
        self.model, self.inputs, self.device = model, inputs, device
        self.untrained_only = untrained_only
        self.before = batches_tracked(model)
        self._flops: dict[tuple[str, ...], int] = {}  # the same pass costs the same

    def apply(self) -> int:
        """Set the statistics now; returns the FLOPs of the passes (counted once per set of
        layers, then reused)."""
        moved = tuple(name for name, seen in batches_tracked(self.model).items()
                      if seen != self.before[name]
                      and not (self.untrained_only and self.before[name]))
        if not moved or len(self.inputs) < 2:
            return 0
        if moved in self._flops:
            recalibrate_batchnorm(self.model, self.inputs, self.device, names=moved)
        else:
            with counted_flops() as tally:
                recalibrate_batchnorm(self.model, self.inputs, self.device, names=moved)
            self._flops[moved] = tally.total
        return self._flops[moved]


@dataclass
class _FitRun:
    """What every epoch of one :func:`fit` uses, set up before the first."""

    model: nn.Module
    net: nn.Module  # the module that trains (DDP averages the gradients)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    cfg: TrainParams
    generator: torch.Generator
    device: torch.device
    augment: bool | str
    loss_term: Callable[..., torch.Tensor] | None
    task: Task
    world: World
    steps: int = 0  # optimizer steps so far

    @classmethod
    def start(cls, model: nn.Module, cfg: TrainParams, groups: list[dict], n_train: int,
              generator: torch.Generator, device: torch.device, augment: bool | str,
              loss_term: Callable[..., torch.Tensor] | None, task: Task,
              world: World) -> _FitRun:
        """Move the model, wrap it for the world, build its optimizer and schedule."""
        model.to(device)
        net = wrap(model, world, device)
        optimizer = make_optimizer(groups, cfg)
        scheduler = None
        if cfg.schedule != "constant" or cfg.warmup_epochs:
            from transferlab.training.schedules import make_scheduler

            per_epoch = math.ceil(n_train / cfg.batch_size)
            scheduler = make_scheduler(optimizer, cfg.schedule, cfg.epochs * per_epoch,
                                       cfg.warmup_epochs * per_epoch)
        return cls(model, net, optimizer, scheduler, cfg, generator, device, augment,
                   loss_term, task, world)


class _FlopBook:
    """The FLOPs a fit computed. A step is counted exactly the first time a batch of its size
    trains, and again whenever the set of trainable tensors changes (an ``on_epoch`` hook
    thawing a block); later steps of that size cost the same. A validation pass costs what the
    first one counted."""

    def __init__(self) -> None:
        self.total = 0
        self._step: dict[int, int] = {}  # batch size -> FLOPs of one step
        self._signature: tuple[bool, ...] | None = None
        self._val: int | None = None

    def check_trainable(self, model: nn.Module) -> None:
        """Forget the step counts when what trains changed (called before every epoch)."""
        if _trainable_signature(model) != self._signature:
            self._signature, self._step = _trainable_signature(model), {}

    @contextlib.contextmanager
    def step(self, size: int) -> Iterator[None]:
        """Count a training step of ``size`` examples (its forward and backward passes)."""
        if size in self._step:
            yield
        else:
            with counted_flops() as tally:
                yield
            self._step[size] = tally.total
        self.total += self._step[size]

    @contextlib.contextmanager
    def validation(self) -> Iterator[None]:
        """Count a validation pass."""
        if self._val is None:
            with counted_flops() as tally:
                yield
            self._val = tally.total
        else:
            yield
        self.total += self._val


def _train_epoch(run: _FitRun, train: tuple[torch.Tensor, torch.Tensor],
                 flops: _FlopBook) -> float:
    """One pass over ``train`` in an order drawn from the generator: the mean training loss."""
    x_train, y_train = train
    cfg, world, device = run.cfg, run.world, run.device
    run.model.train()
    order = torch.randperm(len(x_train), generator=run.generator)
    # the epoch's summed loss stays on the device (float64: the same sum, in the same
    # order, as float(loss) * batch on the host), read once per epoch: no per-step sync
    total, seen = torch.zeros((), dtype=torch.float64, device=device), 0
    for start in range(0, len(order), cfg.batch_size):
        idx = order[start:start + cfg.batch_size]
        if len(idx) < 2 * world.size and len(order) > 1:
            continue  # BatchNorm cannot train on a last batch (or shard) of one
        xb = augment_inputs(x_train[idx], run.augment, run.generator)  # every rank: all of it
        xb, yb = shard(xb, world).to(device), shard(y_train[idx], world).to(device)
        with flops.step(len(yb)):
            loss = _batch_loss(run, xb, yb)
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        run.optimizer.step()
        if run.scheduler is not None:
            run.scheduler.step()
        total += loss.detach().double() * len(yb)
        seen += len(yb)
        run.steps += 1
    total, seen = all_sum([float(total), float(seen)], world, device)
    return total / max(seen, 1)


def _batch_loss(run: _FitRun, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    """The task's loss of a batch, plus the extra loss term where there is one."""
    with _autocast(run.device):
        if run.loss_term is None:
            return run.task.loss(run.net(xb), yb)
        features = run.model.features(xb)
        logits = run.model.head(features)
        return run.task.loss(logits, yb) + run.loss_term(features, logits, xb, yb)


def _validate(run: _FitRun, val: tuple[torch.Tensor, torch.Tensor],
              flops: _FlopBook) -> tuple[float, float]:
    """(validation loss, validation score) of the model as it is now."""
    sync_buffers(run.model, run.world)  # every rank validates rank 0's weights and statistics
    with flops.validation():
        logits = predict_logits(run.model, val[0], run.device)
    return float(run.task.loss(logits, val[1])), run.task.val_score(logits, val[1])


@dataclass
class _BestEpoch:
    """Early stopping's bookkeeping: the best epoch so far and the epochs since."""

    epoch: int = 0
    score: float = -math.inf
    loss: float = math.inf
    state: dict | None = None
    since: int = 0

    def stop_after(self, epoch: int, score: float, loss: float, model: nn.Module,
                   patience: int) -> bool:
        """Record an epoch's validation; True when ``patience`` epochs brought nothing
        better (a higher score, or the same score at a lower loss)."""
        if score > self.score or (score == self.score and loss < self.loss):
            self.epoch, self.score, self.loss, self.since = epoch, score, loss, 0
            # clone, not deepcopy: the same values, without deepcopy's slow per-tensor
            # storage copies (1.3 s of a 7 s transfer stage on 2 cores)
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        self.since += 1
        return self.since >= patience


def _fit_summary(run: _FitRun, val: tuple | None, history: list[dict], best: _BestEpoch,
                 flops: _FlopBook) -> dict:
    """What :func:`fit` returns; restores the best epoch's weights where there was a choice."""
    total = flops.total
    if run.world.distributed:  # each rank counted its shards; the run is their sum
        total = int(all_sum([float(total)], run.world, run.device)[0])
    if val is None:
        return {"best_epoch": len(history), "epochs_run": len(history), "steps": run.steps,
                run.task.val_key: None, "best_val_loss": None, "history": history,
                "flops": total}
    if best.state is not None:
        run.model.load_state_dict(best.state)
    return {"best_epoch": best.epoch, "epochs_run": len(history), "steps": run.steps,
            run.task.val_key: best.score, "best_val_loss": best.loss, "history": history,
            "flops": total}


class Stopwatch:
    """Wall time and peak memory of a block.

    ``peak_bytes``: on GPU the peak CUDA memory allocated; on CPU the process's peak resident
    memory during the block (Linux: the high-water mark is reset on entry through
    /proc/self/clear_refs; elsewhere the process's lifetime maximum). It includes what was
    already there on entry (on CPU the interpreter, torch and the data: most of it).

    ``peak_added_bytes``: the peak above the memory in use on entry, i.e. what the block itself
    needed at most. On CPU it is resident memory, so memory that the allocator kept from earlier
    frees and the block reused does not count; ``None`` on CPU without Linux /proc, where there
    is no per-block peak.
    """

    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
            self._entry_bytes: int | None = int(torch.cuda.memory_allocated())
        else:
            self._entry_bytes = reset_peak_rss()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
        if torch.cuda.is_available():
            self.peak_bytes = int(torch.cuda.max_memory_allocated())
        else:
            self.peak_bytes = peak_rss_bytes()
        self.peak_added_bytes = (None if self._entry_bytes is None
                                 else max(0, self.peak_bytes - self._entry_bytes))


def flops_per_example(model: nn.Module, example: torch.Tensor, train: bool) -> int:
    """FLOPs of one forward (and, if ``train``, backward) pass per example.

    Counted with ``torch.utils.flop_counter`` on the model as configured, so frozen blocks
    contribute no weight-gradient FLOPs. Measured on a batch of two (BatchNorm cannot train on
    one example when feature maps are 1x1) and halved.
    """
    from torch.utils.flop_counter import FlopCounterMode

    model = copy.deepcopy(model).cpu().train(train)  # a copy: BatchNorm statistics stay put
    batch = example[:1].expand(2, *example.shape[1:]).contiguous()
    counter = FlopCounterMode(display=False)
    with counter:
        out = model(batch)
        if train and out.requires_grad:
            out.sum().backward()
    return int(counter.get_total_flops()) // 2
