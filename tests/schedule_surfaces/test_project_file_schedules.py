"""``vivace.yaml``'s ``schedules:``, ``skip_late_after:`` and ``concurrency_limit:``: what they
deploy (through ``vivace deploy``), what leaving them out keeps, and errors that name the file,
the entry, the schedule and the key."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from vivace import Cron, Interval, RRule
from vivace.cli import cli
from vivace.deployments.project_file import read_project_file
from vivace.exceptions import DeploymentError
from vivace.store.deployments import read_deployment
from vivace.store.schedules import read_deployment_schedules

SCHEDULED = textwrap.dedent(
    """
    deployments:
      - name: nightly
        entrypoint: flows/etl.py:etl
        parameters: {day: 1}
        schedules:
          - cron: "0 9 * * 1-5"
            timezone: Europe/Lisbon
          - interval: 15m
            anchor: 2026-01-01T00:05:00
            parameters: {label: quarter}
            active: false
          - rrule: "FREQ=WEEKLY;BYDAY=MO,WE"
          - interval: 90
        skip_late_after: 10m
        concurrency_limit: 3
    """
)
UNSCHEDULED = textwrap.dedent(
    """
    deployments:
      - name: nightly
        entrypoint: flows/etl.py:etl
        parameters: {day: 2}
    """
)


def vivace(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def test_the_file_reads_into_schedules(tmp_path: Path) -> None:
    path = tmp_path / "vivace.yaml"
    path.write_text(SCHEDULED)

    (entry,) = read_project_file(path).deployments

    assert entry.schedules is not None
    assert [item.to_schedule() for item in entry.schedules] == [
        Cron("0 9 * * 1-5", "Europe/Lisbon"),
        Interval(
            dt.timedelta(minutes=15),
            dt.datetime(2026, 1, 1, 0, 5),
            active=False,
            parameters={"label": "quarter"},
        ),
        RRule("FREQ=WEEKLY;BYDAY=MO,WE"),
        Interval(dt.timedelta(seconds=90)),
    ]
    assert (entry.skip_late_after, entry.concurrency_limit) == (600.0, 3)


def test_deploying_the_file_saves_them_and_a_file_without_schedules_keeps_them(
    database_url: str, project: Path
) -> None:
    (project / "vivace.yaml").write_text(SCHEDULED)
    first = vivace("deploy", "--all", "--file", str(project / "vivace.yaml"))
    record = read_deployment(database_url, "nightly")
    assert first.exit_code == 0, first.output
    assert record is not None
    before = read_deployment_schedules(database_url, record.id)

    (project / "vivace.yaml").write_text(UNSCHEDULED)
    second = vivace("deploy", "--all", "--file", str(project / "vivace.yaml"))
    kept = read_deployment_schedules(database_url, record.id)
    (project / "vivace.yaml").write_text(UNSCHEDULED + "    schedules: []\n")
    third = vivace("deploy", "--name", "nightly", "--file", str(project / "vivace.yaml"))

    assert "schedule 0:     cron 0 9 * * 1-5 in Europe/Lisbon\n" in first.output
    assert "schedule 1:     every 15m from 2026-01-01T00:05:00 in UTC (paused)\n" in first.output
    assert "skip late after: 10m" in first.output and "concurrency limit: 3" in first.output
    assert (record.skip_late_after, record.concurrency_limit) == (600.0, 3)
    assert [one.active for one in before] == [True, False, True, True]
    assert before[1].parameters == {"label": "quarter"}
    assert second.exit_code == 0, second.output
    assert "version 2" in second.output and "schedule 0:" in second.output
    assert kept == before
    latest = read_deployment(database_url, "nightly")
    assert latest is not None and latest.skip_late_after is None  # the file no longer says
    assert third.exit_code == 0, third.output
    assert "schedule 0:" not in third.output
    assert read_deployment_schedules(database_url, record.id) == []


def test_command_line_schedules_replace_the_files(database_url: str, project: Path) -> None:
    (project / "vivace.yaml").write_text(SCHEDULED)

    result = vivace(
        "deploy", "--name", "nightly", "--file", str(project / "vivace.yaml"),
        "--cron", "30 6 * * *", "--concurrency-limit", "5",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    record = read_deployment(database_url, "nightly")
    assert record is not None and record.concurrency_limit == 5
    assert record.skip_late_after == 600.0  # the file's, not overridden
    (only,) = read_deployment_schedules(database_url, record.id)
    assert only.schedule == Cron("30 6 * * *")


ENTRY = "deployments:\n  - name: nightly\n    entrypoint: flows/etl.py:etl\n"


@pytest.mark.parametrize(
    ("tail", "message"),
    [
        pytest.param(
            "    schedules:\n      - {cron: '0 9 * * *', timzone: UTC}\n",
            "deployment 'nightly' (entry 1): schedule 0: key 'timzone' is unknown; expected one "
            "of cron, interval or rrule, and optionally timezone, anchor (with interval), day_or "
            "(with cron), active, parameters",
            id="unknown-key",
        ),
        pytest.param(
            "    schedules:\n      - {cron: '0 9 * * *'}\n      - {cron: '0 9 * *', rrule: x}\n",
            "deployment 'nightly' (entry 1): schedule 1: expected exactly one of cron, interval "
            "or rrule; got cron and rrule",
            id="two-kinds",
        ),
        pytest.param(
            "    schedules:\n      - {timezone: UTC}\n",
            "schedule 0: expected exactly one of cron, interval or rrule; got none of them",
            id="no-kind",
        ),
        pytest.param(
            "    schedules:\n      - {cron: '0 9 * *'}\n",
            "deployment 'nightly' (entry 1): schedule 0: cron expression '0 9 * *' is not valid",
            id="bad-cron",
        ),
        pytest.param(
            "    schedules:\n      - {cron: '0 9 * * *', timezone: Europe/Lisbn}\n",
            "schedule 0: time zone 'Europe/Lisbn' is not known; expected an IANA name",
            id="bad-zone",
        ),
        pytest.param(
            "    schedules:\n      - {interval: soon}\n",
            "schedule 0: interval 'soon' is not valid; expected a positive duration",
            id="bad-interval",
        ),
        pytest.param(
            "    schedules:\n      - {interval: 0}\n",
            "schedule 0: interval 0.0 is not valid",
            id="zero-interval",
        ),
        pytest.param(
            "    schedules:\n      - {cron: '0 9 * * *', anchor: 2026-01-01T00:00:00}\n",
            "schedule 0: anchor is for an interval schedule only",
            id="anchor-on-cron",
        ),
        pytest.param(
            "    schedules:\n      - {cron: '0 9 * * *', active: maybe}\n",
            "schedule 0: key 'active': Input should be a valid boolean",
            id="bad-active",
        ),
        pytest.param(
            "    schedules: {cron: '0 9 * * *'}\n",
            "deployment 'nightly' (entry 1): key 'schedules': Input should be a valid list",
            id="not-a-list",
        ),
        pytest.param(
            "    skip_late_after: soon\n",
            "deployment 'nightly' (entry 1): key 'skip_late_after': duration 'soon' is not valid",
            id="bad-skip",
        ),
        pytest.param(
            "    skip_late_after: -5\n",
            "key 'skip_late_after': -5.0 seconds is negative; expected 0 or more",
            id="negative-skip",
        ),
        pytest.param(
            "    concurrency_limit: 0\n",
            "deployment 'nightly' (entry 1): key 'concurrency_limit': Input should be greater "
            "than or equal to 1",
            id="limit-0",
        ),
        pytest.param(
            "    concurrency_limit: '2'\n",
            "key 'concurrency_limit': Input should be a valid integer",
            id="limit-text",
        ),
        pytest.param(
            "    concurency_limit: 2\n",
            "key 'concurency_limit' is unknown; expected name, entrypoint, work_queue, "
            "parameters, tags, description, storage, infrastructure, schedules, skip_late_after, "
            "concurrency_limit",
            id="typo",
        ),
    ],
)
def test_a_bad_schedule_in_the_file_is_named_by_file_entry_and_key(
    tmp_path: Path, tail: str, message: str
) -> None:
    path = tmp_path / "vivace.yaml"
    path.write_text(ENTRY + tail)

    with pytest.raises(DeploymentError) as caught:
        read_project_file(path)

    assert str(caught.value).startswith(f"{str(path)!r}: ")
    assert message in str(caught.value)


def test_a_schedule_whose_runs_lack_a_parameter_deploys_nothing(
    database_url: str, project: Path
) -> None:
    (project / "vivace.yaml").write_text(ENTRY + "    schedules:\n      - cron: '0 9 * * *'\n")

    result = vivace("deploy", "--all", "--file", str(project / "vivace.yaml"))

    assert result.exit_code == 1
    assert (
        "Error: deployment 'nightly': schedule 0 (cron 0 9 * * * in UTC): its runs' parameters"
        in result.output
    )
    assert "'day' is a required property" in result.output
    assert read_deployment(database_url, "nightly") is None
