"""How far a rerun's numbers moved from the committed ones, and whether any conclusion changed.

Where outputs cannot match bit for bit (another CPU family, a GPU), ``make audit`` compares the
small metrics files committed to git (``git show HEAD:<file>``) with the workspace's: per metric
the largest absolute difference, and every verdict or recommendation (a text or yes/no value)
that changed. Pure functions on parsed contents; :mod:`transferlab.provenance.audit` applies them
per stage.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator
from typing import Any

# key columns that identify a row of a runs table, when present
ROW_KEYS = ("source", "strategy", "curve", "budget", "seed")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def leaves(obj: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(key path, value) of every scalar in a JSON document; list positions are ``[i]``."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from leaves(v, (*path, str(k)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from leaves(v, (*path, f"[{i}]"))
    else:
        yield path, obj


def metric_name(path: tuple[str, ...]) -> str:
    """The metric a leaf belongs to, pooled over curves, budgets and positions:
    ``summary.<curve>.<budget>.accuracy.mean`` -> ``summary.*.accuracy.mean``."""
    keys = [p for p in path if not p.startswith("[")]
    return ".".join(keys) if len(keys) <= 3 else f"{keys[0]}.*.{'.'.join(keys[-2:])}"


def _moved(a: Any, b: Any) -> float:
    a, b = float(a), float(b)
    if math.isnan(a) or math.isnan(b):
        return 0.0 if math.isnan(a) and math.isnan(b) else math.inf
    return abs(a - b)


def _record(metrics: dict, name: str, where: str, diff: float) -> None:
    m = metrics.setdefault(name, {"max_abs_diff": 0.0, "changed": 0, "values": 0, "at": None})
    m["values"] += 1
    if diff > 0:
        m["changed"] += 1
    if diff > m["max_abs_diff"] or m["at"] is None:
        m["max_abs_diff"], m["at"] = max(diff, m["max_abs_diff"]), where if diff > 0 else m["at"]


def json_drift(committed: Any, workspace: Any) -> dict:
    """Compare two versions of a JSON metrics file.

    Returns:
        {"metrics": {name: {"max_abs_diff", "changed", "values", "at"}} (``at``: the key path
         of the largest move), "labels": [{"key", "committed", "workspace"}] for every text or
         yes/no value that changed (verdicts, recommendations, champions), "missing": key paths
         present on one side only}.
    """
    old, new = dict(leaves(committed)), dict(leaves(workspace))
    metrics: dict[str, dict] = {}
    labels, missing = [], sorted(".".join(k) for k in set(old) ^ set(new))
    for key in sorted(set(old) & set(new)):
        a, b = old[key], new[key]
        if _is_number(a) and _is_number(b):
            _record(metrics, metric_name(key), ".".join(key), _moved(a, b))
        elif a != b:
            labels.append({"key": ".".join(key), "committed": a, "workspace": b})
    return {"metrics": metrics, "labels": labels, "missing": missing}


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def csv_drift(committed: str, workspace: str) -> dict:
    """Compare two versions of a CSV table, rows matched on the key columns it has
    (:data:`ROW_KEYS`), else by position; per numeric column the largest move.

    Returns:
        As :func:`json_drift`, with metric names ``<column>`` and keys ``row <key>: <column>``.
    """
    def rows(text: str) -> tuple[list[str], dict[tuple, dict]]:
        table = list(csv.DictReader(io.StringIO(text)))
        header = list(table[0]) if table else []
        keys = [k for k in ROW_KEYS if k in header]
        return header, {tuple(r[k] for k in keys) if keys else (str(i),): r
                        for i, r in enumerate(table)}

    (_, old), (_, new) = rows(committed), rows(workspace)
    metrics: dict[str, dict] = {}
    labels, missing = [], sorted(f"row {'/'.join(k)}" for k in set(old) ^ set(new))
    for key in sorted(set(old) & set(new)):
        for column in sorted(set(old[key]) & set(new[key])):
            a, b = old[key][column], new[key][column]
            fa, fb, where = _float(a), _float(b), f"row {'/'.join(key)}: {column}"
            if fa is not None and fb is not None:
                _record(metrics, column, where, _moved(fa, fb))
            elif a != b:
                labels.append({"key": where, "committed": a, "workspace": b})
    return {"metrics": metrics, "labels": labels, "missing": missing}


def largest(drift: dict) -> tuple[str, dict] | None:
    """The metric that moved most (None if none moved)."""
    moved = [(n, m) for n, m in drift["metrics"].items() if m["max_abs_diff"] > 0]
    return max(moved, key=lambda nm: nm[1]["max_abs_diff"]) if moved else None


def describe(file: str, drift: dict, tol: float) -> str:
    """One line: how far the file's numbers moved and which conclusions changed."""
    moved = sorted(((n, m) for n, m in drift["metrics"].items() if m["max_abs_diff"] > tol),
                   key=lambda nm: -nm[1]["max_abs_diff"])
    parts = [f"{file}: " + (f"{len(moved)} metric(s) moved more than {tol:g}; largest "
                            + "; ".join(f"{n} max |Δ| {m['max_abs_diff']:.4g} "
                                        f"({m['changed']}/{m['values']} values, at {m['at']})"
                                        for n, m in moved[:5])
                            if moved else f"every number within {tol:g}")]
    if drift["labels"]:
        first = drift["labels"][0]
        parts.append(f"{len(drift['labels'])} verdict(s)/recommendation(s) changed, first "
                     f"{first['key']}: {first['committed']!r} -> {first['workspace']!r}")
    if drift["missing"]:
        parts.append(f"{len(drift['missing'])} key(s) on one side only, first "
                     f"{drift['missing'][0]}")
    return "; ".join(parts)


def significant(drift: dict, tol: float) -> bool:
    """Whether a number moved more than ``tol``, a conclusion changed or a key appeared."""
    return bool(drift["labels"] or drift["missing"] or any(
        m["max_abs_diff"] > tol for m in drift["metrics"].values()))
