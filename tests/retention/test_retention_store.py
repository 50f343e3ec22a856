"""Retention in the store (vivace.store.retention), on both backends, with backdated rows.

What is expired (final, ended before the cutoff) goes with every row that belongs to it; what is
recent, or not final however old, stays whole. Batches are observed through the time budget,
driven by a fake clock: no test depends on how fast the database is.
"""

from __future__ import annotations

import itertools
import time
import uuid
from typing import Any

import pytest

from tests.retention.history_rows import (
    DAY,
    FINAL,
    NOT_FINAL,
    NOW,
    RunRows,
    count,
    days_ago,
    ids_in,
    insert,
)
from vivace import flow, get_run_logger, task
from vivace.store import schema
from vivace.store.retention import (
    REMAINING_COUNT_CAP,
    TABLES,
    RetentionReport,
    count_expired,
    delete_expired,
    retention_cutoff,
)
from vivace.store.writer import get_writer

CUTOFF = retention_cutoff(30, now=NOW)
HISTORY_TABLES = ("flow_runs", "flow_run_states", "task_runs", "task_run_states", "logs")


def assert_gone(url: str, rows: RunRows) -> None:
    assert not ids_in(url, schema.flow_runs) & set(rows.flow_run_ids)
    assert not ids_in(url, schema.flow_run_states) & set(rows.flow_run_ids)
    assert not ids_in(url, schema.task_runs) & set(rows.task_run_ids)
    assert not ids_in(url, schema.task_run_states) & set(rows.task_run_ids)
    assert not ids_in(url, schema.logs) & set(rows.log_ids)


def assert_kept(url: str, rows: RunRows) -> None:
    assert set(rows.flow_run_ids) <= ids_in(url, schema.flow_runs)
    assert set(rows.flow_run_ids) <= ids_in(url, schema.flow_run_states)
    assert set(rows.task_run_ids) <= ids_in(url, schema.task_runs)
    assert set(rows.task_run_ids) <= ids_in(url, schema.task_run_states)
    assert set(rows.log_ids) <= ids_in(url, schema.logs)


def test_real_runs_go_with_every_row_their_engine_wrote(database_url: str) -> None:
    @task
    def inner() -> int:
        get_run_logger().info("inner")
        return 1

    @task
    def outer() -> int:
        get_run_logger().info("outer")
        return inner() + 1  # a task run nested under a task

    @flow
    def child() -> int:
        get_run_logger().info("child")
        return outer()

    @flow
    def parent() -> int:
        get_run_logger().info("parent")
        return outer() + child()

    assert parent() == 4
    assert inner() == 1  # a standalone task run
    get_writer().flush()
    assert count(database_url, schema.flow_runs) == 2
    assert count(database_url, schema.task_runs) == 5
    assert count(database_url, schema.logs) >= 7

    # Every run ended before a cutoff a minute from now: everything is expired.
    cutoff = time.time() + 60
    expected = {table: count(database_url, getattr(schema, table)) for table in HISTORY_TABLES}
    dry_run = count_expired(database_url, cutoff)
    report = delete_expired(database_url, cutoff, batch_size=100)

    assert {table: dry_run[table] for table in HISTORY_TABLES} == expected
    assert report.deleted == dry_run
    assert report.remaining == 0
    for table in HISTORY_TABLES:
        assert count(database_url, getattr(schema, table)) == 0, table


def test_old_final_runs_go_and_recent_or_unfinished_runs_stay(database_url: str) -> None:
    expired, kept = RunRows(), RunRows()
    for state in FINAL:
        expired.flow_run(database_url, state, started=days_ago(40), ended=days_ago(39))
    # Cancelled before it started: no start time, its state's time says when it ended.
    expired.flow_run(database_url, "CANCELLED", started=None, ended=None, state_time=days_ago(35))
    # Final without an end time (ended from outside): its state's time is its end.
    expired.flow_run(database_url, "CRASHED", started=days_ago(33), ended=None)
    # Made from a deployment: the same rule.
    expired.flow_run(
        database_url,
        "COMPLETED",
        started=days_ago(31),
        ended=days_ago(31),
        deployment_id=uuid.uuid4(),
        expected_start_time=days_ago(31),
    )
    for state in NOT_FINAL:  # however old
        kept.flow_run(database_url, state, started=days_ago(400), ended=None)
    kept.flow_run(database_url, "SCHEDULED", started=None, ended=None, state_time=days_ago(90))
    kept.flow_run(database_url, "COMPLETED", started=days_ago(2), ended=days_ago(1))
    # Started long ago, ended within the period: kept until it ended 30 days ago.
    kept.flow_run(database_url, "FAILED", started=days_ago(45), ended=days_ago(29))

    report = delete_expired(database_url, CUTOFF, batch_size=500)

    assert_gone(database_url, expired)
    assert_kept(database_url, kept)
    assert ids_in(database_url, schema.flow_runs) == set(kept.flow_run_ids)
    assert report.deleted["flow_runs"] == len(expired.flow_run_ids) == 7
    assert report.deleted["task_runs"] == len(expired.task_run_ids)
    assert report.deleted["flow_run_states"] == 2 * 7
    assert report.deleted["logs"] == len(expired.log_ids)
    assert report.remaining == 0
    # Nothing is left to do: a second pass deletes nothing.
    assert delete_expired(database_url, CUTOFF, batch_size=500).total == 0


