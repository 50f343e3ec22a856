"""``/api/deployment-schedules``: one schedule of a deployment, paused or resumed (admin key).

A deployment's schedules are listed with it (``GET /api/deployments/{deployment}`` and
``.../schedules``); a schedule's id is what these routes take. Pausing deletes the schedule's
runs that have not started (the answer says how many) and stops it creating more; resuming
makes it due at once, so the scheduler's next loop creates its runs again. Both are idempotent.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path

from vivace.exceptions import ScheduleNotFoundError
from vivace.server import auth, deps
from vivace.server.api.models import DeploymentSchedule, PausedSchedule, error_responses
from vivace.store.schedules import read_schedule, set_schedule_active

router = APIRouter(prefix="/deployment-schedules", tags=["deployments"])

DatabaseUrl = Annotated[str, Depends(deps.database_url)]
ScheduleId = Annotated[uuid.UUID, Path(description="The schedule's id.")]
_NOT_FOUND = "No such deployment schedule."
_ADMIN = [Depends(auth.require_admin)]


@router.get(
    "/{schedule_id}",
    response_model=DeploymentSchedule,
    responses=error_responses(404, 422, 503, not_found=_NOT_FOUND),
)
def read_deployment_schedule(
    database_url: DatabaseUrl, schedule_id: ScheduleId
) -> DeploymentSchedule:
    """The schedule, with its next few times."""
    record = read_schedule(database_url, schedule_id)
    if record is None:
        raise _not_found(schedule_id)
    return DeploymentSchedule.from_record(record)


@router.post(
    "/{schedule_id}/pause",
    response_model=PausedSchedule,
    dependencies=_ADMIN,
    responses=error_responses(403, 404, 422, 503, not_found=_NOT_FOUND),
)
def pause_deployment_schedule(database_url: DatabaseUrl, schedule_id: ScheduleId) -> PausedSchedule:
    """Pause the schedule: it creates no more runs, and its runs that have not started are
    deleted (``removed_run_count`` says how many)."""
    try:
        record, removed = set_schedule_active(database_url, schedule_id, False)
    except ScheduleNotFoundError:
        raise _not_found(schedule_id) from None
    return PausedSchedule(
        **DeploymentSchedule.from_record(record).model_dump(), removed_run_count=removed
    )


@router.post(
    "/{schedule_id}/resume",
    response_model=DeploymentSchedule,
    dependencies=_ADMIN,
    responses=error_responses(403, 404, 422, 503, not_found=_NOT_FOUND),
)
def resume_deployment_schedule(
    database_url: DatabaseUrl, schedule_id: ScheduleId
) -> DeploymentSchedule:
    """Resume the schedule: the scheduler's next loop creates its runs again."""
    try:
        record, _ = set_schedule_active(database_url, schedule_id, True)
    except ScheduleNotFoundError:
        raise _not_found(schedule_id) from None
    return DeploymentSchedule.from_record(record)


def _not_found(schedule_id: uuid.UUID) -> HTTPException:
    return HTTPException(404, f"deployment schedule {schedule_id} not found")
