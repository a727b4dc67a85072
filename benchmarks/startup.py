"""Start-up cost of the stages, and the cost of a no-op `dvc repro` against DVC's own floor
(targets of the speed issue: a stage that trains nothing starts in <= 1.5 s of its own time; a
no-op `dvc repro` takes <= 2x DVC's floor on a 2-stage toy).

* Stage start-up: ``python -m stages.<stage> --help`` runs every import at the top of the stage
  script and exits, so its time minus that of a bare ``python -c pass`` is the stage's own
  start-up floor (imports done later, inside ``main``, are not counted: an upper bound on what
  lazy loading saves, a lower bound on start-up).
* No-op repro: ``dvc repro`` in this workspace (measured only when every stage is up to date,
  e.g. after ``make repro``) against ``dvc repro`` in a throw-away git+DVC repo of two
  trivial stages.

Each pair runs alternately ``--repeats`` times and the medians are printed. Usage:

    python benchmarks/startup.py [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("prepare", "pretrain_source", "transfer", "evaluate", "report")


def timed(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed in {cwd}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return elapsed


def toy_repo(path: Path) -> Path:
    """git + DVC repo with two trivial chained stages, already reproduced once."""
    path.mkdir(parents=True)
    (path / "dvc.yaml").write_text(
        "stages:\n"
        "  a:\n    cmd: python -c \"open('a.txt', 'w').write('a')\"\n    outs: [a.txt]\n"
        "  b:\n    cmd: python -c \"open('b.txt', 'w').write(open('a.txt').read())\"\n"
        "    deps: [a.txt]\n    outs: [b.txt]\n")
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "repro", "-q"]):
        subprocess.run(cmd, cwd=path, check=True, capture_output=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    py = sys.executable
    status = subprocess.run(["dvc", "status", "-q"], cwd=ROOT, capture_output=True, text=True)
    noop = status.returncode == 0  # a no-op repro is only measurable on an up-to-date pipeline
    times: dict[str, list[float]] = {"python": [], **{s: [] for s in STAGES},
                                     "noop_repro": [], "toy_noop_repro": []}
    tmp = Path(tempfile.mkdtemp(prefix="transferlab-startup-"))
    try:
        toy = toy_repo(tmp / "toy")
        for _ in range(args.repeats):
            times["python"].append(timed([py, "-c", "pass"], ROOT))
            for stage in STAGES:
                times[stage].append(timed([py, "-m", f"stages.{stage}", "--help"], ROOT))
            if noop:
                times["noop_repro"].append(timed(["dvc", "repro"], ROOT))
                times["toy_noop_repro"].append(timed(["dvc", "repro"], toy))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items() if v}
    own = {s: med[s] - med["python"] for s in STAGES}
    out = {"median_seconds": {k: round(v, 3) for k, v in med.items()},
           "stage_own_startup_seconds": {k: round(v, 3) for k, v in own.items()},
           "noop_repro_vs_toy": (round(med["noop_repro"] / med["toy_noop_repro"], 2) if noop
                                 else None),
           "repeats": args.repeats}
    print(f"python -c pass: {med['python']:.2f} s (subtracted below)")
    for stage in STAGES:
        print(f"stages/{stage}.py start-up: {own[stage]:.2f} s of its own (target <= 1.5)")
    if noop:
        print(f"no-op dvc repro: {med['noop_repro']:.2f} s, {out['noop_repro_vs_toy']:.2f}x a "
              f"2-stage toy's {med['toy_noop_repro']:.2f} s (target <= 2x)")
    else:
        print("no-op dvc repro: not measured, the pipeline is not up to date (run `make repro`)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
