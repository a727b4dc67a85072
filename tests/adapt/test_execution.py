"""transferlab.adapt.execution without a cluster: the params block, the local backend, and the
checks
that stop a Ray run before it can hang (tests/test_ray.py runs the real cluster)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from transferlab.adapt.execution import (
    ExecutionError,
    Executor,
    _check_feasible,
    _check_reachable,
    _worker_env,
)
from transferlab.config.params import ExecutionParams, load_params
from transferlab.config.typed import from_dict
from transferlab.core import cpu_pinning
from transferlab.core.errors import ParamsError
from transferlab.tracking.services import free_port


def _execution(block: dict) -> ExecutionParams:
    return from_dict(ExecutionParams, block, "execution")


@pytest.mark.parametrize(("block", "key"), [
    ({"address": "127.0.0.1:6379"}, "execution.address"),  # an address for the local backend
    ({"backend": "ray", "num_cpus": 0}, "execution.num_cpus"),
    ({"backend": "ray", "num_gpus": -0.5}, "execution.num_gpus"),
    ({"backend": "ray", "max_retries": -1}, "execution.max_retries"),
    ({"backend": "dask"}, "execution.backend"),
    ({"backend": "ray", "adress": "x"}, "execution.adress"),
])
def test_bad_execution_blocks_name_the_key(block: dict, key: str) -> None:
    with pytest.raises(ParamsError, match=f"^{key.replace('.', '[.]')}: "):
        _execution(block)


def test_execution_block_is_required_and_its_keys_default_to_local(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    del data["execution"]  # like every block: a params file is complete (dvc.yaml reads it)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ParamsError, match="^execution: "):
        load_params(tmp_path / "params.yaml")
    assert _execution({}) == ExecutionParams() and ExecutionParams().backend == "local"
    assert _execution({"backend": "ray", "num_gpus": 0.25}).num_gpus == 0.25


def _square_plus(shared: int, item: int) -> int:
    return item * item + shared


def test_local_backend_yields_results_in_order_without_ray() -> None:
    with Executor(ExecutionParams(), 1, "compatible") as executor:
        assert list(executor.map(_square_plus, 10, [3, 1, 2])) == [19, 11, 14]
        assert executor._ray is None


class _FakeRay:
    def __init__(self, nodes: list[dict]) -> None:
        self._nodes = nodes

    def nodes(self) -> list[dict]:
        return self._nodes


def test_a_task_no_node_can_hold_is_refused_with_the_key() -> None:
    ray = _FakeRay([{"Alive": True, "Resources": {"CPU": 1.0}},
                    {"Alive": False, "Resources": {"CPU": 8.0, "GPU": 1.0}}])  # a dead node
    _check_feasible(ray, 1, 0)
    with pytest.raises(ExecutionError, match="^execution.num_cpus: .*2 CPU.*1 CPU/0 GPU"):
        _check_feasible(ray, 2, 0)
    with pytest.raises(ExecutionError, match="^execution.num_gpus: "):
        _check_feasible(ray, 1, 0.5)


def test_an_address_nobody_listens_on_fails_fast_and_names_it() -> None:
    address = f"127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(ExecutionError, match=f"^execution.address: no Ray cluster answers at "
                                             f"'{address}'"):
        _check_reachable(address)
    assert time.monotonic() - start < 30


def test_workers_start_with_the_cpu_pins_and_the_stage_mkl_branch(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cpu_pinning.SWITCH, raising=False)
    env = _worker_env("avx2")
    assert env["MKL_CBWR"] == "AVX2" and env["ATEN_CPU_CAPABILITY"] == "avx2"
    assert _worker_env("compatible")["MKL_CBWR"] == "COMPATIBLE"
    monkeypatch.setenv(cpu_pinning.SWITCH, "off")
    assert _worker_env("avx2") == {cpu_pinning.SWITCH: "off"}
