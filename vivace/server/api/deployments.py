"""``/api/deployments``: deployments, their versions and runs, and creating a run of one.

A path names a deployment by its id or its name (slashes and all). Creating a run (``POST
/api/deployments/{deployment}/runs``, admin key) checks the parameters against the deployment's
schema first: a bad one is refused with 422 naming the field, and no run is made. The run is
SCHEDULED in the deployment's work queue, at the deployment's latest version, for a worker to
claim.

An idempotency key (the ``Idempotency-Key`` header, or ``idempotency_key`` in the body) makes
the request safe to retry: a request with a key this deployment has seen before answers 200
with the run the first request made, where a new run is answered 201.

A 422 for parameters that do not match the schema carries the header ``Vivace-Error:
ParameterValidationError``, so a client tells it from other refused requests.

A deployment is shown with its schedules (``GET /api/deployments/{deployment}/schedules`` lists
them alone; pausing and resuming one is ``/api/deployment-schedules/{id}/pause|resume``, in
:mod:`vivace.server.api.schedules`), each with its next few times.

What is shown of a deployment hides its secrets: the password of a storage URL
(``smb://user:**********@host/share``) and the values of its infrastructure's ``env`` (only the
variables' names are shown; a worker reads the values from the database, not from here).
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Header, HTTPException, Path, Query, Response

from vivace.deployments.runs import create_run
from vivace.exceptions import ConfigurationError, DeploymentNotFoundError, ParameterValidationError
from vivace.server import auth, deps
from vivace.server.api.models import (
    DeletedDeployment,
    Deployment,
    DeploymentDetail,
    DeploymentPage,
    DeploymentRunRequest,
    DeploymentSchedule,
    FlowRun,
    FlowRunPage,
    ScheduledDeployment,
    error_responses,
)
from vivace.server.api.params import (
    Cursor,
    Limit,
    Name,
    NameLike,
    RunSort,
    StateFilter,
    Text,
    checked_time,
)
from vivace.store import deployments as store
from vivace.store import queries
from vivace.store.deployments import DeploymentRecord
from vivace.store.schedules import read_deployment_schedules, read_schedules_of_deployments

router = APIRouter(prefix="/deployments", tags=["deployments"])

DatabaseUrl = Annotated[str, Depends(deps.database_url)]
DeploymentKey = Annotated[Text, Path(description="The deployment's name or id.")]
MAX_OFFSET = 1_000_000
_NOT_FOUND = "No such deployment."
_READ = error_responses(404, 422, 503, not_found=_NOT_FOUND)
_ADMIN = [Depends(auth.require_admin)]
ERROR_HEADER = "Vivace-Error"
"""The header naming the kind of a 422, where a client must tell it apart."""


@router.get("", response_model=DeploymentPage, responses=error_responses(422, 503))
def list_deployments(
    database_url: DatabaseUrl,
    flow: Annotated[Text | None, Query(description="Only deployments of this flow.")] = None,
    name_like: NameLike = None,
    limit: Limit = 50,
    offset: Annotated[
        int, Query(ge=0, le=MAX_OFFSET, description="Deployments to skip (a page's next_offset).")
    ] = 0,
) -> DeploymentPage:
    """A page of deployments by name, each at its latest version."""
    # One more than asked tells whether there is a next page.
    records = store.read_deployments(
        database_url, flow_name=flow, name_like=name_like, limit=limit + 1, offset=offset
    )
    shown = records[:limit]
    schedules = read_schedules_of_deployments(database_url, [record.id for record in shown])
    return DeploymentPage(
        items=[
            ScheduledDeployment(
                **Deployment.from_record(record).model_dump(),
                schedules=[DeploymentSchedule.from_record(one) for one in schedules[record.id]],
            )
            for record in shown
        ],
        next_offset=offset + limit if len(records) > limit else None,
    )


@router.get("/{deployment:path}/versions", response_model=list[Deployment], responses=_READ)
def read_deployment_versions(
    database_url: DatabaseUrl, deployment: DeploymentKey, limit: Limit = 50
) -> list[Deployment]:
    """The deployment's versions, newest first: what each deploy said."""
    record = deployment_or_404(database_url, deployment)
    versions = store.read_deployment_versions(database_url, record.id, limit=limit)
    return [Deployment.from_record(version) for version in versions]


@router.get("/{deployment:path}/flow-runs", response_model=FlowRunPage, responses=_READ)
def list_deployment_runs(
    database_url: DatabaseUrl,
    deployment: DeploymentKey,
    state: StateFilter = None,
    name_like: NameLike = None,
    sort: RunSort = "created_desc",
    limit: Limit = 50,
    cursor: Cursor = None,
) -> FlowRunPage:
    """A page of the runs created from the deployment (any version), newest first by default."""
    record = deployment_or_404(database_url, deployment)
    runs, next_cursor = queries.read_flow_runs(
        database_url,
        deployment_id=record.id,
        state_types=state,
        name_like=name_like,
        sort=sort,
        limit=limit,
        cursor=cursor,
    )
    return FlowRunPage(items=[FlowRun.from_record(run) for run in runs], next_cursor=next_cursor)


