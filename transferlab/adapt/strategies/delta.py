"""``delta``: fine-tuning that keeps the backbone's feature maps close to the source's.

Li, Xiong, Wang, Huan, Dou, Huan (2019), "DELTA: Deep Learning Transfer using Feature Map with
Attention for Convolutional Networks" (ICLR). Implemented: the paper's behavioural regulariser
plus the L2 term on the new head, added to the mean cross-entropy of each batch:

    alpha / 2 * sum_blocks mean_batch sum_c (C * a_c) * mean_positions (FM_c(w) - FM_c(w_src))^2
    + beta / 2 * ||w_head||^2,

where FM_c is channel c of a chosen backbone block's output on the training batch, captured by
forward hooks on the training model and computed alike by a frozen copy of the model at the
start of the run (the source backbone). The per-position mean and the weights (C * a_c, which
sum to C per block, so uniform attention is weight 1) follow TLlib's
``AttentionBehavioralRegularization``; TLlib sums over the batch, here it is the batch mean,
like the cross-entropy beside it.

Channel attention (``attention: true``), as in the paper: a_c is a softmax over a block's
channels of the rise of the training loss when channel c of the source's block output is
zeroed, on the run's training labels (no augmentation, BatchNorm in eval mode). The new head is
random at the start, so that loss is measured through a probe: a copy of the new head trained
first for ``attention_steps`` full-batch AdamW steps on the frozen source features (the paper's
released code, and TLlib's ``calculate_channel_attention``, likewise train a classifier first);
the probe is then discarded and fine-tuning starts from the untouched new head. As in that
code, the rises are standardised (z-scores) before a softmax at temperature 5.
``attention: false`` gives uniform weights, the paper's "DELTA w/o attention" ablation.

The frozen source copy runs in the training model's BatchNorm mode (batch statistics while
training; TLlib runs it in eval mode), so the distance is exactly zero at the start and
measures only how far the weights moved. Otherwise it trains exactly as ``finetune``;
``alpha = beta = 0`` gives bitwise the ``finetune`` model. As for ``l2_sp``, the head term
replaces weight decay: set ``weight_decay: 0``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from transferlab.adapt.strategies._reference import frozen_copy, head_l2, run_like
from transferlab.adapt.strategies.base import LossTerm
from transferlab.adapt.strategies.finetune import Finetune, FinetuneParams
from transferlab.adapt.strategies.registry import register
from transferlab.config.typed import check_range, fail
from transferlab.models.nets import TransferNet, block_names
from transferlab.training.optim import AdamW

ATTENTION_TEMPERATURE = 5.0  # softmax temperature on the standardised loss rises (DELTA's code)
CHUNK = 1024  # examples per forward pass when scoring channels


@dataclass(frozen=True)
class DeltaParams(FinetuneParams):
    alpha: float = 0.01  # strength of the feature-map distance to the source backbone
    beta: float = 0.01  # strength of the plain L2 penalty on the new head
    blocks: tuple[str, ...] = ()  # backbone blocks whose outputs are compared; (): every one
    attention: bool = True  # weight channels by the loss rise without them; false: uniform
    attention_steps: int = 100  # full-batch AdamW steps (at lr) of the probe head scoring channels

    def validate(self, key: str) -> None:
        super().validate(key)
        check_range(f"{key}.alpha", self.alpha, 0, 1e4)
        check_range(f"{key}.beta", self.beta, 0, 1e4)
        check_range(f"{key}.attention_steps", self.attention_steps, 1, 100_000)
        if len(set(self.blocks)) != len(self.blocks):
            fail(f"{key}.blocks", f"repeats a block: {', '.join(self.blocks)}")


def feature_map_distance(maps: Sequence[torch.Tensor], reference: Sequence[torch.Tensor],
                         weights: Sequence[torch.Tensor | None]) -> torch.Tensor:
    """sum over blocks of mean_batch sum_c (C * a_c) * mean_positions (map - reference)^2.

    Args:
        maps: each block's output (B, C, ...) of the training model.
        reference: the same of the frozen source, on the same batch.
        weights: each block's channel attention a (C,), summing to 1, or None for uniform.
    Returns:
        A scalar (float32).
    """
    total = torch.zeros((), device=maps[0].device)
    for fm, ref, a in zip(maps, reference, weights, strict=True):
        b, c = fm.shape[:2]
        diff = (fm.float() - ref.float()).reshape(b, c, -1)  # (B, C, positions)
        per_channel = diff.pow(2).mean(2)  # (B, C)
        if a is not None:
            per_channel = per_channel * (c * a.to(per_channel.device))
        total = total + per_channel.sum(1).mean()
    return total


def attention_from_rises(rises: torch.Tensor) -> torch.Tensor:
    """Channel weights (C,) from the loss rises (C,): softmax of their z-scores / 5; uniform
    where all rises are equal."""
    std = rises.std(unbiased=False)
    z = (rises - rises.mean()) / std if std > 0 else torch.zeros_like(rises)
    return torch.softmax(z / ATTENTION_TEMPERATURE, dim=0)


def block_outputs(model: TransferNet, x: torch.Tensor, blocks: Sequence[str]
                  ) -> dict[str, torch.Tensor]:
    """The outputs of the named backbone blocks on inputs x, stopping after the last one."""
    out, h = {}, model.normalize(x)
    for name, block in model.backbone.named_children():
        h = block(h)
        if name in blocks:
            out[name] = h
            if len(out) == len(blocks):
                break
    return out


def train_probe_head(model: TransferNet, data: tuple[torch.Tensor, torch.Tensor], steps: int,
                     lr: float, device: torch.device) -> TransferNet:
    """A frozen copy of ``model`` (on ``device``, eval mode) whose head was trained for
    ``steps`` full-batch AdamW steps on the frozen backbone's features of ``data``.

    Full-batch steps draw nothing at random; ``model`` is unchanged.
    """
    probe = copy.deepcopy(model).to(device).eval().requires_grad_(False)
    x, y = data[0].to(device), data[1].to(device)
    with torch.no_grad():
        features = torch.cat([probe.features(x[i:i + CHUNK]) for i in range(0, len(x), CHUNK)])
    head = probe.head.requires_grad_(True)
    optimizer = AdamW(head.parameters(), lr=lr, weight_decay=0.0)
    for _ in range(steps):
        loss = F.cross_entropy(head(features), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    head.requires_grad_(False)
    return probe


@torch.no_grad()
def channel_loss_rises(model: TransferNet, blocks: Sequence[str],
                       data: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per block, the rise (C,) of the mean cross-entropy of ``model`` (as it is: mode, head,
    device) on ``data`` when channel c of the block's output is zeroed, one channel at a time."""
    device = next(model.parameters()).device
    x, y = data[0].to(device), data[1].to(device)
    children = list(model.backbone.named_children())
    sums: dict[str, torch.Tensor] = {}  # per block: [loss, loss without channel c, ...] summed
    for start in range(0, len(x), CHUNK):
        xb, yb = x[start:start + CHUNK], y[start:start + CHUNK]
        h = model.normalize(xb)
        for i, (name, block) in enumerate(children):
            h = block(h)
            if name not in blocks:
                continue
            rest = nn.Sequential(*(m for _, m in children[i + 1:]), model.head)
            losses = [F.cross_entropy(rest(h), yb, reduction="sum")]
            for c in range(h.shape[1]):
                zeroed = h.clone()
                zeroed[:, c] = 0
                losses.append(F.cross_entropy(rest(zeroed), yb, reduction="sum"))
            sums[name] = sums.get(name, 0) + torch.stack(losses).double()
    return {name: ((s[1:] - s[0]) / len(x)).float() for name, s in sums.items()}


