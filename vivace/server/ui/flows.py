"""The flows list, ``/flows``: every flow with its number of runs, linking to those runs."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from vivace.server import auth
from vivace.server.deps import database_url
from vivace.server.ui.params import PageQuery
from vivace.server.ui.rendering import render
from vivace.server.ui.routing import PageRoute
from vivace.store.queries import count_flow_runs_per_flow, read_flows

FLOWS_SHOWN = 500

router = APIRouter(route_class=PageRoute, dependencies=[Depends(auth.require_read)])


@router.get("/flows", response_class=HTMLResponse)
def flows_page(request: Request, url: str = Depends(database_url)) -> HTMLResponse:
    """Flows by name, those whose name contains ``name`` if given."""
    name = PageQuery(request.query_params).text("name")
    # One row more than shown tells whether the list was cut.
    flows = read_flows(url, name_like=name, limit=FLOWS_SHOWN + 1)
    shown = flows[:FLOWS_SHOWN]
    counts = count_flow_runs_per_flow(url, [flow.id for flow in shown])
    return render(
        request,
        "flows.html",
        {
            "nav": "flows",
            "flows": [(flow, counts.get(flow.id, 0)) for flow in shown],
            "name": name or "",
            "cut": len(flows) > FLOWS_SHOWN,
            "shown": FLOWS_SHOWN,
        },
    )
