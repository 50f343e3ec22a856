"""``Flow.deploy(schedules=..., skip_late_after=..., concurrency_limit=...)``, on SQLite and
PostgreSQL: what is saved, what a redeploy keeps or replaces, and the errors said up front (before
anything is uploaded or saved)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from vivace import Cron, Interval, RRule
from vivace.exceptions import DeploymentError
from vivace.store.deployments import read_deployment, read_deployment_version
from vivace.store.schedules import read_deployment_schedules, set_schedule_active


def schedules_of(url: str, name: str) -> list[Any]:
    record = read_deployment(url, name)
    assert record is not None
    return read_deployment_schedules(url, record.id)


def test_deploy_saves_the_schedules_in_order_with_the_run_settings(
    database_url: str, etl: Any
) -> None:
    record = etl.deploy(
        "nightly",
        parameters={"day": 1},
        schedules=[
            Cron("0 9 * * 1-5", timezone="Europe/Lisbon"),
            Interval(dt.timedelta(minutes=15), parameters={"label": "quarter"}),
            RRule("FREQ=WEEKLY;BYDAY=MO,WE", active=False),
        ],
        skip_late_after=dt.timedelta(minutes=10),
        concurrency_limit=2,
    )

    assert (record.skip_late_after, record.concurrency_limit) == (600.0, 2)
    saved = read_deployment_schedules(database_url, record.id)
    assert [one.position for one in saved] == [0, 1, 2]
    assert [one.schedule.describe() for one in saved] == [
        "cron 0 9 * * 1-5 in Europe/Lisbon",
        "every 15m in UTC",
        "rrule FREQ=WEEKLY;BYDAY=MO,WE in UTC",
    ]
    assert [one.parameters for one in saved] == [None, {"label": "quarter"}, None]
    assert [one.active for one in saved] == [True, True, False]
    version = read_deployment_version(database_url, record.id, 1)  # the settings are versioned
    assert version is not None and version.skip_late_after == 600.0
    assert version.concurrency_limit == 2


def test_skip_late_after_may_be_seconds(database_url: str, etl: Any) -> None:
    record = etl.deploy("nightly", skip_late_after=90)

    assert record.skip_late_after == 90.0 and record.concurrency_limit is None


def test_a_redeploy_without_schedules_keeps_them_and_their_paused_state(
    database_url: str, etl: Any
) -> None:
    etl.deploy("nightly", parameters={"day": 1}, schedules=[Cron("0 9 * * *"), Cron("0 18 * * *")])
    before = schedules_of(database_url, "nightly")
    set_schedule_active(database_url, before[1].id, False)

    etl.deploy("nightly", parameters={"day": 2})  # says nothing about schedules
    kept = schedules_of(database_url, "nightly")
    etl.deploy("nightly", parameters={"day": 2}, schedules=[Cron("0 9 * * *"), Cron("0 18 * * *")])
    same = schedules_of(database_url, "nightly")

    assert [one.id for one in kept] == [one.id for one in same] == [one.id for one in before]
    assert [one.active for one in kept] == [one.active for one in same] == [True, False]


def test_a_redeploy_with_other_schedules_replaces_them_and_an_empty_list_removes_them(
    database_url: str, etl: Any
) -> None:
    etl.deploy("nightly", parameters={"day": 1}, schedules=[Cron("0 9 * * *"), Cron("0 18 * * *")])
    before = schedules_of(database_url, "nightly")

    etl.deploy("nightly", parameters={"day": 1}, schedules=[Cron("0 18 * * *"), Cron("0 7 * * *")])
    replaced = schedules_of(database_url, "nightly")
    etl.deploy("nightly", parameters={"day": 1}, schedules=[])

    assert [one.schedule.describe() for one in replaced] == [
        "cron 0 18 * * * in UTC",
        "cron 0 7 * * * in UTC",
    ]
    assert replaced[0].id == before[1].id and replaced[1].id not in {one.id for one in before}
    assert schedules_of(database_url, "nightly") == []


def test_a_schedules_parameters_are_stored_as_json(database_url: str, etl: Any) -> None:
    class Label(str):
        pass

    etl.deploy("nightly", schedules=[Cron("0 9 * * *", parameters={"day": 3, "label": Label("x")})])

    (saved,) = schedules_of(database_url, "nightly")
    assert saved.parameters == {"day": 3, "label": "x"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param(
            {"schedules": "0 9 * * *"},
            "schedules must be a list of schedules such as [Cron('0 9 * * *'), "
            "Interval(timedelta(hours=1))], got str",
            id="a-string",
        ),
        pytest.param(
            {"parameters": {"day": 1}, "schedules": [Cron("0 9 * * *"), {"cron": "0 9 * * *"}]},
            "schedule 1 is a dict ({'cron': '0 9 * * *'}), not a vivace schedule; expected "
            "Cron(...), Interval(...) or RRule(...)",
            id="a-dict",
        ),
        pytest.param(
            {"schedules": [Cron("0 9 * * *")]},
            "schedule 0 (cron 0 9 * * * in UTC): its runs' parameters (the deployment's defaults "
            "under the schedule's own) do not match the flow's signature: 'day' is a required "
            "property",
            id="no-day-for-the-scheduled-runs",
        ),
        pytest.param(
            {"schedules": [Cron("0 9 * * *", parameters={"day": "monday"})]},
            "'day': 'monday' is not of type 'integer'",
            id="a-wrong-parameter",
        ),
        pytest.param(
            {"parameters": {"day": 1}, "schedules": [Cron("0 9 * * *"), Cron("0  9 * * *")]},
            "schedule 1 (cron 0 9 * * * in UTC) repeats schedule 0: both would create a run at "
            "the same times",
            id="twice",
        ),
        pytest.param(
            {"skip_late_after": -1},
            "skip_late_after is -1; expected 0 or more seconds",
            id="negative-skip",
        ),
        pytest.param(
            {"skip_late_after": dt.timedelta(seconds=-5)},
            "skip_late_after is datetime.timedelta(days=-1, seconds=86395); expected 0 or more",
            id="negative-timedelta",
        ),
        pytest.param(
            {"skip_late_after": "10m"},
            "skip_late_after must be a timedelta or seconds (None: never skip a late run), got "
            "str '10m'",
            id="text-skip",
        ),
        pytest.param(
            {"concurrency_limit": 0},
            "concurrency_limit is 0; expected 1 to 2147483647 runs at a time",
            id="limit-0",
        ),
        pytest.param(
            {"concurrency_limit": 2.5},
            "concurrency_limit must be a whole number of runs (None: no limit), got float 2.5",
            id="limit-float",
        ),
        pytest.param(
            {"concurrency_limit": True},
            "concurrency_limit must be a whole number of runs (None: no limit), got bool True",
            id="limit-bool",
        ),
    ],
)
def test_bad_schedules_and_settings_are_refused_before_anything_is_saved(
    sqlite_url: str, etl: Any, options: dict[str, Any], message: str, vivace_home: Path
) -> None:
    with pytest.raises(DeploymentError) as caught:
        etl.deploy("nightly", **options)

    assert str(caught.value).startswith("deployment 'nightly': ")
    assert message in str(caught.value)
    assert read_deployment(sqlite_url, "nightly") is None
    assert not (vivace_home / "deployments").exists()  # nothing uploaded either


def test_a_deployment_name_may_not_end_in_schedules(database_url: str, etl: Any) -> None:
    # GET /api/deployments/team/schedules would list the schedules of "team".
    with pytest.raises(DeploymentError, match="reads as the path of a deployment's versions, runs"):
        etl.deploy("team/schedules")
