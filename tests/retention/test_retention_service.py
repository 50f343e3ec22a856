"""The retention service (one loop at a time) and ``GET /api/services``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from tests.retention.history_rows import RunRows, count, days_ago, ids_in
from vivace.services import SERVICE_MODULES
from vivace.services import retention as retention_service
from vivace.services.base import Service
from vivace.services.runner import run_loop
from vivace.settings import get_settings, reset_settings
from vivace.store import schema

SERVICE = retention_service.SERVICE


@pytest.fixture
def retention_days(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("VIVACE_RETENTION_DAYS", "30")
    reset_settings()
    yield
    retention_service._backlog.clear()  # module state: no test leaves it to the next


def test_off_by_default(database_url: str) -> None:
    RunRows().flow_run(database_url, started=days_ago(400), ended=days_ago(400))

    assert SERVICE.enabled(get_settings()) is False
    assert SERVICE.loop(database_url) is None  # even called, it deletes nothing
    assert count(database_url, schema.flow_runs) == 1


def test_a_loop_deletes_what_is_expired_and_says_so(
    database_url: str, retention_days: None
) -> None:
    expired, kept = RunRows(), RunRows()
    expired.flow_run(database_url, started=days_ago(31), ended=days_ago(31))
    kept.flow_run(database_url, started=days_ago(29), ended=days_ago(29))
    kept.flow_run(database_url, "RUNNING", started=days_ago(300), ended=None)

    assert SERVICE.enabled(get_settings()) is True
    summary = SERVICE.loop(database_url)

    assert (
        summary == "deleted 1 flow_runs, 2 flow_run_states, 2 task_runs, 4 task_run_states, 3 logs"
    )
    assert ids_in(database_url, schema.flow_runs) == set(kept.flow_run_ids)
    assert SERVICE.loop(database_url) is None  # nothing more to do
    assert SERVICE.interval(get_settings()) == 3600.0


def test_a_backlog_brings_the_next_loop_closer(
    database_url: str, retention_days: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIVACE_RETENTION_BATCH_SIZE", "2")
    reset_settings()
    monkeypatch.setattr(retention_service, "LOOP_BUDGET_SECONDS", 0.0)  # one batch per loop
    rows = RunRows()
    for day in range(5):
        rows.flow_run(database_url, started=days_ago(40 + day), ended=days_ago(40 + day))

    summary = SERVICE.loop(database_url)

    assert summary is not None and summary.endswith("; 3 expired runs remain for the next loop")
    assert SERVICE.interval(get_settings()) == retention_service.BACKLOG_PAUSE_SECONDS
    SERVICE.loop(database_url)
    SERVICE.loop(database_url)
    assert count(database_url, schema.flow_runs) == 0
    assert SERVICE.interval(get_settings()) == 3600.0


# -- GET /api/services --------------------------------------------------------------------------


def test_services_api_lists_every_service_with_its_last_loop(
    database_url: str, api: Any, retention_days: None
) -> None:
    RunRows().flow_run(database_url, started=days_ago(40), ended=days_ago(40))
    before = dt.datetime.now(dt.UTC)
    run_loop(database_url, SERVICE)
    after = dt.datetime.now(dt.UTC)

    def broken(url: str) -> str | None:
        raise RuntimeError("the database said no")

    run_loop(database_url, Service("zombies", "", broken, lambda settings: 1.0))

    response = api.get("/api/services")

    assert response.status_code == 200
    services = {service["name"]: service for service in response.json()}
    assert list(services) == list(SERVICE_MODULES)
    retention = services["retention"]
    assert retention["enabled"] is True
    assert retention["interval_seconds"] == 3600.0
    assert retention["description"] == SERVICE.description
    assert retention["summary"].startswith("deleted 1 flow_runs")
    assert retention["error"] is None
    assert retention["seconds"] >= 0
    assert before <= dt.datetime.fromisoformat(retention["last_loop"]) <= after
    assert services["zombies"]["error"] == "RuntimeError: the database said no"
    assert services["zombies"]["summary"] is None
    never = services["notifications"]
    assert (never["last_loop"], never["seconds"], never["summary"], never["error"]) == (
        None,
        None,
        None,
        None,
    )


def test_services_api_says_retention_is_off_by_default(database_url: str, api: Any) -> None:
    (retention,) = [s for s in api.get("/api/services").json() if s["name"] == "retention"]

    assert retention["enabled"] is False
    assert retention["last_loop"] is None
