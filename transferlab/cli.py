"""``transferlab``: one command line for the pipeline and its tools.

    transferlab run [SCENARIO]     the built-in default (dvc repro, then the MLflow pipeline run
                                   and the lock's kernel fingerprint); a scenario runs as a DVC
                                   experiment (dvc exp run --temp) with its overrides
    transferlab scenarios          the scenarios and the question each asks
    transferlab study SCENARIO     rerun a scenario from nothing in a copy; write docs/results/
    transferlab studies [--refresh]  which published studies are current; --refresh reruns the
                                   rest, quickest first
    transferlab report             rebuild the report from evaluate's outputs (dvc repro report)
    transferlab audit [...]        can the results be trusted and rerun? (audit/audit.md)
    transferlab sync               rebuild the MLflow mirror from the DVC outputs
    transferlab ui                 the MLflow UI on the local store
    transferlab server [...]       a team's tracking server: PostgreSQL + mlflow server
    transferlab fingerprint [...]  this CPU's kernels against the golden fingerprints
    transferlab costs              summarise timing/ (wall time, memory, provenance)

Each command runs in the project folder (the one with ``dvc.yaml``) it is started in. ``-v``
shows the library's progress and debug messages; ``-q`` only warnings and errors.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Sequence

from transferlab.core.logs import LogLevelError, configure

log = logging.getLogger(__name__)

# subcommands handed to a module's own command line, with everything after them
PASSTHROUGH: dict[str, tuple[str, str]] = {
    "audit": ("transferlab.provenance.audit", "can the results be trusted and rerun?"),
    "server": ("transferlab.tracking.services", "a team's tracking server (serve --dir ...)"),
    "fingerprint": ("transferlab.provenance.fingerprint",
                    "this CPU's kernels: record | compare | lock"),
    "costs": ("transferlab.reporting.costs", "summarise timing/ with this machine's provenance"),
}


def _module_main(module: str) -> Callable[[Sequence[str]], None]:
    import importlib

    return importlib.import_module(module).main


def _run(argv: list[str]) -> int:
    """Run a command, streaming its output; returns its exit status."""
    log.debug("running %s", " ".join(argv))
    return subprocess.run(argv, check=False).returncode


def _dvc() -> str:
    """The ``dvc`` beside this Python (the venv's), else the one on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "dvc")
    return here if os.path.exists(here) else (shutil.which("dvc") or "dvc")


def run_default() -> int:
    """``dvc repro``, then this machine's timing summary and the lock's kernel fingerprint; the
    MLflow pipeline run ends FINISHED, or FAILED when a step failed (what ``make repro`` runs)."""
    os.environ.setdefault("TRANSFERLAB_EXECUTION", uuid.uuid4().hex[:12])
    py = sys.executable
    status = "FINISHED"
    for step in ([_dvc(), "repro"], [py, "-m", "transferlab.reporting.costs"],
                 [py, "-m", "transferlab.provenance.fingerprint", "lock"]):
        if _run(step) != 0:
            status = "FAILED"
            break
    finished = _run([py, "-m", "transferlab.tracking", "finish", "--status", status])
    return 0 if status == "FINISHED" and finished == 0 else 1


def _passthrough(argv: list[str]) -> tuple[str, list[str], bool, bool] | None:
    """(command, its arguments, verbose, quiet) where ``argv`` names a command whose module
    parses its own arguments (``--help`` included), else None."""
    flags = {"-v": "verbose", "--verbose": "verbose", "-q": "quiet", "--quiet": "quiet"}
    seen = set()
    for i, arg in enumerate(argv):
        if arg in flags:
            seen.add(flags[arg])
            continue
        if arg in PASSTHROUGH and len(seen) < 2:
            return arg, argv[i + 1:], "verbose" in seen, "quiet" in seen
        return None
    return None


def main(argv: Sequence[str] | None = None) -> None:
    """The ``transferlab`` command. A reader that closes the pipe early (``transferlab studies
    | head``) ends it quietly, as it does any Unix tool."""
    try:
        try:
            _main(argv)
        finally:  # a pipe's buffered output is written here, so its error is caught here too
            sys.stdout.flush()
    except BrokenPipeError:
        # the reader has gone: no traceback, and no second error when Python flushes stdout at
        # exit (the Python docs' recipe, "Note on SIGPIPE" in the signal module)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)  # 128 + SIGPIPE, what a shell reports for a tool the pipe ended


def _main(argv: Sequence[str] | None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    direct = _passthrough(argv)
    if direct is not None:  # the module's own parser answers, --help included
        command, rest, verbose, quiet = direct
        try:
            configure(verbose=verbose, quiet=quiet)
        except LogLevelError as err:
            sys.exit(f"error: {err}")
        _module_main(PASSTHROUGH[command][0])(rest)
        return
    parser = argparse.ArgumentParser(
        prog="transferlab",
        description="Measure whether and how transfer learning helps: a reproducible DVC + "
                    "MLflow pipeline.",
        epilog="Run `transferlab COMMAND --help` for a command's options.")
    level = parser.add_mutually_exclusive_group()
    level.add_argument("-v", "--verbose", action="store_true", help="debug messages too")
    level.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("run", help="the default pipeline, or a scenario as a DVC experiment")
    p.add_argument("scenario", nargs="?", help="a scenario's name (default: params.yaml as is)")
    p.add_argument("--queue", action="store_true", help="a scenario: queue it (dvc queue start)")
    sub.add_parser("scenarios", help="the scenarios and the question each asks")
    p = sub.add_parser("study", help="rerun a scenario from nothing; write docs/results/NAME/")
    p.add_argument("scenario")
    p = sub.add_parser("studies", help="which published studies (docs/results/) are current")
    p.add_argument("--refresh", action="store_true",
                   help="rerun every study that is not current, quickest first")
    sub.add_parser("report", help="rebuild the report from evaluate's outputs")
    sub.add_parser("sync", help="rebuild the MLflow mirror from the DVC outputs")
    p = sub.add_parser("ui", help="the MLflow UI on the local store")
    p.add_argument("--port", default="5000")
    for name, (_, help_text) in PASSTHROUGH.items():
        p = sub.add_parser(name, help=help_text, add_help=False)
        p.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    try:
        configure(verbose=args.verbose, quiet=args.quiet)
    except LogLevelError as err:
        sys.exit(f"error: {err}")

    if args.command == "run":
        if args.scenario is None:
            sys.exit(run_default())
        scenario_argv = ["run", args.scenario] + (["--queue"] if args.queue else [])
        _module_main("transferlab.scenarios")(scenario_argv)
    elif args.command == "scenarios":
        _module_main("transferlab.scenarios")(["list"])
    elif args.command == "study":
        _module_main("transferlab.scenarios")(["study", args.scenario])
    elif args.command == "studies":
        _module_main("transferlab.scenarios")(["status", *(["--refresh"] if args.refresh else [])])
    elif args.command == "report":
        code = _run([_dvc(), "repro", "report"])
        if code == 0:
            log.info("report: reports/report.md and reports/report.html")
        sys.exit(code)
    elif args.command == "sync":
        _module_main("transferlab.tracking.__main__")(["sync"])
    elif args.command == "ui":
        _module_main("transferlab.tracking.__main__")(["ui-url"])
        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{os.getcwd()}/mlflow.db"
        mlflow = os.path.join(os.path.dirname(sys.executable), "mlflow")
        sys.exit(_run([mlflow if os.path.exists(mlflow) else "mlflow", "ui",
                       "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", args.port]))


if __name__ == "__main__":
    main()
