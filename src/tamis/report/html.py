"""Assemble report sections into one self-contained ``index.html``."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tamis._io import write_text_atomic


@dataclass
class Section:
    """One tool's part of the demo report.

    Attributes:
        title: Heading shown in the report and the console.
        body_html: Trusted HTML fragment (figures are ``<img src="file.png">`` relative to
            the report folder).
        console: Lines printed in the console summary.
        error: If the section failed, the error text (the report still renders).

    """

    title: str
    body_html: str = ""
    console: list[str] = field(default_factory=list)
    error: str | None = None


_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #444} h2{margin-top:2em;border-bottom:1px solid #bbb}
table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
th{background:#f3f3f3} img{max-width:100%} .err{color:#a00;white-space:pre-wrap}
code{background:#f5f5f5;padding:1px 3px}
"""


def html_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Render a simple HTML table with escaped cells."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(out_dir: Path, sections: Sequence[Section], title: str = "tamis demo") -> Path:
    """Write ``out_dir/index.html`` from ``sections`` and return its path."""
    parts = [f"<h1>{html.escape(title)}</h1>"]
    toc = "".join(
        f'<li><a href="#s{i}">{html.escape(s.title)}</a></li>' for i, s in enumerate(sections)
    )
    parts.append(f"<ul>{toc}</ul>")
    for i, s in enumerate(sections):
        parts.append(f'<h2 id="s{i}">{html.escape(s.title)}</h2>')
        if s.error:
            parts.append(f'<p class="err">This section failed: {html.escape(s.error)}</p>')
        parts.append(s.body_html)
    doc = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>"
    )
    path = Path(out_dir) / "index.html"
    write_text_atomic(path, doc)
    return path
