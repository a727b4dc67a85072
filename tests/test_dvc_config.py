"""dvc.yaml stays honest: every stage lists its script, the library modules it imports (also
indirectly), and params keys that exist; the scenarios validate."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from transferlab.params import load_params

ROOT = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def library_imports(path: Path, seen: set[str] | None = None) -> set[str]:
    """transferlab modules imported by ``path``, transitively (function-level imports too)."""
    seen = set() if seen is None else seen
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "transferlab":
                names = [f"transferlab.{a.name}" for a in node.names]
            elif node.module.startswith("transferlab."):
                names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("transferlab.")]
        for name in names:
            if name not in seen:
                seen.add(name)
                library_imports(ROOT / (name.replace(".", "/") + ".py"), seen)
    return seen


def stage_bodies() -> list[tuple[str, dict]]:
    out = []
    for name, stage in DVC["stages"].items():
        out.append((name, stage.get("do", stage)))
    return out


@pytest.mark.parametrize(("name", "body"), stage_bodies(), ids=[n for n, _ in stage_bodies()])
def test_stage_deps_cover_script_and_library(name: str, body: dict) -> None:
    script = re.search(r"python (stages/\S+\.py)", body["cmd"]).group(1)
    deps = {d if isinstance(d, str) else next(iter(d)) for d in body["deps"]}
    assert script in deps, f"{name}: its script {script} is not a dep"
    modules = library_imports(ROOT / script)
    missing = sorted(f"{m.replace('.', '/')}.py" for m in modules
                     if f"{m.replace('.', '/')}.py" not in deps)
    assert not missing, f"stage {name} imports but does not depend on: {missing}"


def _resolve(key: str) -> list[str]:
    keys = []
    for source in PARAMS["prepare"]["sources"]:
        for strategy in ("source_only", "linear_probe", "partial_finetune", "finetune"):
            keys.append(key.replace("${item.strategy}", strategy).replace("${item.source}",
                                                                           source)
                        .replace("${key}", source))
    return sorted(set(keys))


@pytest.mark.parametrize(("name", "body"), stage_bodies(), ids=[n for n, _ in stage_bodies()])
def test_stage_params_exist(name: str, body: dict) -> None:
    for key in body.get("params", []):
        for resolved in _resolve(key):
            node = PARAMS
            for part in resolved.split("."):
                assert isinstance(node, dict) and part in node, f"{name}: no param {resolved}"
                node = node[part]


def test_metrics_and_plots_are_declared() -> None:
    evaluate = DVC["stages"]["evaluate"]
    assert any("metrics/evaluate.json" in m for m in evaluate["metrics"])
    plot_files = {f for p in DVC["plots"] for spec in p.values() for f in spec["y"]}
    assert {"plots/learning_curves.csv", "plots/confusion.csv"} <= plot_files


@pytest.mark.parametrize("path", sorted((ROOT / "scenarios").glob("*.yaml")), ids=lambda p: p.name)
def test_scenarios_validate(path: Path) -> None:
    load_params(path)
