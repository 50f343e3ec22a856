"""``/api/work-queues`` and ``GET /api/workers``: where deployment runs wait, and who takes them.

Each queue is listed with its settings (priority, concurrency limit, paused) and what is in it
now: runs claimed and not over (what the limit counts) and runs waiting to be claimed. ``PATCH``
(admin key) changes a queue's settings; queues themselves are created on first use, by a deploy
or a worker naming them.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path

from vivace.server import auth, deps
from vivace.server.api.models import Worker, WorkQueue, WorkQueueUpdate, error_responses
from vivace.server.api.params import Name
from vivace.store import work_queues as store
from vivace.store.work_queues import WorkQueueRecord

router = APIRouter()

DatabaseUrl = Annotated[str, Depends(deps.database_url)]
QueueName = Annotated[Name, Path(description="The work queue's name.")]
_NOT_FOUND = "No such work queue."


@router.get(
    "/work-queues",
    response_model=list[WorkQueue],
    tags=["work queues"],
    responses=error_responses(503),
)
def list_work_queues(database_url: DatabaseUrl) -> list[WorkQueue]:
    """Every work queue, in the order workers serve them (priority, then name)."""
    return _with_counts(database_url, store.read_work_queues(database_url))


@router.get(
    "/work-queues/{name}",
    response_model=WorkQueue,
    tags=["work queues"],
    responses=error_responses(404, 422, 503, not_found=_NOT_FOUND),
)
def read_work_queue(database_url: DatabaseUrl, name: QueueName) -> WorkQueue:
    """One work queue, with its runs claimed and waiting."""
    (queue,) = _with_counts(database_url, [_queue_or_404(database_url, name)])
    return queue


@router.patch(
    "/work-queues/{name}",
    response_model=WorkQueue,
    tags=["work queues"],
    dependencies=[Depends(auth.require_admin)],
    responses=error_responses(403, 404, 422, 503, not_found=_NOT_FOUND),
)
def update_work_queue(
    database_url: DatabaseUrl, name: QueueName, changes: WorkQueueUpdate
) -> WorkQueue:
    """Change what is given of the queue's priority, concurrency limit (null removes it) and
    paused flag; answers with the queue afterwards."""
    _queue_or_404(database_url, name)
    options: dict[str, Any] = {"priority": changes.priority, "paused": changes.paused}
    if "concurrency_limit" in changes.model_fields_set:  # null is a value here: no limit
        options["concurrency_limit"] = changes.concurrency_limit
    queue = store.update_work_queue(database_url, name, **options)
    (updated,) = _with_counts(database_url, [queue])
    return updated


@router.get(
    "/workers", response_model=list[Worker], tags=["workers"], responses=error_responses(503)
)
def list_workers(database_url: DatabaseUrl) -> list[Worker]:
    """The workers that registered and have not stopped, oldest first; one whose heartbeat is
    old may have died without saying so."""
    return [Worker.from_record(worker) for worker in store.read_workers(database_url)]


def _queue_or_404(database_url: str, name: str) -> WorkQueueRecord:
    queue = store.read_work_queue(database_url, name)
    if queue is None:
        raise HTTPException(404, f"work queue {name!r} not found")
    return queue


def _with_counts(database_url: str, queues: list[WorkQueueRecord]) -> list[WorkQueue]:
    if not queues:
        return []
    names = [queue.name for queue in queues]
    active = store.count_active_runs(database_url, names)
    waiting = store.count_waiting_runs(database_url, names)
    return [
        WorkQueue.from_record(queue, active[queue.name], waiting[queue.name]) for queue in queues
    ]
