"""``vivace.schedules``: the times of Cron, Interval and RRule schedules (at both daylight-saving
changes), their errors, and their round trip through ``to_dict``/``schedule_from_dict``."""

from __future__ import annotations

import datetime as dt
import itertools
import subprocess
import sys
from zoneinfo import ZoneInfo

import pytest

from vivace.exceptions import ConfigurationError
from vivace.schedules import (
    Cron,
    Interval,
    RRule,
    Schedule,
    format_interval,
    parse_interval,
    schedule_from_dict,
)

UTC = dt.UTC
LISBON = ZoneInfo("Europe/Lisbon")
NEW_YORK = ZoneInfo("America/New_York")
# 2027's changes: Lisbon 28 March (01:00 -> 02:00) and 31 October (02:00 -> 01:00); New York
# 14 March (02:00 -> 03:00) and 7 November (02:00 -> 01:00).
CHANGES = [
    pytest.param("Europe/Lisbon", dt.date(2027, 3, 28), id="lisbon-spring-forward"),
    pytest.param("Europe/Lisbon", dt.date(2027, 10, 31), id="lisbon-fall-back"),
    pytest.param("America/New_York", dt.date(2027, 3, 14), id="new-york-spring-forward"),
    pytest.param("America/New_York", dt.date(2027, 11, 7), id="new-york-fall-back"),
]


def local(times: list[dt.datetime], zone: str) -> list[str]:
    return [moment.astimezone(ZoneInfo(zone)).strftime("%m-%d %H:%M") for moment in times]


def around(day: dt.date, days: int = 3) -> tuple[dt.datetime, dt.datetime]:
    """From ``days`` days before ``day`` (UTC midnight) to ``days`` days after."""
    middle = dt.datetime.combine(day, dt.time(), UTC)
    return middle - dt.timedelta(days=days), middle + dt.timedelta(days=days)


def nine_local_every_day(zone: str) -> list[Schedule]:
    return [
        Cron("0 9 * * *", timezone=zone),
        Interval(dt.timedelta(days=1), anchor=dt.datetime(2027, 1, 1, 9), timezone=zone),
        RRule("FREQ=DAILY;BYHOUR=9", timezone=zone),
    ]


@pytest.mark.parametrize(("zone", "day"), CHANGES)
def test_a_daily_0900_local_run_is_neither_skipped_nor_doubled_at_a_dst_change(
    zone: str, day: dt.date
) -> None:
    after, until = around(day)
    expected = [
        f"{(day + dt.timedelta(days=offset)).strftime('%m-%d')} 09:00" for offset in range(-3, 3)
    ]
    for schedule in nine_local_every_day(zone):
        times = schedule.next_times(after, until, 100)
        assert local(times, zone) == expected, schedule.describe()
        assert all(moment.tzinfo is UTC for moment in times)
        # The UTC hour moves with the offset: the same local time, not the same instant.
        assert len({moment.hour for moment in times}) == 2


@pytest.mark.parametrize(
    ("zone", "day", "daily"),
    [
        pytest.param("Europe/Lisbon", dt.date(2027, 10, 31), "01:30", id="lisbon"),
        pytest.param("America/New_York", dt.date(2027, 11, 7), "01:30", id="new-york"),
    ],
)
def test_a_run_in_the_repeated_hour_of_fall_back_happens_once(
    zone: str, day: dt.date, daily: str
) -> None:
    hour, minute = map(int, daily.split(":"))
    schedules = [
        Cron(f"{minute} {hour} * * *", zone),
        Interval(dt.timedelta(days=1), dt.datetime(2027, 1, 1, hour, minute), zone),
        RRule(f"FREQ=DAILY;BYHOUR={hour};BYMINUTE={minute}", zone),
    ]
    after, until = around(day, days=1)
    for schedule in schedules:
        times = schedule.next_times(after, until, 10)
        assert [text for text in local(times, zone) if text.startswith(day.strftime("%m-%d"))] == [
            f"{day.strftime('%m-%d')} {daily}"
        ], schedule.describe()
        # Its first occurrence: still in summer time.
        on_the_day = [moment for moment in times if moment.astimezone(ZoneInfo(zone)).date() == day]
        assert on_the_day[0].astimezone(ZoneInfo(zone)).dst() != dt.timedelta(0)


