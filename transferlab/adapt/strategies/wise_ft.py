"""``wise_ft``: weight-space ensembling of the linear-probed and the fine-tuned model (WiSE-FT).

Wortsman, Ilharco, Kim, Li, Kornblith, Roelofs, Gontijo-Lopes, Hajishirzi, Farhadi, Namkoong and
Schmidt (2022), "Robust fine-tuning of zero-shot models" (CVPR). The final weights are
``theta_alpha = (1 - alpha) * theta_0 + alpha * theta_1``, an interpolation between the model
before fine-tuning (``theta_0``) and after it (``theta_1``).

What is implemented: the paper's ``theta_0`` is a zero-shot model, which has a head; ours gets a
new head, so ``theta_0`` is the source backbone with a linear-probed head: the LP phase of
:mod:`~transferlab.adapt.strategies.lp_ft` (``before_fit``, on the run's training labels).
``theta_1``
is that model fine-tuned (LP-FT, at the epoch the fit chose). :meth:`WiseFt.after_fit`
interpolates every floating-point parameter and buffer, BatchNorm running means and variances
included; integer buffers (``num_batches_tracked``) are taken from ``theta_1``, and an entry equal
in both (e.g. the input normalisation) is kept bitwise as it is.

The mixing weight: with held-out labels every ``alphas`` value is scored there and the best
accuracy wins (ties: the lower held-out loss, then the larger alpha, i.e. the one closer to the
model the fit chose); the choice, with every alpha's held-out accuracy, is recorded and the
refit on the whole budget applies the same alpha. Under a fixed schedule (nothing held out)
``default_alpha`` applies, 0.5 as in the paper's fixed-alpha results.

Simplifications: interpolated BatchNorm statistics are not re-estimated for the interpolated
network; the record's ``best_val_accuracy`` and ``selection_score`` are the fit's (``theta_1``
at its best epoch), while the interpolated model's held-out accuracy per alpha is in the
record's ``search`` entry. The probe's and the alpha scoring's FLOPs are in ``train_flops``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from transferlab.adapt.strategies.lp_ft import LpFt, LpFtParams
from transferlab.adapt.strategies.registry import register
from transferlab.config.typed import check_range, fail
from transferlab.models.nets import TransferNet
from transferlab.training.loop import predict_logits

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class WiseFtParams(LpFtParams):
    # mixing weights scored on the held-out labels (0: the probed model, 1: the fine-tuned one)
    alphas: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    default_alpha: float = 0.5  # the mixing weight where nothing is held out to choose it

    def validate(self, key: str) -> None:
        super().validate(key)
        if not self.alphas:
            fail(f"{key}.alphas", "must list at least one mixing weight")
        for i, alpha in enumerate(self.alphas):
            check_range(f"{key}.alphas[{i}]", alpha, 0, 1)
        if len(set(self.alphas)) != len(self.alphas):
            fail(f"{key}.alphas", f"repeats a value: {list(self.alphas)}")
        check_range(f"{key}.default_alpha", self.default_alpha, 0, 1)


def interpolate(theta_0: State, theta_1: State, alpha: float) -> State:
    """``(1 - alpha) * theta_0 + alpha * theta_1`` for every floating-point entry of two state
    dicts of the same network; integer entries, and entries equal in both, come from
    ``theta_1`` (copied). Returns a new state dict on ``theta_1``'s devices."""
    if theta_0.keys() != theta_1.keys():
        raise ValueError("interpolate: the two state dicts have different keys: "
                         + ", ".join(sorted(set(theta_0) ^ set(theta_1))))
    out = {}
    for key, b in theta_1.items():
        a = theta_0[key].to(b.device)
        if not b.is_floating_point() or torch.equal(a, b):
            out[key] = b.detach().clone()
        else:
            out[key] = (1 - alpha) * a + alpha * b
    return out


def _snapshot(model: nn.Module) -> State:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@register
class WiseFt(LpFt):
    name = "wise_ft"
    Params = WiseFtParams
    style = ("-", "p")
    rank = 36

    def before_fit(self, model: TransferNet, train: tuple[torch.Tensor, torch.Tensor],
                   cfg: WiseFtParams, generator: torch.Generator) -> TransferNet:
        model = super().before_fit(model, train, cfg, generator)
        self.theta_0 = _snapshot(model)  # this run's probed model; after_fit of the same run
        return model

    def after_fit(self, model: TransferNet, net: nn.Module,
                  val: tuple[torch.Tensor, torch.Tensor] | None, cfg: WiseFtParams,
                  chosen: dict | None) -> tuple[TransferNet, dict]:
        theta_1 = _snapshot(model)
        if chosen is not None:  # the refit replays the choice
            choices = {"alpha": chosen["alpha"]}
        elif val is None:  # a fixed schedule: nothing to choose with
            choices = {"alpha": cfg.default_alpha}
        else:
            task, scores = self.target_task(), {}
            for alpha in cfg.alphas:
                model.load_state_dict(interpolate(self.theta_0, theta_1, alpha))
                logits = predict_logits(model, val[0], self.ctx.device)
                # held-out accuracy (a regression: R²), then loss
                scores[alpha] = (task.val_score(logits, val[1]), float(task.loss(logits, val[1])))
            best = max(scores, key=lambda a: (scores[a][0], -scores[a][1], a))
            by_alpha = task.val_key.removeprefix("best_") + "_by_alpha"  # val_accuracy_by_alpha
            choices = {"alpha": best,
                       "diagnostics": {by_alpha: {str(a): s[0] for a, s in scores.items()}},
                       # the returned (mixed) model is what the held-out labels scored
                       "selection": {task.val_key: scores[best][0],
                                     "best_val_loss": scores[best][1]}}
        model.load_state_dict(interpolate(self.theta_0, theta_1, choices["alpha"]))
        return model, choices
