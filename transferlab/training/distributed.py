"""One long training run on several processes: PyTorch DDP, when ``execution.ddp_procs > 1``.

The stage starts its ranks itself, as ``torchrun --standalone`` does on one machine:
``ddp_procs`` copies of the same command, with ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` set
(:func:`launch`). The ranks meet through a file store in a temporary folder
(``init_method=file://``) rather than torchrun's TCP store, which listens on every network
interface; gloo (CPU) talks over the loopback interface, NCCL over the GPUs' links. If one rank
fails, the launcher stops the others (by PID) and exits with its status.

Each rank trains on its shard of every batch (:func:`shard`). The batch order and augmentation
come from the same generator on every rank, so the ranks' shards together are the batch one
process would train on, and DDP averages their gradients. A step therefore equals the
single-process step up to the order of float sums and BatchNorm, whose batch statistics are
computed per shard. Before each validation, rank 0's buffers (BatchNorm's running statistics)
are copied to every rank (:func:`sync_buffers`), so all ranks validate the same weights and
early stopping decides the same everywhere. Only rank 0 writes outputs and logs to MLflow.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

STORE_ENV = "TRANSFERLAB_DDP_STORE"


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of one run."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes outputs and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


SINGLE = World()


def is_rank() -> bool:
    """Whether this process is one of the ranks :func:`launch` started."""
    return STORE_ENV in os.environ and "RANK" in os.environ


def launch(procs: int, argv: list[str], poll_seconds: float = 0.2,
           grace_seconds: float = 30.0) -> int:
    """Run ``python argv...`` as ``procs`` ranks and wait for all of them.

    Returns:
        0 when every rank succeeded; otherwise the first failing rank's exit status (a rank
        killed by a signal: 128 + the signal), after the others were stopped.
    """
    store = Path(tempfile.mkdtemp(prefix="transferlab-ddp-"))
    env = dict(os.environ, WORLD_SIZE=str(procs), LOCAL_WORLD_SIZE=str(procs),
               **{STORE_ENV: str(store / "rendezvous")})
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # gloo's connections: loopback only
    env.setdefault("NCCL_SOCKET_IFNAME", "lo")
    ranks: list[subprocess.Popen] = []
    failed = 0

    def stop_all(sig: int = signal.SIGTERM, *_: object) -> None:
        for proc in ranks:
            if proc.poll() is None:
                proc.send_signal(sig)

    previous = signal.signal(signal.SIGTERM, stop_all)
    try:
        for rank in range(procs):
            ranks.append(subprocess.Popen([sys.executable, *argv], env=dict(
                env, RANK=str(rank), LOCAL_RANK=str(rank))))
        while any(proc.poll() is None for proc in ranks):
            codes = [proc.poll() for proc in ranks]
            bad = [c for c in codes if c not in (None, 0)]
            if bad and not failed:
                failed = bad[0] if bad[0] > 0 else 128 - bad[0]
                stop_all()
                deadline = time.monotonic() + grace_seconds
                while time.monotonic() < deadline and any(p.poll() is None for p in ranks):
                    time.sleep(poll_seconds)
                stop_all(signal.SIGKILL)
            time.sleep(poll_seconds)
        if not failed:
            bad = [p.returncode for p in ranks if p.returncode != 0]
            failed = (bad[0] if bad[0] > 0 else 128 - bad[0]) if bad else 0
        return failed
    finally:
        stop_all(signal.SIGKILL)
        for proc in ranks:
            proc.wait()
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(store, ignore_errors=True)


def init(device: torch.device) -> World:
    """Join the other ranks (a rank of :func:`launch`), or :data:`SINGLE` outside one."""
    if not is_rank():
        return SINGLE
    import torch.distributed as dist

    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"file://{os.environ[STORE_ENV]}", rank=rank,
                            world_size=size)
    return World(rank, size)


def rank_device(device: torch.device) -> torch.device:
    """A rank's own GPU (``cuda:LOCAL_RANK``); CPU ranks share the CPU."""
    if device.type == "cuda" and is_rank():
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def finish(world: World) -> None:
    if world.distributed:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()


def wrap(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel when the run has several ranks."""
    if not world.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def shard(batch: torch.Tensor, world: World) -> torch.Tensor:
    """This rank's rows of a batch every rank drew alike (rows rank, rank + size, ...)."""
    return batch[world.rank::world.size] if world.distributed else batch


def sync_buffers(model: nn.Module, world: World) -> None:
    """Copy rank 0's buffers (BatchNorm's running statistics) to every rank."""
    if not world.distributed:
        return
    import torch.distributed as dist

    for buffer in model.buffers():
        dist.broadcast(buffer.data, src=0)


def all_sum(values: list[float], world: World, device: torch.device) -> list[float]:
    """Sums of ``values`` over the ranks (float64), the same on every rank."""
    if not world.distributed:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()
