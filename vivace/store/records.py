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

from vivace.engine.states import StateType


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
