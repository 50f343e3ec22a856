"""What the dashboard counts: flow runs by state and task runs started, per hour or per day.

Each bar of a chart is one counting query over a time range that an index serves (flow runs by
``start_time``, task runs by ``start_time``), so the dashboard's cost follows the number of bars
(24 or 7), not the size of the history. Task throughput counts task runs by the time they
*started*: ``task_runs`` has no index on ``end_time``, and one is not worth its cost on the
table written once per task.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import sqlalchemy as sa

from vivace.engine.states import StateType
from vivace.server.ui.charts import Bucket
from vivace.store import schema
from vivace.store.database import connect, ensure_schema, get_engine
from vivace.store.queries import count_flow_runs_by_state

_JUST_BEFORE = dt.timedelta(microseconds=1)  # the store's time bounds are inclusive


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
    return [
        Bucket(
            start,
            end,
            count_flow_runs_by_state(
                database_url, started_after=start, started_before=end - _JUST_BEFORE
            ),
        )
        for start, end in window.buckets(now)
    ]


def task_run_buckets(database_url: str, window: Window, now: dt.datetime) -> list[Bucket]:
    """Task runs started in each bucket of the window, by state type."""
    engine = get_engine(database_url)
    ensure_schema(engine)
    table = schema.task_runs
    buckets = []
    with connect(engine) as conn:
        for start, end in window.buckets(now):
            query = (
                sa.select(table.c.state_type, sa.func.count())
                .where(table.c.start_time >= start, table.c.start_time < end)
                .group_by(table.c.state_type)
            )
            counts = {StateType(state): count for state, count in conn.execute(query)}
            buckets.append(Bucket(start, end, counts))
    return buckets