@router.get(
    "/{deployment:path}/schedules", response_model=list[DeploymentSchedule], responses=_READ
)
def list_deployment_schedules(
    database_url: DatabaseUrl, deployment: DeploymentKey
) -> list[DeploymentSchedule]:
    """The deployment's schedules by position, each with its next few times."""
    record = deployment_or_404(database_url, deployment)
    schedules = read_deployment_schedules(database_url, record.id)
    return [DeploymentSchedule.from_record(schedule) for schedule in schedules]


@router.get("/{deployment:path}", response_model=DeploymentDetail, responses=_READ)
def read_deployment(database_url: DatabaseUrl, deployment: DeploymentKey) -> DeploymentDetail:
    """The deployment at its latest version, its schedules, and its runs' counts by state."""
    record = deployment_or_404(database_url, deployment)
    counts = queries.count_flow_runs_by_state(database_url, deployment_id=record.id)
    schedules = read_deployment_schedules(database_url, record.id)
    return DeploymentDetail(
        **Deployment.from_record(record).model_dump(),
        schedules=[DeploymentSchedule.from_record(schedule) for schedule in schedules],
        run_count=sum(counts.values()),
        run_counts=counts,
    )


@router.delete(
    "/{deployment:path}",
    response_model=DeletedDeployment,
    dependencies=_ADMIN,
    responses=error_responses(403, 404, 422, 503, not_found=_NOT_FOUND),
)
def delete_deployment(database_url: DatabaseUrl, deployment: DeploymentKey) -> DeletedDeployment:
    """Delete the deployment and its versions; its runs not started yet are CANCELLED, the
    others stay in the history. Answers with the deployment as it was and how many runs were
    cancelled."""
    try:
        record, cancelled = store.delete_deployment(database_url, deployment)
    except DeploymentNotFoundError:
        raise _not_found(deployment) from None
    return DeletedDeployment(
        **Deployment.from_record(record).model_dump(), cancelled_run_count=cancelled
    )


@router.post(
    "/{deployment:path}/runs",
    status_code=201,
    response_model=FlowRun,
    dependencies=_ADMIN,
    responses={
        200: {"model": FlowRun, "description": "The idempotency key was used: the run it made."},
        **error_responses(403, 404, 422, 503, not_found=_NOT_FOUND),
    },
)
def create_deployment_run(
    database_url: DatabaseUrl,
    deployment: DeploymentKey,
    response: Response,
    body: Annotated[DeploymentRunRequest | None, Body()] = None,
    idempotency_key: Annotated[
        Name | None,
        Header(
            alias="Idempotency-Key",
            description="A retry with the same key gets the run the first request made.",
        ),
    ] = None,
) -> FlowRun:
    """Create a run of the deployment, SCHEDULED now or at ``start_at``/``start_in_seconds``.

    The parameters are the deployment's defaults updated with ``parameters``, checked against
    the deployment's schema: a wrong or missing one is answered 422, naming it, and no run is
    made.
    """
    request = body or DeploymentRunRequest()
    key = _idempotency_key(request.idempotency_key, idempotency_key)
    start = _expected_start(request)
    try:
        # A retry gets the run its first request made, even if the schema changed since.
        run, created = create_run(
            database_url,
            deployment,
            request.parameters,
            expected_start_time=start,
            idempotency_key=key,
            tags=request.tags,
            name=request.name,
        )
    except DeploymentNotFoundError:
        raise _not_found(deployment) from None
    except ParameterValidationError as error:
        raise HTTPException(
            422, str(error), headers={ERROR_HEADER: ParameterValidationError.__name__}
        ) from None
    if not created:
        response.status_code = 200
    return FlowRun.from_record(run)


def deployment_or_404(database_url: str, name_or_id: str) -> DeploymentRecord:
    """The deployment of this name or id, or HTTP 404 naming it."""
    record = store.read_deployment(database_url, name_or_id)
    if record is None:
        raise _not_found(name_or_id)
    return record


def _not_found(name_or_id: str) -> HTTPException:
    return HTTPException(404, f"deployment {name_or_id!r} not found (neither a name nor an id)")


def _idempotency_key(in_body: str | None, in_header: str | None) -> str | None:
    if in_body is not None and in_header is not None and in_body != in_header:
        raise ConfigurationError(
            f"the Idempotency-Key header {in_header!r} and the body's idempotency_key "
            f"{in_body!r} differ; expected one of them, or the same key in both"
        )
    return in_body if in_body is not None else in_header


def _expected_start(request: DeploymentRunRequest) -> float | None:
    """Unix seconds the run should start at; None: now."""
    if request.start_at is not None and request.start_in_seconds is not None:
        raise ConfigurationError(
            "request body has both start_at and start_in_seconds; expected at most one of them"
        )
    if request.start_in_seconds is not None:
        return time.time() + request.start_in_seconds
    start_at = checked_time(request.start_at)
    return None if start_at is None else start_at.timestamp()
