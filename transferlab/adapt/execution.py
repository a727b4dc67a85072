"""Where a stage's independent runs execute: in the stage's own process, or as Ray tasks.

``execution.backend: local`` runs them one after another in the stage process.
``execution.backend: ray`` submits each as a task to a Ray cluster (``execution.address``):
Ray schedules, places and retries them (a worker process or node that dies mid-task has its
task rerun, up to ``execution.max_retries`` times); this module writes no scheduler.

Either way the stage process stays the only writer: it receives the results in submission
order, writes the declared outputs and logs to MLflow, so DVC's caching, the run-cache and
the MLflow run tree are the same for both backends. A rerun task is not logged twice, because
tasks never log.

Both backends give the same bytes. A task computes from explicit seeds (the library never
draws from global random state), and every Ray worker starts with the stage's CPU pins
(:mod:`transferlab.core.cpu_pinning`) in its environment, then sets the stage's thread count and
MKL branch (:func:`transferlab.core.runtime.seed_everything`) before it computes.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from transferlab.core.errors import TransferlabError

#: Seconds to wait for a TCP connection to the cluster's address before giving up.
CONNECT_TIMEOUT_SECONDS = 5.0


class ExecutionError(TransferlabError):
    """The execution backend cannot run the stage (cluster unreachable, Ray missing)."""


def worker_setup(num_threads: int, gemm_branch: str, determinism: str = "portable") -> None:
    """What a Ray worker does before each task: the stage's threads, MKL branch, determinism
    mode and deterministic algorithms (a worker process may be reused by many tasks; this is
    idempotent)."""
    from transferlab.core.runtime import seed_everything

    seed_everything(0, num_threads, gemm_branch, determinism)


def _call(fn: Callable, num_threads: int, gemm_branch: str, determinism: str, shared: Any,
          item: Any) -> Any:
    worker_setup(num_threads, gemm_branch, determinism)
    return fn(shared, item)


class Executor:
    """Runs ``fn(shared, item)`` for each item and yields the results in the items' order.

    Args:
        params: the ``execution`` params block.
        num_threads: ``common.num_threads`` (each task's torch threads; its default CPU
            request on Ray).
        gemm_branch: ``common.gemm_branch``.
        device_spec: ``common.device``: a task on a cluster resolves it where it runs.
        determinism: ``common.determinism``.
    """

    def __init__(self, params: Any, num_threads: int, gemm_branch: str,
                 device_spec: str = "auto", determinism: str = "portable") -> None:
        self.params = params
        self.num_threads = num_threads
        self.gemm_branch = gemm_branch
        self.determinism = determinism
        self.device_spec = device_spec
        self._ray: Any = None

    @property
    def backend(self) -> str:
        return self.params.backend

    def __enter__(self) -> Executor:
        if self.backend == "ray":
            self._ray = connect_ray(self.params, self.num_threads, self.gemm_branch)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._ray is not None:
            self._ray.shutdown()
            self._ray = None

    def map(self, fn: Callable[[Any, Any], Any], shared: Any, items: Sequence[Any],
            desc: str = "", label: Callable[[Any], str] = str) -> Iterator[Any]:
        """Yield ``fn(shared, item)`` for every item, in order.

        ``fn`` must be a module-level function (Ray imports it by name in the worker);
        ``shared`` is sent to the cluster once, not once per task.
        """
        bar = tqdm(total=len(items), desc=desc, unit="run", disable=None)
        try:
            if self._ray is None:
                for item in items:
                    bar.set_postfix_str(label(item))
                    yield fn(shared, item)
                    bar.update()
                return
            ray = self._ray
            cpus = self.params.num_cpus if self.params.num_cpus is not None else self.num_threads
            _check_feasible(ray, cpus, self.params.num_gpus)
            task = ray.remote(_call).options(
                num_cpus=cpus, num_gpus=self.params.num_gpus,
                max_retries=self.params.max_retries, retry_exceptions=False,
                name=f"transferlab:{desc or fn.__name__}")
            shared_ref = ray.put(shared)
            refs = [task.remote(fn, self.num_threads, self.gemm_branch, self.determinism,
                                shared_ref, item) for item in items]
            received = 0
            try:
                for item, ref in zip(items, refs, strict=True):
                    bar.set_postfix_str(label(item))
                    yield ray.get(ref)
                    received += 1
                    bar.update()
            finally:  # an error or an interrupt: leave nothing running on the cluster
                for ref in refs[received:]:
                    ray.cancel(ref, force=True)
        finally:
            bar.close()


def _check_feasible(ray: Any, cpus: float, gpus: float) -> None:
    """Fail, naming the key, when no node of the cluster has the resources one task asks for:
    Ray would otherwise keep such a task pending forever."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if any(r.get("CPU", 0) >= cpus and r.get("GPU", 0) >= gpus for r in nodes):
        return
    have = ", ".join(f"{r.get('CPU', 0):g} CPU/{r.get('GPU', 0):g} GPU" for r in nodes)
    key = "execution.num_gpus" if gpus and not any(r.get("GPU", 0) >= gpus for r in nodes) \
        else "execution.num_cpus"
    raise ExecutionError(
        f"{key}: each task asks for {cpus:g} CPU and {gpus:g} GPU, but no node of the cluster "
        f"has that much ({have or 'no live node'}); lower it (execution.num_cpus defaults to "
        "common.num_threads) or add larger nodes")


