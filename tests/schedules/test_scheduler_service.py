"""The scheduler service end to end: its loop creates a deployment's scheduled run that a worker
then claims, its settings are the ``VIVACE_SCHEDULER_*`` variables, and the runner records its
loops."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from tests.schedules.helpers import deploy, scheduled_runs
from vivace.engine.states import StateType
from vivace.schedules import Interval
from vivace.services import load_services
from vivace.services.runner import run_loop
from vivace.services.scheduler import SERVICE
from vivace.settings import get_settings, reset_settings
from vivace.store.schedules import read_deployment_schedules
from vivace.store.service_state import read_service_data
from vivace.store.work_queues import claim_flow_runs, register_worker


def test_the_services_loop_creates_a_run_that_a_worker_claims(database_url: str) -> None:
    record = deploy(database_url, Interval(dt.timedelta(minutes=1)))
    assert SERVICE.loop(database_url) == "created 100 scheduled runs"
    runs = scheduled_runs(database_url)
    assert len(runs) == 100
    first = runs[0]
    assert 0 < first["expected_start_time"].timestamp() - time.time() <= 60
    worker = register_worker(database_url, "w", "process", ["nightly-queue"])
    (claimed,) = claim_flow_runs(
        database_url, worker_id=worker.id, queues=["nightly-queue"], limit=1, prefetch_seconds=90
    )
    assert claimed.id == first["id"]
    assert claimed.state_type == StateType.PENDING
    assert claimed.deployment_id == record.id
    # Nothing is due before the claimed run's time comes: the next loop creates nothing.
    assert SERVICE.loop(database_url) is None
    assert len(scheduled_runs(database_url)) == 100


def test_the_service_reads_its_settings_from_the_environment(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIVACE_SCHEDULER_LOOP_SECONDS", "7.5")
    monkeypatch.setenv("VIVACE_SCHEDULER_MAX_RUNS", "3")
    monkeypatch.setenv("VIVACE_SCHEDULER_MAX_SCHEDULED_TIME", "PT2H")
    reset_settings()
    assert SERVICE.interval(get_settings()) == 7.5
    assert [service.name for service in load_services(("scheduler",))] == ["scheduler"]
    record = deploy(
        database_url, Interval(dt.timedelta(hours=1)), Interval(dt.timedelta(minutes=1))
    )
    hourly, every_minute = read_deployment_schedules(database_url, record.id)
    # Two hours ahead at most (two hourly runs), three runs ahead at most (of 120 minutes).
    assert run_loop(database_url, SERVICE) is False
    assert len(scheduled_runs(database_url, hourly.id)) == 2
    assert len(scheduled_runs(database_url, every_minute.id)) == 3
    loop = read_service_data(database_url, "scheduler")["loop"]
    assert loop["error"] is None and loop["summary"].startswith("created ")


def test_a_loop_that_leaves_schedules_due_brings_the_next_loop_forward(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vivace.services import scheduler
    from vivace.store import schedules as store_schedules

    monkeypatch.setattr(scheduler, "LOOP_BUDGET_SECONDS", 0.0)
    monkeypatch.setattr(store_schedules, "BATCH_SIZE", 1)
    monkeypatch.setattr(store_schedules, "RUNS_PER_TRANSACTION", 1)
    deploy(database_url, Interval(dt.timedelta(hours=1)), Interval(dt.timedelta(minutes=1)))
    settings = get_settings()

    assert SERVICE.loop(database_url) == "created 100 scheduled runs; more are due"
    assert SERVICE.interval(settings) == scheduler.BACKLOG_PAUSE_SECONDS
    assert SERVICE.loop(database_url) == "created 100 scheduled runs"
    assert SERVICE.interval(settings) == settings.scheduler_loop_seconds
    assert len(scheduled_runs(database_url)) == 200
