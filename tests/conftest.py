"""Shared fixtures: a shrunk config (tiny data, one or two epochs, CPU, no network, no tracking)."""

from __future__ import annotations

# first: importing the package pins the CPU kernels' dispatch (transferlab.core.cpu_pinning), which
# numpy and torch read only when they load
import transferlab  # noqa: F401

# isort: split
import copy
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from transferlab.core.run_context import EXECUTION_ENV
from transferlab.core.runtime import seed_everything
from transferlab.core.workspace import copy_worktree
from transferlab.tracking import services
from transferlab.tracking.services import free_port

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
os.environ.setdefault("MPLBACKEND", "Agg")


def scenario_params(name: str) -> dict:
    """``scenarios/<name>.yaml`` composed onto params.yaml (as `make scenario` composes it), as a
    dict read by the project's own YAML loader."""
    import tempfile

    from transferlab import scenarios
    from transferlab.config.typed import read_yaml_mapping

    with tempfile.TemporaryDirectory() as tmp:
        out = scenarios.compose(scenarios.load(name, ROOT / "scenarios"), ROOT / "params.yaml",
                                Path(tmp) / "params.yaml")
        return read_yaml_mapping(out)


def shrunk_params() -> dict:
    """params.yaml shrunk so the whole pipeline runs in about a minute on 2 CPU cores."""
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["common"].update(seeds=[0, 1], device="cpu")
    p["tracking"]["enabled"] = False
    p["prepare"].update(budgets=[1, 10, "all"], test_per_class=30, val_per_class=10)
    p["prepare"]["sources"] = {
        "printed_digits": {"kind": "fonts", "chars": "0123456789", "n_per_class": 120},
        "random_init": {"kind": "none"},
    }
    p["pretrain"].update(epochs=8, batch_size=32, width=16)
    # two of the default's methods: a probe, a choice on held-out labels after the fit
    # (wise_ft's alpha) and the unlabeled pool (adabn). Each method has its own reference
    # tests; end-to-end runs need methods on a source, not every method (each costs its runs)
    p["grid"]["methods"]["strategies"] = ["wise_ft", "adabn"]
    for name, block in p["transfer"].items():
        if "epochs" in block:  # every trained strategy: 8 epochs (the linear probe: 60 steps)
            block["epochs"] = 60 if name == "linear_probe" else 8
    return p


def tiny_params() -> dict:
    """The smallest pipeline with every kind of stage: prepare, a pretrain, a transfer,
    scratch, evaluate and report (about a minute on 2 cores)."""
    p = shrunk_params()
    p["common"]["seeds"] = [0]
    p["prepare"].update(budgets=[1, "all"], test_per_class=10, val_per_class=5)
    p["prepare"]["sources"] = {"printed_digits": {"kind": "fonts", "chars": "0123456789",
                                                  "n_per_class": 20}}
    p["grid"]["strategies"] = ["linear_probe"]
    p["grid"]["methods"] = {"sources": [], "strategies": []}
    p["pretrain"]["epochs"] = 1
    for name, block in p["transfer"].items():
        if "epochs" in block:
            block["epochs"] = 5 if name == "linear_probe" else 1
    return p


def tiny_pipeline_params() -> dict:
    """tiny_params() tracked (no model artifacts), with a finetune curve that searches two
    learning rates (so a replicate is several runs: candidates and a refit). The pipeline that
    the integration tests share (:func:`tiny_pipeline`)."""
    p = tiny_params()
    p["grid"]["strategies"] = ["linear_probe", "finetune"]
    p["transfer"]["finetune"].update(epochs=10, patience=10, search={"lr": [0.003, 0.01]})
    p["tracking"].update(enabled=True, log_models=False)
    return p


VENV_ENV = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
GIT_ID = ["-c", "user.email=t@t", "-c", "user.name=t"]


def run(cmd: list[str], cwd: Path, env: dict | None = None) -> str:
    """``cmd`` in ``cwd`` (the venv's tools first on PATH), asserted to succeed; its output."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env or VENV_ENV)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@dataclass(frozen=True)
class BuiltPipeline:
    """A git repository of this working tree with :func:`tiny_pipeline_params`, reproduced by
    the real ``dvc repro`` (``log``: its output), its dvc.lock and metrics committed. The runs
    its stages logged live, as execution :attr:`EXECUTION`, are in ``mlflow_db``, outside the
    repo: a copy syncs into a store of its own."""

    EXECUTION = "tiny-pipeline"

    repo: Path
    log: str
    mlflow_db: Path

    def copy(self, dest: Path) -> Path:
        """A copy at ``dest``: git, the DVC cache and the outputs (each test writes only in its
        own copy)."""
        shutil.copytree(self.repo, dest, symlinks=True)
        return dest


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory) -> BuiltPipeline:
    """The tiny pipeline run once per session for the tests of what comes after a run: the
    audit, the Ray backend, the team's server and the shared DVC cache."""
    root = tmp_path_factory.mktemp("tiny-pipeline")
    repo = root / "repo"
    copy_worktree(ROOT, repo)
    (repo / "params.yaml").write_text(yaml.safe_dump(tiny_pipeline_params(), sort_keys=False))
    (repo / "dvc.lock").unlink(missing_ok=True)
    env = dict(VENV_ENV, MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}",
               **{EXECUTION_ENV: BuiltPipeline.EXECUTION})
    run(["git", "add", "-A"], repo)
    run(["git", *GIT_ID, "commit", "-qm", "tiny", "--allow-empty"], repo)
    log = run(["dvc", "repro"], repo, env)
    run(["git", "add", "-A"], repo)  # dvc.lock and the git-tracked metrics and plots
    run(["git", *GIT_ID, "commit", "-qm", "lock"], repo)
    return BuiltPipeline(repo, log, root / "mlflow.db")


@pytest.fixture
def params_dict() -> dict:
    return copy.deepcopy(shrunk_params())


@pytest.fixture
def params_file(tmp_path: Path, params_dict: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params_dict, sort_keys=False))
    return path


@pytest.fixture
def deterministic() -> Iterator[None]:
    """seed_everything(0, 2), with the global torch settings it changes restored afterwards."""
    saved = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(), torch.get_num_threads(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    seed_everything(0, 2)
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.set_num_threads(saved[2])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[3:]


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 and a free port, on a sqlite store, stopped by its
    PID (transferlab.tracking.services)."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.service = services.mlflow_server(f"sqlite:///{store}", str(store.parent / "artifacts"),
                                              self.port, log=store.parent / "mlflow-server.log")

    def start(self, timeout: float = 90.0) -> MlflowServer:
        self.service.start(timeout)
        return self

    def stop(self) -> None:
        self.service.stop(timeout=10)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server") / "mlflow.db").start()
    yield server
    server.stop()
