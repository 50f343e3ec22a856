"""Turning templates into responses: the Jinja environment, its filters, and the error page.

Autoescaping is on for every template, so anything read from the database (run names, log lines,
parameters) is shown as text, never interpreted as HTML. Every page also carries a strict
Content-Security-Policy: scripts and styles come only from ``/static``, so even a value that
slipped past escaping could not run code.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup

from vivace import __version__
from vivace.engine.states import FINAL_TYPES, StateType
from vivace.server.auth import COOKIE_NAME

TEMPLATES_DIR = Path(__file__).with_name("templates")

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

STATE_TYPES = [member.value for member in StateType]


def utc_iso(when: dt.datetime | None) -> str:
    """``2024-05-01T12:00:03.250Z``: the exact time, in UTC, to the millisecond."""
    if when is None:
        return ""
    utc = when.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def relative_time(when: dt.datetime | None, now: dt.datetime | None = None) -> str:
    """``"3 min ago"``, ``"in 5 s"``, ``"2 d ago"``: how far ``when`` is from now, roughly."""
    if when is None:
        return "—"
    seconds = ((now or dt.datetime.now(dt.UTC)) - when).total_seconds()
    ago = seconds >= 0
    seconds = abs(seconds)
    if seconds < 1:
        return "now"
    text = _span(seconds)
    return f"{text} ago" if ago else f"in {text}"


def _span(seconds: float) -> str:
    for size, unit in ((86_400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


def duration_text(seconds: float | dt.timedelta | None) -> str:
    """``"0.42 s"``, ``"3 min 05 s"``, ``"2 h 01 min"``: a duration at a useful precision."""
    if seconds is None:
        return "—"
    if isinstance(seconds, dt.timedelta):
        seconds = seconds.total_seconds()
    if seconds < 0.001:
        return f"{seconds * 1_000_000:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    if whole < 86_400:
        return f"{whole // 3600} h {whole % 3600 // 60:02d} min"
    return f"{whole // 86_400} d {whole % 86_400 // 3600:02d} h"


def level_name(level: int) -> str:
    """``"INFO"``, ``"ERROR"``..., or ``"Level 15"`` for a custom level."""
    return logging.getLevelName(level)


def pretty_json(value: Any) -> str:
    """Parameters as indented JSON (still escaped by the template, like any other text)."""
    return json.dumps(value, indent=2, sort_keys=True, default=repr, ensure_ascii=False)


def thousands(value: int) -> str:
    """``12,345``."""
    return f"{value:,}"


def is_final(state_type: StateType | str) -> bool:
    """Whether a run in this state will not change any more (the page stops polling)."""
    return StateType(state_type) in FINAL_TYPES


def time_element(when: dt.datetime | None) -> Markup:
    """A ``<time>`` element: the relative time as text, the exact UTC time in its title."""
    if when is None:
        return Markup('<span class="muted">—</span>')
    exact = utc_iso(when)
    return Markup('<time datetime="{0}" title="{0}">{1}</time>').format(exact, relative_time(when))


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a typo in a template fails its test, not silently
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(
        utc=utc_iso,
        duration=duration_text,
        level_name=level_name,
        pretty_json=pretty_json,
        thousands=thousands,
        when=time_element,
    )
    environment.globals.update(state_types=STATE_TYPES, is_final=is_final)
    return environment


_ENVIRONMENT = _environment()


def page_link(
    request: Request, page_path: str, fragment: str = "", **changes: str | list[str] | None
) -> str:
    """The page's URL with some query parameters changed (None removes one), for links such as
    "next page" that must keep the filters in force. ``page_path`` is the full path (with the
    app's root path, as ``request.url.path`` has it)."""
    items = [
        (name, value) for name, value in request.query_params.multi_items() if name not in changes
    ]
    for name, value in changes.items():
        if isinstance(value, list):
            items.extend((name, each) for each in value)
        elif value is not None:
            items.append((name, value))
    query = urlencode(items)
    return page_path + (f"?{query}" if query else "") + (f"#{fragment}" if fragment else "")


def root_path(request: Request) -> str:
    """The app's root path (``""`` at the top of the server), without a trailing slash."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def _page_context(request: Request, page_path: str, context: dict[str, Any]) -> dict[str, Any]:
    """What every template may use, then the page's own ``context``."""
    return {
        "request": request,
        "root": root_path(request),
        "link": functools.partial(page_link, request, page_path),
        "version": __version__,
        "nav": "",
        "signed_in": COOKIE_NAME in request.cookies,
        **context,
    }


def render(
    request: Request, template: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    """The page ``template`` rendered with ``context``, with the UI's security headers."""
    page = _page_context(request, request.url.path, context)
    html = _ENVIRONMENT.get_template(template).render(page)
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)


def render_fragment(
    request: Request, page_path: str, template: str, context: dict[str, Any]
) -> str:
    """A piece of the page at ``page_path`` (no layout), for the live updates of a running
    flow's page (a full path, like ``page_path`` of ``page_link``); ``request`` carries the
    page's query string, so its links keep the filters."""
    page = _page_context(request, page_path, context)
    return _ENVIRONMENT.get_template(template).render(page)


def render_error(request: Request, status_code: int, message: str) -> HTMLResponse:
    """The error page: what went wrong, in words, with the HTTP status."""
    titles = {
        400: "Bad request",
        401: "Not signed in",
        404: "Not found",
        503: "Database unavailable",
    }
    context = {
        "status_code": status_code,
        "title": titles.get(status_code, "Error"),
        "message": message,
    }
    return render(request, "error.html", context, status_code=status_code)