def test_batches_of_two_runs_and_a_time_budget(database_url: str) -> None:
    expired = RunRows()
    for day in range(5):
        expired.flow_run(database_url, started=days_ago(50 + day), ended=days_ago(50 + day))
    ticks = itertools.count(step=10.0)  # each look at the clock: 10 s later

    first = delete_expired(
        database_url, CUTOFF, batch_size=2, time_budget=5.0, clock=lambda: next(ticks)
    )

    # One batch, then the budget is spent: two runs gone, three counted as remaining.
    assert first.deleted["flow_runs"] == 2
    assert first.deleted["task_runs"] == 4
    assert first.remaining == 3
    assert first.summary() == (
        "deleted 2 flow_runs, 4 flow_run_states, 4 task_runs, 8 task_run_states, 6 logs; "
        "3 expired runs remain for the next loop"
    )
    assert count(database_url, schema.flow_runs) == 3

    rest = delete_expired(database_url, CUTOFF, batch_size=2)

    assert rest.deleted["flow_runs"] == 3
    assert rest.remaining == 0
    assert_gone(database_url, expired)


def test_a_run_with_many_rows_goes_over_several_short_transactions(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vivace.store import retention

    monkeypatch.setattr(retention, "CHILD_ROWS", 2)
    expired, kept = RunRows(), RunRows()
    expired.flow_run(database_url, started=days_ago(50), ended=days_ago(50), tasks=5)
    kept.flow_run(database_url, started=days_ago(1), ended=days_ago(1), tasks=3)
    ticks = itertools.count(step=10.0)  # each look at the clock: 10 s later

    first = delete_expired(
        database_url, CUTOFF, batch_size=10, time_budget=5.0, clock=lambda: next(ticks)
    )

    # One transaction: two of its six log lines and two of its five task runs; the run stays.
    assert (first.deleted["logs"], first.deleted["task_runs"]) == (2, 2)
    assert first.deleted["task_run_states"] == 4
    assert (first.deleted["flow_runs"], first.deleted["flow_run_states"]) == (0, 0)
    assert first.remaining == 1
    assert set(expired.flow_run_ids) <= ids_in(database_url, schema.flow_runs)

    rest = delete_expired(database_url, CUTOFF, batch_size=10)

    assert (rest.deleted["logs"], rest.deleted["task_runs"], rest.deleted["flow_runs"]) == (4, 3, 1)
    assert_gone(database_url, expired)
    assert_kept(database_url, kept)


def test_subflows_go_on_their_own_end_and_unfinished_ones_stay(database_url: str) -> None:
    expired, kept = RunRows(), RunRows()
    parent = expired.flow_run(database_url, started=days_ago(60), ended=days_ago(59))
    child = expired.flow_run(database_url, started=days_ago(60), ended=days_ago(59), parent=parent)
    expired.flow_run(database_url, started=days_ago(60), ended=days_ago(59), parent=child)
    # A subflow its crashed parent left RUNNING: not final, kept with its rows.
    kept.flow_run(database_url, "RUNNING", started=days_ago(60), ended=None, parent=parent)

    report = delete_expired(database_url, CUTOFF, batch_size=1)

    assert report.deleted["flow_runs"] == 3
    assert_gone(database_url, expired)
    assert_kept(database_url, kept)


def test_standalone_task_runs_go_on_their_own_end(database_url: str) -> None:
    expired, kept = RunRows(), RunRows()
    expired.standalone_task(database_url, "COMPLETED", started=days_ago(40), ended=days_ago(40))
    expired.standalone_task(database_url, "FAILED", started=days_ago(40), ended=None)
    expired.standalone_task(database_url, "CANCELLED", started=None, ended=days_ago(40))
    kept.standalone_task(database_url, "COMPLETED", started=days_ago(1), ended=days_ago(1))
    kept.standalone_task(database_url, "RUNNING", started=days_ago(40), ended=None)
    # An old finished task run of a flow run that is still running belongs to that run: kept.
    kept.flow_run(database_url, "RUNNING", started=days_ago(40), ended=None)

    report = delete_expired(database_url, CUTOFF, batch_size=2)

    assert report.deleted["task_runs"] == 3
    assert report.deleted["task_run_states"] == 6
    assert report.deleted["logs"] == 3
    assert_gone(database_url, expired)
    assert_kept(database_url, kept)


def test_old_deliveries_long_expired_leases_and_silent_writers_go(database_url: str) -> None:
    def delivery(created: float) -> dict[str, Any]:
        return {
            "id": uuid.uuid4(),
            "policy_id": uuid.uuid4(),
            "flow_run_id": uuid.uuid4(),
            "state_seq": 2,
            "state_name": "Failed",
            "status": "delivered",
            "attempts": 1,
            "created": created,
        }

    def lease(expires: float) -> dict[str, Any]:
        return {
            "id": uuid.uuid4(),
            "limit_name": "warehouse",
            "occupy": 1,
            "holder": "host:1",
            "acquired": expires - 30,
            "expires": expires,
        }

    def writer(updated: float) -> dict[str, Any]:
        return {
            "writer_id": uuid.uuid4(),
            "hostname": "host",
            "pid": 1,
            "queue_depth": 0,
            "last_flush_seconds": 0.0,
            "records_written": 0,
            "flushes": 0,
            "started": updated - 60,
            "updated": updated,
        }

    deliveries = [delivery(days_ago(31)), delivery(days_ago(29))]
    leases = [lease(NOW - 2 * DAY), lease(NOW - 60), lease(NOW + 30)]
    writers = [writer(days_ago(31)), writer(NOW)]
    insert(database_url, schema.notification_deliveries, deliveries)
    insert(database_url, schema.concurrency_leases, leases)
    insert(database_url, schema.writer_stats, writers)

    report = delete_expired(database_url, CUTOFF, batch_size=500, now=NOW)

    assert ids_in(database_url, schema.notification_deliveries) == {deliveries[1]["id"]}
    assert ids_in(database_url, schema.concurrency_leases) == {leases[1]["id"], leases[2]["id"]}
    assert ids_in(database_url, schema.writer_stats) == {writers[1]["writer_id"]}
    assert (
        report.deleted["notification_deliveries"],
        report.deleted["concurrency_leases"],
        report.deleted["writer_stats"],
    ) == (1, 1, 1)


def test_counting_changes_nothing_and_matches_what_is_then_deleted(database_url: str) -> None:
    rows = RunRows()
    for state in FINAL:
        rows.flow_run(database_url, state, started=days_ago(40), ended=days_ago(40), tasks=3)
    rows.standalone_task(database_url, started=days_ago(40), ended=days_ago(40))
    rows.flow_run(database_url, "RUNNING", started=days_ago(40), ended=None)

    counts = count_expired(database_url, CUTOFF)

    assert counts["flow_runs"] == 4
    assert counts["task_runs"] == 4 * 3 + 1
    assert counts["logs"] == 4 * (3 + 1) + 1
    assert count(database_url, schema.flow_runs) == 5
    assert delete_expired(database_url, CUTOFF, batch_size=3).deleted == counts


def test_report_summary_and_bad_arguments() -> None:
    nothing = RetentionReport(dict.fromkeys(TABLES, 0), 0)
    assert nothing.summary() is None
    capped = RetentionReport({**dict.fromkeys(TABLES, 0), "logs": 1200}, REMAINING_COUNT_CAP)
    assert capped.summary() == "deleted 1,200 logs; 100,000+ expired runs remain for the next loop"
    with pytest.raises(ValueError, match=r"retention of 0 days is not valid; expected a number"):
        retention_cutoff(0)
    with pytest.raises(ValueError, match=r"batch_size 0 is not valid"):
        delete_expired("sqlite:///unused.db", CUTOFF, batch_size=0)
