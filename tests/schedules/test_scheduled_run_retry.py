"""A run a schedule made, ended and then retried by hand (``vivace flow-run retry``): it keeps its
identity (schedule, scheduled time), so it can never collide with another run of its schedule,
and pausing or changing the schedule does not delete it (it has started before: it is not one
of the schedule's runs waiting for their first start)."""

from __future__ import annotations

import types
import uuid

import pytest
import sqlalchemy as sa

from tests.schedules.helpers import (
    HOUR,
    NOW,
    assert_no_duplicates_and_states_match,
    deploy,
    scheduled_runs,
    spec,
    start_times,
)
from vivace.engine.states import StateType
from vivace.schedules import Interval
from vivace.store import run_control, schema
from vivace.store.database import get_engine, transaction
from vivace.store.deployments import save_deployment
from vivace.store.queries import read_flow_run
from vivace.store.run_control import reschedule_flow_run, transition_flow_run
from vivace.store.schedules import (
    read_deployment_schedules,
    run_scheduler_loop,
    set_schedule_active,
)

HOURLY = Interval(3600)


def _end(url: str, run_id: uuid.UUID, kind: StateType) -> None:
    with transaction(get_engine(url)) as conn:
        transition_flow_run(conn, run_id, kind, kind.value.title(), None, allowed_from=StateType)


def test_a_retried_scheduled_run_keeps_its_time_and_never_collides_with_another_run(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = deploy(database_url, HOURLY)
    (schedule,) = read_deployment_schedules(database_url, record.id)
    assert run_scheduler_loop(database_url, now=NOW, max_runs=3) == 3
    first, second, _ = scheduled_runs(database_url, schedule.id)
    _end(database_url, first["id"], StateType.CANCELLED)  # cancelled before its time
    cancelled = read_flow_run(database_url, first["id"])
    assert cancelled is not None
    # The retry happens at the very moment of the schedule's next run: with the time of the
    # retry as its new scheduled time, it would be a second run of (schedule, that time).
    at_the_next_run = second["expected_start_time"].timestamp()
    monkeypatch.setattr(run_control, "time", types.SimpleNamespace(time=lambda: at_the_next_run))
    retried = reschedule_flow_run(database_url, cancelled)
    monkeypatch.undo()

    assert (retried.state_type, retried.state_name) == (StateType.SCHEDULED, "AwaitingRetry")
    assert retried.schedule_id == schedule.id
    assert retried.expected_start_time == first["expected_start_time"]
    assert start_times(database_url, schedule.id) == [NOW + k * HOUR for k in (1, 2, 3)]
    assert_no_duplicates_and_states_match(database_url)


def test_pausing_or_changing_a_schedule_keeps_its_runs_retried_by_hand(database_url: str) -> None:
    record = deploy(database_url, HOURLY)
    (schedule,) = read_deployment_schedules(database_url, record.id)
    assert run_scheduler_loop(database_url, now=NOW, max_runs=3) == 3
    failed_run = scheduled_runs(database_url, schedule.id)[0]["id"]
    _end(database_url, failed_run, StateType.RUNNING)
    _end(database_url, failed_run, StateType.FAILED)
    failed = read_flow_run(database_url, failed_run)
    assert failed is not None
    reschedule_flow_run(database_url, failed)

    _, deleted = set_schedule_active(database_url, schedule.id, False)

    assert deleted == 2  # the two runs that never started, not the retried one
    assert [run["id"] for run in scheduled_runs(database_url, schedule.id)] == [failed_run]
    # Removing the schedule on a redeploy keeps it too; it still runs (a worker can claim it).
    save_deployment(database_url, spec(schedules=()))
    again = read_flow_run(database_url, failed_run)
    assert again is not None and again.state_name == "AwaitingRetry"
    runs = schema.flow_runs
    with get_engine(database_url).connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(runs)).scalar_one() == 1
