"""``/api/workers``: what a worker asks of the server (admin key).

A worker (``vivace worker start``) registers, then loops: it claims due runs of its queues
(``claim``; atomic, so two workers never get the same run), says what it launched for each
(``launched``), reports each run whose infrastructure exited (``exited``: a run the engine left
without a final state ends CRASHED, or CANCELLED if it was being cancelled), and heartbeats
(``heartbeat``: the answer lists its runs now CANCELLING, whose infrastructure it stops). A run
whose infrastructure cannot be started ends CRASHED saying why (``start-failed``). A run it
claimed and will not launch, because it stops or because the run was cancelled before its start
time, it gives back (``release``: SCHEDULED again, or CANCELLED if it is being cancelled). When
it stops it deregisters. ``GET /api/workers`` (any key) lists the workers
(:mod:`vivace.server.api.work_queues`).

Each claim first gives back the runs of the worker's queues claimed by workers silent for three
heartbeat intervals (``VIVACE_HEARTBEAT_INTERVAL`` of the server; 30 s at least) and not
launched: a worker killed with ``kill -9`` does not strand its prefetched runs.

An unknown worker id is a 404: a worker removed while it ran registers again, under the same id
(``id`` in the registration), so the runs it claimed stay its own. A run that worker did not
claim is a 404 too.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from vivace.server import auth, deps
from vivace.server.api.models import FlowRun, Worker, error_responses
from vivace.server.api.params import Name
from vivace.store import work_queues as store
from vivace.store.records import FlowRunRecord
from vivace.store.work_queues import WorkerRecord

router = APIRouter(prefix="/workers", tags=["workers"], dependencies=[Depends(auth.require_admin)])

DatabaseUrl = Annotated[str, Depends(deps.database_url)]
WorkerId = Annotated[uuid.UUID, Path(description="The worker's id, as registering returned it.")]
FlowRunId = Annotated[uuid.UUID, Path(description="The flow run's id.")]
MAX_CLAIM = 100
MAX_PREFETCH_SECONDS = 3600.0
LOST_AFTER_HEARTBEATS = 3
LOST_AFTER_MIN_SECONDS = 30.0
"""A worker silent for this many heartbeat intervals, and at least this many seconds (a busy
worker with a short interval is not lost), is lost: its runs not launched go back."""
_UNKNOWN_WORKER = error_responses(403, 404, 422, 503, not_found="No such worker.")
_UNKNOWN_RUN = error_responses(
    403, 404, 422, 503, not_found="No such worker, or the run is not one it claimed."
)


class WorkerRegistration(BaseModel):
    """A starting worker: its name, the infrastructure type it starts runs on, its queues."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    type: str = Field(default="process", examples=["process"])
    queues: list[Name] = Field(min_length=1, max_length=50, examples=[["default"]])
    id: uuid.UUID | None = Field(
        default=None,
        description="Register under this id: a worker the server forgot registering again, so "
        "that the runs it claimed stay its own. Default: a new id.",
    )

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        from vivace.infrastructure.base import INFRASTRUCTURE_TYPES

        if value not in INFRASTRUCTURE_TYPES:
            raise ValueError(f"expected one of {', '.join(INFRASTRUCTURE_TYPES)}")
        return value


class ClaimRequest(BaseModel):
    """How many runs the worker can take now, and how far ahead it looks for due ones."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=1, ge=1, le=MAX_CLAIM, description="At most this many runs.")
    prefetch_seconds: float = Field(
        default=10.0,
        ge=0,
        le=MAX_PREFETCH_SECONDS,
        description="Also claim runs due within this many seconds (the worker waits for them).",
    )


class ClaimedRun(BaseModel):
    """A run the worker now holds (PENDING ``Claimed``), and what to start it on."""

    id: uuid.UUID
    name: str
    flow_name: str
    deployment_id: uuid.UUID | None
    deployment_version: int | None
    work_queue_name: str | None
    expected_start_time: dt.datetime | None = Field(description="When to launch it.")
    infrastructure: dict[str, Any] = Field(
        description="The infrastructure record of the deployment version the run was made from."
    )


class WorkerHeartbeat(BaseModel):
    """The worker's runs now being cancelled: it stops their infrastructure."""

    cancel: list[uuid.UUID]


