"""The flow-runs list, ``/flow-runs``: filters, counts by state, and keyset pagination."""

from __future__ import annotations

import dataclasses
import datetime as dt

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from vivace.engine.states import StateType
from vivace.server import auth
from vivace.server.deps import database_url
from vivace.server.ui.params import PageQuery
from vivace.server.ui.rendering import render
from vivace.server.ui.routing import PageError, PageRoute
from vivace.store.queries import RUN_SORTS, count_flow_runs_by_state, read_flow_runs, read_flows

PAGE_SIZE = 50
FLOW_CHOICES = 500  # flows offered in the filter's drop-down

router = APIRouter(route_class=PageRoute, dependencies=[Depends(auth.require_read)])


@dataclasses.dataclass(frozen=True)
class RunFilters:
    """The list's filters, as given in the query string."""

    flow: str | None
    states: list[StateType] | None
    name: str | None
    started_after: dt.datetime | None
    started_before: dt.datetime | None

    @classmethod
    def from_query(cls, query: PageQuery) -> RunFilters:
        filters = cls(
            flow=query.text("flow"),
            states=query.states("state"),
            name=query.text("name"),
            started_after=query.time("started_after"),
            started_before=query.time("started_before"),
        )
        if (
            filters.started_after is not None
            and filters.started_before is not None
            and filters.started_after > filters.started_before
        ):
            raise PageError(
                400,
                "started_after is later than started_before; expected a range whose start "
                "comes first",
            )
        return filters


@router.get("/flow-runs", response_class=HTMLResponse)
def flow_runs_page(request: Request, url: str = Depends(database_url)) -> HTMLResponse:
    """A page of flow runs, newest first unless ``sort`` says otherwise."""
    query = PageQuery(request.query_params)
    filters = RunFilters.from_query(query)
    sort = query.choice("sort", RUN_SORTS, "start_time_desc")
    cursor = query.cursor("cursor")
    runs, next_cursor = read_flow_runs(
        url,
        flow_name=filters.flow,
        state_types=filters.states,
        name_like=filters.name,
        started_after=filters.started_after,
        started_before=filters.started_before,
        sort=sort,
        limit=PAGE_SIZE,
        cursor=cursor,
    )
    # Counted without the state filter: the counts are the state chips that set it.
    counts = count_flow_runs_by_state(
        url,
        flow_name=filters.flow,
        name_like=filters.name,
        started_after=filters.started_after,
        started_before=filters.started_before,
    )
    return render(
        request,
        "flow_runs.html",
        {
            "nav": "flow-runs",
            "runs": runs,
            "filters": filters,
            "selected_states": [state.value for state in filters.states or ()],
            "sort": sort,
            "sorts": RUN_SORTS,
            "counts": {state.value: count for state, count in counts.items() if count},
            "flows": [flow.name for flow in read_flows(url, limit=FLOW_CHOICES)],
            "next_cursor": next_cursor,
            "paged": cursor is not None,
            "datetime_local": _datetime_local,
        },
    )


def _datetime_local(when: dt.datetime | None) -> str:
    """The value a ``datetime-local`` field shows for ``when`` (in UTC, to the second)."""
    if when is None:
        return ""
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
