"""Servers a team shares, run as local child processes on loopback: an MLflow tracking server
and an S3-compatible object store for a DVC remote (and the tests' stand-ins for them).

Each :class:`Service` binds 127.0.0.1 on a port it is given (:func:`free_port` finds one), is
waited for with a bounded wait, and is stopped by the PID of its own process group: never by
name, so nothing else on the machine is touched.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def http_ok(url: str) -> Callable[[], bool]:
    """A readiness probe: ``url`` answers a GET with a 2xx status."""
    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return 200 <= response.status < 300
        except OSError:
            return False
    return probe


def executable(name: str) -> str:
    """The console script ``name`` of this Python environment (beside ``sys.executable``), or
    the one on PATH.

    Raises:
        FileNotFoundError: neither exists; the message names the package to install.
    """
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name}: not installed in {Path(sys.executable).parent} nor on "
                                f"PATH (make setup-dev installs the pinned requirements)")
    return found


class Service:
    """One server process: ``argv`` started in its own session, ready when ``ready()`` is true.

    Its output goes to ``log`` (a file), which a failed start quotes. ``stop`` kills the
    process group by PID, so helpers it forked (uvicorn workers) go with it.
    """

    def __init__(self, name: str, argv: Sequence[str], ready: Callable[[], bool], log: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name, self.argv, self.ready, self.log = name, list(argv), ready, log
        self.env = env
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90.0) -> Service:
        """Start and wait, at most ``timeout`` seconds, until ready.

        Raises:
            RuntimeError: the process exited, or was not ready in time (it is then stopped);
                the message ends with the tail of its log.
        """
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=self.env,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before it "
                                   f"was ready: {self._tail()}")
            if self.ready():
                return self
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"{self.name} was not ready within {timeout:.0f} s: {self._tail()}")

    def stop(self, timeout: float = 30.0) -> None:
        """Terminate the process group (SIGTERM, then SIGKILL after ``timeout`` seconds)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=timeout)
                return
            except subprocess.TimeoutExpired:
                continue

    def _tail(self, chars: int = 2000) -> str:
        text = self.log.read_text(errors="replace") if self.log.is_file() else ""
        return f"(log {self.log}) ...{text[-chars:]}" if text else f"(log {self.log} is empty)"

    def __enter__(self) -> Service:
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def mlflow_server(backend_store_uri: str, artifacts: str, port: int, *, workers: int = 1,
                  log: Path, host: str = LOOPBACK) -> Service:
    """``mlflow server`` on ``host:port`` with the given backend store (``sqlite:///...`` or
    ``postgresql://...``) and artifact root, serving artifacts through the server
    (``--serve-artifacts``) so clients need no access to ``artifacts`` themselves."""
    argv = [executable("mlflow"), "server", "--backend-store-uri", backend_store_uri,
            "--artifacts-destination", artifacts, "--serve-artifacts",
            "--host", host, "--port", str(port), "--workers", str(workers)]
    return Service("mlflow server", argv, http_ok(f"http://{host}:{port}/health"), log)


def s3_server(port: int, *, log: Path) -> Service:
    """An S3-compatible server on 127.0.0.1 for tests and demos: moto's server, an emulator of
    the S3 API that keeps objects in memory (not Amazon S3, and not for real data)."""
    return Service("S3-compatible server (moto)", [executable("moto_server"), "-H", LOOPBACK,
                                                   "-p", str(port)],
                   http_ok(f"http://{LOOPBACK}:{port}/moto-api/"), log)
