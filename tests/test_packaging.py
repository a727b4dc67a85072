"""The package installs as a package: pinned dependencies that match requirements.txt, a wheel
that `pip install` takes in a fresh venv, and the `transferlab` command it puts on PATH."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pins(path: Path) -> set[str]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return {line for line in lines if line and not line.startswith("-")}


def test_dependencies_are_requirements_pins() -> None:
    project = PYPROJECT["project"]
    declared = set(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared |= set(extra)
    assert declared == _pins(ROOT / "requirements.txt")
    assert all("==" in pin for pin in declared)  # exact versions: results depend on them
    assert {"torch==2.14.1", "torchvision==0.29.1"} <= set(project["dependencies"])


def test_one_console_script() -> None:
    assert PYPROJECT["project"]["scripts"] == {"transferlab": "transferlab.cli:main"}
    assert (ROOT / "LICENSE").is_file()


def test_wheel_installs_in_a_fresh_venv_and_gives_the_command(tmp_path: Path) -> None:
    """Build the wheel from a copy of the sources (the checkout stays clean), install it
    without dependencies into a new venv, and run `transferlab --help` from there: the command
    and the package import without the repo on sys.path."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "transferlab", src / "transferlab",
                    ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "--disable-pip-version-check", "-w", str(wheels), str(src)],
        capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("transferlab-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
         "--disable-pip-version-check", str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    out = subprocess.run([str(env_dir / "bin" / "transferlab"), "--help"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for command in ("run", "audit", "sync", "ui", "server", "report"):
        assert f"    {command} " in out.stdout, command
    where = subprocess.run([str(python), "-c", "import transferlab; print(transferlab.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert str(env_dir) in where.stdout, where.stdout + where.stderr


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "transferlab"
    return subprocess.run([str(exe), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=env)


def test_cli_lists_the_scenarios_and_refuses_a_bad_log_level() -> None:
    out = _cli("scenarios")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].split()[0] == "default"
    assert {line.split()[0] for line in out.stdout.splitlines()} >= {"default", "digits_study"}
    bad = _cli("scenarios", env=dict(os.environ, TRANSFERLAB_LOG_LEVEL="loud"))
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [
        "error: TRANSFERLAB_LOG_LEVEL='loud': expected one of debug, info, warning, error"]
    unknown = _cli("no-such-command")
    assert unknown.returncode == 2 and "invalid choice: 'no-such-command'" in unknown.stderr


def test_cli_hands_a_tool_its_own_arguments_and_plain_help() -> None:
    out = _cli("audit", "--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: transferlab audit")
    assert "``" not in out.stdout and ":mod:" not in out.stdout  # docstring markup stripped
    assert _cli("-q", "fingerprint", "--help").stdout.startswith("usage: transferlab fingerprint")


def test_cli_ends_quietly_when_its_reader_has_gone() -> None:
    """``transferlab studies | head``: the reader closes the pipe early; the command stops with
    the shell's SIGPIPE status and no traceback."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the command writes its first line
    try:
        proc = subprocess.run([str(Path(sys.executable).parent / "transferlab"), "scenarios"],
                              cwd=ROOT, stdout=write, stderr=subprocess.PIPE, text=True,
                              timeout=120)
    finally:
        os.close(write)
    assert proc.returncode == 141, proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
