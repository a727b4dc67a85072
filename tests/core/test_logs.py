"""One logging set-up (transferlab.core.logs): quiet by default, verbose with a flag, and every
stage honouring ``$TRANSFERLAB_LOG_LEVEL`` through run_stage."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from transferlab.core import logs
from transferlab.core.runtime import progress

DETAIL = logging.getLogger("transferlab.tests.detail")


@pytest.fixture
def fresh_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test configures from nothing, and leaves the loggers (and the variable) as they were:
    configure() in-process would otherwise stop the transferlab logger propagating to caplog."""
    monkeypatch.delenv(logs.LEVEL_ENV, raising=False)
    logger = logging.getLogger("transferlab")
    saved = (logger.level, list(logger.handlers), logger.propagate)
    logger.handlers = [h for h in logger.handlers if h.get_name() != "transferlab"]
    yield
    logger.setLevel(saved[0])
    logger.handlers = saved[1]
    logger.propagate = saved[2]
    logging.captureWarnings(False)


def _emit() -> None:
    progress("transfer s/finetune b=10 seed 1 (1/2) selection 0.950")
    DETAIL.debug("detail line")
    DETAIL.warning("a problem")


@pytest.mark.usefixtures("fresh_logging")
def test_default_is_info_progress_lines_plain_on_stderr(capsys: pytest.CaptureFixture) -> None:
    assert logs.configure() == logging.INFO
    _emit()
    out, err = capsys.readouterr()
    assert out == ""  # logging never writes to stdout
    assert err == ("transfer s/finetune b=10 seed 1 (1/2) selection 0.950\n"
                   "warning: a problem\n")


@pytest.mark.usefixtures("fresh_logging")
def test_quiet_hides_progress(capsys: pytest.CaptureFixture) -> None:
    assert logs.configure(quiet=True) == logging.WARNING
    _emit()
    assert capsys.readouterr().err == "warning: a problem\n"


@pytest.mark.usefixtures("fresh_logging")
def test_env_warning_hides_progress(monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv(logs.LEVEL_ENV, "WARNING")  # case and spaces do not matter
    assert logs.configure() == logging.WARNING
    _emit()
    assert capsys.readouterr().err == "warning: a problem\n"


@pytest.mark.usefixtures("fresh_logging")
def test_verbose_shows_debug_and_passes_it_on(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv(logs.LEVEL_ENV, "warning")
    assert logs.configure(verbose=True) == logging.DEBUG  # the flag wins over the variable
    _emit()
    assert capsys.readouterr().err == ("transfer s/finetune b=10 seed 1 (1/2) selection 0.950\n"
                                       "detail line\nwarning: a problem\n")
    assert os.environ[logs.LEVEL_ENV] == "debug"  # for the processes this one starts


@pytest.mark.usefixtures("fresh_logging")
def test_configure_is_idempotent(capsys: pytest.CaptureFixture) -> None:
    logs.configure()
    logs.configure()
    progress("once")
    assert capsys.readouterr().err == "once\n"


@pytest.mark.usefixtures("fresh_logging")
def test_a_bad_level_names_the_variable_and_the_valid_values(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(logs.LEVEL_ENV, "loud")
    with pytest.raises(logs.LogLevelError) as err:
        logs.configure()
    assert str(err.value) == ("TRANSFERLAB_LOG_LEVEL='loud': expected one of debug, info, "
                              "warning, error")


_STAGE = """
import logging
from transferlab.core.runtime import progress, run_stage

def main():
    progress("progress line")
    logging.getLogger("transferlab.stages.tiny").debug("debug line")
    logging.getLogger("transferlab.stages.tiny").warning("warned")

run_stage(main)
"""


def _stage(level: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != logs.LEVEL_ENV}
    if level is not None:
        env[logs.LEVEL_ENV] = level
    return subprocess.run([sys.executable, "-c", _STAGE], env=env, capture_output=True,
                          text=True, timeout=120)


def test_a_stage_honours_the_variable() -> None:
    """run_stage configures logging first: the env var is all a stage under `dvc repro` gets."""
    default, quiet, verbose, bad = (_stage(None), _stage("warning"), _stage("debug"),
                                    _stage("loud"))
    assert (default.returncode, default.stdout) == (0, "")
    assert default.stderr == "progress line\nwarning: warned\n"
    assert (quiet.returncode, quiet.stderr) == (0, "warning: warned\n")
    assert (verbose.returncode, verbose.stderr) == (
        0, "progress line\ndebug line\nwarning: warned\n")
    # a bad value: run_stage's one clean line and exit 1, before the stage runs
    assert (bad.returncode, bad.stdout) == (1, "")
    assert bad.stderr == ("error: TRANSFERLAB_LOG_LEVEL='loud': expected one of debug, info, "
                          "warning, error\n")
