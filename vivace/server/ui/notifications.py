"""The notifications page, ``/notifications``: the policies and their latest deliveries.

A policy shows the states it watches, its filters, its webhook block, whether it is active and
its deliveries of the last 24 hours by status; below, the latest deliveries of every policy,
each with its run, state, status, attempts and the last error, so a webhook that stopped
answering shows at a glance.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from vivace.server import auth
from vivace.server.deps import database_url
from vivace.server.ui.rendering import render
from vivace.server.ui.routing import PageRoute
from vivace.store.notifications import (
    count_notification_deliveries,
    read_notification_deliveries,
    read_notification_policies,
)

RECENT_SECONDS = 86_400.0  # what the per-policy counts cover
DELIVERIES_SHOWN = 50

router = APIRouter(route_class=PageRoute, dependencies=[Depends(auth.require_read)])


@router.get("/notifications", response_class=HTMLResponse)
def notifications_page(request: Request, url: str = Depends(database_url)) -> HTMLResponse:
    """Every notification policy by name, and the latest deliveries."""
    policies = read_notification_policies(url)
    counts = count_notification_deliveries(url, since=time.time() - RECENT_SECONDS)
    return render(
        request,
        "notifications.html",
        {
            "nav": "notifications",
            "policies": [(policy, counts.get(policy.id, {})) for policy in policies],
            "deliveries": read_notification_deliveries(url, limit=DELIVERIES_SHOWN),
        },
    )
