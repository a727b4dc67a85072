"""dvc.yaml stays honest: every stage lists its script, the library modules it imports (also
indirectly), and params keys that exist; the scenarios validate."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import scenario_params
from transferlab.tracking.tracker import flatten_params

ROOT = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
# dvc-render's own templates; any other `template:` is a file in .dvc/plots/
BUILTIN_TEMPLATES = {"linear", "simple", "smooth", "scatter", "scatter_jitter", "confusion",
                     "confusion_normalized", "bar_horizontal", "bar_horizontal_sorted"}


def module_file(name: str) -> str:
    """``transferlab.x.y`` -> ``transferlab/x/y.py``; a package -> its ``__init__.py``, except a
    plugin package inside a layer (``transferlab.adapt.strategies``,
    ``transferlab.data.modalities``) and any module in it -> its folder, which is one dep (its
    ``__init__`` imports every member, so a member change must rerun the stage)."""
    parts = name.split(".")
    for depth in range(3, len(parts) + 1):
        folder = "/".join(parts[:depth])
        if (ROOT / folder).is_dir():
            return folder
    path = "/".join(parts)
    return f"{path}/__init__.py" if (ROOT / path).is_dir() else f"{path}.py"


def source_files(name: str) -> list[Path]:
    """The files whose imports count for module ``name``: a subpackage's are all of its
    modules, since its ``__init__`` imports every one."""
    path = ROOT / module_file(name)
    return sorted(path.rglob("*.py")) if path.is_dir() else [path]


def library_imports(path: Path, seen: set[str] | None = None) -> set[str]:
    """transferlab modules imported by ``path``, transitively (function-level imports too);
    importing any of them runs the package's ``__init__`` (the CPU pins) first."""
    seen = set() if seen is None else seen
    trees = [ast.parse(path.read_text())]
    for node in (n for tree in trees for n in ast.walk(tree)):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and (
                node.module + ".").startswith("transferlab."):
            names = [node.module]  # from transferlab.x import y: y may be a module of x
            folder = ROOT / node.module.replace(".", "/")
            names += [f"{node.module}.{a.name}" for a in node.names
                      if (folder / a.name).is_dir() or (folder / f"{a.name}.py").is_file()]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("transferlab.")]
        # importing a.b.c runs the __init__ of a and a.b first
        parents = {".".join(n.split(".")[:i]) for n in names for i in range(1, n.count(".") + 1)}
        for name in names + sorted(parents):
            if name not in seen:
                seen.add(name)
                for file in source_files(name):
                    library_imports(file, seen)
    return seen


def stage_bodies() -> list[tuple[str, dict]]:
    out = []
    for name, stage in DVC["stages"].items():
        out.append((name, stage.get("do", stage)))
    return out


@pytest.mark.parametrize(("name", "body"), stage_bodies(), ids=[n for n, _ in stage_bodies()])
def test_stage_deps_cover_script_and_library(name: str, body: dict) -> None:
    # stages run as modules (python -m stages.x), so a copy of the repo runs its own package
    match = re.search(r"python -m (stages\.\w+)|python -m (\S+)", body["cmd"])
    script = (match.group(1).replace(".", "/") + ".py" if match.group(1)
              else module_file(match.group(2)).replace("__init__.py", "__main__.py"))
    deps = {d if isinstance(d, str) else next(iter(d)) for d in body["deps"]}
    assert script in deps, f"{name}: its script {script} is not a dep"
    modules = library_imports(ROOT / script)
    assert {"transferlab", "transferlab.core.cpu_pinning"} <= modules
    missing = sorted(module_file(m) for m in modules if module_file(m) not in deps)
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
    """`dvc metrics show` displays the headline only; evaluate.json (every number, the report's
    input) is a plain out. Every transferability score has its own plot."""
    from transferlab.evaluation.analysis import SCORES

    evaluate = DVC["stages"]["evaluate"]
    assert [next(iter(m)) for m in evaluate["metrics"]] == ["metrics/headline"]
    assert "--headline metrics/headline" in evaluate["cmd"]
    assert "metrics/evaluate.json" in _outs({"outs": evaluate["outs"]})
    plot_files = {f for p in DVC["plots"] for spec in p.values() for f in spec["y"]}
    assert {"plots/learning_curves.csv", "plots/confusion.csv"} <= plot_files
    assert {f"plots/transferability_{s}.csv" for s in SCORES} <= plot_files
    for p in DVC["plots"]:
        (spec,) = p.values()
        template = spec["template"]
        assert template in BUILTIN_TEMPLATES or (ROOT / ".dvc" / "plots" / f"{template}.json"
                                                 ).is_file(), f"no template {template}"


