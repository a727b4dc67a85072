"""Docstrings as command-line help: the reST markup of the library's docstrings (``code``,
:mod:`name`, :func:`~pkg.name`) turned into plain text for ``--help``."""

from __future__ import annotations

import re

_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")


def plain(doc: str | None) -> str:
    """``doc`` without reST roles and literal markup: ``:func:`~a.b.c``` -> ``a.b.c``,
    ````x```` -> ``x``. None -> ''."""
    if not doc:
        return ""
    return _LITERAL.sub(r"\1", _ROLE.sub(r"\1", doc))
