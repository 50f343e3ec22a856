"""The dashboard, ``/``: flow runs by state over time, runs needing attention, task throughput."""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from vivace.engine.states import StateType
from vivace.server import auth
from vivace.server.deps import database_url
from vivace.server.ui.activity import WINDOWS, flow_run_buckets, task_run_buckets
from vivace.server.ui.charts import STATE_ORDER, Bar, stacked_bars
from vivace.server.ui.params import PageQuery
from vivace.server.ui.rendering import render, root_path, utc_iso
from vivace.server.ui.routing import PageRoute
from vivace.store.queries import read_flow_runs

ATTENTION_STATES = [StateType.FAILED, StateType.CRASHED]
ATTENTION_ROWS = 10

router = APIRouter(route_class=PageRoute, dependencies=[Depends(auth.require_read)])


@router.get("/", response_class=HTMLResponse)
def dashboard(request: Request, url: str = Depends(database_url)) -> HTMLResponse:
    """Activity over the last 24 hours (``?window=7d``: 7 days)."""
    window = WINDOWS[PageQuery(request.query_params).choice("window", tuple(WINDOWS), "24h")]
    now = dt.datetime.now(dt.UTC)
    flow_buckets = flow_run_buckets(url, window, now)
    task_buckets = task_run_buckets(url, window, now)
    since = flow_buckets[0].start
    attention, more_attention = read_flow_runs(
        url, state_types=ATTENTION_STATES, started_after=since, limit=ATTENTION_ROWS
    )
    running, more_running = read_flow_runs(
        url, state_types=[StateType.RUNNING], limit=ATTENTION_ROWS
    )
    totals: dict[str, int] = {}
    for bucket in flow_buckets:
        for state, count in bucket.counts.items():
            if count:
                totals[state.value] = totals.get(state.value, 0) + count
    task_total = sum(bucket.total for bucket in task_buckets)
    runs_path = root_path(request) + "/flow-runs"

    def runs_href(**query: str | list[str]) -> str:
        return f"{runs_path}?{urlencode(query, doseq=True)}"

    def bar_href(bar: Bar) -> str:
        return runs_href(started_after=utc_iso(bar.start), started_before=utc_iso(bar.end))

    def state_filter_href(state: str) -> str:
        return runs_href(state=state, started_after=utc_iso(since))

    return render(
        request,
        "dashboard.html",
        {
            "window": window,
            "windows": WINDOWS,
            "since": since,
            "flow_chart": stacked_bars(flow_buckets, label_format=window.label_format),
            "task_chart": stacked_bars(task_buckets, label_format=window.label_format, height=140),
            "totals": totals,
            "task_total": task_total,
            "task_rate": f"{task_total / window.span.total_seconds() * 60:.3g}",
            "attention": attention,
            "more_attention": more_attention is not None,
            "running": running,
            "more_running": more_running is not None,
            "nav": "dashboard",
            "legend_states": [state.value for state in STATE_ORDER],
            "bar_href": bar_href,
            "state_filter_href": state_filter_href,
            "attention_href": runs_href(
                state=[state.value for state in ATTENTION_STATES], started_after=utc_iso(since)
            ),
        },
    )
