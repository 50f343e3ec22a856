"""The writer's heartbeats of the flow runs of its process, at the writer's level.

A writer kept busy (a flow recording faster than the database takes it never lets the queue
empty) still stamps its runs every interval; and each stamp records the interval the run beats
at, which the ``zombies`` service reads (test_zombie_runs). On SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from vivace._ids import uuid7
from vivace.engine.runs import FlowRun
from vivace.engine.states import State, StateType
from vivace.settings import get_settings
from vivace.store import schema
from vivace.store.database import get_engine
from vivace.store.writer import BatchWriter

INTERVAL = 0.05


@pytest.fixture
def writer(database_url: str) -> Iterator[BatchWriter]:
    writer = BatchWriter(
        database_url,
        flush_interval=0.01,
        batch_size=100,
        max_queue=10_000,
        retry_seconds=1.0,
        journal_dir=get_settings().home / "journal",
        heartbeat_interval=INTERVAL,
    )
    writer.start()
    try:
        yield writer
    finally:
        writer.close()


def running_flow_run(writer: BatchWriter) -> uuid.UUID:
    """A flow run written RUNNING by ``writer``, and watched by it."""
    flow_id = uuid7()
    writer.record_flow(flow_id, "busy", time.time())
    run = FlowRun(
        uuid7(), flow_id, "busy", "busy-run", None, None, None, {}, State(StateType.RUNNING)
    )
    writer.record_flow_run(run)
    writer.watch_flow_run(run.id)
    assert writer.flush(timeout=10)
    return run.id


def heartbeat_row(url: str, run_id: uuid.UUID) -> Any:
    runs = schema.flow_runs
    with get_engine(url).connect() as conn:
        return conn.execute(
            sa.select(runs.c.heartbeat, runs.c.heartbeat_interval).where(runs.c.id == run_id)
        ).one()


def wait_for_heartbeat(url: str, run_id: uuid.UUID) -> Any:
    deadline = time.monotonic() + 10
    while (row := heartbeat_row(url, run_id)).heartbeat is None:
        assert time.monotonic() < deadline, "the run was never stamped"
        time.sleep(0.01)
    return row


def test_a_stamp_records_the_interval_the_run_beats_at(
    database_url: str, writer: BatchWriter
) -> None:
    run_id = running_flow_run(writer)
    row = wait_for_heartbeat(database_url, run_id)
    assert row.heartbeat_interval == INTERVAL


def test_a_writer_that_never_empties_its_queue_still_stamps_its_runs(
    database_url: str, writer: BatchWriter
) -> None:
    run_id = running_flow_run(writer)
    first = wait_for_heartbeat(database_url, run_id).heartbeat

    # From now on every batch written queues one more record, as a busy flow does: the queue
    # never empties, for 5 s (a hundred intervals), unless the heartbeat moves on first.
    moved = threading.Event()
    busy_until = time.monotonic() + 5.0
    write = writer._execute

    def busy_execute(batch: Any) -> None:
        write(batch)
        if heartbeat_row(database_url, run_id).heartbeat > first:
            moved.set()
        elif time.monotonic() < busy_until:
            writer.record_log(None, None, "busy", 20, "one more record", time.time())

    writer._execute = busy_execute  # type: ignore[method-assign]
    writer.record_log(None, None, "busy", 20, "the first record", time.time())
    assert moved.wait(10), "the heartbeat did not move on while the writer was busy"