@pytest.mark.parametrize(
    ("zone", "day", "missing", "moved_to"),
    [
        pytest.param("Europe/Lisbon", dt.date(2027, 3, 28), (1, 30), "02:30", id="lisbon"),
        pytest.param("America/New_York", dt.date(2027, 3, 14), (2, 30), "03:30", id="new-york"),
    ],
)
def test_a_run_in_the_skipped_hour_of_spring_forward_moves_forward_by_the_gap_once(
    zone: str, day: dt.date, missing: tuple[int, int], moved_to: str
) -> None:
    hour, minute = missing
    schedules = [
        Cron(f"{minute} {hour} * * *", zone),
        Interval(dt.timedelta(days=1), dt.datetime(2027, 1, 1, hour, minute), zone),
        RRule(f"FREQ=DAILY;BYHOUR={hour};BYMINUTE={minute}", zone),
    ]
    after, until = around(day, days=2)
    for schedule in schedules:
        texts = local(schedule.next_times(after, until, 10), zone)
        before, the_day, next_day = (
            (day + dt.timedelta(days=offset)).strftime("%m-%d") for offset in (-1, 0, 1)
        )
        assert [text for text in texts if text[:5] in (before, the_day, next_day)] == [
            f"{before} {hour:02}:{minute:02}",
            f"{the_day} {moved_to}",
            f"{next_day} {hour:02}:{minute:02}",
        ], schedule.describe()


@pytest.mark.parametrize(("zone", "day"), CHANGES)
def test_schedules_firing_every_half_hour_keep_their_pace_in_real_time_across_dst(
    zone: str, day: dt.date
) -> None:
    after, until = around(day, days=1)
    schedules = [
        Cron("*/30 * * * *", zone),
        Interval(dt.timedelta(minutes=30), timezone=zone),
        RRule("FREQ=MINUTELY;INTERVAL=30", zone),
    ]
    for schedule in schedules:
        times = schedule.next_times(after, until, 1000)
        gaps = {later - earlier for earlier, later in itertools.pairwise(times)}
        assert gaps == {dt.timedelta(minutes=30)}, schedule.describe()
        assert len(times) == 2 * 24 * 2


def test_next_times_is_strictly_after_until_inclusive_limited_and_ascending() -> None:
    schedule = Cron("0 * * * *")
    start = dt.datetime(2027, 5, 1, 10, tzinfo=UTC)
    assert schedule.next_times(start, start + dt.timedelta(hours=3), 10) == [
        start + dt.timedelta(hours=1),
        start + dt.timedelta(hours=2),
        start + dt.timedelta(hours=3),
    ]
    assert schedule.next_times(start, start + dt.timedelta(hours=3), 2) == [
        start + dt.timedelta(hours=1),
        start + dt.timedelta(hours=2),
    ]
    assert schedule.next_times(start, start, 10) == []
    assert schedule.next_times(start, start + dt.timedelta(days=1), 0) == []
    # Any aware zone may be given; the answer is in UTC.
    lisbon_start = start.astimezone(LISBON)
    assert schedule.next_times(lisbon_start, lisbon_start + dt.timedelta(hours=1), 5) == [
        start + dt.timedelta(hours=1)
    ]
    with pytest.raises(ConfigurationError, match="aware datetime"):
        schedule.next_times(dt.datetime(2027, 1, 1), start, 1)


def test_an_interval_without_anchor_does_not_drift_with_the_time_asked() -> None:
    every_7_minutes = Interval(dt.timedelta(minutes=7))
    first = every_7_minutes.next_times(
        dt.datetime(2027, 5, 1, tzinfo=UTC), dt.datetime(2027, 5, 2, tzinfo=UTC), 300
    )
    # Asked from a later moment, between two of its times: the same times.
    later = every_7_minutes.next_times(first[10] + dt.timedelta(seconds=1), first[-1], 300)
    assert later == first[11:]
    anchored = Interval(900, anchor=dt.datetime(2027, 5, 1, 0, 5, tzinfo=UTC))
    assert anchored.next_times(
        dt.datetime(2027, 5, 1, 0, 5, tzinfo=UTC), dt.datetime(2027, 5, 1, 1, tzinfo=UTC), 10
    ) == [
        dt.datetime(2027, 5, 1, 0, 20, tzinfo=UTC) + dt.timedelta(minutes=15 * k) for k in range(3)
    ]


