"""``/api/task-runs/{id}``: one task run with its upstream runs, and its state history."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path

from vivace.server import deps
from vivace.server.api import lookups
from vivace.server.api.models import (
    State,
    TaskRun,
    TaskRunDetail,
    UpstreamInput,
    error_responses,
)
from vivace.store import queries
from vivace.store.records import TaskRunRecord

router = APIRouter(prefix="/task-runs", tags=["task runs"])

DatabaseUrl = Annotated[str, Depends(deps.database_url)]
TaskRunId = Annotated[uuid.UUID, Path(description="The task run's id.")]
_WAIT_FOR_KEY = "__wait_for__"  # as vivace.engine.inputs writes task_inputs
_BAD_INPUT_OR_UNKNOWN = error_responses(404, 422, 503)


@router.get("/{task_run_id}", response_model=TaskRunDetail, responses=_BAD_INPUT_OR_UNKNOWN)
def read_task_run(database_url: DatabaseUrl, task_run_id: TaskRunId) -> TaskRunDetail:
    """The task run, and the runs it took inputs from or waited for, with their names and
    states."""
    run = lookups.task_run_or_404(database_url, task_run_id)
    return TaskRunDetail(
        **TaskRun.from_record(run).model_dump(), upstreams=_upstreams(database_url, run)
    )


@router.get("/{task_run_id}/states", response_model=list[State], responses=_BAD_INPUT_OR_UNKNOWN)
def read_task_run_states(database_url: DatabaseUrl, task_run_id: TaskRunId) -> list[State]:
    """The task run's state history, oldest first."""
    run = lookups.task_run_or_404(database_url, task_run_id)
    states = queries.read_task_run_states(database_url, run.id)
    return [State.from_record(state) for state in states]


def _upstreams(database_url: str, run: TaskRunRecord) -> list[UpstreamInput]:
    """One entry per (parameter, upstream run), in the order task_inputs lists them.

    An entry that is not a task run id (stored by something other than vivace's engine) is
    left out rather than failing the request, as the UI and the graph do.
    """
    pairs = [
        (parameter, upstream_id)
        for parameter, upstream_ids in run.task_inputs.items()
        if isinstance(upstream_ids, list)
        for upstream_id in map(_as_id, upstream_ids)
        if upstream_id is not None
    ]
    known = queries.read_task_runs_by_id(database_url, [upstream_id for _, upstream_id in pairs])
    upstreams = []
    for parameter, upstream_id in pairs:
        upstream = known.get(upstream_id)
        upstreams.append(
            UpstreamInput(
                parameter=parameter,
                kind="wait_for" if parameter == _WAIT_FOR_KEY else "data",
                task_run_id=upstream_id,
                name=None if upstream is None else upstream.name,
                state_type=None if upstream is None else upstream.state_type,
            )
        )
    return upstreams


def _as_id(value: object) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None
