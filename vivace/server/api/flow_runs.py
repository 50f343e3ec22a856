"""``/api/flow-runs``: list, count and show flow runs, their states, subflows, task runs, graph.

Lists are keyset pages (``vivace.store.queries``): ``{"items": [...], "next_cursor": ...}``, and
the next page is asked with ``cursor=<next_cursor>`` and the same filters and sort.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from vivace.engine.states import StateType
from vivace.server import deps, graph
from vivace.server.api import lookups
from vivace.server.api.models import (
    FlowRun,
    FlowRunDetail,
    FlowRunPage,
    State,
    TaskGraph,
    TaskRun,
    TaskRunPage,
    error_responses,
)
from vivace.server.api.params import (
    Cursor,
    Limit,
    NameLike,
    RunSort,
    StateFilter,
    Text,
    Time,
    checked_time,
)
from vivace.store import queries

router = APIRouter(prefix="/flow-runs", tags=["flow runs"])

DatabaseUrl = Annotated[str, Depends(deps.database_url)]
FlowRunId = Annotated[uuid.UUID, Path(description="The flow run's id.")]
MAX_TAGS = 50  # each tag is one condition: SQLite refuses a query of about 1,000
_BAD_INPUT = error_responses(422, 503)
_BAD_INPUT_OR_UNKNOWN = error_responses(404, 422, 503)


def flow_run_filters(
    flow: Annotated[Text | None, Query(description="Only runs of the flow of this name.")] = None,
    state: StateFilter = None,
    name_like: NameLike = None,
    tag: Annotated[
        list[Text] | None,
        Query(
            description=f"Only runs with every one of these tags (at most {MAX_TAGS}).",
            max_length=MAX_TAGS,
        ),
    ] = None,
    started_after: Annotated[Time, Query(description="Only runs started at or after.")] = None,
    started_before: Annotated[Time, Query(description="Only runs started at or before.")] = None,
) -> dict[str, Any]:
    """The filters shared by the list and the counts, as the store's keyword arguments."""
    return {
        "flow_name": flow,
        "state_types": state,
        "name_like": name_like,
        "tags": tag,
        "started_after": checked_time(started_after),
        "started_before": checked_time(started_before),
    }


Filters = Annotated[dict[str, Any], Depends(flow_run_filters)]


@router.get("", response_model=FlowRunPage, responses=_BAD_INPUT)
def list_flow_runs(
    database_url: DatabaseUrl,
    filters: Filters,
    sort: RunSort = "start_time_desc",
    limit: Limit = 50,
    cursor: Cursor = None,
) -> FlowRunPage:
    """A page of the flow runs matching every filter given (runs not started yet count as the
    latest)."""
    runs, next_cursor = queries.read_flow_runs(
        database_url, **filters, sort=sort, limit=limit, cursor=cursor
    )
    return FlowRunPage(items=[FlowRun.from_record(run) for run in runs], next_cursor=next_cursor)


@router.get("/counts", response_model=dict[StateType, int], responses=_BAD_INPUT)
def count_flow_runs(database_url: DatabaseUrl, filters: Filters) -> dict[StateType, int]:
    """How many flow runs match the filters, per state type (every state type a key)."""
    return queries.count_flow_runs_by_state(database_url, **filters)


@router.get("/{flow_run_id}", response_model=FlowRunDetail, responses=_BAD_INPUT_OR_UNKNOWN)
def read_flow_run(database_url: DatabaseUrl, flow_run_id: FlowRunId) -> FlowRunDetail:
    """The flow run with its parameters, tags and timing, and its task runs' counts by state."""
    run = lookups.flow_run_or_404(database_url, flow_run_id)
    counts = queries.count_task_runs_by_state(database_url, run.id)
    return FlowRunDetail(
        **FlowRun.from_record(run).model_dump(),
        task_run_count=sum(counts.values()),
        task_run_counts=counts,
    )


@router.get("/{flow_run_id}/states", response_model=list[State], responses=_BAD_INPUT_OR_UNKNOWN)
def read_flow_run_states(database_url: DatabaseUrl, flow_run_id: FlowRunId) -> list[State]:
    """The flow run's state history, oldest first."""
    run = lookups.flow_run_or_404(database_url, flow_run_id)
    states = queries.read_flow_run_states(database_url, run.id)
    return [State.from_record(state) for state in states]


@router.get(
    "/{flow_run_id}/subflow-runs", response_model=list[FlowRun], responses=_BAD_INPUT_OR_UNKNOWN
)
def read_subflow_runs(
    database_url: DatabaseUrl, flow_run_id: FlowRunId, limit: Limit = queries.MAX_LIMIT
) -> list[FlowRun]:
    """Flow runs started from inside this one, in the order they were created."""
    run = lookups.flow_run_or_404(database_url, flow_run_id)
    subflows = queries.read_subflow_runs(database_url, run.id, limit=limit)
    return [FlowRun.from_record(subflow) for subflow in subflows]


@router.get("/{flow_run_id}/task-runs", response_model=TaskRunPage, responses=_BAD_INPUT_OR_UNKNOWN)
def list_task_runs(
    database_url: DatabaseUrl,
    flow_run_id: FlowRunId,
    state: StateFilter = None,
    name_like: NameLike = None,
    sort: RunSort = "start_time_asc",
    limit: Limit = 50,
    cursor: Cursor = None,
) -> TaskRunPage:
    """A page of the flow run's task runs, by default in the order they started."""
    run = lookups.flow_run_or_404(database_url, flow_run_id)
    task_runs, next_cursor = queries.read_task_runs(
        database_url,
        run.id,
        state_types=state,
        name_like=name_like,
        sort=sort,
        limit=limit,
        cursor=cursor,
    )
    return TaskRunPage(
        items=[TaskRun.from_record(task_run) for task_run in task_runs], next_cursor=next_cursor
    )


@router.get("/{flow_run_id}/graph", response_model=TaskGraph, responses=_BAD_INPUT_OR_UNKNOWN)
def read_task_graph(
    database_url: DatabaseUrl,
    flow_run_id: FlowRunId,
    group_over: Annotated[
        int, Query(ge=0, le=1_000_000, description="Tasks with more runs become one node.")
    ] = 20,
    max_nodes: Annotated[
        int, Query(ge=1, le=100_000, description="Nodes kept, the earliest started first.")
    ] = 2000,
) -> TaskGraph:
    """The task dependency graph: data and wait_for edges, mapped tasks grouped into one node."""
    run = lookups.flow_run_or_404(database_url, flow_run_id)
    task_graph = graph.read_task_graph(
        database_url, run.id, group_over=group_over, max_nodes=max_nodes
    )
    return TaskGraph.from_graph(task_graph)
