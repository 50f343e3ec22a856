"""Log lines of a flow run or a task run: keyset pages, a live tail, and a text download.

A live tail polls ``GET /api/flow-runs/{id}/logs?cursor=<resume_cursor>`` and gets only the lines
recorded since its last page. ``/logs/download`` streams every line as plain text, page by page,
so a run with millions of lines costs the server one page of memory.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import StreamingResponse

from vivace.server import deps
from vivace.server.api import lookups
from vivace.server.api.models import LogPage, error_responses
from vivace.server.api.params import Cursor, Level, Limit, Time, checked_time, log_level
from vivace.store import queries
from vivace.store.records import LogRecord

router = APIRouter(tags=["logs"])

DatabaseUrl = Annotated[str, Depends(deps.database_url)]
FlowRunId = Annotated[uuid.UUID, Path(description="The flow run's id.")]
TaskRunId = Annotated[uuid.UUID, Path(description="The task run's id.")]
After = Annotated[Time, Query(description="Only lines stamped strictly after this time.")]
_DOWNLOAD_PAGE = 1000
_UNSAFE_IN_FILE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_BAD_INPUT_OR_UNKNOWN = error_responses(404, 422, 503)


@router.get(
    "/flow-runs/{flow_run_id}/logs", response_model=LogPage, responses=_BAD_INPUT_OR_UNKNOWN
)
def read_flow_run_logs(
    database_url: DatabaseUrl,
    flow_run_id: FlowRunId,
    level: Level = None,
    task_run_id: Annotated[
        uuid.UUID | None, Query(description="Only the lines of this task run.")
    ] = None,
    after: After = None,
    limit: Limit = 200,
    cursor: Cursor = None,
) -> LogPage:
    """A page of the flow run's log lines (its task runs' included), oldest first."""
    run = lookups.flow_run_or_404(database_url, flow_run_id)
    page = queries.read_log_page(
        database_url,
        flow_run_id=run.id,
        task_run_id=task_run_id,
        min_level=log_level(level),
        after=checked_time(after),
        limit=limit,
        cursor=cursor,
    )
    return LogPage.from_page(page)


@router.get(
    "/flow-runs/{flow_run_id}/logs/download",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "One line per record: time, level, logger, task run id or -, message.",
        },
        **_BAD_INPUT_OR_UNKNOWN,
    },
)
def download_flow_run_logs(
    database_url: DatabaseUrl, flow_run_id: FlowRunId, level: Level = None
) -> StreamingResponse:
    """All the flow run's log lines as a text file, ``<run name>.log``.

    Each record starts a line: ISO time, level name, logger name, task run id (or ``-``) and the
    message; the further lines of a multi-line message (a traceback) start with a tab.
    """
    run = lookups.flow_run_or_404(database_url, flow_run_id)
    min_level = log_level(level)
    file_name = _UNSAFE_IN_FILE_NAME.sub("_", run.name).strip("._") or str(run.id)
    return StreamingResponse(
        _log_text(database_url, run.id, min_level),
        media_type="text/plain; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{file_name}.log"'},
    )


@router.get(
    "/task-runs/{task_run_id}/logs", response_model=LogPage, responses=_BAD_INPUT_OR_UNKNOWN
)
def read_task_run_logs(
    database_url: DatabaseUrl,
    task_run_id: TaskRunId,
    level: Level = None,
    after: After = None,
    limit: Limit = 200,
    cursor: Cursor = None,
) -> LogPage:
    """A page of the task run's log lines, oldest first."""
    run = lookups.task_run_or_404(database_url, task_run_id)
    page = queries.read_log_page(
        database_url,
        task_run_id=run.id,
        min_level=log_level(level),
        after=checked_time(after),
        limit=limit,
        cursor=cursor,
    )
    return LogPage.from_page(page)


def format_log_line(record: LogRecord) -> str:
    """One record as the download writes it, newline included."""
    task_run = "-" if record.task_run_id is None else str(record.task_run_id)
    message = record.message.replace("\r\n", "\n").replace("\n", "\n\t")
    return (
        f"{record.timestamp.isoformat()} {record.level_name} {record.name} {task_run} {message}\n"
    )


def _log_text(database_url: str, flow_run_id: uuid.UUID, min_level: int | None) -> Iterator[str]:
    """The text of every line, one keyset page at a time (run in the server's thread pool)."""
    cursor: str | None = None
    while True:
        records, cursor = queries.read_logs(
            database_url,
            flow_run_id=flow_run_id,
            min_level=min_level,
            limit=_DOWNLOAD_PAGE,
            cursor=cursor,
        )
        yield "".join(map(format_log_line, records))
        if cursor is None:
            return
