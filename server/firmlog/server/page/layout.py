"""What every page shares: escaping, the frame around a page, the headers, the
static assets (``static/``, package data served by the log itself)."""

from __future__ import annotations

import functools
import html
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from urllib.parse import quote, urlencode

# Script and style only from the log itself, never inline; nothing else loads.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


@functools.cache
def static_assets() -> dict[str, tuple[bytes, str]]:
    """The files under ``static/`` by name, with their content types."""
    folder = resources.files(__package__).joinpath("static")
    assets = {}
    for item in folder.iterdir():
        suffix = item.name[item.name.rfind(".") :]
        if item.is_file() and suffix in _TYPES:
            assets[item.name] = (item.read_bytes(), _TYPES[suffix])
    return assets


def e(value: object) -> str:
    """``value`` as HTML text or a double-quoted attribute value."""
    return html.escape(str(value), quote=True)


def q(value: str) -> str:
    """``value`` as one path segment of a URL."""
    return quote(value, safe="")


@dataclass(frozen=True, slots=True)
class Site:
    """Who renders: the log's origin, and the relative path from the page to the
    log's root ("" at the top, "../" one level down) so the log may live under
    any prefix."""

    origin: str
    root: str = ""

    def url(self, path: str, **query: str | int | None) -> str:
        """An escaped href to ``path`` (relative to the log's root) with ``query``
        (parameters that are None or "" left out)."""
        params = {k: str(v) for k, v in query.items() if v is not None and v != ""}
        return e(self.root + path + (f"?{urlencode(params)}" if params else ""))

    def frame(self, title: str, body: str, *, script: bool = False) -> str:
        """A whole page: ``title`` (plain text) and ``body`` (HTML, escaped by the caller)."""
        scripts = (
            f'<script src="{self.url("static/sha256.js")}"></script>'
            f'<script src="{self.url("static/page.js")}"></script>'
            if script
            else ""
        )
        return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)} · firmlog {e(self.origin)}</title>
<link rel="icon" href="{self.url("static/icon.svg")}" type="image/svg+xml">
<link rel="stylesheet" href="{self.url("static/style.css")}"></head>
<body>
<header><a class="brand" href="{self.url("")}">firmlog <code>{e(self.origin)}</code></a>
<nav><a href="{self.url("search")}">Search releases</a>
<a href="{self.url("check")}">Is this file logged?</a>
<a href="{self.url("keys")}">The log's keys</a></nav></header>
<main>
{body}
</main>
{scripts}
</body></html>
"""


def table(headers: tuple[str, ...], rows: Sequence[tuple[str, ...]], empty: str) -> str:
    """A table that stacks into labelled lines on narrow screens. Cells are HTML."""
    if not rows:
        return f'<p class="muted">{e(empty)}</p>'
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td data-label="{e(h)}">{cell}</td>' if h else f"<td>{cell}</td>"
            for h, cell in zip(headers, row, strict=True)
        )
        + "</tr>"
        for row in rows
    )
    return f'<table class="stack"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def fields(items: list[tuple[str, str]]) -> str:
    """A definition list of (name, HTML value)."""
    inner = "".join(f"<dt>{e(name)}</dt><dd>{value}</dd>" for name, value in items)
    return f'<dl class="fields">{inner}</dl>'


def code(value: object) -> str:
    return f"<code>{e(value)}</code>"
