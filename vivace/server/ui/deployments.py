"""The deployments list, ``/deployments``, and a deployment's page, ``/deployments/{name or id}``.

A deployment's page shows what its latest version says (flow, entrypoint, storage,
infrastructure, work queue), its parameters as a table read from their JSON Schema, the command
that runs it, its runs (a keyset page, filterable by state) and its versions. Its secrets are not
shown: a storage URL's password, and the values of the infrastructure's ``env`` (only the
variables' names).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from vivace.deployments.parameters import parameter_rows, run_command
from vivace.deployments.storage import describe_storage, shown_infrastructure
from vivace.server import auth
from vivace.server.deps import database_url
from vivace.server.ui.params import PageQuery
from vivace.server.ui.rendering import render
from vivace.server.ui.routing import PageError, PageRoute
from vivace.store.deployments import (
    read_deployment,
    read_deployment_versions,
    read_deployments,
)
from vivace.store.queries import count_flow_runs_by_state, read_flow_runs

DEPLOYMENTS_SHOWN = 500
RUN_PAGE = 50
VERSIONS_SHOWN = 50

router = APIRouter(route_class=PageRoute, dependencies=[Depends(auth.require_read)])


@router.get("/deployments", response_class=HTMLResponse)
def deployments_page(request: Request, url: str = Depends(database_url)) -> HTMLResponse:
    """Deployments by name, those of flow ``flow`` or whose name contains ``name`` if given."""
    query = PageQuery(request.query_params)
    name, flow = query.text("name"), query.text("flow")
    # One row more than shown tells whether the list was cut.
    found = read_deployments(url, flow_name=flow, name_like=name, limit=DEPLOYMENTS_SHOWN + 1)
    return render(
        request,
        "deployments.html",
        {
            "nav": "deployments",
            "deployments": found[:DEPLOYMENTS_SHOWN],
            "describe_storage": describe_storage,
            "name": name or "",
            "flow": flow or "",
            "cut": len(found) > DEPLOYMENTS_SHOWN,
            "shown": DEPLOYMENTS_SHOWN,
        },
    )


@router.get("/deployments/{deployment:path}", response_class=HTMLResponse)
def deployment_page(
    request: Request, deployment: str, url: str = Depends(database_url)
) -> HTMLResponse:
    """One deployment: what it runs and where, its parameters, its runs and its versions."""
    # NUL cannot be in a name (PostgreSQL cannot even compare it): no such deployment.
    record = None if "\x00" in deployment else read_deployment(url, deployment)
    if record is None:
        raise PageError(404, f"deployment {deployment!r} not found (neither a name nor an id)")
    query = PageQuery(request.query_params)
    states = query.states("state")
    cursor = query.cursor("cursor")
    runs, next_cursor = read_flow_runs(
        url,
        deployment_id=record.id,
        state_types=states,
        sort="created_desc",
        limit=RUN_PAGE,
        cursor=cursor,
    )
    counts = count_flow_runs_by_state(url, deployment_id=record.id)
    return render(
        request,
        "deployment.html",
        {
            "nav": "deployments",
            "deployment": record,
            "describe_storage": describe_storage,
            "infrastructure": shown_infrastructure(record.infrastructure),
            "parameters": parameter_rows(record.parameter_schema, record.parameters),
            "command": run_command(record),
            "runs": runs,
            "next_cursor": next_cursor,
            "paged": cursor is not None,
            "counts": {state.value: count for state, count in counts.items() if count},
            "run_total": sum(counts.values()),
            "selected_states": [state.value for state in states or ()],
            "versions": read_deployment_versions(url, record.id, limit=VERSIONS_SHOWN),
            "versions_shown": VERSIONS_SHOWN,
        },
    )
