"""Writer health rows: written by the writer itself, refreshed, removed when it closes."""

from __future__ import annotations

import os
import socket
import time
import uuid

import pytest
import sqlalchemy as sa

from vivace import flow, task
from vivace.settings import reset_settings
from vivace.store import schema, writer
from vivace.store.database import connect, ensure_schema, get_engine, transaction


def _rows(url: str) -> list[sa.Row[tuple[object, ...]]]:
    with connect(get_engine(url)) as conn:
        return list(conn.execute(sa.select(schema.writer_stats)))


@task
def double(x: int) -> int:
    return 2 * x


@flow
def doubles() -> list[int]:
    return [double(i) for i in range(5)]


def test_a_recording_process_has_a_health_row(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIVACE_WRITER_STATS_INTERVAL", "0.05")
    reset_settings()
    doubles()
    writer.get_writer().flush()
    deadline = time.monotonic() + 10
    while True:  # the row is refreshed after the flush, on the writer's next loop
        rows = _rows(database_url)
        if rows and rows[0].records_written > 0:
            break
        assert time.monotonic() < deadline, f"no refreshed health row: {rows}"
        time.sleep(0.05)

    (row,) = rows
    assert (row.hostname, row.pid) == (socket.gethostname()[:255], os.getpid())
    assert row.flushes >= 1 and row.queue_depth >= 0 and row.last_flush_seconds >= 0
    assert row.updated >= row.started

    writer.shutdown_writers()
    assert _rows(database_url) == []


def test_rows_of_writers_silent_for_a_day_are_pruned(database_url: str) -> None:
    engine = get_engine(database_url)
    ensure_schema(engine)
    old = time.time() - 2 * 24 * 3600
    with transaction(engine) as conn:
        conn.execute(
            schema.writer_stats.insert(),
            [
                {
                    "writer_id": uuid.uuid4(),
                    "hostname": "gone",
                    "pid": 1,
                    "queue_depth": 0,
                    "last_flush_seconds": 0.0,
                    "records_written": 0,
                    "flushes": 0,
                    "started": old,
                    "updated": old,
                }
            ],
        )

    doubles()
    writer.get_writer().flush()
    deadline = time.monotonic() + 10
    while "gone" in {row.hostname for row in _rows(database_url)}:
        assert time.monotonic() < deadline, "the stale row was not pruned"
        time.sleep(0.05)
    assert [row.pid for row in _rows(database_url)] == [os.getpid()]
