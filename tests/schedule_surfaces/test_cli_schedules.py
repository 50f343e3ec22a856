"""``vivace deploy --cron/--interval/--rrule ...`` and ``vivace deployment schedule ls | pause |
resume`` straight on the database (SQLite and PostgreSQL), through click's CliRunner."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from vivace import Cron, Interval, RRule
from vivace.cli import cli
from vivace.store.deployments import read_deployment
from vivace.store.queries import read_flow_runs
from vivace.store.schedules import read_deployment_schedules, run_scheduler_loop


def vivace(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def schedules_of(url: str, name: str = "nightly") -> list[Any]:
    record = read_deployment(url, name)
    assert record is not None
    return read_deployment_schedules(url, record.id)


def waiting_runs(url: str, name: str = "nightly") -> int:
    record = read_deployment(url, name)
    assert record is not None
    return len(read_flow_runs(url, deployment_id=record.id, limit=1000)[0])


# -- vivace deploy ---------------------------------------------------------------------------------


def test_deploy_with_schedules_then_redeploy_keeps_or_removes_them(
    database_url: str, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)

    first = vivace(
        "deploy", "flows/etl.py:etl", "--name", "nightly", "--param", "day=1",
        "--rrule", "FREQ=WEEKLY;BYDAY=MO", "--interval", "1h30m", "--cron", "0 9 * * 1-5",
        "--cron", "0 18 * * *", "--anchor", "2026-01-01T00:10", "--timezone", "Europe/Lisbon",
        "--skip-late-after", "1h", "--concurrency-limit", "2",
    )  # fmt: skip
    created = schedules_of(database_url)
    again = vivace("deploy", "flows/etl.py:etl", "--name", "nightly", "--param", "day=2")
    kept = schedules_of(database_url)
    removed = vivace(
        "deploy", "flows/etl.py:etl", "--name", "nightly", "--param", "day=2", "--no-schedules"
    )

    assert first.exit_code == 0, first.output
    lisbon = "Europe/Lisbon"
    assert [one.schedule for one in created] == [  # crons, then intervals, then rrules
        Cron("0 9 * * 1-5", lisbon),
        Cron("0 18 * * *", lisbon),
        Interval(dt.timedelta(hours=1, minutes=30), dt.datetime(2026, 1, 1, 0, 10), lisbon),
        RRule("FREQ=WEEKLY;BYDAY=MO", lisbon),
    ]
    assert "  schedule 0:     cron 0 9 * * 1-5 in Europe/Lisbon\n" in first.output
    assert "  skip late after: 1h\n  concurrency limit: 2 run(s) at a time\n" in first.output
    assert again.exit_code == 0, again.output
    assert kept == created
    assert removed.exit_code == 0, removed.output
    assert "schedule 0:" not in removed.output
    assert schedules_of(database_url) == []


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        pytest.param(
            ["--cron", "0 9 * *"], 2, "Error: --cron '0 9 * *': cron expression '0 9 * *' is not "
            "valid", id="bad-cron"
        ),
        pytest.param(
            ["--interval", "0m"], 2, "Error: --interval '0m': interval '0m' is not valid",
            id="zero-interval",
        ),
        pytest.param(
            ["--rrule", "FREQ=SOMETIMES"], 2, "Error: --rrule 'FREQ=SOMETIMES': rrule", id="rrule"
        ),
        pytest.param(
            ["--cron", "0 9 * * *", "--timezone", "Mars/Olympus"], 2,
            "Error: --cron '0 9 * * *': time zone 'Mars/Olympus' is not known", id="zone",
        ),
        pytest.param(
            ["--cron", "0 9 * * *", "--no-schedules"], 2,
            "Error: give --no-schedules or schedules (--cron/--interval/--rrule), not both",
            id="both",
        ),
        pytest.param(
            ["--timezone", "UTC"], 2, "Error: --timezone is the time zone of the schedules given",
            id="zone-alone",
        ),
        pytest.param(
            ["--cron", "0 9 * * *", "--anchor", "2026-01-01"], 2,
            "Error: --anchor is when the --interval schedules count from; give --interval",
            id="anchor-without-interval",
        ),
        pytest.param(
            ["--interval", "1h", "--anchor", "new year"], 2,
            "Error: --anchor 'new year' is not an ISO time", id="bad-anchor",
        ),
        pytest.param(
            ["--skip-late-after", "soon"], 2,
            "Error: --skip-late-after: duration 'soon' is not valid", id="bad-skip",
        ),
        pytest.param(
            ["--concurrency-limit", "0"], 2,
            "Error: --concurrency-limit is 0; expected 1 to 2147483647 runs at a time",
            id="limit-0",
        ),
        pytest.param(
            ["--cron", "0 9 * * *"], 1,
            "Error: deployment 'nightly': schedule 0 (cron 0 9 * * * in UTC): its runs' "
            "parameters", id="runs-lack-day",
        ),
    ],
)  # fmt: skip
def test_bad_schedule_options_deploy_nothing(
    sqlite_url: str,
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    code: int,
    message: str,
) -> None:
    monkeypatch.chdir(project)

    result = vivace("deploy", "flows/etl.py:etl", "--name", "nightly", *args)

    assert result.exit_code == code, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert read_deployment(sqlite_url, "nightly") is None


# -- vivace deployment schedule ls | pause | resume --------------------------------------------


@pytest.fixture
def scheduled(database_url: str, etl: Any) -> list[Any]:
    """``nightly`` with two schedules, each with three runs made by a scheduler loop."""
    etl.deploy(
        "nightly",
        parameters={"day": 1},
        schedules=[
            Cron("0 9 * * *", "Europe/Lisbon"),
            Interval(dt.timedelta(hours=6), parameters={"label": "six"}),
        ],
    )
    assert run_scheduler_loop(database_url, max_runs=3) == 6
    return schedules_of(database_url)


def table_rows(output: str) -> list[list[str]]:
    """The cells of each row of a rich table (its box-drawing borders stripped)."""
    rows = []
    for line in output.splitlines():
        if line.startswith("│"):
            rows.append([cell.strip() for cell in line.strip("│").split("│")])
    return rows


def test_schedule_ls_lists_each_with_its_next_times_in_its_zone(
    database_url: str, scheduled: list[Any]
) -> None:
    result = vivace("deployment", "schedule", "ls", "nightly")

    assert result.exit_code == 0, result.output
    rows = table_rows(result.output)
    assert [row[:5] for row in rows] == [
        ["0", str(scheduled[0].id), "cron 0 9 * * * in Europe/Lisbon", "", "active"],
        ["1", str(scheduled[1].id), "every 6h in UTC", '{"label": "six"}', "active"],
    ]
    nine = re.findall(r"\d{4}-\d\d-\d\d (\d\d:\d\d) (\w+)", rows[0][5])
    assert len(nine) == 3 and all(hour == "09:00" for hour, _ in nine)
    assert all(zone in ("WET", "WEST") for _, zone in nine)
    six = re.findall(r"\d{4}-\d\d-\d\d (\d\d:\d\d) UTC", rows[1][5])
    assert len(six) == 3 and set(six) <= {"00:00", "06:00", "12:00", "18:00"}


def test_pause_one_schedule_removes_its_waiting_runs_and_resume_brings_them_back(
    database_url: str, scheduled: list[Any]
) -> None:
    paused = vivace("deployment", "schedule", "pause", "nightly", "--schedule", "1")
    listed = vivace("deployment", "schedule", "ls", "nightly")
    left = waiting_runs(database_url)
    again = vivace("deployment", "schedule", "pause", "nightly", "--schedule", str(scheduled[1].id))
    resumed = vivace("deployment", "schedule", "resume", "nightly", "--schedule", "1")
    refilled = run_scheduler_loop(database_url, max_runs=3)

    assert paused.exit_code == 0, paused.output
    assert paused.output == (
        "Paused schedule 1 (every 6h in UTC) of deployment 'nightly'; removed 3 scheduled "
        "run(s) that had not started.\n"
    )
    assert [row[4:] for row in table_rows(listed.output)][1] == ["paused", "—"]
    assert left == 3
    assert again.exit_code == 0 and "removed 0 scheduled run(s)" in again.output  # idempotent
    assert resumed.exit_code == 0, resumed.output
    assert resumed.output == (
        "Resumed schedule 1 (every 6h in UTC) of deployment 'nightly'; the scheduler creates "
        "their runs on its next loop.\n"
    )
    assert refilled == 3 and waiting_runs(database_url) == 6


def test_pause_and_resume_every_schedule_of_a_deployment(
    database_url: str, scheduled: list[Any]
) -> None:
    paused = vivace("deployment", "schedule", "pause", "nightly")
    states = [one.active for one in schedules_of(database_url)]
    resumed = vivace("deployment", "schedule", "resume", "nightly")

    assert paused.exit_code == 0, paused.output
    assert "Paused 2 schedules of deployment 'nightly'; removed 6 scheduled run(s)" in (
        paused.output
    )
    assert states == [False, False] and waiting_runs(database_url) == 0
    assert resumed.exit_code == 0, resumed.output
    assert [one.active for one in schedules_of(database_url)] == [True, True]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        pytest.param(
            ["pause", "nightly", "--schedule", "7"], 2,
            "Error: --schedule '7' is neither the id nor the position of a schedule of "
            "deployment 'nightly'; its positions are 0, 1", id="no-such-position",
        ),
        pytest.param(
            ["resume", "nightly", "--schedule", "0190f6f1-7c2a-7b4e-9a51-4c8f1e2d3a4b"], 2,
            "is neither the id nor the position", id="no-such-id",
        ),
        pytest.param(
            ["ls", "weekly"], 1,
            "Error: no deployment named 'weekly'; `vivace deployment ls` lists them",
            id="no-deployment",
        ),
        pytest.param(
            ["pause", "bare"], 1, "Error: deployment 'bare' has no schedules", id="none",
        ),
    ],
)  # fmt: skip
def test_schedule_command_errors(
    database_url: str, scheduled: list[Any], etl: Any, args: list[str], code: int, message: str
) -> None:
    etl.deploy("bare")

    result = vivace("deployment", "schedule", *args)

    assert result.exit_code == code, result.output
    assert message in result.output
    assert [one.active for one in schedules_of(database_url)] == [True, True]


def test_ls_of_a_deployment_without_schedules_says_how_to_add_one(
    database_url: str, etl: Any
) -> None:
    etl.deploy("bare")

    result = vivace("deployment", "schedule", "ls", "bare")

    assert result.exit_code == 0, result.output
    assert "Deployment 'bare' has no schedules; `vivace deploy ... --cron EXPR`" in result.output


def test_inspect_shows_the_schedules_and_run_settings(database_url: str, etl: Any) -> None:
    etl.deploy(
        "nightly",
        parameters={"day": 1},
        schedules=[RRule("FREQ=DAILY;BYHOUR=6", "Asia/Tokyo", active=False)],
        skip_late_after=5400,
        concurrency_limit=1,
    )
    etl.deploy("bare")

    shown = vivace("deployment", "inspect", "nightly")
    bare = vivace("deployment", "inspect", "bare")

    assert shown.exit_code == 0, shown.output
    cells = table_rows(shown.output)
    assert ["Skip late after", "1h30m"] in cells
    assert ["Concurrency limit", "1 run(s) at a time"] in cells
    assert ["0", str(schedules_of(database_url)[0].id), "rrule FREQ=DAILY;BYHOUR=6 in Asia/Tokyo",
            "", "paused", "—"] in cells  # fmt: skip
    assert bare.exit_code == 0 and "No schedules." in bare.output
    assert ["Skip late after", ""] in table_rows(bare.output)
