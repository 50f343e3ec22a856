"""The deployments list, ``/deployments``, and a deployment's page, ``/deployments/{name or id}``.

A deployment's page shows what its latest version says (flow, entrypoint, storage,
infrastructure, work queue, skip-late-after, concurrency limit), its schedules (each with its
next times, in its own time zone), its parameters as a table read from their JSON Schema, the
command that runs it, its runs (a keyset page, filterable by state) and its versions. Its
secrets are not shown: a storage URL's password, and the values of the infrastructure's ``env``
(only the variables' names). The list shows each deployment's schedules in a few words.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from vivace.deployments.parameters import parameter_rows, run_command
from vivace.deployments.schedule_info import local_text, summary, upcoming_times
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
from vivace.store.schedules import read_deployment_schedules, read_schedules_of_deployments

if TYPE_CHECKING:
    from vivace.store.schedules import ScheduleRecord

DEPLOYMENTS_SHOWN = 500
RUN_PAGE = 50
VERSIONS_SHOWN = 50

router = APIRouter(route_class=PageRoute, dependencies=[Depends(auth.require_read)])


@dataclasses.dataclass(frozen=True)
class ScheduleRow:
    """One schedule as the deployment's page shows it."""

    id: uuid.UUID
    position: int
    description: str
    active: bool
    parameters: str | None  # JSON text of its own parameters; None: the deployment's
    next_times: list[tuple[dt.datetime, str]]  # each time, and as the schedule's zone reads it

    @classmethod
    def from_record(cls, record: ScheduleRecord) -> ScheduleRow:
        times = upcoming_times(record.schedule) if record.active else []
        return cls(
            id=record.id,
            position=record.position,
            description=record.schedule.describe(),
            active=record.active,
            parameters=json.dumps(record.parameters) if record.parameters else None,
            next_times=[(when, local_text(when, record.schedule)) for when in times],
        )


@router.get("/deployments", response_class=HTMLResponse)
def deployments_page(request: Request, url: str = Depends(database_url)) -> HTMLResponse:
    """Deployments by name, those of flow ``flow`` or whose name contains ``name`` if given."""
    query = PageQuery(request.query_params)
    name, flow = query.text("name"), query.text("flow")
    # One row more than shown tells whether the list was cut.
    found = read_deployments(url, flow_name=flow, name_like=name, limit=DEPLOYMENTS_SHOWN + 1)
    shown = found[:DEPLOYMENTS_SHOWN]
    schedules = read_schedules_of_deployments(url, [record.id for record in shown])
    return render(
        request,
        "deployments.html",
        {
            "nav": "deployments",
            "deployments": shown,
            "schedules": {key: summary(records) for key, records in schedules.items()},
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
    """One deployment: what it runs and where, its schedules, its parameters, its runs and its
    versions."""
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
            "skip_late_after": _duration(record.skip_late_after),
            "schedules": [
                ScheduleRow.from_record(one) for one in read_deployment_schedules(url, record.id)
            ],
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


def _duration(seconds: float | None) -> str | None:
    """``10m``, ``1h30m``: the deployment's skip-late-after in words."""
    from vivace.schedules import format_interval

    return None if seconds is None else format_interval(dt.timedelta(seconds=seconds))
