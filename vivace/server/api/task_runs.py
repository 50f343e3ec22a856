"""``/api/task-runs/{id}``: one task run with its upstream runs, and its state history."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path

from vivace.engine.inputs import WAIT_FOR_KEY
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
_BAD_INPUT_OR_UNKNOWN = error_responses(404, 422, 503)
UPSTREAMS_SHOWN = 1000  # upstreams listed with their names and states; see TaskRunDetail


@router.get("/{task_run_id}", response_model=TaskRunDetail, responses=_BAD_INPUT_OR_UNKNOWN)
def read_task_run(database_url: DatabaseUrl, task_run_id: TaskRunId) -> TaskRunDetail:
    """The task run, and the first 1,000 runs it took inputs from or waited for, with their
    names and states (``upstream_count`` says how many there are in all)."""
    run = lookups.task_run_or_404(database_url, task_run_id)
    pairs = _upstream_pairs(run)
    return TaskRunDetail(
        **TaskRun.from_record(run).model_dump(),
        upstreams=_upstreams(database_url, pairs[:UPSTREAMS_SHOWN]),
        upstream_count=len(pairs),
        upstreams_truncated=len(pairs) > UPSTREAMS_SHOWN,
    )


@router.get("/{task_run_id}/states", response_model=list[State], responses=_BAD_INPUT_OR_UNKNOWN)
def read_task_run_states(database_url: DatabaseUrl, task_run_id: TaskRunId) -> list[State]:
    """The task run's state history, oldest first."""
    run = lookups.task_run_or_404(database_url, task_run_id)
    states = queries.read_task_run_states(database_url, run.id)
    return [State.from_record(state) for state in states]


def _upstream_pairs(run: TaskRunRecord) -> list[tuple[str, uuid.UUID]]:
    """(parameter, upstream run id) for each upstream, in the order task_inputs lists them.

    An entry that is not a task run id (stored by something other than vivace's engine) is
    left out rather than failing the request, as the UI and the graph do.
    """
    return [
        (parameter, upstream_id)
        for parameter, upstream_ids in run.task_inputs.items()
        if isinstance(upstream_ids, list)
        for upstream_id in map(_as_id, upstream_ids)
        if upstream_id is not None
    ]


def _upstreams(database_url: str, pairs: list[tuple[str, uuid.UUID]]) -> list[UpstreamInput]:
    """The pairs with the upstream runs' names and states, read in one query per 1,000."""
    known = queries.read_task_run_names(database_url, [upstream_id for _, upstream_id in pairs])
    upstreams = []
    for parameter, upstream_id in pairs:
        name, state_type = known.get(upstream_id, (None, None))
        upstreams.append(
            UpstreamInput(
                parameter=parameter,
                kind="wait_for" if parameter == WAIT_FOR_KEY else "data",
                task_run_id=upstream_id,
                name=name,
                state_type=state_type,
            )
        )
    return upstreams


def _as_id(value: object) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None
