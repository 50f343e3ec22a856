"""Helpers of the schedule tests: a deployment spec, and reads of what the scheduler wrote."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa

from vivace.schedules import Schedule
from vivace.store import schema
from vivace.store.database import get_engine
from vivace.store.deployments import DeploymentRecord, DeploymentSpec, save_deployment

UTC = dt.UTC
# A fixed "now" for loops stepped by hand: Monday 2027-05-03 10:00 UTC.
NOW = dt.datetime(2027, 5, 3, 10, tzinfo=UTC).timestamp()
HOUR = 3600.0


def spec(name: str = "nightly", **changes: Any) -> DeploymentSpec:
    values: dict[str, Any] = {
        "name": name,
        "flow_name": "etl",
        "entrypoint": "flows/etl.py:etl",
        "storage": {"url": "/srv/code/nightly"},
        "parameter_schema": {
            "type": "object",
            "properties": {"day": {"type": "integer"}, "label": {"type": "string"}},
        },
        "parameters": {"label": "daily"},
        "tags": ("etl",),
        "work_queue_name": "nightly-queue",
        **changes,
    }
    return DeploymentSpec(**values)


def deploy(
    url: str, *schedules: Schedule, name: str = "nightly", **changes: Any
) -> DeploymentRecord:
    return save_deployment(url, spec(name, schedules=tuple(schedules), **changes))


def scheduled_runs(url: str, schedule_id: uuid.UUID | None = None) -> list[dict[str, Any]]:
    """Runs made by schedules (of one schedule), by scheduled time."""
    runs = schema.flow_runs
    query = sa.select(runs).where(runs.c.schedule_id.is_not(None))
    if schedule_id is not None:
        query = query.where(runs.c.schedule_id == schedule_id)
    with get_engine(url).connect() as conn:
        rows = conn.execute(query.order_by(runs.c.expected_start_time, runs.c.id))
        return [dict(row._mapping) for row in rows]


def start_times(url: str, schedule_id: uuid.UUID) -> list[float]:
    return [run["expected_start_time"].timestamp() for run in scheduled_runs(url, schedule_id)]


def count(url: str, table: sa.Table, *where: sa.ColumnElement[bool]) -> int:
    with get_engine(url).connect() as conn:
        return int(
            conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar_one()
        )


def assert_no_duplicates_and_states_match(url: str) -> None:
    """Every (schedule, time) once; every run has exactly its first state row, no orphan rows."""
    runs, states = schema.flow_runs, schema.flow_run_states
    with get_engine(url).connect() as conn:
        pairs = conn.execute(
            sa.select(runs.c.schedule_id, runs.c.expected_start_time).where(
                runs.c.schedule_id.is_not(None)
            )
        ).all()
        assert len(pairs) == len(set(pairs))
        run_ids = set(conn.execute(sa.select(runs.c.id)).scalars())
        state_ids = list(
            conn.execute(sa.select(states.c.flow_run_id).where(states.c.seq == 1)).scalars()
        )
    assert sorted(map(str, state_ids)) == sorted(map(str, run_ids))


def stamp(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    return dt.datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()
