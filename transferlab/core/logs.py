"""One logging set-up for the stages and the command line.

The library logs to ``logging.getLogger(__name__)`` and never configures logging itself; a
stage (:func:`transferlab.core.runtime.run_stage`) or the ``transferlab`` command calls
:func:`configure` once. Messages go to stderr as plain lines, the same in a terminal and in a log
file.

Levels: by default the library's INFO messages (one line per finished run, per stage) and every
library's warnings; ``-v`` (or ``TRANSFERLAB_LOG_LEVEL=debug`` for the stages ``dvc repro`` starts)
adds the library's DEBUG messages; ``-q`` (``TRANSFERLAB_LOG_LEVEL=warning``) keeps warnings and
errors only. Other libraries stay at WARNING whatever the level.
"""

from __future__ import annotations

import logging
import os
import sys

from transferlab.core.errors import TransferlabError

LEVEL_ENV = "TRANSFERLAB_LOG_LEVEL"
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}
_HANDLER_NAME = "transferlab"


class LogLevelError(TransferlabError, ValueError):
    """``$TRANSFERLAB_LOG_LEVEL`` holds a value that is not a level's name."""


class _StderrHandler(logging.StreamHandler):
    """Plain lines to whatever ``sys.stderr`` is when a message is written (a test's capture,
    a redirected stream), flushed after each line as every StreamHandler is."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:  # StreamHandler.setStream: always sys.stderr
        pass


class _LineFormatter(logging.Formatter):
    """The message alone for INFO and DEBUG (result and progress lines read as before);
    ``warning: ...`` / ``error: ...`` above, so a problem says what it is."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return f"{record.levelname.lower()}: {text}" if record.levelno >= logging.WARNING \
            else text


def level_from_env(default: int = logging.INFO) -> int:
    """The level ``$TRANSFERLAB_LOG_LEVEL`` names (debug | info | warning | error).

    Raises:
        LogLevelError: (a ValueError) naming the variable and the valid values when it holds
            another.
    """
    raw = os.environ.get(LEVEL_ENV, "").strip().lower()
    if not raw:
        return default
    if raw not in LEVELS:
        raise LogLevelError(f"{LEVEL_ENV}={raw!r}: expected one of {', '.join(LEVELS)}")
    return LEVELS[raw]


def configure(verbose: bool = False, quiet: bool = False) -> int:
    """Set the ``transferlab`` loggers' level and handler (idempotent). ``verbose``/``quiet``
    win over ``$TRANSFERLAB_LOG_LEVEL``, and are passed on to the processes this one starts
    (through the variable). Returns the level set."""
    if verbose:
        level = logging.DEBUG
    elif quiet:
        level = logging.WARNING
    else:
        level = level_from_env()
    if verbose or quiet:
        os.environ[LEVEL_ENV] = logging.getLevelName(level).lower()
    logger = logging.getLogger("transferlab")
    logger.setLevel(level)
    if not any(h.get_name() == _HANDLER_NAME for h in logger.handlers):
        handler = _StderrHandler()
        handler.set_name(_HANDLER_NAME)
        handler.setFormatter(_LineFormatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False  # not twice where an application configured the root logger
    logging.captureWarnings(True)  # warnings.warn -> the py.warnings logger, one line each
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return level