def _outs(body: dict) -> dict[str, dict]:
    return {next(iter(o)) if isinstance(o, dict) else o: (next(iter(o.values()))
            if isinstance(o, dict) else {}) or {}
            for kind in ("outs", "metrics") for o in body.get(kind, [])}


def test_metrics_and_plots_are_committed_to_git_not_the_cache() -> None:
    """A fresh clone has a baseline for `dvc metrics diff` / `dvc plots diff`: the small files
    are cache: false and not git-ignored (DVC's example-get-started does the same)."""
    import subprocess

    committed = {**_outs(DVC["stages"]["evaluate"]),
                 **_outs(DVC["stages"]["pretrain"]["do"])}
    small = ["metrics/evaluate.json", "metrics/headline", "metrics/runs.csv", "plots",
             "models/${key}/metrics.json"]
    for path in small:
        assert committed[path].get("cache") is False, f"{path}: not cache: false"
        probe = path.replace("${key}", "x") + ("/learning_curves.csv" if path == "plots" else "")
        ignored = subprocess.run(["git", "check-ignore", "-q", probe], cwd=ROOT)
        assert ignored.returncode == 1, f"{probe} is git-ignored"


def test_no_out_is_machine_specific() -> None:
    """Wall time and provenance are not DVC outputs (they change on every run); stages write
    them under timing/, which no stage declares."""
    for name, body in stage_bodies():
        for path in _outs(body):
            assert not path.startswith("timing/") and "timing.json" not in path, (name, path)
            assert path != "metrics/compute.json", name
        assert "--timing" not in body["cmd"] or "--timing timing/" in body["cmd"], name


@pytest.mark.parametrize("name", [p.stem for p in sorted((ROOT / "scenarios").glob("*.yaml"))])
def test_scenarios_set_every_key_the_default_sets(name: str) -> None:
    """A composed scenario keeps every key the default sets: a key removed (``~key``) would
    silently take the dataclass default instead (new_classes once ran Holm while the default
    ran BH). Sources, the target, the seeds per budget and the strategies' blocks are what
    scenarios change."""
    changed = ("prepare.sources.", "prepare.target.", "prepare.seeds_per_budget", "transfer.")
    default = {k for k in flatten_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
               if not k.startswith(changed)}
    scenario = {k for k in flatten_params(scenario_params(name))
                if not k.startswith(changed)}
    # keys one modality reads and the other does not (the default is an image scenario)
    image_only = {"prepare.image_size", "evaluate.shift_noise_std", "evaluate.shift_blur_sigma",
                  "evaluate.shift_rotation_deg"}
    text_only = {"prepare.tokenizer", "prepare.max_length", "evaluate.shift_token_drop"}
    text = "prepare.tokenizer" in scenario
    assert default - scenario <= (image_only if text else set()), \
        "keys of params.yaml missing from the scenario"
    assert scenario - default <= (text_only if text else set()), "keys the default does not have"


def test_the_lock_holds_only_stages_dvc_yaml_defines() -> None:
    """DVC keeps a renamed or removed stage's entry in dvc.lock; `sync` and the audit read every
    entry, so a stale one mirrors runs of a stage that no longer exists."""
    defined = set()
    for name, stage in DVC["stages"].items():
        if "foreach" in stage:
            items = stage["foreach"]
            if isinstance(items, str):  # ${prepare.sources}: the keys of a params mapping
                node = PARAMS
                for key in items.strip("${}").split("."):
                    node = node[key]
                items = node
            defined |= {f"{name}@{item}" for item in items}
        else:
            defined.add(name)
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]
    assert set(lock) <= defined, sorted(set(lock) - defined)
