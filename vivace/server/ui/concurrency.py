"""The concurrency limits page, ``/concurrency-limits``: each limit, its slots in use, holders.

A limit shows what it is for (a task tag, or a ``vivace.concurrency`` name), its size, whether it
is enforced and how many slots live leases hold; below, every live lease: its holder (host:pid,
linked to the task or flow run it is held for) and when it runs out unless renewed, which tells a
live holder (renewing) from one that died (its lease counting down).
"""

from __future__ import annotations

import re
import uuid

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from vivace.server import auth
from vivace.server.deps import database_url
from vivace.server.ui.rendering import render
from vivace.server.ui.routing import PageRoute
from vivace.store.concurrency import LeaseRecord, read_leases, read_limits

router = APIRouter(route_class=PageRoute, dependencies=[Depends(auth.require_read)])

_HELD_FOR = re.compile(r"(task|flow) run ([0-9a-f-]{36})$")


@router.get("/concurrency-limits", response_class=HTMLResponse)
def concurrency_limits_page(request: Request, url: str = Depends(database_url)) -> HTMLResponse:
    """Every concurrency limit with its slots in use, and who holds them."""
    limits = read_limits(url)
    leases = {limit.name: read_leases(url, limit.name) for limit in limits}
    rows = [(limit, sum(lease.occupy for lease in leases[limit.name])) for limit in limits]
    holders = [
        (limit.name, lease, _held_for(lease)) for limit in limits for lease in leases[limit.name]
    ]
    return render(
        request,
        "concurrency_limits.html",
        {"nav": "concurrency", "limits": rows, "holders": holders},
    )


def _held_for(lease: LeaseRecord) -> tuple[str, str] | None:
    """The run page a lease is held for: ("task-runs" or "flow-runs", its id), or None."""
    found = _HELD_FOR.search(lease.holder)
    if found is None:
        return None
    try:
        run_id = uuid.UUID(found.group(2))
    except ValueError:
        return None
    return f"{found.group(1)}-runs", str(run_id)
