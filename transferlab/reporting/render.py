"""The report's building blocks and their two renderings.

A report is a sequence of :class:`Section` s, each a tuple of blocks: paragraphs (plain strings
with `code` and **bold**), tables, figures, code listings, bullet lists and subheadings. The same
sections render to Markdown (figures referenced as ``figures/<name>``) and to one self-contained
HTML file (inline CSS, figures embedded as base64 PNG). The number formatters here are the only
way a number reaches the page, so every table prints undefined values the same way.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TITLE = "Transfer learning report"
NA = "n/a"


# ---------------------------------------------------------------------------------- blocks
@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Image:
    name: str  # file name under figures/
    caption: str


@dataclass(frozen=True)
class Code:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Subheading:
    text: str


Block = str | Table | Image | Code | Bullets | Subheading


@dataclass(frozen=True)
class Section:
    title: str
    blocks: tuple[Block, ...]


# ------------------------------------------------------------------------------ formatting
def number(x: Any) -> float | None:
    """``x`` as a finite float, or None for null, NaN, infinities and non-numbers."""
    if x is None or isinstance(x, (bool, str)):
        return None
    value = float(x)
    return value if math.isfinite(value) else None


def f3(x: Any, signed: bool = False) -> str:
    """Accuracies, differences, p-values, calibration errors: three decimals (n/a if undefined)."""
    v = number(x)
    if v is None:
        return NA
    v = round(v, 3) + 0.0  # + 0.0 turns -0.0 into 0.0
    return f"{v:+.3f}" if signed else f"{v:.3f}"


def percent(x: Any) -> str:
    """A small fraction (e.g. a cost ratio) as a percentage with two decimals (n/a if undefined)."""
    v = number(x)
    return NA if v is None else f"{round(v * 100, 2) + 0.0:.2f}%"


def ci(low: Any, high: Any) -> str:
    return NA if number(low) is None and number(high) is None else f"[{f3(low)}, {f3(high)}]"


def seconds(x: Any) -> str:
    """Wall time in seconds: three decimals, like every other measured quantity."""
    v = number(x)
    return NA if v is None else f"{v:.3f}"


def flops(x: Any) -> str:
    """FLOPs: three significant digits in scientific notation (0 stays 0)."""
    v = number(x)
    return NA if v is None else "0" if v == 0 else f"{v:.2e}"


def integer(x: Any) -> str:
    v = number(x)
    return NA if v is None else f"{int(v):,}"


# ------------------------------------------------------------------------------- rendering
def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(sections: Sequence[Section]) -> str:
    """The report as Markdown; figures are referenced as ``figures/<name>``."""
    out = [f"# {TITLE}", ""]
    for section in sections:
        out += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Table):
                out.append("| " + " | ".join(map(_md_cell, block.header)) + " |")
                out.append("|" + "---|" * len(block.header))
                out += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in block.rows]
            elif isinstance(block, Image):
                out += [f"![{block.caption}](figures/{block.name})", "", f"*{block.caption}*"]
            elif isinstance(block, Code):
                out += ["```yaml", block.text.rstrip("\n"), "```"]
            elif isinstance(block, Bullets):
                out += [f"- {item}" for item in block.items]
            elif isinstance(block, Subheading):
                out.append(f"### {block.text}")
            else:
                out.append(block)
            out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def _inline(text: str) -> str:
    """Escape, then the two inline Markdown forms the report uses: `code` and **bold**."""
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


_CSS = """body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:72rem;
margin:2rem auto;padding:0 1rem;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:0.5rem 0 1rem;font-size:0.85rem}
th,td{border:1px solid #ccc;padding:0.2rem 0.5rem;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f2f2f2}
figure{margin:1rem 0}img{max-width:100%}figcaption{font-style:italic;color:#555}
pre{background:#f6f6f6;padding:0.6rem;overflow-x:auto;font-size:0.8rem}
code{background:#f3f3f3;padding:0 0.2rem}nav a{margin-right:0.8rem}"""


def _anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def render_html(sections: Sequence[Section], figure_dir: str | Path) -> str:
    """The report as one HTML file: inline CSS, figures embedded as base64 PNG data URIs."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(TITLE)}</title><style>{_CSS}</style></head><body>",
           f"<h1>{html.escape(TITLE)}</h1>", "<nav>" + "".join(
               f'<a href="#{_anchor(s.title)}">{html.escape(s.title)}</a>' for s in sections)
           + "</nav>"]
    for section in sections:
        out.append(f'<h2 id="{_anchor(section.title)}">{html.escape(section.title)}</h2>')
        for block in section.blocks:
            if isinstance(block, Table):
                out.append("<table><thead><tr>" + "".join(
                    f"<th>{_inline(h)}</th>" for h in block.header) + "</tr></thead><tbody>")
                out += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>"
                        for row in block.rows]
                out.append("</tbody></table>")
            elif isinstance(block, Image):
                data = base64.b64encode((Path(figure_dir) / block.name).read_bytes()).decode()
                out.append(f'<figure><img alt="{html.escape(block.caption.replace("`", ""))}" '
                           f'src="data:image/png;base64,{data}">'
                           f"<figcaption>{_inline(block.caption)}</figcaption></figure>")
            elif isinstance(block, Code):
                out.append(f"<pre><code>{html.escape(block.text)}</code></pre>")
            elif isinstance(block, Bullets):
                out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in block.items)
                           + "</ul>")
            elif isinstance(block, Subheading):
                out.append(f"<h3>{_inline(block.text)}</h3>")
            else:
                out.append(f"<p>{_inline(block)}</p>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
