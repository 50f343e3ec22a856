"""Late runs: marked Late after ``late_after`` seconds, skipped when later than the deployment's
``skip_late_after``, and never claimed once too late, whether the service looked or not.

On SQLite and PostgreSQL; runs are backdated (created with a past ``expected_start_time``).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.run_health.helpers import deployment, scheduled_run, states
from tests.workers.test_claims import awaiting_retry
from vivace.engine.states import StateType
from vivace.services.late_runs import SERVICE
from vivace.settings import get_settings, reset_settings
from vivace.store.queries import read_flow_run, read_flow_run_states
from vivace.store.run_health import mark_late_runs, skip_too_late_runs
from vivace.store.work_queues import claim_flow_runs, register_worker


def claim(url: str, limit: int = 10) -> list[Any]:
    worker = register_worker(url, "w", "process", ["default"])
    return [
        run.id for run in claim_flow_runs(url, worker_id=worker.id, queues=["default"], limit=limit)
    ]


def test_a_run_not_started_in_time_becomes_late_and_is_still_claimed(database_url: str) -> None:
    record = deployment(database_url)
    late = scheduled_run(database_url, record, seconds_ago=20)
    on_time = scheduled_run(database_url, record, seconds_ago=10)

    # At a fixed moment: the message says how late, which a slow machine must not change.
    now = late.expected_start_time.timestamp() + 20
    assert mark_late_runs(database_url, 15, now=now) == [late.id]
    assert mark_late_runs(database_url, 15, now=now) == []  # once

    after = read_flow_run(database_url, late.id)
    assert after is not None
    assert (after.state_type, after.state_name) == (StateType.SCHEDULED, "Late")
    assert after.state_message is not None
    assert after.state_message.startswith("not started 20 s after its scheduled time ")
    assert after.state_message.endswith("(late after 15 s)")
    assert read_flow_run(database_url, on_time.id).state_name == "Scheduled"  # type: ignore[union-attr]
    assert states(database_url, late.id) == [("SCHEDULED", "Scheduled"), ("SCHEDULED", "Late")]

    assert claim(database_url) == [late.id, on_time.id]  # Late or not, due runs are claimed
    assert states(database_url, late.id)[-1] == ("PENDING", "Claimed")


def test_a_claimed_run_is_never_late_nor_skipped(database_url: str) -> None:
    run = scheduled_run(database_url, deployment(database_url, skip_late_after=60), seconds_ago=5)
    assert claim(database_url) == [run.id]

    an_hour_later = time.time() + 3600
    assert mark_late_runs(database_url, 15, now=an_hour_later) == []
    assert skip_too_late_runs(database_url, now=an_hour_later) == []
    assert states(database_url, run.id)[-1] == ("PENDING", "Claimed")


def test_runs_held_by_their_engine_or_awaiting_a_retry_are_not_late(database_url: str) -> None:
    held = awaiting_retry(database_url)  # SCHEDULED AwaitingRetry with its engine's heartbeat
    assert mark_late_runs(database_url, 0, now=time.time() + 3600) == []
    assert read_flow_run(database_url, held.id).state_name == "AwaitingRetry"  # type: ignore[union-attr]


def test_runs_later_than_their_deployment_allows_are_skipped(database_url: str) -> None:
    strict = deployment(database_url, "strict", skip_late_after=60)
    lenient = deployment(database_url, "lenient")
    too_late = scheduled_run(database_url, strict, seconds_ago=90)
    marked_then_too_late = scheduled_run(database_url, strict, seconds_ago=120)
    mark_late_runs(database_url, 15)  # the second was seen Late first: skipped all the same
    in_time = scheduled_run(database_url, strict, seconds_ago=30)
    no_limit = scheduled_run(database_url, lenient, seconds_ago=3600)

    skipped = skip_too_late_runs(database_url)

    assert skipped == [marked_then_too_late.id, too_late.id]  # oldest first
    after = read_flow_run(database_url, too_late.id)
    assert after is not None
    assert (after.state_type, after.state_name) == (StateType.CANCELLED, "Skipped")
    assert after.end_time is not None
    assert after.state_message is not None
    assert after.state_message.startswith("skipped: not started 90 s after its scheduled time ")
    assert after.state_message.endswith(
        "later than its deployment 'strict' allows (skip_late_after 60 s)"
    )
    assert states(database_url, marked_then_too_late.id) == [
        ("SCHEDULED", "Scheduled"),
        ("SCHEDULED", "Late"),
        ("CANCELLED", "Skipped"),
    ]
    for waiting in (in_time, no_limit):
        assert read_flow_run(database_url, waiting.id).state_type is StateType.SCHEDULED  # type: ignore[union-attr]
    assert skip_too_late_runs(database_url) == []


def test_a_skip_limit_shorter_than_late_after_skips_before_marking(database_url: str) -> None:
    record = deployment(database_url, skip_late_after=5)
    run = scheduled_run(database_url, record, seconds_ago=10)

    assert SERVICE.loop(database_url) == "1 run skipped"
    assert states(database_url, run.id)[-1] == ("CANCELLED", "Skipped")


def test_the_claim_never_takes_a_run_too_late_to_start(database_url: str) -> None:
    strict = deployment(database_url, "strict", skip_late_after=60)
    lenient = deployment(database_url, "lenient")
    too_late = scheduled_run(database_url, strict, seconds_ago=61)
    late_enough = scheduled_run(database_url, strict, seconds_ago=50)
    no_limit = scheduled_run(database_url, lenient, seconds_ago=3600)

    # The service has not looked: the claim leaves the too-late run all the same.
    assert claim(database_url) == [no_limit.id, late_enough.id]
    assert read_flow_run(database_url, too_late.id).state_name == "Scheduled"  # type: ignore[union-attr]
    assert skip_too_late_runs(database_url) == [too_late.id]


def test_a_run_retried_by_hand_is_not_skipped(database_url: str) -> None:
    from vivace.store.database import get_engine, transaction
    from vivace.store.run_control import reschedule_flow_run, transition_flow_run

    strict = deployment(database_url, "strict", skip_late_after=60)
    run = scheduled_run(database_url, strict, seconds_ago=3600)
    with transaction(get_engine(database_url)) as conn:
        transition_flow_run(
            conn, run.id, StateType.FAILED, "Failed", None, allowed_from=[StateType.SCHEDULED]
        )
    failed = read_flow_run(database_url, run.id)
    assert failed is not None
    reschedule_flow_run(database_url, failed)  # due now, AwaitingRetry
    with transaction(get_engine(database_url)) as conn:  # ... and it waited an hour
        from vivace.store import schema

        runs = schema.flow_runs
        conn.execute(
            runs.update().where(runs.c.id == run.id).values(expected_start_time=time.time() - 3600)
        )

    assert skip_too_late_runs(database_url) == []
    assert claim(database_url) == [run.id]


def test_the_service_loop_says_what_it_did_and_works_in_batches(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIVACE_LATE_AFTER_SECONDS", "30")
    reset_settings()
    strict = deployment(database_url, "strict", skip_late_after=600)
    lenient = deployment(database_url, "lenient")
    for _ in range(3):
        scheduled_run(database_url, strict, seconds_ago=900)
    lenient_runs = [scheduled_run(database_url, lenient, seconds_ago=45) for _ in range(105)]
    fresh = scheduled_run(database_url, lenient, seconds_ago=20)

    assert SERVICE.loop(database_url) == "3 runs skipped, 105 runs marked Late"
    assert SERVICE.loop(database_url) is None
    assert all(
        read_flow_run_states(database_url, run.id)[-1].name == "Late" for run in lenient_runs
    )
    assert read_flow_run(database_url, fresh.id).state_name == "Scheduled"  # type: ignore[union-attr]
    assert SERVICE.interval(get_settings()) == 5.0
