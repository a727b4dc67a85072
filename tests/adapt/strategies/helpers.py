"""What the strategy tests share besides fixtures: a tiny target and source, constants and
assertions. The fixtures are in this folder's ``conftest.py``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from transferlab.adapt.replicates import run_replicates
from transferlab.adapt.strategies import Context
from transferlab.adapt.target import TargetData
from transferlab.config.params import SelectionParams
from transferlab.models.nets import build_model, load_checkpoint, save_checkpoint

CPU = torch.device("cpu")
ARCH = {"arch": "small_cnn", "width": 8}
SELECTION = SelectionParams()  # within_budget: budget 2 holds out 1 per class, then refits
CHECKPOINTS = {"0_2.pt", "0_all.pt", "1_2.pt", "1_all.pt"}
BLOCKS = ("block1", "block2", "block3")
SOURCE_CLASSES = ["a", "b", "c", "d"]


def squares(n_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 1, 16, 16) noisy images where class k has a bright 4x4 square at column 4k."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(3).repeat_interleave(n_per_class)
    x = torch.rand(len(y), 1, 16, 16, generator=gen) * 0.3
    for i, k in enumerate(y.tolist()):
        x[i, 0, 6:10, 4 * k:4 * k + 4] += 0.7
    return x, y


def budgets(labels: torch.Tensor) -> dict[str, dict[str, list[int]]]:
    """Nested budgets: seed s draws a per-class order; budget 2 is its first 2 per class."""
    out = {}
    for seed in ("0", "1"):
        rng = np.random.default_rng(int(seed))
        order = [rng.permutation(np.flatnonzero(labels.numpy() == k)).tolist() for k in range(3)]
        out[seed] = {"2": sorted(i for o in order for i in o[:2]),
                     "all": sorted(i for o in order for i in o)}
    return out


def save_source(path: Path, classes: list[str] = SOURCE_CLASSES) -> Path:
    """A small_cnn (width 8) source with a class per name (at least 1, for a null source's
    empty list) and BatchNorm statistics off their init."""
    num_classes = max(len(classes), 1)
    model = build_model("small_cnn", num_classes, 0.5, 0.2, seed=42, width=8)
    model.train()
    with torch.no_grad():
        model(torch.rand(16, 1, 16, 16, generator=torch.Generator().manual_seed(3)))
    save_checkpoint(model, path, {"arch": "small_cnn", "width": 8, "num_classes": num_classes,
                                  "mean": 0.5, "std": 0.2, "source_classes": list(classes)})
    return path


def part(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of a state dict under ``prefix`` (e.g. ``backbone.block1.``)."""
    return {k: v for k, v in state.items() if k.startswith(prefix)}


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def loaded_states(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {p.name: load_checkpoint(p)[0].state_dict() for p in sorted(folder.glob("*.pt"))}


def run_into(name: str, cfg: object, source_path: Path | None, target: TargetData,
             folder: Path, selection: SelectionParams = SELECTION, **kwargs: object) -> dict:
    """``run_replicates`` of the tiny source architecture on the CPU into ``folder`` (made
    here)."""
    folder.mkdir(parents=True, exist_ok=True)
    return run_replicates(name, cfg, source_path, target, CPU, folder, ARCH, selection,
                          **kwargs)


def run_and_load(name: str, cfg: object, source_path: Path | None, target: TargetData,
                 folder: Path, **kwargs: object) -> tuple[list[dict], dict[str, dict]]:
    """``run_into`` ``folder``: the run records and the checkpoints' states, loaded back."""
    runs = run_into(name, cfg, source_path, target, folder, **kwargs)["runs"]
    return runs, loaded_states(folder)


def assert_same_runs(a: tuple[list[dict], dict[str, dict]],
                     b: tuple[list[dict], dict[str, dict]]) -> None:
    """Two ``run_and_load`` results: the same records and, for every one of CHECKPOINTS,
    bitwise the same weights."""
    (runs_a, states_a), (runs_b, states_b) = a, b
    assert runs_a == runs_b
    for ckpt in CHECKPOINTS:
        assert states_equal(states_a[ckpt], states_b[ckpt]), ckpt


def assert_reproducible(first: tuple[list[dict], dict[str, dict]],
                        second: tuple[list[dict], dict[str, dict]]) -> None:
    """Two ``run_and_load`` results of the same run: exactly CHECKPOINTS, the same records and
    weights, and distinct replicates distinct models."""
    assert first[1].keys() == second[1].keys() == CHECKPOINTS
    assert_same_runs(first, second)
    states = first[1]
    assert not torch.equal(states["0_2.pt"]["head.weight"], states["1_2.pt"]["head.weight"])


def context(target: TargetData, source: nn.Module, seed: int = 0) -> Context:
    """A replicate's context for calling a strategy's hooks directly."""
    return Context.build(target, source, arch=ARCH, device=CPU, seed=seed)