def test_an_interval_of_whole_days_steps_in_local_days_and_a_shorter_one_in_absolute_time() -> None:
    every_two_days = Interval(dt.timedelta(days=2), dt.datetime(2027, 3, 26, 9), "Europe/Lisbon")
    assert every_two_days.steps_in_days
    times = every_two_days.next_times(*around(dt.date(2027, 3, 28), days=5), 10)
    # The anchor aligns the times; it is not where they begin.
    assert local(times, "Europe/Lisbon") == [
        "03-24 09:00",
        "03-26 09:00",
        "03-28 09:00",
        "03-30 09:00",
        "04-01 09:00",
    ]
    every_6_hours = Interval(dt.timedelta(hours=6), dt.datetime(2027, 3, 27), "Europe/Lisbon")
    assert not every_6_hours.steps_in_days
    times = every_6_hours.next_times(*around(dt.date(2027, 3, 28), days=1), 10)
    assert {later - earlier for earlier, later in itertools.pairwise(times)} == {
        dt.timedelta(hours=6)
    }


def test_rrules_until_count_dtstart_and_other_sets() -> None:
    start, end = dt.datetime(2026, 12, 28, tzinfo=UTC), dt.datetime(2027, 3, 1, tzinfo=UTC)
    weekly = RRule("FREQ=WEEKLY;BYDAY=MO,WE;BYHOUR=9;UNTIL=20270113T090000Z", "Europe/Lisbon")
    assert local(weekly.next_times(start, end, 100), "Europe/Lisbon") == [
        "12-28 09:00",
        "12-30 09:00",
        "01-04 09:00",
        "01-06 09:00",
        "01-11 09:00",
        "01-13 09:00",
    ]
    floating_until = RRule("FREQ=WEEKLY;BYDAY=MO;BYHOUR=9;UNTIL=20270104T090000", "Asia/Tokyo")
    # 12-28 09:00 in Tokyo is ``start`` itself: not after it.
    assert local(floating_until.next_times(start, end, 100), "Asia/Tokyo") == ["01-04 09:00"]
    counted = RRule("DTSTART:20270101T180000\nRRULE:FREQ=DAILY;COUNT=3", "America/New_York")
    assert local(counted.next_times(start, end, 100), "America/New_York") == [
        "01-01 18:00",
        "01-02 18:00",
        "01-03 18:00",
    ]
    assert counted.next_times(dt.datetime(2027, 1, 4, tzinfo=UTC), end, 100) == []
    with_exdate = RRule(
        "DTSTART:20270101T090000\nRRULE:FREQ=DAILY;UNTIL=20270105T090000\nEXDATE:20270103T090000"
    )
    assert local(with_exdate.next_times(start, end, 100), "UTC") == [
        "01-01 09:00",
        "01-02 09:00",
        "01-04 09:00",
        "01-05 09:00",
    ]
    # Without DTSTART: from 2001-01-01 00:00 local (a Monday), however late the times asked.
    assert local(RRule("FREQ=WEEKLY").next_times(start, end, 2), "UTC") == [
        "01-04 00:00",
        "01-11 00:00",
    ]
    assert local(
        RRule("FREQ=MONTHLY;INTERVAL=5").next_times(start, end + dt.timedelta(days=400), 3), "UTC"
    ) == [
        "04-01 00:00",
        "09-01 00:00",
        "02-01 00:00",
    ]


