"""The worker's side of ``/api/workers``: register, claim, heartbeat, report launches and exits.

A :class:`~vivace.client.VivaceClient` (same URL forms, API key, redirect rule and errors) with
the few POST and DELETE requests a worker makes, on the standard library alone. Every request
is small and the worker makes a handful per poll, whatever the number of its runs' tasks.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

from vivace.client import VivaceClient, _flow_run
from vivace.store.records import FlowRunRecord


@dataclasses.dataclass(frozen=True, slots=True)
class ClaimedRun:
    """A run the worker claimed: what to start, on what, and when."""

    id: uuid.UUID
    name: str
    flow_name: str
    expected_start_time: dt.datetime | None
    infrastructure: dict[str, Any]
    work_queue_name: str | None = None

    @property
    def start_at(self) -> float:
        """When to launch it (Unix seconds); now if it names no time."""
        if self.expected_start_time is None:
            return 0.0
        return self.expected_start_time.timestamp()


class WorkerAPI(VivaceClient):
    """The requests of one worker to the server at ``api_url`` (an admin key is needed once
    the server has keys)."""

    def register(
        self,
        name: str,
        worker_type: str,
        queues: list[str],
        worker_id: uuid.UUID | None = None,
    ) -> uuid.UUID:
        """Register the worker (under ``worker_id`` when it registers again); return its id."""
        payload: dict[str, Any] = {"name": name, "type": worker_type, "queues": queues}
        if worker_id is not None:
            payload["id"] = str(worker_id)
        body = self._send("POST", "/workers", body=payload)
        return uuid.UUID(body["id"])

    def claim(self, worker_id: uuid.UUID, limit: int, prefetch_seconds: float) -> list[ClaimedRun]:
        """Claim up to ``limit`` due runs (see ``POST /api/workers/{id}/claim``)."""
        runs = self._send(
            "POST",
            f"/workers/{worker_id}/claim",
            body={"limit": limit, "prefetch_seconds": prefetch_seconds},
        )
        return [
            ClaimedRun(
                id=uuid.UUID(run["id"]),
                name=run["name"],
                flow_name=run["flow_name"],
                expected_start_time=_time(run.get("expected_start_time")),
                infrastructure=run["infrastructure"],
                work_queue_name=run.get("work_queue_name"),
            )
            for run in runs
        ]

    def heartbeat(self, worker_id: uuid.UUID) -> list[uuid.UUID] | None:
        """Say the worker lives; return its runs now CANCELLING (None: the server does not know
        the worker any more, it must register again)."""
        body = self._send("POST", f"/workers/{worker_id}/heartbeat", body={}, missing_ok=True)
        return None if body is None else [uuid.UUID(run_id) for run_id in body["cancel"]]

    def launched(self, worker_id: uuid.UUID, run_id: uuid.UUID, infrastructure_id: str) -> None:
        self._send(
            "POST",
            f"/workers/{worker_id}/runs/{run_id}/launched",
            body={"infrastructure_id": infrastructure_id[:255]},
        )

    def exited(
        self, worker_id: uuid.UUID, run_id: uuid.UUID, exit_code: int | None, description: str
    ) -> FlowRunRecord | None:
        """Report that the run's infrastructure exited; return the run afterwards, or None when
        the server answers 404 (it does not know the worker, or the run is no longer one this
        worker claimed): there is nothing more to report then."""
        body = self._send(
            "POST",
            f"/workers/{worker_id}/runs/{run_id}/exited",
            body={"exit_code": exit_code, "description": description[:255]},
            missing_ok=True,
        )
        return None if body is None else _flow_run(body)

    def start_failed(self, worker_id: uuid.UUID, run_id: uuid.UUID, message: str) -> FlowRunRecord:
        """Report that the run's infrastructure could not be started; return the run afterwards
        (CRASHED with ``message``)."""
        body = self._send(
            "POST", f"/workers/{worker_id}/runs/{run_id}/start-failed", body={"message": message}
        )
        return _flow_run(body)

    def release(self, worker_id: uuid.UUID, run_id: uuid.UUID) -> None:
        """Give back a claimed run the worker will not launch: SCHEDULED again (CANCELLED if it
        is being cancelled)."""
        self._send("POST", f"/workers/{worker_id}/runs/{run_id}/release")

    def deregister(self, worker_id: uuid.UUID) -> None:
        self._send("DELETE", f"/workers/{worker_id}", missing_ok=True)


def _time(value: str | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromisoformat(value)
