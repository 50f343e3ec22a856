"""A flow run's page, ``/flow-runs/{id}``, and the endpoints that keep it live while it runs.

The page is split into sections (summary, state timeline, subflows, task runs with their Gantt
chart, graph and table) rendered by one template each, so the page's script can fetch fresh
copies of them without a reload (see ``vivace.server.ui.live``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse

from vivace.server import auth
from vivace.server.deps import database_url
from vivace.server.graph import read_task_graph
from vivace.server.ui.charts import state_timeline
from vivace.server.ui.gantt import gantt_chart
from vivace.server.ui.graph_layout import layout_graph
from vivace.server.ui.live import (
    change_key,
    live_update,
    page_live_settings,
    read_live_logs,
    sections_update,
)
from vivace.server.ui.lookups import find_flow_run
from vivace.server.ui.params import LEVELS, PageQuery
from vivace.server.ui.rendering import render
from vivace.server.ui.routing import LiveRoute, PageRoute
from vivace.store.deployments import read_deployment
from vivace.store.queries import (
    count_task_runs_by_state,
    read_flow_run,
    read_flow_run_states,
    read_log_page,
    read_subflow_runs,
    read_task_runs,
)
from vivace.store.records import FlowRunRecord

LOG_PAGE = 500
TASK_PAGE = 50
SUBFLOWS_SHOWN = 200
# The page's live sections and their templates.
SECTIONS = {
    "summary": "flow_run/_summary.html",
    "timeline": "_timeline.html",
    "subflows": "flow_run/_subflows.html",
    "tasks": "flow_run/_tasks.html",
}

page_router = APIRouter(route_class=PageRoute, dependencies=[Depends(auth.require_read)])
live_router = APIRouter(route_class=LiveRoute, dependencies=[Depends(auth.require_read)])


@page_router.get("/flow-runs/{flow_run_id}", response_class=HTMLResponse)
def flow_run_page(
    request: Request, flow_run_id: str, url: str = Depends(database_url)
) -> HTMLResponse:
    """Everything about one flow run; its logs from ``log_cursor`` at ``level`` and above."""
    run = find_flow_run(url, flow_run_id)
    query = PageQuery(request.query_params)
    context = _sections(url, run, query)
    level = context["level"]
    logs = read_log_page(
        url, flow_run_id=run.id, min_level=level, limit=LOG_PAGE, cursor=query.cursor("log_cursor")
    )
    context.update(
        logs=logs,
        levels=LEVELS,
        nav="flow-runs",
        parent=read_flow_run(url, run.parent_flow_run_id) if run.parent_flow_run_id else None,
        live=page_live_settings(
            request, f"/flow-runs/{run.id}", run, level=level, key=context["change_key"], logs=logs
        ),
    )
    return render(request, "flow_run.html", context)


@live_router.get("/ui/flow-runs/{flow_run_id}/live")
def flow_run_live(request: Request, flow_run_id: str, url: str = Depends(database_url)) -> Any:
    """The run's state, change key, and its log lines after ``log_cursor`` (or, before the
    first line arrives, after the time ``after``), as JSON."""
    run = find_flow_run(url, flow_run_id)
    query = PageQuery(request.query_params)
    key = change_key(run, count_task_runs_by_state(url, run.id))
    return JSONResponse(live_update(run, key, read_live_logs(url, query, flow_run_id=run.id)))


@live_router.get("/ui/flow-runs/{flow_run_id}/sections")
def flow_run_sections(request: Request, flow_run_id: str, url: str = Depends(database_url)) -> Any:
    """Fresh HTML of the page's sections, by name (JSON); the query is the page's own."""
    run = find_flow_run(url, flow_run_id)
    context = _sections(url, run, PageQuery(request.query_params))
    return JSONResponse(sections_update(request, f"/flow-runs/{run.id}", run, SECTIONS, context))


def _sections(url: str, run: FlowRunRecord, query: PageQuery) -> dict[str, Any]:
    """What the page's live sections show."""
    now = dt.datetime.now(dt.UTC)
    task_states = query.states("task_state")
    task_name = query.text("task_name")
    tasks, next_task_cursor = read_task_runs(
        url,
        run.id,
        state_types=task_states,
        name_like=task_name,
        limit=TASK_PAGE,
        cursor=query.cursor("task_cursor"),
    )
    counts = count_task_runs_by_state(url, run.id)
    graph = read_task_graph(url, run.id)
    states = read_flow_run_states(url, run.id)
    return {
        "run": run,
        "now": now,
        "change_key": change_key(run, counts),
        "states": states,
        "timeline": state_timeline(states, now),
        "subflows": read_subflow_runs(url, run.id, limit=SUBFLOWS_SHOWN),
        "subflows_shown": SUBFLOWS_SHOWN,
        "task_counts": {state.value: count for state, count in counts.items() if count},
        "task_total": sum(counts.values()),
        "graph": graph,
        "gantt": gantt_chart(graph.nodes, now),
        "layout": layout_graph(graph.nodes, graph.edges),
        "tasks": tasks,
        "next_task_cursor": next_task_cursor,
        "task_filter_states": [state.value for state in task_states or ()],
        "task_name": task_name or "",
        "task_paged": query.cursor("task_cursor") is not None,
        "level": query.level("level"),  # kept by the task filter form
        # None for a run not made from a deployment, and for one whose deployment was deleted.
        "deployment": read_deployment(url, run.deployment_id) if run.deployment_id else None,
    }
