"""``vivace deployment schedule ls | pause | resume`` and ``inspect`` with ``--api-url``: the same
output through a live server as straight from the database, and the admin key that pausing
needs. Each command through the server runs with ``VIVACE_DATABASE_URL`` pointing at an empty
database, so only the server can have answered it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from vivace import Cron, Interval
from vivace.cli import cli
from vivace.settings import reset_settings
from vivace.store.api_keys import create_api_key
from vivace.store.deployments import read_deployment
from vivace.store.schedules import read_deployment_schedules, run_scheduler_loop


def vivace(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def scheduled(database_url: str, etl: Any) -> Any:
    record = etl.deploy(
        "nightly",
        parameters={"day": 1},
        schedules=[Cron("0 9 * * *", "Europe/Lisbon"), Interval(dt.timedelta(hours=6))],
        skip_late_after=600,
        concurrency_limit=2,
    )
    run_scheduler_loop(database_url, max_runs=3)
    return record


def only_the_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VIVACE_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    reset_settings()


def test_the_same_output_through_a_server(
    database_url: str,
    scheduled: Any,
    live_server: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    reads = [["schedule", "ls", "nightly"], ["inspect", "nightly"]]
    direct = [vivace("deployment", *command) for command in reads]
    only_the_server(monkeypatch, tmp_path)

    through = [vivace("deployment", *command, "--api-url", live_server) for command in reads]
    paused = vivace(
        "deployment", "schedule", "pause", "nightly", "--schedule", "1", "--api-url", live_server
    )
    states = [one.active for one in read_deployment_schedules(database_url, scheduled.id)]
    resumed = vivace("deployment", "schedule", "resume", "nightly", "--api-url", live_server)

    for before, after in zip(direct, through, strict=True):
        assert before.exit_code == after.exit_code == 0, after.output
        assert after.output == before.output
    assert "cron 0 9 * * * in Europe/Lisbon" in through[0].output
    assert "Skip late after" in through[1].output and "every 6h in UTC" in through[1].output
    assert paused.exit_code == 0, paused.output
    assert paused.output == (  # as test_cli_schedules.py has it straight from the database
        "Paused schedule 1 (every 6h in UTC) of deployment 'nightly'; removed 3 scheduled "
        "run(s) that had not started.\n"
    )
    assert states == [True, False]
    assert resumed.exit_code == 0, resumed.output
    assert resumed.output == (
        "Resumed 2 schedules of deployment 'nightly'; the scheduler creates their runs on its "
        "next loop.\n"
    )
    assert [one.active for one in read_deployment_schedules(database_url, scheduled.id)] == [
        True,
        True,
    ]


def test_pausing_through_a_server_needs_an_admin_key(
    database_url: str,
    scheduled: Any,
    live_server: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    _, read_key = create_api_key(database_url, "dashboard", "read")
    only_the_server(monkeypatch, tmp_path)
    monkeypatch.setenv("VIVACE_API_KEY", read_key)
    monkeypatch.setenv("VIVACE_API_URL", live_server)
    reset_settings()

    listed = vivace("deployment", "schedule", "ls", "nightly")
    refused = vivace("deployment", "schedule", "pause", "nightly")
    missing = vivace("deployment", "schedule", "ls", "weekly")

    assert listed.exit_code == 0, listed.output
    assert refused.exit_code == 2
    assert "refused the API key in VIVACE_API_KEY" in refused.output
    assert "expected a key with the role this needs" in refused.output
    record = read_deployment(database_url, "nightly")
    assert record is not None
    assert all(one.active for one in read_deployment_schedules(database_url, record.id))
    assert missing.exit_code == 1
    assert "Error: no deployment named 'weekly'" in missing.output
