"""``vivace worker start`` and ``vivace work-queue ...`` through click's CliRunner."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner, Result

from tests.workers.helpers import deploy, run_record, start_run
from vivace.cli import cli
from vivace.cli.workers import WORKER_TYPES
from vivace.infrastructure.base import INFRASTRUCTURE_TYPES
from vivace.store.work_queues import read_work_queue


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def test_work_queue_commands(database_url: str) -> None:
    created = invoke("work-queue", "create", "etl", "--priority", "3", "--limit", "2")
    assert created.exit_code == 0, created.output
    assert "Created work queue 'etl': priority 3, at most 2 runs at a time." in created.output
    assert invoke("work-queue", "create", "etl").exit_code == 1

    assert invoke("work-queue", "pause", "etl").exit_code == 0
    assert read_work_queue(database_url, "etl").paused
    listed = invoke("work-queue", "ls")
    assert listed.exit_code == 0
    assert "etl" in listed.output and "yes" in listed.output
    assert invoke("work-queue", "resume", "etl").exit_code == 0
    assert not read_work_queue(database_url, "etl").paused

    assert invoke("work-queue", "set-concurrency", "etl", "none").exit_code == 0
    assert read_work_queue(database_url, "etl").concurrency_limit is None
    assert invoke("work-queue", "set-concurrency", "etl", "5").exit_code == 0
    assert read_work_queue(database_url, "etl").concurrency_limit == 5
    bad = invoke("work-queue", "set-concurrency", "etl", "many")
    assert bad.exit_code == 2 and "expected a whole number >= 0, or none" in bad.output
    missing = invoke("work-queue", "pause", "nope")
    assert missing.exit_code == 1 and "work queue 'nope' not found" in missing.output


def test_worker_start_needs_a_server(database_url: str) -> None:
    result = invoke("worker", "start", "--queue", "default")
    assert result.exit_code == 2
    assert "expected --api-url URL or VIVACE_API_URL" in result.output
    assert set(WORKER_TYPES) == set(INFRASTRUCTURE_TYPES)


def test_worker_start_run_once(live_server: str, database_url: str, project: Path) -> None:
    run = start_run(database_url, deploy(database_url, project, "pipeline"))

    result = invoke("worker", "start", "-q", "default", "--api-url", live_server, "--run-once")

    assert result.exit_code == 0, result.output
    assert "Ran 1 flow run(s)." in result.output
    assert run_record(database_url, run.id).state_type.value == "COMPLETED"
