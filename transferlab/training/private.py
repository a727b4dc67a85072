"""Differentially private training: DP-SGD (Abadi et al., CCS 2016) with Opacus.

Each step draws a Poisson sample of the training set (every example with probability
q = batch size / N), clips each example's gradient to ``max_grad_norm``, adds Gaussian noise of
standard deviation ``noise_multiplier * max_grad_norm`` to their sum, and steps. The privacy
spent is accounted in Rényi DP (Mironov 2017; the subsampled Gaussian of Mironov, Talwar and
Zhang 2019) and converted to (ε, δ) by Balle et al. (2020, Thm. 21), as Opacus's ``rdp``
accountant does (the tests hold it to those formulas, written out in
``tests/training/test_private.py``).

The sampling and the noise are drawn from generators seeded by the run's seed, so that a run
repeats bit for bit; Opacus's ``secure_mode`` (a cryptographic noise source) is off. The ε
holds for noise that an adversary cannot predict: a deployment that must resist one who knows
the seed retrains with ``secure_mode`` on, and gives up the bitwise repeat.

What this module does not do: choose anything on the private labels. A fit here runs a fixed
number of epochs; a choice made by scoring on private labels would spend privacy that the ε
reported here does not count.

BatchNorm cannot run under per-example gradients (a batch statistic mixes examples). Two
replacements, chosen by ``batchnorm``:
- ``freeze``: BatchNorm keeps the source's running statistics and affine parameters (eval mode,
  no gradient); the rest trains. Nothing about the target's statistics is learnt, privately or not.
- ``groupnorm``: Opacus's ``ModuleValidator.fix`` replaces each BatchNorm by a GroupNorm that
  trains (its statistics are per example); the source's BatchNorm parameters are dropped.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn


def epsilon_spent(sample_rate: float, noise_multiplier: float, steps: int, delta: float
                  ) -> float:
    """ε at ``delta`` after ``steps`` DP-SGD steps, by Opacus's RDP accountant."""
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [(noise_multiplier, sample_rate, steps)]
    return float(accountant.get_epsilon(delta))


def _stay_in_eval(module: nn.Module, _args: tuple) -> None:
    module.training = False  # a frozen BatchNorm normalises by the source's statistics


def freeze_batchnorm(model: nn.Module) -> list[str]:
    """Every BatchNorm keeps its statistics and affine parameters: no gradient, and eval mode
    at every forward (a forward pre-hook, so a later ``model.train()`` cannot undo it). Returns
    the layers' names."""
    names = []
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
            for p in module.parameters():
                p.requires_grad_(False)
            module.register_forward_pre_hook(_stay_in_eval)
            names.append(name)
    return names


def dp_fit(model: nn.Module, train: tuple[torch.Tensor, torch.Tensor], *, epochs: int,
           batch_size: int, max_grad_norm: float, delta: float, lr: float = 0.1,
           noise_multiplier: float | None = None, target_epsilon: float | None = None,
           seed: int = 0, momentum: float = 0.9, device: torch.device | None = None,
           batchnorm: str = "freeze", optimizer: torch.optim.Optimizer | None = None
           ) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``model`` with DP-SGD for a fixed number of epochs (nothing chosen on the labels).

    Give either ``noise_multiplier`` (σ) or ``target_epsilon`` (σ is then the smallest that
    reaches it at ``delta`` after ``epochs``, by Opacus's search). Batches are Poisson samples
    of expected size ``batch_size``; the sampling and the noise are drawn from generators
    seeded by ``seed``. With σ = 0 and an unreachable clipping norm the steps are plain SGD's.
    ``optimizer``: over ``model``'s trainable parameters (default: SGD at ``lr`` with
    ``momentum``); Opacus wraps it.

    Returns:
        (the trained model, unwrapped; {"epsilon", "dp_delta" (δ), "noise_multiplier",
        "max_grad_norm", "sample_rate", "steps", "history": [{"epoch", "train_loss"}],
        "batchnorm"}).
    """
    from opacus import PrivacyEngine
    from opacus.validators import ModuleValidator

    if (noise_multiplier is None) == (target_epsilon is None):
        raise ValueError("give exactly one of noise_multiplier and target_epsilon")
    device = device or torch.device("cpu")
    if batchnorm == "groupnorm":
        model = ModuleValidator.fix(model)
    elif batchnorm == "freeze":
        freeze_batchnorm(model)
    else:
        raise ValueError(f"batchnorm: {batchnorm!r}; choose freeze or groupnorm")
    for module in model.modules():  # Opacus's backward hooks forbid in-place activations
        if hasattr(module, "inplace"):
            module.inplace = False
    model.to(device).train()
    errors = [e for e in ModuleValidator.validate(model, strict=False)
              if "BatchNorm" not in str(e) or batchnorm != "freeze"]
    if errors:
        raise ValueError(f"Opacus cannot train this model privately: {errors[0]}")
    if optimizer is None:
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum)
    for group in optimizer.param_groups:  # what the BatchNorm replacement froze trains no more
        group["params"] = [p for p in group["params"] if p.requires_grad]
    data = torch.utils.data.TensorDataset(*train)
    loader = torch.utils.data.DataLoader(
        data, batch_size=batch_size, generator=torch.Generator().manual_seed(seed))
    with warnings.catch_warnings():  # the module docstring says why secure_mode is off
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        engine = PrivacyEngine(accountant="rdp")
    noise_gen = torch.Generator(device=device).manual_seed(seed + 1)
    common = {"module": model, "optimizer": optimizer, "data_loader": loader,
              "max_grad_norm": max_grad_norm, "poisson_sampling": True,
              "noise_generator": noise_gen}
    if target_epsilon is not None:
        net, opt, dl = engine.make_private_with_epsilon(
            **common, target_epsilon=target_epsilon, target_delta=delta, epochs=epochs)
    else:
        net, opt, dl = engine.make_private(**common, noise_multiplier=noise_multiplier)
    history, steps = [], 0
    for epoch in range(1, epochs + 1):
        total, seen = 0.0, 0
        for xb, yb in dl:
            xb, yb = xb.to(device), yb.to(device)
            opt.zero_grad(set_to_none=True)
            # a Poisson sample can be empty: the step still runs (its update is the noise
            # alone), or whether a step happened would tell who is in the data
            loss = nn.functional.cross_entropy(net(xb), yb, reduction="mean" if len(yb)
                                               else "sum")
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(yb)
            seen += len(yb)
            steps += 1
        history.append({"epoch": epoch, "train_loss": total / max(seen, 1)})
    sigma = float(opt.noise_multiplier)
    epsilon = float(engine.get_epsilon(delta)) if sigma > 0 else math.inf
    trained = net._module if hasattr(net, "_module") else net
    return trained, {"epsilon": epsilon, "dp_delta": delta, "noise_multiplier": sigma,
                     "max_grad_norm": max_grad_norm, "sample_rate": dl.sample_rate,
                     "steps": steps, "history": history, "batchnorm": batchnorm}