class RunLaunched(BaseModel):
    model_config = ConfigDict(extra="forbid")

    infrastructure_id: str = Field(
        min_length=1, max_length=255, description="A pid, a container id, a job name, a task ARN."
    )


class RunExited(BaseModel):
    model_config = ConfigDict(extra="forbid")

    exit_code: int | None = Field(description="null when it ended without one.")
    description: str = Field(
        min_length=1, max_length=255, examples=["process 4242"], description="What exited."
    )


class StartFailure(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(min_length=1, max_length=2000, description="Why it could not start.")


@router.post("", response_model=Worker, status_code=201, responses=error_responses(403, 422, 503))
def register_worker(database_url: DatabaseUrl, registration: WorkerRegistration) -> Worker:
    """Register a starting worker (its queues are created if new); answers with its record,
    whose ``id`` the worker's other requests name."""
    worker = store.register_worker(
        database_url,
        registration.name,
        registration.type,
        registration.queues,
        worker_id=registration.id,
    )
    return Worker.from_record(worker)


@router.post("/{worker_id}/claim", response_model=list[ClaimedRun], responses=_UNKNOWN_WORKER)
def claim_runs(
    database_url: DatabaseUrl, worker_id: WorkerId, request: ClaimRequest
) -> list[ClaimedRun]:
    """Claim up to ``limit`` due runs of the worker's queues that start on its infrastructure
    type, in the order they should start (after giving back those of lost workers)."""
    from vivace.settings import get_settings
    from vivace.store.deployments import read_deployment_version

    worker = _worker_or_404(database_url, worker_id)
    runs = store.claim_flow_runs(
        database_url,
        worker_id=worker.id,
        queues=worker.queues,
        limit=request.limit,
        prefetch_seconds=request.prefetch_seconds,
        infrastructure_types=[worker.type],
        lost_after=max(
            LOST_AFTER_HEARTBEATS * get_settings().heartbeat_interval, LOST_AFTER_MIN_SECONDS
        ),
    )
    claimed = []
    for run in runs:
        infrastructure: dict[str, Any] = {"type": run.infrastructure_type or worker.type}
        if run.deployment_id is not None and run.deployment_version is not None:
            version = read_deployment_version(
                database_url, run.deployment_id, run.deployment_version
            )
            if version is not None:  # else the engine ends the run FAILED, saying why
                infrastructure = version.infrastructure
        claimed.append(
            ClaimedRun(
                id=run.id,
                name=run.name,
                flow_name=run.flow_name,
                deployment_id=run.deployment_id,
                deployment_version=run.deployment_version,
                work_queue_name=run.work_queue_name,
                expected_start_time=run.expected_start_time,
                infrastructure=infrastructure,
            )
        )
    return claimed


@router.post("/{worker_id}/heartbeat", response_model=WorkerHeartbeat, responses=_UNKNOWN_WORKER)
def heartbeat(database_url: DatabaseUrl, worker_id: WorkerId) -> WorkerHeartbeat:
    """Record that the worker is alive; answers with its runs now CANCELLING."""
    _worker_or_404(database_url, worker_id)
    return WorkerHeartbeat(cancel=store.worker_heartbeat(database_url, worker_id))


@router.post("/{worker_id}/runs/{flow_run_id}/launched", status_code=204, responses=_UNKNOWN_RUN)
def run_launched(
    database_url: DatabaseUrl, worker_id: WorkerId, flow_run_id: FlowRunId, launched: RunLaunched
) -> Response:
    """Record what the worker launched for the run (its ``infrastructure_id``)."""
    _claimed_run_or_404(database_url, worker_id, flow_run_id)
    store.record_infrastructure_id(database_url, flow_run_id, launched.infrastructure_id)
    return Response(status_code=204)


@router.post(
    "/{worker_id}/runs/{flow_run_id}/exited", response_model=FlowRun, responses=_UNKNOWN_RUN
)
def run_exited(
    database_url: DatabaseUrl, worker_id: WorkerId, flow_run_id: FlowRunId, exited: RunExited
) -> FlowRun:
    """The run's infrastructure exited: a run its engine left without a final state ends
    CRASHED with the exit code in its message (CANCELLED if it was being cancelled). Answers
    with the run afterwards."""
    from vivace.store.run_control import end_flow_run_after_exit

    _claimed_run_or_404(database_url, worker_id, flow_run_id)
    run = end_flow_run_after_exit(
        database_url, flow_run_id, exited.exit_code, exited.description, worker_id
    )
    if run is None:
        raise HTTPException(404, f"flow run {flow_run_id} not found")
    return FlowRun.from_record(run)


@router.post(
    "/{worker_id}/runs/{flow_run_id}/start-failed", response_model=FlowRun, responses=_UNKNOWN_RUN
)
def run_start_failed(
    database_url: DatabaseUrl, worker_id: WorkerId, flow_run_id: FlowRunId, failure: StartFailure
) -> FlowRun:
    """The run's infrastructure could not be started: the run ends CRASHED with the reason
    (CANCELLED if it was being cancelled meanwhile). Answers with the run afterwards."""
    from vivace.store.run_control import end_unstarted_flow_run

    run = _claimed_run_or_404(database_url, worker_id, flow_run_id)
    end_unstarted_flow_run(
        database_url,
        run.id,
        f"the flow run's infrastructure could not be started: {failure.message}",
        worker_id=worker_id,
    )
    return FlowRun.from_record(_claimed_run_or_404(database_url, worker_id, flow_run_id))


@router.post("/{worker_id}/runs/{flow_run_id}/release", status_code=204, responses=_UNKNOWN_RUN)
def release_run(database_url: DatabaseUrl, worker_id: WorkerId, flow_run_id: FlowRunId) -> Response:
    """Give back a run the worker claimed and will not launch: SCHEDULED again, for any worker
    to claim, or CANCELLED if it is being cancelled (nothing else would end it). A run that
    has moved on since is left as it is."""
    from vivace.store.run_control import release_flow_run

    run = _claimed_run_or_404(database_url, worker_id, flow_run_id)
    release_flow_run(database_url, run.id, worker_id)
    return Response(status_code=204)


@router.delete("/{worker_id}", status_code=204, responses=_UNKNOWN_WORKER)
def deregister_worker(database_url: DatabaseUrl, worker_id: WorkerId) -> Response:
    """Forget a worker that stops (its runs keep their history)."""
    _worker_or_404(database_url, worker_id)
    store.remove_worker(database_url, worker_id)
    return Response(status_code=204)


def _worker_or_404(database_url: str, worker_id: uuid.UUID) -> WorkerRecord:
    for worker in store.read_workers(database_url):
        if worker.id == worker_id:
            return worker
    raise HTTPException(
        404,
        f"worker {worker_id} not found: it stopped or was never registered; a worker "
        "registers with POST /api/workers",
    )


def _claimed_run_or_404(
    database_url: str, worker_id: uuid.UUID, flow_run_id: uuid.UUID
) -> FlowRunRecord:
    from vivace.store.queries import read_flow_run

    _worker_or_404(database_url, worker_id)
    run = read_flow_run(database_url, flow_run_id)
    if run is None:
        raise HTTPException(404, f"flow run {flow_run_id} not found")
    if run.worker_id != worker_id:
        raise HTTPException(404, f"flow run {flow_run_id} was not claimed by worker {worker_id}")
    return run
