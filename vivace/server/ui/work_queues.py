"""The work queues page, ``/work-queues``: each queue's settings and runs, and the workers.

A queue shows its priority, concurrency limit and paused flag, with its runs claimed and not
over (what the limit counts) and those waiting; a worker shows the queues it serves and its last
heartbeat, which tells a live worker from one that died without saying so.
"""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from vivace.server import auth
from vivace.server.deps import database_url
from vivace.server.ui.rendering import render
from vivace.server.ui.routing import PageRoute
from vivace.settings import get_settings
from vivace.store.work_queues import (
    count_active_runs,
    count_waiting_runs,
    read_work_queues,
    read_workers,
)

SILENT_HEARTBEATS = 3  # a worker this many heartbeats late is shown as not answering

router = APIRouter(route_class=PageRoute, dependencies=[Depends(auth.require_read)])


@router.get("/work-queues", response_class=HTMLResponse)
def work_queues_page(request: Request, url: str = Depends(database_url)) -> HTMLResponse:
    """Every work queue in the order workers serve them, and every registered worker."""
    queues = read_work_queues(url)
    names = [queue.name for queue in queues]
    active = count_active_runs(url, names) if names else {}
    waiting = count_waiting_runs(url, names) if names else {}
    silent_after = dt.timedelta(seconds=SILENT_HEARTBEATS * get_settings().heartbeat_interval)
    now = dt.datetime.now(dt.UTC)
    workers = [(worker, now - worker.heartbeat > silent_after) for worker in read_workers(url)]
    return render(
        request,
        "work_queues.html",
        {
            "nav": "work-queues",
            "queues": [(queue, active[queue.name], waiting[queue.name]) for queue in queues],
            "workers": workers,
        },
    )
