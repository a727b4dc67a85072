"""Property-based fuzzing of params.yaml: every malformed file gives one clean ParamsError.

Each in-process test starts from the valid shrunk config, applies one generated mutation and
checks that ``load_params`` raises :class:`ParamsError` (nothing else) whose message starts with
the dotted key path of the mutated node (or the file path, for YAML errors). The few mutations
that may legitimately be valid (an int where a float is expected, ``null`` for a block whose keys
all have defaults, a truncated file that is still valid YAML) are marked ``lenient``: they must
load or raise ParamsError, never anything else. The last test runs the real prepare stage on a few
bad files: exit status non-zero, one ``error:`` line, nothing written.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import event, example, given, note, settings
from hypothesis import strategies as st

from tests.conftest import ROOT, shrunk_params
from transferlab.adapt import strategies
from transferlab.config import params as params_module
from transferlab.config.params import Params, to_dict
from transferlab.config.typed import YAML12_FLOAT
from transferlab.core.errors import ParamsError
from transferlab.models.resolved import load_params as load_file

FAST = settings(deadline=None, derandomize=True, database=None)
# `make test` draws a quarter of the examples (the same derandomized ones every run);
# `make test-all` sets TRANSFERLAB_FULL_FUZZ=1 and draws them all
SCALE = 1.0 if os.environ.get("TRANSFERLAB_FULL_FUZZ") == "1" else 0.25


def examples(n: int) -> int:
    return max(10, int(n * SCALE))

BASE = shrunk_params()
KeyPath = tuple[Any, ...]  # a key path into the params dict, e.g. ("prepare", "target", "kind")


class _Dumper(yaml.SafeDumper):
    """PyYAML's dumper, quoting strings such as '1e5' that the params loader (YAML 1.2 floats,
    as DVC writes them) reads as numbers: a string mutation must stay a string."""


_Dumper.add_implicit_resolver("tag:yaml.org,2002:float", YAML12_FLOAT, list("-+0123456789"))


def _one_line_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    """A string with a line break (a prompt template) double-quoted with ``\\n`` escapes, so
    that every line of a dump is a whole entry: a mutation of a line never lands inside a
    quoted scalar that spans lines (where a bracket or a quote would still parse)."""
    return dumper.represent_scalar("tag:yaml.org,2002:str", value,
                                   style='"' if "\n" in value else None)


_Dumper.add_representer(str, _one_line_str)


def _dump(data: object, **kwargs: object) -> str:
    return yaml.dump(data, Dumper=_Dumper, **kwargs)


def _nodes(node: Any, path: KeyPath = ()) -> list[tuple[KeyPath, Any]]:
    """Every (path, value) below ``node``, depth first."""
    out = [(path, node)] if path else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _nodes(value, (*path, key))
    return out


def _kind(value: Any) -> str:
    """The YAML type of a valid value in BASE (bool before int: bool is an int in Python)."""
    for kind, tp in (("bool", bool), ("int", int), ("float", float), ("str", str),
                     ("list", list), ("mapping", dict)):
        if isinstance(value, tp):
            return kind
    raise AssertionError(f"unexpected value {value!r} in the shrunk params")


# a null in BASE is an optional value (e.g. execution.address) whose type has more than one
# valid family (a string or null): no single wrong family to draw, so it is not mutated here
NODES = [(path, _kind(value)) for path, value in _nodes(BASE) if value is not None]
MAPPINGS = [()] + [path for path, kind in NODES if kind == "mapping"]
NUMBERS = [path for path, kind in NODES if kind in ("int", "float")]
# every key the schema or the shrunk config knows: an inserted key must be none of these
KNOWN = {str(path[-1]) for path, _ in NODES} | {
    f.name for obj in vars(params_module).values()
    if isinstance(obj, type) and dataclasses.is_dataclass(obj) for f in dataclasses.fields(obj)
}
# (c) every number in params.yaml has a lower bound >= 0 and an upper bound < 2**31
NEGATIVE = st.one_of(st.integers(max_value=-1), st.floats(max_value=-1e-9))
HUGE_INT = st.one_of(st.sampled_from([10**15, 10**400, 2**1023, 2**1100]),
                     st.integers(min_value=2**31, max_value=10**30))
HUGE = st.one_of(HUGE_INT, st.sampled_from([1e12, float("nan")]), st.floats(min_value=2.0**31))

# ------------------------------------------------------------------------------------------
# values by YAML type: a mutation picks a family that the node's type does not accept

TEXT = st.one_of(
    st.text(st.characters(exclude_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=8),
    st.sampled_from(["yes", "no", "on", "true", "null", "~", "1e3", "0x10", ".inf", "12", "-"]),
)
SCALAR = st.one_of(st.integers(-100, 100), st.floats(width=32), TEXT, st.none(), st.booleans())
FAMILIES: dict[str, st.SearchStrategy] = {
    "bool": st.booleans(),
    "int": st.one_of(st.integers(-10**6, 10**6), HUGE_INT),
    "float": st.one_of(st.floats(), st.integers(-100, 100).map(float)),
    "str": TEXT,
    "empty_str": st.just(""),
    "none": st.none(),
    "list": st.lists(SCALAR, max_size=3),
    "dict": st.dictionaries(TEXT.filter(lambda k: k not in KNOWN), SCALAR, max_size=2),
    "date": st.dates(),
    "bytes": st.binary(max_size=4),
}
ACCEPTED = {"bool": {"bool"}, "int": {"int"}, "float": {"float"}, "str": {"str"},
            "list": {"list"}, "mapping": {"dict"}}
# right type in a wider sense: an int where a float is expected, null for a block of defaults
LENIENT = {"float": {"int"}, "mapping": {"none"}}


@dataclasses.dataclass
class Mutation:
    """One bad params file: the edited dict (or raw text / bytes) and the key it must name."""

    label: str
    expected: str  # dotted key path the message must start with ("" for file-level errors)
    data: dict | None = None
    text: str | bytes | None = None
    strict: bool = True  # False: the file may be valid after all; then it must load cleanly

    def write(self, path: Path) -> None:
        if self.text is None:
            path.write_text(_dump(self.data, sort_keys=False), encoding="utf-8")
        elif isinstance(self.text, bytes):
            path.write_bytes(self.text)
        else:
            path.write_text(self.text, encoding="utf-8")


def dotted(path: KeyPath) -> str:
    return ".".join(map(str, path))


def edited(path: KeyPath, edit: Callable[[dict, Any], None]) -> dict:
    """A deep copy of BASE with ``edit(parent_mapping, last_key)`` applied at ``path``."""
    data = copy.deepcopy(BASE)
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    edit(parent, path[-1])
    return data


def replaced(path: KeyPath, value: Any) -> dict:
    return edited(path, lambda parent, key: parent.__setitem__(key, value))


@st.composite
def wrong_type(draw: st.DrawFn) -> Mutation:
    """(a) the node at a random path gets a value of a type it does not accept."""
    path, kind = draw(st.sampled_from(NODES))
    lenient = LENIENT.get(kind, set())
    family = draw(st.sampled_from(sorted(set(FAMILIES) - ACCEPTED[kind])))
    return Mutation(f"wrong type: {kind} <- {family}", dotted(path),
                    replaced(path, draw(FAMILIES[family])), strict=family not in lenient)


@st.composite
def unknown_key(draw: st.DrawFn) -> Mutation:
    """(b) an unknown key, with any value, in a random mapping (a new source is unknown too:
    its value is never a valid dataset spec, as no generated mapping has a ``kind``)."""
    path = draw(st.sampled_from(MAPPINGS))
    key = draw(st.one_of(
        st.from_regex(r"[a-z_][a-z0-9_]{0,11}", fullmatch=True), TEXT, st.integers(-5, 10**6),
    ).filter(lambda k: str(k) not in KNOWN))
    value = draw(st.one_of(*FAMILIES.values()))
    data = copy.deepcopy(BASE)
    node = data
    for k in path:
        node = node[k]
    node[key] = value
    return Mutation(f"unknown key: in {dotted(path) or '<top>'}", dotted((*path, key)), data)


@st.composite
def out_of_range(draw: st.DrawFn) -> Mutation:
    """(c) a count, size, epochs, lr, ... set to a negative number or a huge value."""
    path = draw(st.sampled_from(NUMBERS))
    label, strategy = draw(st.sampled_from([("negative", NEGATIVE), ("huge", HUGE)]))
    return Mutation(f"{label} number: {dotted(path)}", dotted(path), replaced(path, draw(strategy)))


SOURCE_NAME = re.compile(r"[a-z0-9_]*[a-z][a-z0-9_]*")  # lower-case ASCII letters, digits, '_'


@st.composite
def bad_source_name(draw: st.DrawFn) -> Mutation:
    """(b) a new source with a valid spec but a name that is not lower-case ASCII (a DVC stage
    name and a folder name)."""
    name = draw(st.one_of(TEXT, st.integers(-5, 100)).filter(
        lambda k: str(k) not in KNOWN and not SOURCE_NAME.fullmatch(str(k))))
    path = ("prepare", "sources", name)
    return Mutation("bad source name", dotted(path), replaced(path, {"kind": "none"}))


LISTS = {  # list key -> a valid value for it (the shrunk target takes optional ``classes``)
    ("common", "seeds"): [0, 1],
    ("prepare", "budgets"): [1, 10, "all"],
    ("prepare", "target", "classes"): [1, 7],
}
WRONG_ITEM = st.one_of(*(FAMILIES[f] for f in sorted(FAMILIES) if f not in ("int", "bool")),
                       st.booleans()).filter(lambda v: v != "all")


@st.composite
def bad_list(draw: st.DrawFn) -> Mutation:
    """(d) seeds, budgets or classes: empty, or with a wrong-typed, out-of-range or repeated
    item."""
    path, good = draw(st.sampled_from(sorted(LISTS.items())))
    how = draw(st.sampled_from(["empty", "wrong type", "out of range", "repeated"]))
    if how == "empty":
        value: list = []
    else:
        item = {"wrong type": WRONG_ITEM, "out of range": st.one_of(NEGATIVE, HUGE),
                "repeated": st.sampled_from(good)}[how]
        value = list(good)
        value.insert(draw(st.integers(0, len(good))), draw(item))
    return Mutation(f"list {how}", dotted(path), replaced(path, value))


REQUIRED = [(block,) for block in BASE] + [
    ("prepare", "target"), ("prepare", "sources"), ("prepare", "target", "kind"),
    ("prepare", "sources", "random_init", "kind"), ("prepare", "sources", "printed_digits", "kind"),
    ("prepare", "sources", "printed_digits", "chars"),  # required for kind fonts
    ("prepare", "sources", "printed_digits", "n_per_class"),
]


@st.composite
def missing_key(draw: st.DrawFn) -> Mutation:
    """(e) a required key deleted."""
    path = draw(st.sampled_from(REQUIRED))
    return Mutation("missing key", dotted(path), edited(path, lambda p, k: p.pop(k)))


YAML_TEXTS = [_dump(BASE, sort_keys=False),
              _dump(BASE, sort_keys=False, default_flow_style=None)]
ONE_LINE_VALUE = re.compile(r"^\s*[^\s:#\[{-][^:]*: \S")  # `key: value`, not `key:` or `- item`
BAD_SCALARS = ["2020-13-45", "2021-02-30", "!!bool maybe", "!!int abc", "!!int ''", "!!float x",
               "!!timestamp x", "!!python/object:os.system x", "*undefined_alias",
               "0b" + "1" * 15_000]  # an int too long to print (over 4300 digits)
NON_PRINTABLE = "".join(map(chr, [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F,
                                  0x80, 0x9F, 0xFFFE]))


@st.composite
def broken_yaml(draw: st.DrawFn) -> Mutation:
    """(f) text that is not valid YAML: an unbalanced bracket or quote, a tab in the indentation,
    ``key: value: more``, a malformed scalar, a non-printable character, bytes that are not UTF-8.
    (Nesting too deep to parse is a pinned example below: PyYAML's scanner is quadratic in it.)"""
    text = draw(st.sampled_from(YAML_TEXTS))
    lines = text.splitlines(keepends=True)
    i = draw(st.integers(0, len(lines) - 1))
    line = lines[i]
    body = line.lstrip(" ")
    indent = line[: len(line) - len(body)]
    how = draw(st.sampled_from(["bracket", "quote", "tab", "colon", "scalar", "character",
                                "bytes"]))
    if how == "bracket":
        line = indent + draw(st.sampled_from("[{")) + body
    elif how == "quote":
        # it never closes, or closes lines later at a template's opening quote: a scalar over
        # several lines where a key (or a `- ` item) must start, which never parses
        line = indent + '"' + body
    elif how == "tab":
        line = draw(st.sampled_from([indent + "\t", "\t" + indent, "\t"])) + body
    elif how in ("colon", "scalar"):
        line = draw(st.sampled_from([x for x in lines if ONE_LINE_VALUE.match(x)]))
        i = lines.index(line)
        key = line.split(": ", 1)[0]
        if how == "colon":
            line = line.rstrip("\n") + ": " + draw(TEXT.filter(lambda t: "\n" not in t)) + "\n"
        else:
            line = f"{key}: {draw(st.sampled_from(BAD_SCALARS))}\n"
    elif how == "character":
        at = draw(st.integers(0, len(line)))
        line = line[:at] + draw(st.sampled_from(NON_PRINTABLE)) + line[at:]
    bad = "".join(lines[:i] + [line] + lines[i + 1:])
    if how == "bytes":
        raw = bad.encode()
        at = draw(st.integers(0, len(raw)))
        return Mutation("not UTF-8", "", text=raw[:at] + draw(st.sampled_from(
            [b"\xff", b"\xc3\x28", b"\xe2\x82", b"\x80", b"\xed\xa0\x80"])) + raw[at:])
    return Mutation(f"broken YAML: {how}", "", text=bad)


@st.composite
def truncated_or_garbled(draw: st.DrawFn) -> Mutation:
    """(f) a truncated file or a stray YAML indicator anywhere: often still valid YAML."""
    text = draw(st.sampled_from(YAML_TEXTS))
    at = draw(st.integers(0, len(text)))
    if draw(st.booleans()):
        return Mutation("truncated", "", text=text[:at], strict=False)
    junk = draw(st.text(st.sampled_from("[]{}:,\t\"'&*!|>%@`#-?\n "), min_size=1, max_size=3))
    return Mutation("garbled", "", text=text[:at] + junk + text[at:], strict=False)


# ------------------------------------------------------------------------------------------
# checks


def names(message: str, key: str) -> bool:
    """Whether ``message`` starts with ``key`` or one of its children (``key.x``, ``key[0]``)."""
    return any(message.startswith(key + sep) for sep in (":", ".", "["))


def check(mutation: Mutation, path: Path) -> None:
    """Write the mutation to ``path`` and load it: a clean, one-line ParamsError naming the key
    (or the file). Any other exception propagates and fails the test."""
    mutation.write(path)
    note(f"{mutation.label}; expected {mutation.expected!r}; file:\n{path.read_bytes()[:3000]!r}")
    event(mutation.label.split(":")[0] + (" (lenient)" if not mutation.strict else ""))
    expected = mutation.expected or f"{path}"
    try:
        params = load_params(path)
    except ParamsError as err:
        message = str(err)
        assert "\n" not in message, message
        if mutation.expected or mutation.strict:
            assert names(message, expected), f"{message!r} does not name {expected!r}"
        if not mutation.expected and mutation.strict:
            assert message.startswith(f"{path}: not valid YAML: "), message
        return
    assert not mutation.strict, f"accepted silently: {mutation.label} at {expected!r}"
    # a lenient file that loads is fully typed: every block a dataclass (transfer: one per
    # strategy), and it round-trips
    assert all(dataclasses.is_dataclass(block) for block in vars(params).values()
               if not isinstance(block, dict))
    assert all(dataclasses.is_dataclass(block) for block in params.transfer.values())
    path.write_text(_dump(to_dict(params), sort_keys=False), encoding="utf-8")
    assert load_params(path) == params


@pytest.fixture(scope="module")
def params_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One file, rewritten by every example (hypothesis reuses fixtures across examples)."""
    return tmp_path_factory.mktemp("params_fuzz") / "params.yaml"


def load_params(path: Path) -> Params:
    """Everything a stage that runs strategies validates: the file, then each strategy block."""
    return strategies.resolve(load_file(path))


def test_base_params_load(params_path: Path) -> None:
    """The unmutated shrunk config is valid: every failure below is due to its mutation."""
    params_path.write_text(_dump(BASE, sort_keys=False))
    assert isinstance(load_params(params_path), Params)
    for text in YAML_TEXTS:
        params_path.write_text(text)
        assert isinstance(load_params(params_path), Params)


@settings(FAST, max_examples=examples(400))
@given(mutation=wrong_type())
@example(mutation=Mutation("empty string", "tracking.experiment",
                           replaced(("tracking", "experiment"), "")))
@example(mutation=Mutation("empty string", "prepare.sources.printed_digits.chars",
                           replaced(("prepare", "sources", "printed_digits", "chars"), "")))
def test_wrong_type_names_the_key(params_path: Path, mutation: Mutation) -> None:
    check(mutation, params_path)


@settings(FAST, max_examples=examples(200))
@given(mutation=unknown_key())
def test_unknown_key_names_the_key(params_path: Path, mutation: Mutation) -> None:
    check(mutation, params_path)


@settings(FAST, max_examples=examples(60))
@given(mutation=bad_source_name())
@example(mutation=Mutation("bad source name", "prepare.sources.é",
                           replaced(("prepare", "sources", "é"), {"kind": "none"})))
def test_bad_source_name_names_the_key(params_path: Path, mutation: Mutation) -> None:
    check(mutation, params_path)


@settings(FAST, max_examples=examples(200))
@given(mutation=out_of_range())
def test_negative_or_huge_number_names_the_key(params_path: Path, mutation: Mutation) -> None:
    check(mutation, params_path)


@settings(FAST, max_examples=examples(150))
@given(mutation=bad_list())
def test_bad_list_names_the_key(params_path: Path, mutation: Mutation) -> None:
    check(mutation, params_path)


@settings(FAST, max_examples=examples(30))
@given(mutation=missing_key())
def test_missing_required_key_names_the_key(params_path: Path, mutation: Mutation) -> None:
    check(mutation, params_path)


DEPTH = 2 * sys.getrecursionlimit()  # too deep for PyYAML's recursive composer


@settings(FAST, max_examples=examples(250))
@given(mutation=broken_yaml())
@example(mutation=Mutation("too deep", "", text=YAML_TEXTS[0].replace(
    "  device: cpu", f"  device: {'[' * DEPTH}{']' * DEPTH}")))
@example(mutation=Mutation("too deep", "", text=YAML_TEXTS[0].replace(
    "  source_only: {}", "  source_only: " + "{a: " * DEPTH + "}" * DEPTH)))
def test_broken_yaml_names_the_file(params_path: Path, mutation: Mutation) -> None:
    check(mutation, params_path)


@settings(FAST, max_examples=examples(150))
@given(mutation=truncated_or_garbled())
def test_truncated_or_garbled_yaml_is_valid_or_params_error(params_path: Path,
                                                            mutation: Mutation) -> None:
    check(mutation, params_path)


# ------------------------------------------------------------------------------------------
# through the real stage: exit status, one error line, nothing written

STAGE_CASES = {
    "wrong type": (replaced(("pretrain", "epochs"), "ten"),
                   "pretrain.epochs: expected an integer"),
    "unknown key": (edited(("pretrain", "learning_rate"), lambda p, k: p.__setitem__(k, 0.1)),
                    "pretrain.learning_rate: unknown key"),
    "empty list": (replaced(("common", "seeds"), []), "common.seeds: must list at least one"),
    "negative size": (replaced(("prepare", "image_size"), -16), "prepare.image_size: must be >="),
    "YAML syntax error": (YAML_TEXTS[0].replace("  device: cpu", "  device: [cpu"),
                          "params.yaml: not valid YAML: "),
}


@pytest.mark.parametrize("case", list(STAGE_CASES))
def test_prepare_stage_fails_cleanly_and_writes_nothing(tmp_path: Path, case: str) -> None:
    content, expected = STAGE_CASES[case]
    path = tmp_path / "params.yaml"
    if isinstance(content, str):
        path.write_text(content)
    else:
        path.write_text(_dump(content, sort_keys=False))
    out = tmp_path / "prepared"
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / "prepare.py"), "--params",
                           str(path), "--out", str(out)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert expected in lines[0]
    assert not out.exists()
    assert not (tmp_path / ".prepared.partial").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["params.yaml"]