def test_a_moved_rrule_start_gives_the_same_times_as_iterating_from_2001() -> None:
    from dateutil.rrule import rrulestr

    rules = [
        "FREQ=DAILY;INTERVAL=3;BYHOUR=7,19",
        "FREQ=WEEKLY;INTERVAL=2;BYDAY=TU,FR",
        "FREQ=MONTHLY;BYDAY=-1FR;BYHOUR=17",
        "FREQ=MONTHLY;INTERVAL=7",
        "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29",
        "FREQ=HOURLY;INTERVAL=5;BYMINUTE=15",
        "FREQ=MINUTELY;INTERVAL=97",
    ]
    start = dt.datetime(2027, 6, 1, tzinfo=UTC)
    for rule in rules:
        expected = [
            moment.replace(tzinfo=UTC)
            for moment in rrulestr(rule, dtstart=dt.datetime(2001, 1, 1)).xafter(
                start.replace(tzinfo=None), count=5
            )
        ]
        assert RRule(rule).next_times(start, start + dt.timedelta(days=20000), 5) == expected, rule


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(
            lambda: Cron("61 * * * *"),
            "cron expression '61 \\* \\* \\* \\*' is not valid",
            id="cron-range",
        ),
        pytest.param(lambda: Cron("* * *"), "expected five fields", id="cron-fields"),
        pytest.param(lambda: Cron("0 0 30 2 *"), "never matches", id="cron-never"),
        pytest.param(
            lambda: Cron("0 9 * * *", "Mars/Olympus"),
            "time zone 'Mars/Olympus' is not known",
            id="zone",
        ),
        pytest.param(
            lambda: Interval(dt.timedelta(0)),
            "interval .* is not valid; expected a positive",
            id="zero",
        ),
        pytest.param(lambda: Interval(-60), "interval -60 is not valid", id="negative"),
        pytest.param(lambda: Interval(float("nan")), "interval nan is not valid", id="nan"),
        pytest.param(
            lambda: Interval(60, anchor="2027-01-01"),  # type: ignore[arg-type]
            "anchor '2027-01-01' is not valid",
            id="anchor",
        ),
        pytest.param(
            lambda: RRule("FREQ=SOMETIMES"), "rrule 'FREQ=SOMETIMES' is not valid", id="rrule"
        ),
        pytest.param(lambda: RRule(""), "rrule '' is not valid", id="rrule-empty"),
        pytest.param(lambda: RRule("FREQ=DAILY;COUNT=3"), "COUNT needs a DTSTART", id="count"),
        pytest.param(
            lambda: RRule("DTSTART;TZID=America/New_York:20270101T090000\nRRULE:FREQ=DAILY"),
            "DTSTART has a time zone",
            id="dtstart-tzid",
        ),
        pytest.param(
            lambda: Cron("0 9 * * *", parameters={"x": object()}),
            "cannot be stored as JSON",
            id="parameters",
        ),
        pytest.param(
            lambda: Cron("0 9 * * *", active="yes"),  # type: ignore[arg-type]
            "active='yes' is not valid",
            id="active",
        ),
    ],
)
def test_bad_schedules_raise_configuration_errors_that_say_what_was_expected(
    make: object, message: str
) -> None:
    assert callable(make)
    with pytest.raises(ConfigurationError, match=message):
        make()


SCHEDULES = [
    pytest.param(Cron("0  9 * * 1-5", "Europe/Lisbon"), id="cron"),
    pytest.param(Cron("0 9 13 * 5", day_or=False), id="cron-day-and"),
    pytest.param(Interval(dt.timedelta(minutes=15)), id="interval"),
    pytest.param(
        Interval(dt.timedelta(days=1), dt.datetime(2027, 1, 1, 9), "America/New_York"),
        id="interval-anchor",
    ),
    pytest.param(
        Interval(90, dt.datetime(2027, 1, 1, 9, tzinfo=dt.timezone(dt.timedelta(hours=2)))),
        id="interval-aware",
    ),
    pytest.param(RRule("FREQ=WEEKLY;BYDAY=MO,WE", "Asia/Tokyo"), id="rrule"),
]


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_to_dict_round_trips_and_the_definition_key_identifies_the_definition(
    schedule: Schedule,
) -> None:
    import json

    data = json.loads(json.dumps(schedule.to_dict()))  # what the database gives back
    again = schedule_from_dict(data)
    assert again == schedule
    assert hash(again) == hash(schedule)
    assert again.definition_key() == schedule.definition_key()
    assert again.describe() == schedule.describe()
    start = dt.datetime(2027, 3, 1, tzinfo=UTC)
    assert again.next_times(start, start + dt.timedelta(days=60), 20) == schedule.next_times(
        start, start + dt.timedelta(days=60), 20
    )
    assert "active" not in data and "parameters" not in data


