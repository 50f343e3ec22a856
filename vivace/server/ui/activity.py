"""What the dashboard counts: flow runs by state and task runs started, per hour or per day.

Each chart is one grouped query: the runs that started in the window, read off the
``start_time`` index (``ix_flow_runs_start_time``, ``ix_task_runs_start_time``), counted by bar
and state, the bar's number computed in SQL from the start time (Unix seconds on SQLite,
``timestamptz`` on PostgreSQL). Its cost follows the runs of the window, not the size of the
history, and the dashboard makes four queries in all. Task throughput counts task runs by the time
they *started*: ``task_runs`` has no index on ``end_time``, and one is not worth its cost on the
table written once per task.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import sqlalchemy as sa

from vivace.engine.states import StateType
from vivace.server.ui.charts import Bucket
from vivace.store import schema
from vivace.store.database import connect, ensure_schema, get_engine


@dataclasses.dataclass(frozen=True)
class Window:
    """A dashboard time window: how far back, the width of a bar, how bars are labelled."""

    name: str
    title: str
    span: dt.timedelta
    bucket: dt.timedelta
    label_format: str

    def buckets(self, now: dt.datetime) -> list[tuple[dt.datetime, dt.datetime]]:
        """Whole hours (or days) in UTC, the last one holding ``now``."""
        seconds = self.bucket.total_seconds()
        end = dt.datetime.fromtimestamp((now.timestamp() // seconds + 1) * seconds, dt.UTC)
        count = int(self.span / self.bucket)
        return [
            (end - self.bucket * (count - index), end - self.bucket * (count - index - 1))
            for index in range(count)
        ]


WINDOWS = {
    "24h": Window("24h", "last 24 hours", dt.timedelta(hours=24), dt.timedelta(hours=1), "%H:%M"),
    "7d": Window("7d", "last 7 days", dt.timedelta(days=7), dt.timedelta(days=1), "%a %d"),
}


def flow_run_buckets(database_url: str, window: Window, now: dt.datetime) -> list[Bucket]:
    """Flow runs started in each bucket of the window, by state type."""
    return _buckets(database_url, schema.flow_runs, window, now)


def task_run_buckets(database_url: str, window: Window, now: dt.datetime) -> list[Bucket]:
    """Task runs started in each bucket of the window, by state type."""
    return _buckets(database_url, schema.task_runs, window, now)


def _buckets(database_url: str, table: sa.Table, window: Window, now: dt.datetime) -> list[Bucket]:
    """Runs of ``table`` started in each bucket, by state type: one query grouped by bucket."""
    spans = window.buckets(now)
    first = spans[0][0]
    engine = get_engine(database_url)
    ensure_schema(engine)
    bucket = _bucket_number(engine.dialect.name, table.c.start_time, first, window.bucket)
    query = (
        sa.select(bucket, table.c.state_type, sa.func.count())
        .where(table.c.start_time >= first, table.c.start_time < spans[-1][1])
        .group_by(bucket, table.c.state_type)
    )
    counts = [dict.fromkeys(StateType, 0) for _ in spans]
    with connect(engine) as conn:
        for number, state_type, count in conn.execute(query):
            counts[min(max(int(number), 0), len(spans) - 1)][StateType(state_type)] += count
    return [Bucket(start, end, each) for (start, end), each in zip(spans, counts, strict=True)]


def _bucket_number(
    dialect: str, start_time: sa.Column[Any], first: dt.datetime, width: dt.timedelta
) -> sa.ColumnElement[Any]:
    """Which bucket a start time falls in, 0 for the one starting at ``first``."""
    seconds = width.total_seconds()
    if dialect == "postgresql":
        since = sa.extract("epoch", start_time) - first.timestamp()
        return sa.func.floor(since / seconds).label("bucket")
    # SQLite keeps Unix seconds (REAL); the WHERE makes them at least ``first``, so a cast
    # (which truncates) floors.
    since = sa.type_coerce(start_time, sa.Float) - first.timestamp()
    return sa.cast(since / seconds, sa.Integer).label("bucket")
