"""What the read helpers return: immutable snapshots of rows, with ids and times already decoded.

Ids are ``uuid.UUID``, times timezone-aware ``datetime`` (UTC), state types ``StateType``, tags a
tuple of strings, on every backend.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from vivace.engine.states import State, StateType


@dataclass(frozen=True, slots=True)
class FlowRecord:
    """A flow: the name runs are grouped under."""

    id: uuid.UUID
    name: str
    created: dt.datetime


@dataclass(frozen=True, slots=True)
class FlowRunRecord:
    """One run of a flow, with its current state."""

    id: uuid.UUID
    flow_id: uuid.UUID
    flow_name: str
    name: str
    parent_flow_run_id: uuid.UUID | None
    parent_task_run_id: uuid.UUID | None
    state_type: StateType
    state_name: str
    state_timestamp: dt.datetime
    state_message: str | None
    start_time: dt.datetime | None
    end_time: dt.datetime | None
    run_count: int
    tags: tuple[str, ...]
    parameters: dict[str, Any]
    created: dt.datetime
    # Where the flow can be loaded from to resume the run ("path/file.py:fn" or "module:fn").
    entrypoint: str | None = None
    # Parameters stored only as their repr, not JSON (the run cannot be replayed).
    opaque_parameters: list[str] | None = None
    # The persisted result's reference (never the bytes); None when it was not persisted.
    result_storage: str | None = None
    result_key: str | None = None
    result_serializer: str | None = None
    # Runs created from a deployment (revision 0005): its deployment and version, work queue,
    # when it should start, the client's idempotency key, the infrastructure type it needs, the
    # worker that claimed it and what that worker launched, and the engine's last heartbeat.
    deployment_id: uuid.UUID | None = None
    deployment_version: int | None = None
    work_queue_name: str | None = None
    expected_start_time: dt.datetime | None = None
    idempotency_key: str | None = None
    infrastructure_type: str | None = None
    worker_id: uuid.UUID | None = None
    infrastructure_id: str | None = None
    heartbeat: dt.datetime | None = None
    # The deployment schedule that made the run (revision 0006); None for runs made on demand.
    schedule_id: uuid.UUID | None = None
    # Seconds between the heartbeats of the process running it (revision 0006), stamped with them.
    heartbeat_interval: float | None = None

    @property
    def state(self) -> State:
        """The run's current state; ``state.result()`` loads its persisted result."""
        from vivace.results.states import state_from_record

        return state_from_record(self, f"flow run {self.name!r} ({self.id})")

    @property
    def duration(self) -> dt.timedelta | None:
        """Time from start to end; None until the run has both."""
        if self.start_time is None or self.end_time is None:
            return None
        return self.end_time - self.start_time


@dataclass(frozen=True, slots=True)
class TaskRunRecord:
    """One run of a task, with its current state and the upstream runs it took inputs from."""

    id: uuid.UUID
    flow_run_id: uuid.UUID | None
    parent_task_run_id: uuid.UUID | None
    task_key: str
    name: str
    state_type: StateType
    state_name: str
    state_timestamp: dt.datetime
    state_message: str | None
    start_time: dt.datetime | None
    end_time: dt.datetime | None
    run_count: int
    tags: tuple[str, ...]
    # {"parameter name": ["<upstream task run id>", ...], "__wait_for__": [...]}
    task_inputs: dict[str, Any]
    created: dt.datetime
    # The call's identity in its flow run, the same in every attempt (see TaskRun.dynamic_key).
    dynamic_key: str | None = None
    cache_key: str | None = None
    # The persisted result's reference (never the bytes); None when it was not persisted.
    result_storage: str | None = None
    result_key: str | None = None
    result_serializer: str | None = None

    @property
    def state(self) -> State:
        """The run's current state; ``state.result()`` loads its persisted result."""
        from vivace.results.states import state_from_record

        return state_from_record(self, f"task run {self.name!r} ({self.id})")

    @property
    def duration(self) -> dt.timedelta | None:
        """Time from start to end; None until the run has both."""
        if self.start_time is None or self.end_time is None:
            return None
        return self.end_time - self.start_time


@dataclass(frozen=True, slots=True)
class StateRecord:
    """One entry of a run's state history; ``seq`` orders the run's transitions, from 1."""

    seq: int
    type: StateType
    name: str
    timestamp: dt.datetime
    message: str | None


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One log line sent by a flow run or task run."""

    id: uuid.UUID
    flow_run_id: uuid.UUID | None
    task_run_id: uuid.UUID | None
    name: str
    level: int
    message: str
    timestamp: dt.datetime

    @property
    def level_name(self) -> str:
        """``"INFO"``, ``"ERROR"``..., or ``"Level 15"`` for a custom level."""
        return logging.getLevelName(self.level)


@dataclass(frozen=True, slots=True)
class CacheEntryRecord:
    """One entry of the cache index: a cache key and where its persisted value lives."""

    key: str
    task_key: str
    task_name: str
    task_run_id: uuid.UUID | None
    result_storage: str
    result_key: str
    result_serializer: str
    created: dt.datetime
    expires: dt.datetime | None
