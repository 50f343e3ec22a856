"""The batched writer: coalescing, ordering across processes, back-pressure, journal and replay.

Outages are real: SQLite is locked by another connection, PostgreSQL refuses connections to the
test's database. Nothing is mocked.
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from vivace._ids import uuid7
from vivace.engine.runs import FlowRun, TaskRun, apply_state
from vivace.engine.states import State, StateType
from vivace.settings import get_settings, reset_settings
from vivace.store import writer as writer_module
from vivace.store.database import get_engine
from vivace.store.writer import BatchWriter, get_writer, shutdown_writers

TIMEOUT = 10


def _task_run(run_id: Any = None, seq_states: int = 0) -> TaskRun:
    run = TaskRun(
        run_id or uuid7(),
        "tests.noop",
        "noop-0",
        uuid7(),
        None,
        ("a",),
        None,
        State(StateType.PENDING),
    )
    return run


def _advance(writer: BatchWriter, run: TaskRun, *types: StateType) -> None:
    for kind in types:
        apply_state(run, State(kind))
        writer.record_task_run(run)


def _configure(monkeypatch: pytest.MonkeyPatch, **settings: Any) -> None:
    for name, value in settings.items():
        monkeypatch.setenv(f"VIVACE_{name.upper()}", str(value))
    reset_settings()


def _sqlite_path() -> Path:
    return get_settings().home / "vivace.db"


def _journal_files() -> list[Path]:
    return sorted((get_settings().home / "journal").rglob("*.batch"))


def test_transitions_in_one_window_are_one_row_write_and_every_state_is_kept(
    database_url: str, monkeypatch: pytest.MonkeyPatch, history: Any
) -> None:
    _configure(monkeypatch, recorder_flush_interval=60)  # only flush() writes
    writer = get_writer()
    run = _task_run()
    writer.record_task_run(run)
    _advance(writer, run, StateType.RUNNING, StateType.COMPLETED)
    rows_before = writer.rows_written

    assert writer.flush(TIMEOUT)

    # One run row (coalesced) and three state rows.
    assert writer.rows_written - rows_before == 4
    row = history.task_run(run.id)
    assert (row.state_type, row.state_seq, row.run_count, row.tags) == ("COMPLETED", 3, 1, ["a"])
    states = history.task_run_states(run.id)
    assert [(s.seq, s.type) for s in states] == [
        (1, "PENDING"),
        (2, "RUNNING"),
        (3, "COMPLETED"),
    ]


def test_an_older_state_from_another_process_never_overwrites_a_newer_one(
    database_url: str, history: Any
) -> None:
    writer = get_writer()
    run = _task_run()
    writer.record_task_run(run)
    _advance(writer, run, StateType.RUNNING, StateType.COMPLETED)
    assert writer.flush(TIMEOUT)
    # Another process's copy of the same run, still at PENDING, flushes late.
    stale = _task_run(run.id)
    writer.record_task_run(stale)
    assert writer.flush(TIMEOUT)

    row = history.task_run(run.id)
    assert (row.state_type, row.state_seq) == ("COMPLETED", 3)
    assert len(history.task_run_states(run.id)) == 3


def test_producers_wait_for_a_slow_database_instead_of_growing_the_queue(
    monkeypatch: pytest.MonkeyPatch, history: Any
) -> None:
    _configure(
        monkeypatch,
        recorder_max_queue=20,
        recorder_batch_size=5,
        sqlite_busy_timeout=30,
        recorder_retry_seconds=30,
    )
    writer = get_writer()
    blocker = sqlite3.connect(_sqlite_path(), isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # the writer's next transaction waits for this lock
    runs = [_task_run() for _ in range(60)]
    produced = threading.Event()
    longest_queue = 0

    def produce() -> None:
        for run in runs:
            writer.record_task_run(run)
        produced.set()

    producer = threading.Thread(target=produce)
    producer.start()
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        longest_queue = max(longest_queue, len(writer._queue))
        time.sleep(0.005)

    assert not produced.is_set(), "the producer should be held while the database is locked"
    assert longest_queue <= 20 + 1
    blocker.execute("COMMIT")
    blocker.close()
    assert produced.wait(TIMEOUT)
    producer.join()
    assert writer.flush(TIMEOUT)
    assert len(history.task_runs()) == 60


def test_an_unreachable_database_is_journaled_then_replayed_when_it_is_back(
    monkeypatch: pytest.MonkeyPatch, history: Any
) -> None:
    _configure(monkeypatch, recorder_retry_seconds=0.2, sqlite_busy_timeout=0.05)
    writer = get_writer()
    blocker = sqlite3.connect(_sqlite_path(), isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    lost_if_not_journaled = _task_run()
    _advance(writer, lost_if_not_journaled, StateType.RUNNING, StateType.COMPLETED)

    assert writer.flush(TIMEOUT)  # returns once the batch is safe in the journal

    assert len(_journal_files()) == 1
    assert writer.rows_journaled == 3
    blocker.execute("COMMIT")
    blocker.close()
    writer._unreachable_until = 0.0  # the circuit breaker would wait retry_seconds to probe again
    later = _task_run()
    writer.record_task_run(later)
    assert writer.flush(TIMEOUT)

    assert _journal_files() == []
    assert {row.id for row in history.task_runs()} == {lost_if_not_journaled.id, later.id}
    assert [s.type for s in history.task_run_states(lost_if_not_journaled.id)] == [
        "RUNNING",
        "COMPLETED",
    ]


def test_flow_run_states_replayed_from_the_journal_are_stamped_when_they_land(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The notification service reads new states by when they were written (``recorded``): a
    state journaled through an outage is new when the replay writes it, not when it began."""
    _configure(monkeypatch, recorder_retry_seconds=0.2, sqlite_busy_timeout=0.05)
    writer = get_writer()
    blocker = sqlite3.connect(_sqlite_path(), isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    running = State(StateType.RUNNING)
    run = FlowRun(uuid7(), uuid7(), "etl", "brave", None, None, None, None, running)
    writer.record_flow_run(run)
    apply_state(run, State(StateType.FAILED))
    writer.record_flow_run(run)
    assert writer.flush(TIMEOUT)
    assert len(_journal_files()) == 1
    time.sleep(0.3)  # the outage goes on
    back = time.time()
    blocker.execute("COMMIT")
    blocker.close()
    writer._unreachable_until = 0.0
    writer.record_log(None, None, "tests", 20, "after the outage", time.time())
    assert writer.flush(TIMEOUT)

    assert _journal_files() == []
    states = sa.table("flow_run_states", sa.column("timestamp"), sa.column("recorded"))
    with get_engine(get_settings().resolved_database_url).connect() as conn:
        rows = conn.execute(sa.select(states.c.timestamp, states.c.recorded)).all()
    assert len(rows) == 2
    for entered, recorded in rows:
        assert entered < back <= recorded


def test_a_journal_left_behind_is_replayed_by_the_next_writer_and_twice_counts_once(
    monkeypatch: pytest.MonkeyPatch, history: Any, tmp_path: Path
) -> None:
    _configure(monkeypatch, recorder_retry_seconds=0.1, sqlite_busy_timeout=0.05)
    writer = get_writer()
    blocker = sqlite3.connect(_sqlite_path(), isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    run = _task_run()
    writer.record_task_run(run)
    _advance(writer, run, StateType.RUNNING)
    shutdown_writers()  # the process ends while the database is down: its records go to disk
    blocker.execute("COMMIT")
    blocker.close()
    (journal,) = _journal_files()
    kept = tmp_path / "copy.batch"
    shutil.copy(journal, kept)

    get_writer()  # the next start replays the journal

    assert _journal_files() == []
    assert [s.seq for s in history.task_run_states(run.id)] == [1, 2]
    shutil.copy(kept, journal)  # the same batch again, as if a replay were repeated
    shutdown_writers()
    get_writer()
    assert _journal_files() == []
    assert len(history.task_runs()) == 1
    assert [s.seq for s in history.task_run_states(run.id)] == [1, 2]


def test_a_postgres_outage_is_journaled_and_replayed(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, history: Any
) -> None:
    _configure(monkeypatch, database_url=postgres_url, recorder_retry_seconds=0.3)
    writer = get_writer()
    name = sa.make_url(postgres_url).database
    admin = sa.create_engine(
        sa.make_url(postgres_url).set(database="postgres"),
        isolation_level="AUTOCOMMIT",
        poolclass=sa.NullPool,
    )
    run = _task_run()
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            )
        writer.record_task_run(run)
        _advance(writer, run, StateType.RUNNING, StateType.FAILED)
        assert writer.flush(TIMEOUT)
        assert writer.rows_journaled == 4
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        admin.dispose()
    writer._unreachable_until = 0.0
    assert writer.flush(TIMEOUT)
    writer.record_log(None, run.id, "tests", 20, "after the outage", time.time())
    assert writer.flush(TIMEOUT)

    assert _journal_files() == []
    assert history.task_run(run.id).state_type == "FAILED"
    assert [log.message for log in history.logs(task_run_id=run.id)] == ["after the outage"]


def test_a_batch_whose_postgres_connection_is_lost_mid_transaction_is_written_again(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, history: Any
) -> None:
    _configure(monkeypatch, database_url=postgres_url, recorder_retry_seconds=30)
    writer = get_writer()
    first = _task_run()
    writer.record_task_run(first)
    assert writer.flush(TIMEOUT)
    locker = sa.create_engine(postgres_url, poolclass=sa.NullPool)
    run = _task_run()
    try:
        with locker.connect() as conn:
            # The writer's next batch waits on this lock inside its transaction ...
            conn.exec_driver_sql("LOCK TABLE task_runs IN EXCLUSIVE MODE")
            _advance(writer, run, StateType.RUNNING, StateType.COMPLETED)
            writer._wake.set()
            pid = _writer_backend_waiting_on_a_lock(conn)
            # ... and loses its connection there: that attempt cannot have committed.
            assert conn.exec_driver_sql(f"SELECT pg_terminate_backend({pid})").scalar() is True
            conn.commit()
    finally:
        locker.dispose()
    assert writer.flush(TIMEOUT)

    assert history.task_run(run.id).state_type == "COMPLETED"
    assert [s.type for s in history.task_run_states(run.id)] == ["RUNNING", "COMPLETED"]
    assert history.task_run(first.id) is not None
    assert writer.rows_journaled == 0
    assert writer.rows_rejected == 0
    assert _journal_files() == []


def _writer_backend_waiting_on_a_lock(conn: sa.Connection) -> int:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        pid = conn.exec_driver_sql(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'vivace' AND wait_event_type = 'Lock' "
            "AND pid <> pg_backend_pid()"
        ).scalar()
        if pid is not None:
            return int(pid)
        time.sleep(0.02)
    raise AssertionError("the writer's batch never waited on the table lock")


def test_the_writer_is_one_per_process_and_url(database_url: str) -> None:
    assert get_writer() is get_writer()
    assert writer_module._writers[database_url] is get_writer()


def test_a_row_the_database_refuses_is_repaired_and_never_blocks_later_writes(
    database_url: str, history: Any
) -> None:
    writer = get_writer()
    run = _task_run()
    writer.record_task_run(run)
    # A log line with a NUL (PostgreSQL text cannot hold it) and a lone surrogate (an
    # undecodable file name), and a run name longer than its column.
    writer.record_log(
        None,
        run.id,
        "tests",
        20,
        "bad\x00byte " + b"f\xff".decode("utf-8", "surrogateescape"),
        time.time(),
    )
    long_name = _task_run()
    long_name.name = "x" * 400
    writer.record_task_run(long_name)
    assert writer.flush(TIMEOUT)
    later = _task_run()
    writer.record_task_run(later)
    assert writer.flush(TIMEOUT)

    assert {row.id for row in history.task_runs()} == {run.id, long_name.id, later.id}
    (log,) = history.logs(task_run_id=run.id)
    assert log.message.startswith("bad\\x00byte f")
    assert _journal_files() == []
    assert writer.rows_rejected == 0
