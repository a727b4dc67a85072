"""A real multi-node Ray cluster on loopback for the tests: one process holds a head node and
N-1 worker nodes (a GCS and one raylet per node, each raylet with its own worker processes),
every server bound to 127.0.0.1 on ports the OS picks.

Ray maps "127.0.0.1" to the machine's network address unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER
is 0 (then its node address is the loopback one); its `ray start` CLI then refuses to add
nodes, so the nodes are started the way Ray's own ``ray.cluster_utils.Cluster`` starts them,
without that class's write of the address into /tmp/ray. A driver must run with the same
variable (:data:`DRIVER_ENV`).

    python tests/ray_cluster.py --nodes 2 --cpus 1 --temp-dir DIR

prints one JSON line {"address", "raylet_pids"} when every node is up, and runs until SIGTERM,
when it stops its nodes' processes (by the PIDs Ray recorded) and exits. Started by
:func:`holder`, it gets that SIGTERM from its service's watchdog too if the process that started
it dies without stopping it (:class:`transferlab.tracking.services.Service`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

DRIVER_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def holder(temp_dir: Path, log: Path, nodes: int = 2, cpus: int = 1, gpus: int = 0,
           env: dict | None = None) -> tuple[Any, Callable[[], dict | None]]:
    """This script as a :class:`transferlab.tracking.services.Service` (its own session, stopped by
    PID), and a reader of its {"address", "raylet_pids"} line (None until it is up)."""
    from transferlab.tracking import services
    def info() -> dict | None:
        text = log.read_text(errors="replace") if log.is_file() else ""
        lines = [ln for ln in text.splitlines() if ln.startswith('{"address"')]
        return json.loads(lines[0]) if lines else None

    argv = [sys.executable, str(Path(__file__).resolve()), "--nodes", str(nodes), "--cpus",
            str(cpus), "--gpus", str(gpus), "--temp-dir", str(temp_dir)]
    return services.Service("ray cluster", argv, lambda: info() is not None, log, env=env), info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--cpus", type=int, default=1, help="CPUs of each node")
    parser.add_argument("--gpus", type=int, default=0,
                        help="GPUs each node declares: Ray schedules by this count, whether or "
                             "not the devices exist")
    parser.add_argument("--temp-dir", required=True, help="Ray's session folder (short path)")
    args = parser.parse_args()

    os.environ.update(DRIVER_ENV)  # before Ray loads: its node address is the loopback one
    from ray._private.node import Node
    from ray._private.parameter import RayParams

    def params(**extra: object) -> RayParams:
        return RayParams(node_ip_address="127.0.0.1", num_cpus=args.cpus, num_gpus=args.gpus,
                         object_store_memory=150 * 1024 * 1024, min_worker_port=0,
                         max_worker_port=0, temp_dir=args.temp_dir, include_dashboard=False,
                         **extra)

    nodes = [Node(params(), head=True, shutdown_at_exit=False, spawn_reaper=False)]
    for _ in range(args.nodes - 1):
        nodes.append(Node(params(gcs_address=nodes[0].gcs_address, include_log_monitor=False,
                                 node_manager_port=0),
                          head=False, shutdown_at_exit=False, spawn_reaper=False))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    raylets = [p.process.pid for n in nodes for p in n.all_processes.get("raylet", [])]
    print(json.dumps({"address": nodes[0].gcs_address, "raylet_pids": raylets}), flush=True)
    stop.wait()
    for node in reversed(nodes):  # workers first, the head (GCS) last
        node.kill_all_processes(check_alive=False, allow_graceful=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
