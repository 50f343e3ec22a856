"""A task run's page, ``/task-runs/{id}``: its states, the upstream runs it took inputs from, its
logs; live like a flow run's page while the task runs."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse

from vivace.engine.inputs import WAIT_FOR_KEY
from vivace.server import auth
from vivace.server.deps import database_url
from vivace.server.ui.charts import state_timeline
from vivace.server.ui.live import (
    change_key,
    live_update,
    page_live_settings,
    read_live_logs,
    sections_update,
)
from vivace.server.ui.lookups import find_task_run
from vivace.server.ui.params import LEVELS, PageQuery
from vivace.server.ui.rendering import render
from vivace.server.ui.routing import LiveRoute, PageRoute
from vivace.store.queries import (
    MAX_LIMIT,
    read_flow_run,
    read_log_page,
    read_task_run_states,
    read_task_runs_by_id,
)
from vivace.store.records import TaskRunRecord

LOG_PAGE = 500
INPUTS_SHOWN = 50  # upstream runs listed per parameter
# The page's live sections and their templates.
SECTIONS = {"summary": "task_run/_summary.html", "timeline": "_timeline.html"}

page_router = APIRouter(route_class=PageRoute, dependencies=[Depends(auth.require_read)])
live_router = APIRouter(route_class=LiveRoute, dependencies=[Depends(auth.require_read)])


@dataclasses.dataclass(frozen=True)
class Upstream:
    """One upstream task run an input came from; ``run`` is None if it is not in the store."""

    id: str
    run: TaskRunRecord | None


@dataclasses.dataclass(frozen=True)
class TaskInput:
    """A parameter and the upstream runs it took values from (``hidden`` more not listed)."""

    parameter: str
    upstreams: list[Upstream]
    hidden: int


@page_router.get("/task-runs/{task_run_id}", response_class=HTMLResponse)
def task_run_page(
    request: Request, task_run_id: str, url: str = Depends(database_url)
) -> HTMLResponse:
    """One task run; its logs from ``log_cursor`` at ``level`` and above."""
    run = find_task_run(url, task_run_id)
    query = PageQuery(request.query_params)
    level = query.level("level")
    logs = read_log_page(
        url, task_run_id=run.id, min_level=level, limit=LOG_PAGE, cursor=query.cursor("log_cursor")
    )
    context = _sections(url, run)
    context.update(
        flow_run=read_flow_run(url, run.flow_run_id) if run.flow_run_id else None,
        inputs=_inputs(url, run),
        logs=logs,
        level=level,
        levels=LEVELS,
        nav="flow-runs",
        live=page_live_settings(
            request, f"/task-runs/{run.id}", run, level=level, key=context["change_key"], logs=logs
        ),
    )
    return render(request, "task_run.html", context)


@live_router.get("/ui/task-runs/{task_run_id}/live")
def task_run_live(request: Request, task_run_id: str, url: str = Depends(database_url)) -> Any:
    """The run's state, change key, and its log lines after ``log_cursor`` (or, before the
    first line arrives, after the time ``after``), as JSON."""
    run = find_task_run(url, task_run_id)
    query = PageQuery(request.query_params)
    logs = read_live_logs(url, query, task_run_id=run.id)
    return JSONResponse(live_update(run, change_key(run, {}), logs))


@live_router.get("/ui/task-runs/{task_run_id}/sections")
def task_run_sections(request: Request, task_run_id: str, url: str = Depends(database_url)) -> Any:
    """Fresh HTML of the page's sections, by name (JSON)."""
    run = find_task_run(url, task_run_id)
    context = _sections(url, run)
    return JSONResponse(sections_update(request, f"/task-runs/{run.id}", run, SECTIONS, context))


def _sections(url: str, run: TaskRunRecord) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    states = read_task_run_states(url, run.id)
    return {
        "run": run,
        "now": now,
        "change_key": change_key(run, {}),
        "states": states,
        "timeline": state_timeline(states, now),
    }


def _inputs(url: str, run: TaskRunRecord) -> list[TaskInput]:
    """The run's inputs, data parameters first, with the upstream runs looked up in one query."""
    listed: dict[str, list[str]] = {}
    hidden: dict[str, int] = {}
    for parameter, ids in run.task_inputs.items():
        if not isinstance(ids, list):
            continue
        listed[parameter] = [str(each) for each in ids[:INPUTS_SHOWN]]
        hidden[parameter] = max(len(ids) - INPUTS_SHOWN, 0)
    wanted = list(dict.fromkeys(each for ids in listed.values() for each in ids if _is_id(each)))
    found = read_task_runs_by_id(url, wanted[:MAX_LIMIT])
    found_by_text = {str(run_id): record for run_id, record in found.items()}
    order = sorted(listed, key=lambda name: (name == WAIT_FOR_KEY, name))
    return [
        TaskInput(
            "wait_for" if name == WAIT_FOR_KEY else name,
            [Upstream(each, found_by_text.get(each)) for each in listed[name]],
            hidden[name],
        )
        for name in order
    ]


def _is_id(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
