"""Frozen dataclasses from YAML: strict parsing, type checks and unknown-key rejection.

The machinery behind :mod:`transferlab.config.params`. Errors are :class:`ParamsError` and name the
dotted key, e.g. ``transfer.fintune: unknown key; expected one of finetune, linear_probe, ...``.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from transferlab.core.errors import ParamsError


def fail(key: str, message: str) -> None:
    """Raise the ParamsError ``<key>: <message>``."""
    raise ParamsError(f"{key}: {message}")


def check_range(key: str, value: float, low: float | None = None, high: float | None = None,
                 low_open: bool = False) -> None:
    """Fail unless ``value`` is finite and within [low, high] (``(low, high]`` if low_open)."""
    if isinstance(value, float) and not math.isfinite(value):
        fail(key, f"must be finite, got {value}")
    if low is not None and (value <= low if low_open else value < low):
        fail(key, f"must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and value > high:
        fail(key, f"must be <= {high}, got {value}")


def _coerce(key: str, tp: Any, value: Any) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert nested blocks to dataclasses."""
    if tp is Any:  # checked later by its owner (e.g. a search grid against the field's type)
        return value
    origin = get_origin(tp)
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            fail(key, f"unknown value {value!r}; expected one of {', '.join(map(str, choices))}")
        return value
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _coerce(key, option, value)
            except ParamsError as err:
                errors.append(str(err))
        fail(key, f"got {value!r}; " + " or ".join(e.split(": ", 1)[1] for e in errors))
    if origin in (tuple, list):
        if not isinstance(value, list):
            fail(key, f"expected a list, got {type(value).__name__} {value!r}")
        (item_tp, *_) = get_args(tp)
        return tuple(_coerce(f"{key}[{i}]", item_tp, v) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            fail(key, f"expected a mapping, got {type(value).__name__}")
        _, val_tp = get_args(tp)
        return {str(k): _coerce(f"{key}.{k}", val_tp, v) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            fail(key, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail(key, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail(key, f"expected a number, got {value!r}")
        if isinstance(value, int) and abs(value) >= 2**1023:  # float(value) would overflow
            fail(key, f"too large for a number, got an integer of {value.bit_length()} bits")
        return float(value)
    if tp is str:
        if not isinstance(value, str) or not value:
            fail(key, f"expected a non-empty string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {tp!r} for {key}")  # a bug in this module


def from_dict(cls: type, data: Any, key: str) -> Any:
    """Build the frozen dataclass ``cls`` from a YAML mapping, rejecting unknown keys.

    Args:
        cls: the dataclass type of the block.
        data: the parsed YAML value (must be a mapping).
        key: the dotted path of the block, used in error messages.
    Returns:
        An instance of ``cls``; its ``validate()`` (if any) has run.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        fail(key, f"expected a mapping, got {type(data).__name__} {data!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(map(str, data)) - set(fields))
    if unknown:
        where = f"{key}.{unknown[0]}" if key else unknown[0]
        fail(where, f"unknown key; expected one of {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        sub = f"{key}.{name}" if key else name
        if name in data:
            kwargs[name] = _coerce(sub, hints[name], data[name])
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            fail(sub, "missing required key")
    obj = cls(**kwargs)
    if hasattr(obj, "validate"):
        obj.validate(key)
    return obj


class _Loader(yaml.SafeLoader):
    """``yaml.safe_load``, but stricter: an integer too long to print is an error (as it already
    is for a decimal literal; ``0x`` / ``0b`` literals get past that check), so every message can
    show it, and so is a key repeated in one mapping."""

    def construct_yaml_int(self, node: yaml.Node) -> int:
        value = super().construct_yaml_int(node)
        str(value)  # ValueError past sys.get_int_max_str_digits()
        return value

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict:
        """A repeated key is an error: PyYAML would silently keep the last value."""
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *anchor` merges may override keys, by design
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, (str, int, float, bool)):
                    continue  # an unhashable key is reported by the base constructor
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"found duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep)


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
# YAML 1.2 floats without a dot (``5e-05``): what DVC's YAML writer (ruamel) emits for
# ``dvc exp run -S pretrain.lr=0.00005``, and what YAML 1.1 (PyYAML) would read as a string
YAML12_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", YAML12_FLOAT, list("-+0123456789"))


def _one_line(err: Exception) -> str:
    """A parse error as one line (PyYAML's own text spans several, with a source excerpt)."""
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        mark, context = err.problem_mark, f" ({err.context})" if err.context else ""
        return f"line {mark.line + 1}, column {mark.column + 1}: {err.problem}{context}"
    return " ".join(str(err).split())


def to_dict(obj: Any) -> Any:
    """The plain-python (YAML/JSON-able) form of a params object, e.g. for hashing or logging."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def read_yaml_mapping(path: str | Path) -> dict:
    """Parse a YAML file whose top level is a mapping; every failure is one ParamsError line.

    Raises:
        ParamsError: the file is missing, is not valid YAML (with line and column), repeats a
            key, or its top level is not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except RecursionError:
        raise ParamsError(f"{path}: not valid YAML: nested too deeply") from None
    # PyYAML's scalar constructors raise plain ValueError / KeyError / ... on malformed scalars
    # (``2020-13-45``, ``!!bool maybe``, ``!!int ''``); UnicodeDecodeError is a ValueError.
    except (yaml.YAMLError, ValueError, KeyError, IndexError, AttributeError) as err:
        raise ParamsError(f"{path}: not valid YAML: {_one_line(err)}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of blocks at the top level")
    return raw
