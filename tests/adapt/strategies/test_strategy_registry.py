"""The strategy family: a registry of plugins that the rest of the code never names.

- No module outside a strategy's own compares a strategy's name as a string: the loop,
  evaluate, the report and tracking use the registry and its roles.
- Each strategy module registers exactly one strategy, named after the module, with its own
  frozen params dataclass, and the repo's params.yaml has a block for it.
- Dropping a strategy is deleting its module and its params block (slow: a real ``dvc repro``).
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import importlib
import os
import pkgutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, shrunk_params
from transferlab.adapt import strategies
from transferlab.config.params import load_params
from transferlab.core.errors import ParamsError
from transferlab.core.workspace import copy_worktree

PACKAGE = ROOT / "transferlab" / "adapt" / "strategies"


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring constants of a module, its classes and functions."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def name_literals(path: Path, names: set[str]) -> list[str]:
    """Places in ``path`` where a string literal is a strategy name, or a curve or path that
    ends or starts with one (``"/finetune"``, ``"finetune/"``); docstrings do not count."""
    tree = ast.parse(path.read_text())
    skip = _docstrings(tree)
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            value = node.value
            if any(value == n or value.endswith("/" + n) or value.startswith(n + "/")
                   for n in names):
                hits.append(f"{path.name}:{node.lineno}: {value!r}")
    return hits


def test_no_strategy_name_is_compared_as_a_string_outside_its_module() -> None:
    names = set(strategies.names(variants=False))
    files = sorted((ROOT / "transferlab").rglob("*.py")) + sorted((ROOT / "stages").glob("*.py"))
    hits = []
    for path in files:
        own = path.parent == PACKAGE and path.stem in names
        hits += name_literals(path, names - {path.stem} if own else names)
    assert not hits, "strategy names used outside their own module:\n" + "\n".join(hits)


def test_the_scan_finds_a_planted_name(tmp_path: Path) -> None:
    planted = tmp_path / "x.py"
    planted.write_text('"""finetune in a docstring is fine."""\n'
                       'def f(s):\n    return s == "finetune" or s.endswith("/scratch")\n')
    hits = [h.split(": ", 1)[1] for h in name_literals(planted, {"finetune", "scratch"})]
    assert hits == ["'finetune'", "'/scratch'"]
    assert name_literals(planted, {"lora"}) == []


def test_one_module_one_strategy_named_after_it() -> None:
    modules = sorted(m.name for m in pkgutil.iter_modules([str(PACKAGE)])
                     if m.name not in {"base", "registry"} and not m.name.startswith("_"))
    assert sorted(strategies.names(variants=False)) == modules
    for name in modules:
        module = importlib.import_module(f"transferlab.adapt.strategies.{name}")
        registered = [v for v in vars(module).values()
                      if isinstance(v, type) and getattr(v, "name", None) == name
                      and v.__module__ == module.__name__]
        assert len(registered) == 1, name
        params = registered[0].Params
        assert dataclasses.is_dataclass(params) and params.__dataclass_params__.frozen, name


def test_roles_are_unique_and_filled() -> None:
    for role in ("baseline", "reference", "feature_probe"):
        assert strategies.by_role(role) in strategies.names()
    with pytest.raises(ValueError, match="unknown role 'best'; expected one of baseline"):
        strategies.by_role("best")


def test_every_strategy_has_a_block_in_params_yaml() -> None:
    params = strategies.resolve(load_params(ROOT / "params.yaml"))
    builtin = set(strategies.names(variants=False))
    assert builtin <= set(params.transfer)
    for name in set(params.transfer) - builtin:  # the rest are variants of a strategy
        assert strategies.get(name).variant_of in builtin, name


def test_unknown_strategy_names_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown strategy 'fintune'; expected one of "
                                         r"source_only, zero_shot, in_context, linear_probe"):
        strategies.get("fintune")


def test_search_grid_keys_and_values_are_checked(tmp_path: Path, params_dict: dict) -> None:
    path = tmp_path / "params.yaml"
    params_dict["transfer"]["finetune"]["search"] = {"learning_rate": [0.1]}
    path.write_text(yaml.safe_dump(params_dict, sort_keys=False))
    with pytest.raises(ParamsError, match=r"transfer\.finetune\.search\.learning_rate: not a "
                                          r"key of this block; expected one of epochs"):
        strategies.resolve(load_params(path))
    params_dict["transfer"]["finetune"]["search"] = {"lr": [0.1, "fast"]}
    path.write_text(yaml.safe_dump(params_dict, sort_keys=False))
    with pytest.raises(ParamsError, match=r"transfer\.finetune\.search\.lr: expected a number"):
        strategies.resolve(load_params(path))
    params_dict["transfer"]["finetune"]["search"] = {"lr": [0.1, 0.01], "epochs": [1, 2]}
    path.write_text(yaml.safe_dump(params_dict, sort_keys=False))
    grid = strategies.resolve(load_params(path)).transfer["finetune"].search_grid()
    assert [o for o, _ in grid] == [{"lr": 0.1, "epochs": 1}, {"lr": 0.1, "epochs": 2},
                                    {"lr": 0.01, "epochs": 1}, {"lr": 0.01, "epochs": 2}]
    assert [(c.lr, c.epochs) for _, c in grid] == [(0.1, 1), (0.1, 2), (0.01, 1), (0.01, 2)]


@pytest.mark.slow
def test_dropping_a_strategy_is_deleting_its_module_and_block(tmp_path: Path) -> None:
    """A real ``dvc repro`` on a copy of the repo without ``partial_finetune``: its module and
    params block removed, nothing else touched."""
    repo = tmp_path / "repo"
    copy_worktree(ROOT, repo)
    (repo / "transferlab" / "adapt" / "strategies" / "partial_finetune.py").unlink()
    p = shrunk_params()
    del p["transfer"]["partial_finetune"]
    p["grid"]["strategies"] = [s for s in p["grid"]["strategies"] if s != "partial_finetune"]
    p["grid"]["methods"]["strategies"] = []  # keep this run short: the plain strategies only
    p["prepare"].update(budgets=[10, "all"])
    p["prepare"]["sources"] = {"printed_digits": p["prepare"]["sources"]["printed_digits"]}
    (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    (repo / "dvc.lock").unlink(missing_ok=True)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    for cmd in (["git", "add", "-A"], ["git", "-c", "user.email=t@t", "-c", "user.name=t",
                                       "commit", "-qm", "drop", "--allow-empty"],
                ["dvc", "repro"]):
        # its own session: on a timeout or an interrupt, every stage process goes with it
        proc = subprocess.Popen(cmd, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=1800)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        assert proc.returncode == 0, f"{cmd}:\n{out[-3000:]}\n{err[-3000:]}"
    report = (repo / "reports" / "report.md").read_text()
    assert "printed_digits/finetune" in report and "partial_finetune" not in report
