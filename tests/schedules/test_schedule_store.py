"""``vivace.store.schedules`` on SQLite and PostgreSQL: what the scheduler's loop creates, how far
ahead, what a redeploy keeps and deletes, pause and resume, and that a loop reads only what is
due. Loops are stepped by hand with an injected ``now``."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from tests.schedules.helpers import (
    HOUR,
    NOW,
    assert_no_duplicates_and_states_match,
    count,
    deploy,
    scheduled_runs,
    spec,
    stamp,
    start_times,
)
from vivace.engine.states import StateType
from vivace.exceptions import (
    ConfigurationError,
    DeploymentNotFoundError,
    ParameterValidationError,
    ScheduleNotFoundError,
)
from vivace.schedules import Cron, Interval, RRule, Schedule
from vivace.store import schedules as store_schedules
from vivace.store import schema
from vivace.store.database import get_engine, transaction
from vivace.store.deployments import (
    create_deployment_run,
    delete_deployment,
    read_deployment,
    save_deployment,
)
from vivace.store.run_control import transition_flow_run
from vivace.store.schedules import (
    AUTO_SCHEDULED_TAG,
    has_due_schedules,
    read_deployment_schedules,
    read_schedule,
    read_schedules_of_deployments,
    run_scheduler_loop,
    set_schedule_active,
)

HOURLY = Interval(dt.timedelta(hours=1))
DAY = dt.timedelta(days=1)


def test_a_loop_creates_scheduled_runs_of_the_deployment_with_the_schedules_parameters(
    database_url: str,
) -> None:
    record = deploy(
        database_url,
        Cron("0 9 * * *", "Europe/Lisbon", parameters={"day": 3}),
        tags=("etl", "nightly"),
        infrastructure={"type": "docker", "image": "etl:1"},
    )
    (schedule,) = read_deployment_schedules(database_url, record.id)
    assert schedule.due_at is not None and schedule.filled_until is None
    assert run_scheduler_loop(database_url, now=NOW, max_runs=3) == 3
    runs = scheduled_runs(database_url)
    # 2027-05-03 10:00 UTC is 11:00 in Lisbon: the first run is the next day's 09:00 local.
    assert [run["expected_start_time"] for run in runs] == [
        dt.datetime(2027, 5, day, 8, tzinfo=dt.UTC) for day in (4, 5, 6)
    ]
    for run in runs:
        assert run["state_type"] == StateType.SCHEDULED.value
        assert run["state_name"] == "Scheduled"
        assert run["state_seq"] == 1
        assert run["parameters"] == {"label": "daily", "day": 3}
        assert run["tags"] == ["etl", "nightly", AUTO_SCHEDULED_TAG]
        assert run["deployment_id"] == record.id
        assert run["deployment_version"] == record.version
        assert run["work_queue_name"] == "nightly-queue"
        assert run["infrastructure_type"] == "docker"
        assert run["flow_name"] == "etl"
        assert run["schedule_id"] == schedule.id
        assert run["worker_id"] is None and run["heartbeat"] is None
        assert run["name"]
    assert len({run["name"] for run in runs}) == 3
    assert_no_duplicates_and_states_match(database_url)


def test_a_loop_keeps_max_runs_ahead_and_no_more_than_max_scheduled_time(
    database_url: str,
) -> None:
    record = deploy(database_url, HOURLY)
    (schedule,) = read_deployment_schedules(database_url, record.id)
    assert run_scheduler_loop(database_url, now=NOW, max_runs=5, max_scheduled_time=DAY) == 5
    assert start_times(database_url, schedule.id) == [NOW + k * HOUR for k in range(1, 6)]
    # Full: due when its earliest run ahead starts.
    after = read_schedule(database_url, schedule.id)
    assert after is not None and after.due_at is not None and after.filled_until is not None
    assert after.due_at.timestamp() == NOW + HOUR
    assert after.filled_until.timestamp() == NOW + 5 * HOUR
    # Two and a half hours later two runs have started: two more keep five ahead.
    later = NOW + 2.5 * HOUR
    assert run_scheduler_loop(database_url, now=later, max_runs=5, max_scheduled_time=DAY) == 2
    assert start_times(database_url, schedule.id)[-2:] == [NOW + 6 * HOUR, NOW + 7 * HOUR]
    # The horizon is the limit now: three hours ahead at most, with a hundred runs allowed.
    other = deploy(database_url, Interval(dt.timedelta(minutes=30)), name="other")
    (short,) = read_deployment_schedules(database_url, other.id)
    created = run_scheduler_loop(
        database_url, now=later, max_runs=100, max_scheduled_time=dt.timedelta(hours=3)
    )
    assert created == 6
    assert start_times(database_url, short.id) == [later + k * HOUR / 2 for k in range(1, 7)]
    # Every time up to the horizon has its run: due when the horizon reaches the next time.
    short_after = read_schedule(database_url, short.id)
    assert short_after is not None and short_after.due_at is not None
    assert short_after.due_at.timestamp() == later + 3.5 * HOUR - 3 * HOUR
    assert_no_duplicates_and_states_match(database_url)


def test_a_loop_with_nothing_due_reads_no_schedule_and_changes_nothing(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = [deploy(database_url, HOURLY, name=f"deployment-{i}") for i in range(3)]
    assert run_scheduler_loop(database_url, now=NOW, max_runs=2) == 6
    before = [read_deployment_schedules(database_url, record.id)[0] for record in records]
    assert all(s.due_at is not None and s.due_at.timestamp() > NOW for s in before)
    locked: list[int] = []
    lock_due = store_schedules._lock_due_schedules

    def counting(conn: sa.Connection, moment: float) -> list[sa.Row[object]]:
        rows = lock_due(conn, moment)
        locked.append(len(rows))
        return rows

    monkeypatch.setattr(store_schedules, "_lock_due_schedules", counting)
    # Nothing due until the first run starts: no schedule is read, nothing is written.
    assert run_scheduler_loop(database_url, now=NOW + HOUR - 1, max_runs=2) == 0
    assert locked == []
    after = [read_deployment_schedules(database_url, record.id)[0] for record in records]
    assert [(s.filled_until, s.due_at) for s in after] == [
        (s.filled_until, s.due_at) for s in before
    ]
    # Only the due schedule is read: the others' rows stay as they were.
    due_one = before[1].id
    with transaction(get_engine(database_url)) as conn:
        table = schema.deployment_schedules
        conn.execute(sa.update(table).where(table.c.id == due_one).values(due_at=NOW - 5))
    assert run_scheduler_loop(database_url, now=NOW + 60, max_runs=2) == 0
    assert locked == [1]
    assert [read_deployment_schedules(database_url, r.id)[0].due_at for r in records] == [
        before[0].due_at,
        before[1].due_at,  # full already: due again when its earliest run starts
        before[2].due_at,
    ]


def test_the_due_query_uses_the_due_at_index_on_sqlite(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/plan.db"
    deploy(url, HOURLY)
    table = schema.deployment_schedules
    query = sa.select(table.c.id).where(table.c.due_at <= NOW).limit(1)
    with get_engine(url).connect() as conn:
        sql = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
        plan = " ".join(str(row) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
    assert "ix_deployment_schedules_due_at" in plan


def test_a_redeploy_keeps_unchanged_schedules_and_deletes_the_others_with_their_waiting_runs(
    database_url: str,
) -> None:
    daily = Cron("0 6 * * *")
    hourly_with_day = Interval(dt.timedelta(hours=1), parameters={"day": 1})
    weekly = RRule("FREQ=WEEKLY;BYDAY=MO;BYHOUR=7")
    record = deploy(database_url, daily, hourly_with_day, weekly)
    first = {
        s.schedule.definition_key(): s for s in read_deployment_schedules(database_url, record.id)
    }
    run_scheduler_loop(database_url, now=NOW, max_runs=4)
    kept_id = first[daily.definition_key()].id
    removed_id = first[hourly_with_day.definition_key()].id
    paused_id = first[weekly.definition_key()].id
    set_schedule_active(database_url, paused_id, False)
    # Two runs of the schedule about to go have started: they stay.
    removed_runs = scheduled_runs(database_url, removed_id)
    engine = get_engine(database_url)
    with transaction(engine) as conn:
        claimed = removed_runs[0]["id"]
        transition_flow_run(
            conn, claimed, StateType.PENDING, "Claimed", None, allowed_from=(StateType.SCHEDULED,)
        )
        conn.execute(
            sa.update(schema.flow_runs)
            .where(schema.flow_runs.c.id == claimed)
            .values(worker_id=uuid.uuid4())
        )
        running = removed_runs[1]["id"]
        transition_flow_run(
            conn, running, StateType.RUNNING, "Running", None, allowed_from=(StateType.SCHEDULED,)
        )
        conn.execute(
            sa.update(schema.flow_runs)
            .where(schema.flow_runs.c.id == running)
            .values(heartbeat=NOW)
        )
    kept_runs = [run["id"] for run in scheduled_runs(database_url, kept_id)]
    kept_before = read_schedule(database_url, kept_id)
    # Same definitions (one paused, given active here), other parameters for the hourly one, a
    # new one; in another order.
    new = Cron("*/10 * * * *")
    save_deployment(
        database_url,
        spec(
            schedules=(
                new,
                RRule("FREQ=WEEKLY;BYDAY=MO;BYHOUR=7"),
                Interval(dt.timedelta(hours=1), parameters={"day": 2}),
                Cron("0 6 * * *"),
            )
        ),
    )
    after = read_deployment_schedules(database_url, record.id)
    assert [s.schedule.describe() for s in after] == [
        "cron */10 * * * * in UTC",
        "rrule FREQ=WEEKLY;BYDAY=MO;BYHOUR=7 in UTC",
        "every 1h in UTC",
        "cron 0 6 * * * in UTC",
    ]
    assert [s.position for s in after] == [0, 1, 2, 3]
    # Kept: the same rows, their runs and filled_until; the paused one still paused.
    assert kept_before is not None
    assert after[3].id == kept_id and after[3].filled_until == kept_before.filled_until
    assert after[3].due_at == kept_before.due_at
    assert [run["id"] for run in scheduled_runs(database_url, kept_id)] == kept_runs
    assert after[1].id == paused_id and not after[1].active and after[1].due_at is None
    # Replaced: the hourly one with other parameters is a new row, due now; the old one's runs
    # that had not started are gone with their states, the claimed and the running one stay.
    assert after[2].id not in (removed_id, kept_id) and after[2].parameters == {"day": 2}
    assert after[0].active and after[0].filled_until is None and after[0].due_at is not None
    assert {run["id"] for run in scheduled_runs(database_url, removed_id)} == {claimed, running}
    assert_no_duplicates_and_states_match(database_url)
    # Saying nothing about schedules keeps them; an empty tuple removes them all.
    save_deployment(database_url, spec(description="no schedules said"))
    assert [s.id for s in read_deployment_schedules(database_url, record.id)] == [
        s.id for s in after
    ]
    save_deployment(database_url, spec(schedules=()))
    assert read_deployment_schedules(database_url, record.id) == []
    assert count(database_url, schema.deployment_schedules) == 0
    assert {run["id"] for run in scheduled_runs(database_url)} == {claimed, running}


def test_a_redeploy_makes_the_waiting_runs_of_its_schedules_runs_of_the_new_version(
    database_url: str,
) -> None:
    record = deploy(database_url, Interval(dt.timedelta(hours=1), parameters={"day": 1}))
    (schedule,) = read_deployment_schedules(database_url, record.id)
    assert run_scheduler_loop(database_url, now=NOW, max_runs=3) == 3
    started = scheduled_runs(database_url, schedule.id)[0]["id"]
    with transaction(get_engine(database_url)) as conn:
        transition_flow_run(
            conn, started, StateType.RUNNING, "Running", None, allowed_from=(StateType.SCHEDULED,)
        )

    # A redeploy that says nothing about schedules: another queue, parameters and tags.
    save_deployment(
        database_url,
        spec(work_queue_name="new-queue", parameters={"label": "new"}, tags=("etl", "v2")),
    )

    runs = scheduled_runs(database_url, schedule.id)
    assert len(runs) == 3 and runs[0]["id"] == started
    assert (runs[0]["deployment_version"], runs[0]["work_queue_name"]) == (1, "nightly-queue")
    for waiting in runs[1:]:
        assert waiting["deployment_version"] == 2
        assert waiting["work_queue_name"] == "new-queue"
        assert waiting["parameters"] == {"label": "new", "day": 1}
        assert waiting["tags"] == ["etl", "v2", AUTO_SCHEDULED_TAG]
    # The next runs the loop makes are of the new version too.
    assert run_scheduler_loop(database_url, now=NOW + HOUR, max_runs=3) == 1
    assert scheduled_runs(database_url, schedule.id)[-1]["work_queue_name"] == "new-queue"
    assert_no_duplicates_and_states_match(database_url)


def test_a_schedule_that_cannot_be_computed_does_not_stop_the_others(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    record = deploy(database_url, HOURLY, Cron("0 6 * * *"))
    broken, fine = read_deployment_schedules(database_url, record.id)
    table = schema.deployment_schedules
    with transaction(get_engine(database_url)) as conn:  # a zone this tzdata does not know
        conn.execute(
            sa.update(table)
            .where(table.c.id == broken.id)
            .values(schedule={"interval": 3600.0, "anchor": None, "timezone": "Mars/Olympus"})
        )

    assert run_scheduler_loop(database_url, now=NOW, max_runs=2) == 2

    assert len(start_times(database_url, fine.id)) == 2
    assert start_times(database_url, broken.id) == []
    later = read_schedule_row(database_url, broken.id)
    assert later["due_at"].timestamp() == NOW + 3600 and later["filled_until"] is None
    assert f"deployment schedule {broken.id}" in caplog.text and "Mars/Olympus" in caplog.text
    assert run_scheduler_loop(database_url, now=NOW, max_runs=2) == 0


def read_schedule_row(url: str, schedule_id: uuid.UUID) -> dict[str, Any]:
    table = schema.deployment_schedules
    with get_engine(url).connect() as conn:
        row = conn.execute(sa.select(table).where(table.c.id == schedule_id)).one()
    return dict(row._mapping)


def test_pause_deletes_the_waiting_runs_and_resume_refills_them(database_url: str) -> None:
    record = deploy(database_url, HOURLY)
    (schedule,) = read_deployment_schedules(database_url, record.id)
    run_scheduler_loop(database_url, now=NOW, max_runs=5)
    times = start_times(database_url, schedule.id)
    paused, deleted = set_schedule_active(database_url, schedule.id, False)
    assert deleted == 5
    assert not paused.active and paused.due_at is None and paused.filled_until is None
    assert not paused.schedule.active
    assert scheduled_runs(database_url) == []
    assert count(database_url, schema.flow_run_states) == 0
    # Paused: no loop fills it; pausing again changes nothing.
    assert run_scheduler_loop(database_url, now=NOW, max_runs=5) == 0
    assert set_schedule_active(database_url, schedule.id, False)[1] == 0
    resumed, deleted = set_schedule_active(database_url, schedule.id, True)
    assert deleted == 0 and resumed.active and resumed.due_at is not None
    assert resumed.schedule.active
    assert run_scheduler_loop(database_url, now=NOW, max_runs=5) == 5
    assert start_times(database_url, schedule.id) == times
    # Resuming an active schedule changes nothing.
    before = read_schedule(database_url, schedule.id)
    assert before is not None and before.filled_until is not None
    again, _ = set_schedule_active(database_url, schedule.id, True)
    assert (again.due_at, again.filled_until) == (before.due_at, before.filled_until)
    assert_no_duplicates_and_states_match(database_url)
    missing = uuid.uuid4()
    with pytest.raises(ScheduleNotFoundError, match=f"no deployment schedule with id {missing}"):
        set_schedule_active(database_url, missing, False)
    assert read_schedule(database_url, missing) is None


def test_a_loop_after_a_lost_update_makes_no_duplicate(database_url: str) -> None:
    # As if a loop had inserted its runs and another then filled the schedule from scratch: the
    # unique (schedule, time) index makes the second insert of each time a no-op.
    record = deploy(database_url, HOURLY)
    (schedule,) = read_deployment_schedules(database_url, record.id)
    assert run_scheduler_loop(database_url, now=NOW, max_runs=3) == 3
    table = schema.deployment_schedules
    with transaction(get_engine(database_url)) as conn:
        conn.execute(
            sa.update(table).where(table.c.id == schedule.id).values(filled_until=None, due_at=NOW)
        )
    store_schedules._TIMES.clear()
    assert run_scheduler_loop(database_url, now=NOW, max_runs=5) == 2
    assert start_times(database_url, schedule.id) == [NOW + k * HOUR for k in range(1, 6)]
    assert_no_duplicates_and_states_match(database_url)


def test_a_schedule_that_ends_is_no_longer_due(database_url: str) -> None:
    record = deploy(database_url, RRule("DTSTART:20270503T120000\nRRULE:FREQ=HOURLY;COUNT=3"))
    (schedule,) = read_deployment_schedules(database_url, record.id)
    assert run_scheduler_loop(database_url, now=NOW, max_runs=10) == 3
    ended = read_schedule(database_url, schedule.id)
    assert ended is not None and ended.due_at is None and ended.active
    assert ended.filled_until == dt.datetime(2027, 5, 3, 14, tzinfo=dt.UTC)
    assert run_scheduler_loop(database_url, now=NOW + 10 * HOUR, max_runs=10) == 0


@pytest.mark.parametrize(
    "daily_0900",
    [
        Cron("0 9 * * *", "America/New_York"),
        Interval(DAY, dt.datetime(2027, 1, 1, 9), "America/New_York"),
        RRule("FREQ=DAILY;BYHOUR=9", "America/New_York"),
    ],
    ids=["cron", "interval", "rrule"],
)
def test_dst_runs_in_the_database_are_each_local_time_once(
    database_url: str, daily_0900: Schedule
) -> None:
    record = deploy(database_url, daily_0900)
    (schedule,) = read_deployment_schedules(database_url, record.id)
    assert run_scheduler_loop(database_url, now=stamp(2027, 3, 12), max_runs=5) == 5
    assert run_scheduler_loop(database_url, now=stamp(2027, 11, 5), max_runs=5) == 5
    hours = [
        (moment.month, moment.day, moment.hour)
        for moment in (
            dt.datetime.fromtimestamp(t, dt.UTC) for t in start_times(database_url, schedule.id)
        )
    ]
    # 09:00 New York: 14:00 UTC in winter, 13:00 UTC in summer; one run a day on both sides.
    assert hours == [
        (3, 12, 14),
        (3, 13, 14),
        (3, 14, 13),
        (3, 15, 13),
        (3, 16, 13),
        (11, 5, 13),
        (11, 6, 13),
        (11, 7, 14),
        (11, 8, 14),
        (11, 9, 14),
    ]


def test_the_schedules_of_several_deployments_are_read_at_once_by_position(
    database_url: str,
) -> None:
    first = deploy(database_url, Cron("0 6 * * *"), HOURLY, name="first")
    second = deploy(database_url, name="second")
    third = deploy(database_url, RRule("FREQ=DAILY"), name="third")
    missing = uuid.uuid4()

    found = read_schedules_of_deployments(database_url, [first.id, second.id, third.id, missing])

    assert list(found) == [first.id, second.id, third.id, missing]
    assert [s.schedule.describe() for s in found[first.id]] == [
        "cron 0 6 * * * in UTC",
        "every 1h in UTC",
    ]
    assert found[first.id] == read_deployment_schedules(database_url, first.id)
    assert found[second.id] == [] and found[missing] == []
    assert [s.deployment_id for s in found[third.id]] == [third.id]
    assert read_schedules_of_deployments(database_url, []) == {}


def test_deleting_a_deployment_drops_its_schedules_and_their_waiting_runs(
    database_url: str,
) -> None:
    record = deploy(database_url, HOURLY)
    run_scheduler_loop(database_url, now=NOW, max_runs=3)
    create_deployment_run(database_url, record, parameters={"label": "x"})
    _, cancelled = delete_deployment(database_url, "nightly")
    assert cancelled == 1  # the run made on demand; the schedule's runs went with it
    assert scheduled_runs(database_url) == []
    assert count(database_url, schema.deployment_schedules) == 0
    assert read_deployment(database_url, "nightly") is None
    with pytest.raises(DeploymentNotFoundError):
        delete_deployment(database_url, "nightly")


def test_a_deployment_spec_checks_its_schedules_where_they_are_given(database_url: str) -> None:
    with pytest.raises(
        ConfigurationError, match="has the schedule 'cron 0 9 \\* \\* \\* in UTC' twice"
    ):
        spec(schedules=(Cron("0 9 * * *"), Cron("0  9 * * *")))
    with pytest.raises(ConfigurationError, match=r"expected vivace\.schedules\.Cron"):
        spec(schedules=("0 9 * * *",))
    # The same definition with other parameters is another schedule.
    both = spec(schedules=(Cron("0 9 * * *"), Cron("0 9 * * *", parameters={"day": 1})))
    assert both.schedules is not None and len(both.schedules) == 2
    with pytest.raises(ParameterValidationError, match=r"'day'.*is not of type 'integer'"):
        save_deployment(database_url, spec(schedules=(Cron("0 9 * * *", parameters={"day": "x"}),)))
    assert read_deployment(database_url, "nightly") is None
    required = {
        "type": "object",
        "properties": {"day": {"type": "integer"}},
        "required": ["day"],
    }
    with pytest.raises(ParameterValidationError, match="'day' is a required property"):
        save_deployment(
            database_url, spec(parameter_schema=required, parameters={}, schedules=(HOURLY,))
        )
    with pytest.raises(ConfigurationError, match="max_runs=0 is not valid"):
        run_scheduler_loop(database_url, max_runs=0)


def test_one_loop_fills_every_due_schedule_over_several_short_transactions(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_schedules, "BATCH_SIZE", 2)
    monkeypatch.setattr(store_schedules, "RUNS_PER_TRANSACTION", 3)
    fill = store_schedules._fill
    transactions: list[tuple[int, int]] = []

    def counting(
        conn: sa.Connection, due: list[sa.Row[Any]], limits: Any, moment: float
    ) -> tuple[int, int]:
        result = fill(conn, due, limits, moment)
        transactions.append(result)
        return result

    monkeypatch.setattr(store_schedules, "_fill", counting)
    for i in range(5):
        deploy(database_url, HOURLY, name=f"deployment-{i}")
    assert run_scheduler_loop(database_url, now=NOW, max_runs=4) == 20
    # Each transaction stops after the schedule that reaches three runs: one schedule each.
    assert transactions == [(4, 1)] * 5
    assert_no_duplicates_and_states_match(database_url)


def test_a_loop_past_its_time_budget_leaves_the_rest_due_for_the_next(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_schedules, "BATCH_SIZE", 2)
    monkeypatch.setattr(store_schedules, "RUNS_PER_TRANSACTION", 3)
    for i in range(5):
        deploy(database_url, HOURLY, name=f"deployment-{i}")

    # A budget of 0 s: each loop makes one transaction (one schedule's four runs), then stops.
    created = [run_scheduler_loop(database_url, now=NOW, max_runs=4, time_budget=0.0)]
    assert created == [4]
    assert has_due_schedules(database_url, now=NOW)
    while has_due_schedules(database_url, now=NOW):
        created.append(run_scheduler_loop(database_url, now=NOW, max_runs=4, time_budget=0.0))

    assert created == [4] * 5
    assert_no_duplicates_and_states_match(database_url)
