"""What is shown of a schedule (``vivace.deployments.schedule_info``): its next times from its
definition alone, read in its own zone across a daylight-saving change, and the list's summary."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from vivace import Cron, RRule
from vivace.deployments.schedule_info import local_text, summary, upcoming_times
from vivace.store.schedules import ScheduleRecord

# Lisbon springs forward at 01:00 UTC on Sunday 2027-03-28 (WET, UTC+0, to WEST, UTC+1).
BEFORE_SPRING = dt.datetime(2027, 3, 26, 12, tzinfo=dt.UTC)


def test_next_times_keep_nine_oclock_local_across_spring_forward() -> None:
    schedule = Cron("0 9 * * *", "Europe/Lisbon")

    times = upcoming_times(schedule, now=BEFORE_SPRING)

    assert times == [
        dt.datetime(2027, 3, 27, 9, tzinfo=dt.UTC),
        dt.datetime(2027, 3, 28, 8, tzinfo=dt.UTC),
        dt.datetime(2027, 3, 29, 8, tzinfo=dt.UTC),
    ]
    assert [local_text(when, schedule) for when in times] == [
        "2027-03-27 09:00 WET",
        "2027-03-28 09:00 WEST",
        "2027-03-29 09:00 WEST",
    ]


def test_a_rule_that_has_ended_has_no_next_times() -> None:
    ended = RRule("DTSTART:20200101T090000\nRRULE:FREQ=DAILY;COUNT=2")

    assert upcoming_times(ended, now=BEFORE_SPRING) == []
    assert len(upcoming_times(Cron("0 0 29 2 *"), count=2, now=BEFORE_SPRING)) == 2  # leap days


def record(schedule: Any) -> ScheduleRecord:
    now = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    return ScheduleRecord(
        id=uuid.uuid4(),
        deployment_id=uuid.uuid4(),
        position=0,
        schedule=schedule,
        parameters=None,
        active=schedule.active,
        filled_until=None,
        due_at=None,
        created=now,
        updated=now,
    )


def test_the_summary_names_the_first_active_schedule() -> None:
    paused = record(Cron("0 9 * * *", active=False))
    hourly = record(Cron("0 * * * *"))

    assert summary([]) == ""
    assert summary([hourly]) == "cron 0 * * * * in UTC"
    assert summary([paused]) == "cron 0 9 * * * in UTC (paused)"
    assert summary([paused, hourly]) == "cron 0 * * * * in UTC + 1 more (1 paused)"
    assert summary([paused, paused]) == "cron 0 9 * * * in UTC (paused) + 1 more"