def channel_attention(model: TransferNet, blocks: Sequence[str],
                      data: tuple[torch.Tensor, torch.Tensor], steps: int, lr: float,
                      device: torch.device) -> dict[str, torch.Tensor]:
    """Each block's channel attention (C,) on the run's training data: the loss rises of a
    probe (:func:`train_probe_head`) turned into weights by :func:`attention_from_rises`."""
    probe = train_probe_head(model, data, steps, lr, device)
    rises = channel_loss_rises(probe, blocks, data)
    return {name: attention_from_rises(rises[name]) for name in blocks}


@register
class Delta(Finetune):
    name = "delta"
    tasks = frozenset({"classification"})  # its own code scores class logits
    Params = DeltaParams
    needs_backbone = frozenset({"channel_maps"})
    roles = frozenset()
    style = (":", "2")
    rank = 44

    def _blocks(self, model: TransferNet, cfg: DeltaParams) -> list[str]:
        valid = block_names(model)
        for block in cfg.blocks:
            if block not in valid:
                raise ValueError(f"transfer.{self.name}.blocks: unknown block {block!r}; "
                                 f"expected some of {', '.join(valid)}")
        return [b for b in valid if b in cfg.blocks] if cfg.blocks else valid  # forward order

    def before_fit(self, model: TransferNet, train: tuple[torch.Tensor, torch.Tensor],
                   cfg: DeltaParams, generator: torch.Generator) -> TransferNet:
        self.blocks = self._blocks(model, cfg)
        self.weights: dict[str, torch.Tensor | None] = dict.fromkeys(self.blocks)
        if cfg.attention:  # deterministic: full-batch steps, no draws from the generator
            self.weights = channel_attention(model, self.blocks, train, cfg.attention_steps,
                                             cfg.lr, self.ctx.device)
        return model

    def loss_term(self, model: TransferNet, cfg: DeltaParams) -> LossTerm:
        reference = frozen_copy(model)  # the source backbone as this run starts
        blocks, weights = self.blocks, [self.weights[b] for b in self.blocks]
        captured: dict[str, torch.Tensor] = {}

        def capture(name: str):
            def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
                if torch.is_grad_enabled():  # training steps only, not evaluation passes
                    captured[name] = output
            return hook

        self.handles = [model.backbone.get_submodule(b).register_forward_hook(capture(b))
                        for b in blocks]
        self.captured = captured

        def term(features: torch.Tensor, logits: torch.Tensor, inputs: torch.Tensor,
                 labels: torch.Tensor) -> torch.Tensor:
            missing = [b for b in blocks if b not in captured]
            if missing:
                raise RuntimeError(f"delta: no feature map of {', '.join(missing)} was "
                                   "captured in this training step")
            run_like(reference, model, inputs.device)
            with torch.no_grad():
                source_maps = block_outputs(reference, inputs, blocks)
            maps = [captured.pop(b) for b in blocks]
            return (cfg.alpha / 2 * feature_map_distance(maps, [source_maps[b] for b in blocks],
                                                         weights)
                    + cfg.beta * head_l2(model))

        return term

    def after_fit(self, model: TransferNet, net: nn.Module,
                  val: tuple[torch.Tensor, torch.Tensor] | None, cfg: DeltaParams,
                  chosen: dict | None) -> tuple[TransferNet, dict]:
        for handle in self.handles:  # the returned model is a plain TransferNet again
            handle.remove()
        self.handles = []
        self.captured.clear()
        return model, {}
