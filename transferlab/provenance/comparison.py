"""How a rerun's outputs compare with the recorded ones: bit-identical, equal within a
tolerance, or different, with the first differing file, key and values named. Every DVC output
is a deterministic function of params, code and data (wall time, memory and machine provenance
are written to ``timing/``, not to outputs), so no difference is "expected". Pure functions on
file contents; the audit (:mod:`transferlab.provenance.audit`) applies them to every ``dvc.lock``
out.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IDENTICAL, WITHIN, DIFFERENT = "bit-identical", "equal within tolerance", "different"
SEVERITY = {IDENTICAL: 0, WITHIN: 2, DIFFERENT: 3}


@dataclass(frozen=True)
class Diff:
    """How a rerun output compares with the recorded one; ``key`` names the first difference."""

    label: str
    file: str | None = None
    key: str | None = None
    recorded: Any = None
    rerun: Any = None
    detail: str | None = None

    def describe(self) -> str:
        where = ": ".join(str(p) for p in (self.file, self.key) if p)
        values = (f"recorded {self.recorded!r}, rerun {self.rerun!r}"
                  if (self.recorded, self.rerun) != (None, None) else "")
        return ", ".join(p for p in (where or "-", values, self.detail or "") if p)


def worst(diffs: list[Diff], default: Diff | None = None) -> Diff:
    """The most severe diff (the first of equals): different > within tolerance."""
    return max(diffs, key=lambda d: SEVERITY[d.label], default=default or Diff(IDENTICAL))


def close(a: float, b: float, tol: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= tol + 1e-12  # 1e-12: 0.123457 - 0.123456 is 1.0000000000287e-06


def is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _leaves(a: Any, b: Any, key: str, ignore: frozenset[str], masked: bool = False
            ) -> Iterator[tuple[str, Any, Any, bool]]:
    """(key path, recorded, rerun, masked) of every differing leaf, in sorted key order."""
    if a == b:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            sub, hide = f"{key}.{k}" if key else str(k), masked or k in ignore
            if k not in a or k not in b:
                yield sub, a.get(k, "<missing>"), b.get(k, "<missing>"), hide
            else:
                yield from _leaves(a[k], b[k], sub, ignore, hide)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from _leaves(x, y, f"{key}[{i}]", ignore, masked)
    else:
        yield key, a, b, masked


def compare_json(recorded: Any, rerun: Any, tol: float, file: str | None = None) -> Diff:
    """Compare two JSON documents number by number (numbers may differ by ``tol``)."""
    within = None
    for key, a, b, _ in _leaves(recorded, rerun, "", frozenset()):
        if is_number(a) and is_number(b) and close(float(a), float(b), tol):
            within = within or Diff(WITHIN, file, key, a, b, f"tolerance {tol:g}")
        else:
            return Diff(DIFFERENT, file, key, a, b)
    return within or Diff(IDENTICAL, file)


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def compare_csv(recorded: str, rerun: str, tol: float, file: str | None = None) -> Diff:
    """Compare two CSV tables cell by cell; numeric cells may differ by ``tol``."""
    ra, rb = list(csv.reader(io.StringIO(recorded))), list(csv.reader(io.StringIO(rerun)))
    if not ra or not rb or ra[0] != rb[0]:
        return Diff(DIFFERENT, file, "header", ra[0] if ra else None, rb[0] if rb else None)
    if len(ra) != len(rb):
        return Diff(DIFFERENT, file, "number of rows", len(ra) - 1, len(rb) - 1)
    within = None
    for i, (row_a, row_b) in enumerate(zip(ra[1:], rb[1:], strict=True), start=1):
        if len(row_a) != len(row_b):
            return Diff(DIFFERENT, file, f"row {i}", row_a, row_b)
        for column, u, v in zip(ra[0], row_a, row_b, strict=True):
            if u == v:
                continue
            fu, fv, key = _float(u), _float(v), f"row {i}, column {column}"
            if fu is None or fv is None or not close(fu, fv, tol):
                return Diff(DIFFERENT, file, key, u, v)
            within = within or Diff(WITHIN, file, key, fu, fv, f"tolerance {tol:g}")
    return within or Diff(IDENTICAL, file)


def html_as_markdown(text: str) -> str:
    """report.html -> report.md-like lines (render.py writes one block per line), so both
    renderings of the report are compared by the same rules."""
    lines = []
    for line in text.splitlines():
        cells = re.findall(r"<t[hd]>(.*?)</t[hd]>", line)
        heading = re.match(r"<h2[^>]*>(.*)</h2>$", line)
        if cells:
            line = "| " + " | ".join(cells) + " |"
        elif heading:
            line = f"## {heading[1]}"
        elif line.startswith("<p>"):
            line = re.sub(r"<[^>]+>", "", line)
        lines.append(line)
    return "\n".join(lines)


def compare_report(recorded: str, rerun: str, file: str | None = None) -> Diff:
    """A report is a deterministic output (wall time and machine provenance live in ``timing/``):
    any difference is one; the first differing line is named."""
    a, b = recorded.splitlines(), rerun.splitlines()
    if a == b:
        return Diff(IDENTICAL, file)
    n = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    line = lambda body: body[n] if n < len(body) else "<end>"  # noqa: E731
    return Diff(DIFFERENT, file, f"line {n + 1}", line(a), line(b))


def compare_file(rel: str, recorded: Path, rerun: Path, tol: float) -> Diff:
    """Compare one output file of the workspace with the rerun's, by what kind of file it is."""
    if not (recorded.is_file() and rerun.is_file()):
        return Diff(DIFFERENT, rel, None, "present" if recorded.is_file() else "missing",
                    "present" if rerun.is_file() else "missing")
    a, b = recorded.read_bytes(), rerun.read_bytes()
    name, suffix = Path(rel).name, Path(rel).suffix
    if a == b:
        return Diff(IDENTICAL, rel)
    try:
        if suffix == ".json":
            return compare_json(json.loads(a), json.loads(b), tol, rel)
        if suffix == ".csv":
            return compare_csv(a.decode(), b.decode(), tol, rel)
        if name in ("report.md", "report.html"):
            convert = html_as_markdown if suffix == ".html" else str
            return compare_report(convert(a.decode()), convert(b.decode()), rel)
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError included
        return Diff(DIFFERENT, rel, detail=f"unreadable: {err}")
    return Diff(DIFFERENT, rel, None, hashlib.sha256(a).hexdigest()[:12],
                hashlib.sha256(b).hexdigest()[:12], "binary content differs (sha256 prefixes)")


def _files(a: Path, b: Path) -> list[str]:
    if not (a.is_dir() or b.is_dir()):
        return [""]
    return sorted({p.relative_to(d).as_posix() for d in (a, b) if d.is_dir()
                   for p in d.rglob("*") if p.is_file()})


def compare_out(path: str, recorded_md5: str | None, rerun_md5: str | None, root: Path,
                work: Path, tol: float) -> list[Diff]:
    """One ``dvc.lock`` out: its recorded hash against the rerun's, then file by file.

    Returns:
        The files that differ (``[Diff(IDENTICAL, path)]`` if none), workspace vs rerun.
    """
    if recorded_md5 == rerun_md5:
        return [Diff(IDENTICAL, path)]
    rels = [f"{path}/{r}" if r else path for r in _files(root / path, work / path)]
    diffs = [d for d in (compare_file(rel, root / rel, work / rel, tol) for rel in rels)
             if d.label != IDENTICAL]
    return diffs or [Diff(DIFFERENT, path, "md5", recorded_md5, rerun_md5,
                          "the workspace copy equals the rerun but not dvc.lock (dvc status)")]
