"""BatchNorm statistics of a network, set from data: what AdaBN and precise BatchNorm share.

A BatchNorm layer in eval mode normalises with its running statistics, which training keeps as
an exponential moving average of its batches' statistics. After few steps, or steps on
augmented batches, that average is far from the statistics of the data the network will see:
on 30 handwritten digits (3 labels per class), a small CNN trained from scratch scored 0.20 to
0.87 test accuracy over four seeds with its moving averages, and 0.79 to 0.90 with the same
weights and the statistics recomputed on its 30 training images (``docs/strategies.md``,
"BatchNorm statistics"). Recomputing them once training ends is "precise BatchNorm" (Wu and
Johnson 2021, "Rethinking 'Batch' in BatchNorm", section 3; ``torch.optim.swa_utils.update_bn``
does it with one train-mode pass that averages per-batch statistics).

:func:`recalibrate_batchnorm` computes them exactly, as AdaBN's Algorithm 1 states (Li et al.
2016): layer by layer in forward order, each from one eval-mode pass over all the images, so
every earlier layer already normalises with its new statistics; each layer's inputs are
accumulated in float64 (count, mean, sum of squared deviations, merged across batches), so the
result does not depend on the batch size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

STATS_BATCH = 1024  # images per forward pass (the result does not depend on it)


def batchnorm_layers(model: nn.Module) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    """(name, module) of every BatchNorm layer that keeps running statistics, in forward
    (registration) order."""
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def batches_tracked(model: nn.Module) -> dict[str, int]:
    """{layer name: batches its running statistics have seen}: which layers a fit moved."""
    return {name: int(bn.num_batches_tracked) for name, bn in batchnorm_layers(model)}


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images: torch.Tensor, device: torch.device,
                          batch_size: int = STATS_BATCH, names: Sequence[str] | None = None,
                          ) -> dict[str, tuple[torch.Tensor, ...]]:
    """Set BatchNorm layers' running statistics to those of their inputs over ``images``.

    Args:
        model: the network (modified in place; left on ``device`` in its previous mode). Its
            ``features`` (a :class:`~transferlab.models.nets.TransferNet`'s backbone) runs the
            passes where it has one, else the whole network.
        images: (N, ...) inputs, N >= 2.
        device: where the passes run.
        batch_size: inputs per forward pass.
        names: the layers to set (default: every BatchNorm layer with running statistics);
            the others keep theirs.
    Returns:
        {layer name: (running_mean, running_var)} as set, on CPU.
    """
    if len(images) < 2:
        raise ValueError(f"{len(images)} image(s): a BatchNorm variance needs at least 2")
    was_training = model.training
    model.to(device).eval()
    forward = getattr(model, "features", model)
    stats = {}
    for name, bn in batchnorm_layers(model):
        if names is not None and name not in names:
            continue
        acc = {"n": 0, "mean": 0.0, "m2": 0.0}

        def accumulate(module: nn.Module, args: tuple, acc: dict = acc) -> None:
            h = args[0].double().transpose(0, 1).flatten(1)  # (C, B * spatial)
            n, mean = h.shape[1], h.mean(1)
            m2 = ((h - mean[:, None]) ** 2).sum(1)
            total = acc["n"] + n  # Chan et al.'s merge of (count, mean, M2)
            delta = mean - acc["mean"]
            acc["mean"] = acc["mean"] + delta * (n / total)
            acc["m2"] = acc["m2"] + m2 + delta ** 2 * (acc["n"] * n / total)
            acc["n"] = total

        handle = bn.register_forward_pre_hook(accumulate)
        try:
            for start in range(0, len(images), batch_size):
                forward(images[start:start + batch_size].to(device))
        finally:
            handle.remove()
        bn.running_mean.copy_(acc["mean"])
        bn.running_var.copy_(acc["m2"] / (acc["n"] - 1))
        stats[name] = (bn.running_mean.cpu().clone(), bn.running_var.cpu().clone())
    model.train(was_training)
    return stats
