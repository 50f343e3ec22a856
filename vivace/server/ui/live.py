"""What a page of a run that is not final polls: its state, whether to refresh, new log lines.

A page embeds the run's *change key* (its state and its task runs' counts by state). Every ~1.5 s
its script asks the run's ``live`` endpoint for the current key and the log lines written since
its log cursor, appends those lines, and, when the key differs, fetches the page's sections again
(the summary, timelines, Gantt chart, graph and tables) as HTML rendered by the same templates.
Once the run is final the script stops. The live endpoint reads the state before the logs, so
its last answer holds every line written before the final state.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

from fastapi import Request

from vivace.engine.states import StateType
from vivace.server.ui.params import PageQuery
from vivace.server.ui.rendering import is_final, level_name, render_fragment, root_path, utc_iso
from vivace.store.queries import LogPage, read_log_page
from vivace.store.records import FlowRunRecord, LogRecord, TaskRunRecord

POLL_SECONDS = 1.5
LIVE_LOG_LINES = 200  # per poll; a page that gets a full batch polls again at once
MAX_LOG_LINES = 1000  # lines a page keeps; older ones leave the page as new ones come


def change_key(run: FlowRunRecord | TaskRunRecord, task_counts: Mapping[StateType, int]) -> str:
    """A string that changes whenever the run's page would show something new besides logs."""
    counts = ",".join(f"{state.value}={count}" for state, count in task_counts.items() if count)
    return f"{run.state_type.value}@{run.state_timestamp.timestamp():.6f}|{counts}"


def log_line(record: LogRecord) -> dict[str, Any]:
    """One log line as the page's script draws it (as text: it never becomes HTML)."""
    return {
        "id": str(record.id),
        "time": utc_iso(record.timestamp),
        "level": record.level,
        "level_name": level_name(record.level),
        "name": record.name,
        "task_run_id": None if record.task_run_id is None else str(record.task_run_id),
        "message": record.message,
    }


def live_update(run: FlowRunRecord | TaskRunRecord, key: str, logs: LogPage) -> dict[str, Any]:
    """The answer of a ``live`` endpoint."""
    return {
        "state_type": run.state_type.value,
        "state_name": run.state_name,
        "final": is_final(run.state_type),
        "change_key": key,
        "logs": [log_line(record) for record in logs.records],
        "log_cursor": logs.resume_cursor,
        "more_logs": logs.next_cursor is not None,
    }


def read_live_logs(url: str, query: PageQuery, **run: uuid.UUID) -> LogPage:
    """A ``live`` endpoint's log lines (of the run ``run`` names, ``flow_run_id`` or
    ``task_run_id``): at ``level`` and above, after ``log_cursor`` (or, before the first line
    arrives, after the time ``after``)."""
    level = query.level("level")
    cursor = query.cursor("log_cursor")
    after = None if cursor else query.time("after")
    return read_log_page(
        url, min_level=level, after=after, limit=LIVE_LOG_LINES, cursor=cursor, **run
    )


def sections_update(
    request: Request,
    page: str,
    run: FlowRunRecord | TaskRunRecord,
    sections: Mapping[str, str],
    context: dict[str, Any],
) -> dict[str, Any]:
    """The answer of a ``sections`` endpoint: each of ``sections`` (name: template) rendered
    with ``context`` for the page at ``page`` (below the app's root, like ``/flow-runs/<id>``)."""
    page_path = root_path(request) + page
    return {
        "change_key": context["change_key"],
        "final": is_final(run.state_type),
        "sections": {
            name: render_fragment(request, page_path, template, context)
            for name, template in sections.items()
        },
    }


def page_live_settings(
    request: Request,
    page: str,
    run: FlowRunRecord | TaskRunRecord,
    *,
    level: int | None,
    key: str,
    logs: LogPage,
) -> dict[str, Any]:
    """``live_settings`` of the page at ``page`` (below the app's root, like
    ``/flow-runs/<id>``), whose ``live`` and ``sections`` endpoints are under ``/ui``."""
    root = root_path(request)
    live_query = f"?level={level}" if level is not None else ""
    return live_settings(
        root=root,
        live_url=f"{root}/ui{page}/live{live_query}",
        sections_url=f"{root}/ui{page}/sections",
        key=key,
        logs=logs,
        final=is_final(run.state_type),
    )


def live_settings(
    *, root: str, live_url: str, sections_url: str, key: str, logs: LogPage, final: bool
) -> dict[str, Any]:
    """The ``data-*`` attributes that set up a page's script (``root``: the app's root path).

    The tail follows the lines the page shows. If there are more lines than one page holds, it
    starts from now instead: catching up through a long log 200 lines a poll would only churn.
    """
    skip_ahead = logs.next_cursor is not None
    return {
        "root": root,
        "live-url": live_url,
        "sections-url": sections_url,
        "change-key": key,
        "log-cursor": "" if skip_ahead else logs.resume_cursor or "",
        "log-after": utc_iso(dt.datetime.now(dt.UTC)) if skip_ahead else "",
        "final": "true" if final else "false",
        "poll-ms": str(int(POLL_SECONDS * 1000)),
        "max-log-lines": str(MAX_LOG_LINES),
    }