def test_equality_counts_active_and_parameters_and_the_key_only_the_definition() -> None:
    base = Cron("0 9 * * *", "Europe/Lisbon")
    paused = Cron("0 9 * * *", "Europe/Lisbon", active=False)
    other_parameters = Cron("0 9 * * *", "Europe/Lisbon", parameters={"day": 1})
    assert base == Cron(" 0 9  * * * ", "Europe/Lisbon")
    assert base != paused and base != other_parameters
    assert base.definition_key() == paused.definition_key() == other_parameters.definition_key()
    assert base.definition_key() != Cron("0 9 * * *").definition_key()
    assert base != RRule("FREQ=DAILY;BYHOUR=9", "Europe/Lisbon")
    assert len({base, Cron("0 9 * * *", "Europe/Lisbon"), Interval(60)}) == 2
    with pytest.raises(AttributeError):
        base.expression = "* * * * *"  # type: ignore[misc]


def test_describe_names_the_schedule_for_people() -> None:
    assert Cron("0 9 * * 1-5", "Europe/Lisbon").describe() == "cron 0 9 * * 1-5 in Europe/Lisbon"
    assert Interval(dt.timedelta(minutes=15)).describe() == "every 15m in UTC"
    assert (
        Interval(
            dt.timedelta(hours=1, minutes=30), dt.datetime(2027, 1, 1, 9), "Asia/Tokyo"
        ).describe()
        == "every 1h30m from 2027-01-01T09:00:00 in Asia/Tokyo"
    )
    assert RRule("FREQ=WEEKLY;BYDAY=MO").describe() == "rrule FREQ=WEEKLY;BYDAY=MO in UTC"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("15m", dt.timedelta(minutes=15)),
        ("1h30m", dt.timedelta(hours=1, minutes=30)),
        ("2d", dt.timedelta(days=2)),
        ("1w", dt.timedelta(weeks=1)),
        ("90", dt.timedelta(seconds=90)),
        ("0.5", dt.timedelta(seconds=0.5)),
        ("PT15M", dt.timedelta(minutes=15)),
        ("P1DT2H", dt.timedelta(days=1, hours=2)),
        (" 45s ", dt.timedelta(seconds=45)),
    ],
)
def test_parse_interval_reads_short_and_iso_durations(text: str, expected: dt.timedelta) -> None:
    assert parse_interval(text) == expected
    assert parse_interval(format_interval(expected)) == expected


@pytest.mark.parametrize("text", ["", "0", "-5", "15x", "m", "P", "P1Y", "PT", "1e400", "inf"])
def test_parse_interval_rejects_what_is_not_a_positive_duration(text: str) -> None:
    with pytest.raises(ConfigurationError, match=f"interval {text!r} is not valid; expected"):
        parse_interval(text)


@pytest.mark.parametrize(
    "data",
    [
        {"cron": "0 9 * * *", "interval": 60},
        {"every": 60},
        {"cron": "0 9 * * *", "colour": "red"},
        {"interval": 60, "anchor": "yesterday"},
        {"interval": 0},
        "0 9 * * *",
    ],
)
def test_schedule_from_dict_rejects_bad_input_clearly(data: object) -> None:
    with pytest.raises(ConfigurationError, match=r"is not valid|unknown keys"):
        schedule_from_dict(data)  # type: ignore[arg-type]


def test_importing_vivace_and_its_schedules_loads_neither_croniter_nor_dateutil() -> None:
    code = (
        "import sys, vivace, vivace.schedules\n"
        "vivace.schedules.Interval(60)\n"
        "print(sorted(m for m in ('croniter', 'dateutil') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "expression",
    [
        "0 9 * * 1-5",
        "*/15 * * * *",
        "5,35 */3 * * sun,wed",
        "@daily",
        "@hourly",
        "0 9 * * 7",
        "30 */2 * * * 15",
        "0 12 1 * *",  # a day of month: croniter itself
        "0 9 * * 1#2",
        "0 9 L * *",
        "0 0 29 2 *",
        "0 9 13 * 5",
    ],
)
def test_cron_times_are_croniters_in_utc(expression: str) -> None:
    from croniter import croniter

    start = dt.datetime(2027, 1, 30, 7, 0)
    iterator = croniter(expression, start)
    expected = [iterator.get_next(dt.datetime).replace(tzinfo=UTC) for _ in range(300)]
    assert Cron(expression).next_times(start.replace(tzinfo=UTC), expected[-1], 300) == expected
    day_and = croniter(expression, start, day_or=False)
    expected = [day_and.get_next(dt.datetime).replace(tzinfo=UTC) for _ in range(50)]
    assert (
        Cron(expression, day_or=False).next_times(start.replace(tzinfo=UTC), expected[-1], 50)
        == expected
    )
