"""Backdated run-history rows for the retention tests, written with plain SQLAlchemy Core.

``RunRows`` inserts a flow run (or a standalone task run) with everything that belongs to it:
its state history, task runs and their states, and log lines; each ``*_ids`` list says what
was written, so a test can check what is left of it afterwards.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import sqlalchemy as sa

from vivace._ids import uuid7
from vivace.store import schema
from vivace.store.database import ensure_schema, get_engine, transaction

DAY = 86_400.0
NOW = time.time()
FLOW_ID = uuid.UUID("0190f6f1-0000-7000-8000-0000000000aa")
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
NOT_FINAL = ("SCHEDULED", "PENDING", "RUNNING", "PAUSED", "CANCELLING")


def days_ago(days: float) -> float:
    return NOW - days * DAY


def insert(url: str, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    engine = get_engine(url)
    ensure_schema(engine)
    with transaction(engine) as conn:
        conn.execute(table.insert(), rows)


def ids_in(url: str, table: sa.Table) -> set[Any]:
    """The primary keys (first key column) of every row of ``table``."""
    engine = get_engine(url)
    ensure_schema(engine)
    key = next(iter(table.primary_key.columns))
    with engine.connect() as conn:
        return set(conn.execute(sa.select(key)).scalars())


def count(url: str, table: sa.Table) -> int:
    engine = get_engine(url)
    ensure_schema(engine)
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


class RunRows:
    """One flow run (``flow_run``) or standalone task run (``standalone_task``) with its rows."""

    def __init__(self) -> None:
        self.flow_run_ids: list[uuid.UUID] = []
        self.task_run_ids: list[uuid.UUID] = []
        self.log_ids: list[uuid.UUID] = []

    def flow_run(
        self,
        url: str,
        state_type: str = "COMPLETED",
        *,
        started: float | None,
        ended: float | None,
        state_time: float | None = None,
        parent: uuid.UUID | None = None,
        tasks: int = 2,
        **values: Any,
    ) -> uuid.UUID:
        """A flow run with ``tasks`` task runs (the second nested in the first), two states
        each, and a log line of the flow and of each task."""
        run_id = uuid7()
        changed = state_time if state_time is not None else (ended or started or NOW)
        created = (started or changed) - 1
        insert(
            url,
            schema.flow_runs,
            [
                {
                    "id": run_id,
                    "flow_id": FLOW_ID,
                    "flow_name": "etl",
                    "name": f"run-{len(self.flow_run_ids)}",
                    "parent_flow_run_id": parent,
                    "parent_task_run_id": None,
                    "state_type": state_type,
                    "state_name": state_type.title(),
                    "state_timestamp": changed,
                    "state_seq": 2,
                    "start_time": started,
                    "end_time": ended,
                    "run_count": 1,
                    "tags": [],
                    "parameters": {},
                    "created": created,
                    **values,
                }
            ],
        )
        insert(url, schema.flow_run_states, _states("flow_run_id", run_id, state_type, changed))
        self.flow_run_ids.append(run_id)
        parent_task = None
        for _ in range(tasks):
            parent_task = self._task_run(
                url, run_id, "COMPLETED", created + 0.5, changed, parent_task
            )
        self._log(url, run_id, None, created + 0.5)
        return run_id

    def standalone_task(
        self, url: str, state_type: str = "COMPLETED", *, started: float | None, ended: float | None
    ) -> uuid.UUID:
        """A task run called outside any flow, with two states and a log line."""
        changed = ended or started or NOW
        return self._task_run(url, None, state_type, started, changed, None, ended=ended)

    def _task_run(
        self,
        url: str,
        flow_run_id: uuid.UUID | None,
        state_type: str,
        started: float | None,
        changed: float,
        parent_task: uuid.UUID | None,
        ended: float | None = None,
    ) -> uuid.UUID:
        task_id = uuid7()
        insert(
            url,
            schema.task_runs,
            [
                {
                    "id": task_id,
                    "flow_run_id": flow_run_id,
                    "parent_task_run_id": parent_task,
                    "task_key": "etl.load",
                    "name": f"load-{len(self.task_run_ids)}",
                    "state_type": state_type,
                    "state_name": state_type.title(),
                    "state_timestamp": changed,
                    "state_seq": 2,
                    "start_time": started,
                    "end_time": ended if flow_run_id is None else changed,
                    "run_count": 1,
                    "tags": [],
                    "task_inputs": {},
                    "created": (started or changed) - 0.1,
                }
            ],
        )
        insert(url, schema.task_run_states, _states("task_run_id", task_id, state_type, changed))
        self.task_run_ids.append(task_id)
        self._log(url, flow_run_id, task_id, started or changed)
        return task_id

    def _log(
        self, url: str, flow_run_id: uuid.UUID | None, task_run_id: uuid.UUID | None, when: float
    ) -> None:
        log_id = uuid7()
        insert(
            url,
            schema.logs,
            [
                {
                    "id": log_id,
                    "flow_run_id": flow_run_id,
                    "task_run_id": task_run_id,
                    "name": "vivace.test",
                    "level": 20,
                    "message": "a line",
                    "timestamp": when,
                }
            ],
        )
        self.log_ids.append(log_id)


def _states(key: str, run_id: uuid.UUID, state_type: str, changed: float) -> list[dict[str, Any]]:
    return [
        {key: run_id, "seq": 1, "type": "PENDING", "name": "Pending", "timestamp": changed - 2},
        {
            key: run_id,
            "seq": 2,
            "type": state_type,
            "name": state_type.title(),
            "timestamp": changed,
        },
    ]