def _worker_env(gemm_branch: str) -> dict[str, str]:
    """The environment every Ray worker starts with: the CPU pins that must be in place
    before numpy or torch loads (they cannot be set from inside a running worker)."""
    from transferlab.core import cpu_pinning
    env = dict(cpu_pinning.PINS) if cpu_pinning.enabled() else {}
    env[cpu_pinning.SWITCH] = os.environ.get(cpu_pinning.SWITCH, "on")
    if cpu_pinning.enabled():
        env["MKL_CBWR"] = cpu_pinning.GEMM_BRANCHES[gemm_branch][0]
    return env


def _check_reachable(address: str) -> None:
    """Fail fast, naming ``execution.address``, when nothing accepts connections there: Ray's
    own connection attempts retry for minutes."""
    from ray._private import services  # where Ray turns a user's address into host:port

    try:
        target = services.canonicalize_bootstrap_address(address)
    except (ConnectionError, ValueError) as err:
        raise ExecutionError(f"execution.address: {address!r}: {err}") from None
    if target is None:  # "auto" found no cluster on this machine
        raise ExecutionError(f"execution.address: {address!r}: no running Ray cluster was "
                             "found on this machine (start one with `ray start --head`)")
    host, _, port = target.rpartition(":")
    via = "" if target == address else f" (Ray connects to {target})"
    try:
        with socket.create_connection((host.strip("[]"), int(port)),
                                      timeout=CONNECT_TIMEOUT_SECONDS):
            pass
    except OSError as err:
        raise ExecutionError(
            f"execution.address: no Ray cluster answers at {address!r}{via}: {err}. Start "
            "the cluster (`ray start --head --port PORT`), or fix execution.address; nothing "
            "was written") from None


def connect_ray(params: Any, num_threads: int, gemm_branch: str) -> Any:
    """Connect to (or, with no address, start) Ray for one stage; returns the ``ray`` module.

    Raises:
        ExecutionError: naming ``execution.address`` when no cluster answers there, before
            anything is written.
    """
    try:
        import ray
    except ImportError as err:  # pragma: no cover - ray is pinned in requirements.txt
        raise ExecutionError(f"execution.backend: ray needs the ray package ({err})") from None
    if params.address is not None:
        _check_reachable(params.address)
    package = str(Path(__file__).resolve().parents[1])  # transferlab/: workers run this code
    runtime_env = {"env_vars": _worker_env(gemm_branch), "py_modules": [package]}
    private = {"include_dashboard": False} if params.address is None else {}
    try:
        ray.init(address=params.address, runtime_env=runtime_env, log_to_driver=False,
                 configure_logging=False, **private)
    except ConnectionError as err:
        raise ExecutionError(f"execution.address: {params.address!r}: {err}") from None
    return ray
