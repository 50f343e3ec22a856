"""/metrics: history gauges read at scrape time, writer health, the request latency histogram."""

from __future__ import annotations

import os
import socket
import time
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from prometheus_client.parser import text_string_to_metric_families

from vivace import flow, task
from vivace._ids import uuid7
from vivace.server.app import create_app
from vivace.server.metrics import route_template
from vivace.settings import reset_settings
from vivace.store import schema
from vivace.store.api_keys import create_api_key
from vivace.store.database import ensure_schema, get_engine, transaction

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def make_client(app: FastAPI) -> Any:
    with warnings.catch_warnings():
        # Starlette's TestClient warns once, on import, that it falls back to httpx.
        warnings.filterwarnings(
            "ignore", "Using `httpx` with `starlette.testclient`", category=UserWarning
        )
        from fastapi.testclient import TestClient
    return TestClient(app)


def scrape(client: Any, headers: dict[str, str] | None = None) -> Samples:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


@pytest.fixture
def client(database_url: str) -> Iterator[Any]:
    with make_client(create_app(database_url)) as client:
        yield client


def insert(url: str, table: str, rows: list[dict[str, Any]]) -> None:
    engine = get_engine(url)
    ensure_schema(engine)
    with transaction(engine) as conn:
        conn.execute(schema.metadata.tables[table].insert(), rows)


def flow_run(state: str, now: float) -> dict[str, Any]:
    return {
        "id": uuid7(),
        "flow_id": uuid7(),
        "flow_name": "etl",
        "name": f"run-{uuid.uuid4().hex[:6]}",
        "parent_flow_run_id": None,
        "parent_task_run_id": None,
        "state_type": state,
        "state_name": state.title(),
        "state_timestamp": now,
        "state_message": None,
        "state_seq": 1,
        "start_time": now - 100,
        "end_time": None,
        "run_count": 1,
        "tags": [],
        "parameters": {},
        "created": now - 100,
    }


def task_run(state: str, start: float | None, end: float | None) -> dict[str, Any]:
    return {
        "id": uuid7(),
        "flow_run_id": None,
        "parent_task_run_id": None,
        "task_key": "etl.load",
        "name": "load",
        "state_type": state,
        "state_name": state.title(),
        "state_timestamp": end or start or 0.0,
        "state_message": None,
        "state_seq": 2,
        "start_time": start,
        "end_time": end,
        "run_count": 1,
        "tags": [],
        "task_inputs": {},
        "created": start or 0.0,
    }


def writer_row(hostname: str, pid: int, updated: float, written: int) -> dict[str, Any]:
    return {
        "writer_id": uuid.uuid4(),
        "hostname": hostname,
        "pid": pid,
        "queue_depth": 7,
        "last_flush_seconds": 0.25,
        "records_written": written,
        "flushes": 3,
        "started": updated - 100,
        "updated": updated,
    }


def test_run_history_gauges(database_url: str, client: Any) -> None:
    # Margins of several seconds around each window edge: the scrape reads the real clock.
    now = time.time()
    insert(database_url, "flow_runs", [flow_run(s, now) for s in ["COMPLETED"] * 2 + ["FAILED"]])
    insert(
        database_url,
        "task_runs",
        [
            task_run("COMPLETED", now - 20, now - 10),  # finished in the last minute
            task_run("COMPLETED", now - 30, now - 15),  # finished in the last minute
            task_run("FAILED", now - 40, now - 20),  # finished in the last minute
            task_run("COMPLETED", now - 900, now - 300),  # in the window, finished earlier
            task_run("RUNNING", now - 50, None),
            task_run("PENDING", None, None),  # not started: outside every window
            task_run("COMPLETED", now - 7200, now - 5),  # started before the window
        ],
    )

    samples = scrape(client)

    assert value(samples, "vivace_database_up") == 1
    assert value(samples, "vivace_flow_runs", state="COMPLETED") == 2
    assert value(samples, "vivace_flow_runs", state="FAILED") == 1
    assert value(samples, "vivace_flow_runs", state="CRASHED") == 0
    assert value(samples, "vivace_task_runs", state="COMPLETED") == 3
    assert value(samples, "vivace_task_runs", state="FAILED") == 1
    assert value(samples, "vivace_task_runs", state="RUNNING") == 1
    assert value(samples, "vivace_task_runs", state="PENDING") == 0
    assert value(samples, "vivace_task_runs_finished_per_second") == pytest.approx(3 / 60)


def test_writer_health_of_live_writers_only(database_url: str, client: Any) -> None:
    now = time.time()  # VIVACE_WRITER_STATS_INTERVAL is 10 s: alive means updated in 30 s
    insert(
        database_url,
        "writer_stats",
        [
            writer_row("web-1", 11, now - 2, written=500),
            writer_row("web-2", 22, now - 25, written=40),
            writer_row("web-2", 22, now - 5, written=60),  # same host and pid, newer: wins
            writer_row("web-3", 33, now - 40, written=9),  # gone
        ],
    )

    samples = scrape(client)

    assert value(samples, "vivace_writers_alive") == 2
    assert value(samples, "vivace_writer_queue_depth", hostname="web-1", pid="11") == 7
    assert value(samples, "vivace_writer_last_flush_seconds", hostname="web-1", pid="11") == 0.25
    written = "vivace_writer_records_written_total"
    assert value(samples, written, hostname="web-1", pid="11") == 500
    assert value(samples, written, hostname="web-2", pid="22") == 60
    assert value(samples, "vivace_writer_flushes_total", hostname="web-2", pid="22") == 3
    assert not any(dict(labels).get("hostname") == "web-3" for _, labels in samples)


@task
def square(x: int) -> int:
    return x * x


@flow
def squares() -> int:
    return sum(square(i) for i in range(4))


def test_a_real_flow_shows_up_in_the_metrics(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIVACE_WRITER_STATS_INTERVAL", "0.05")
    reset_settings()
    assert squares() == 14
    mine = {"hostname": socket.gethostname()[:255], "pid": str(os.getpid())}

    with make_client(create_app(database_url)) as client:
        deadline = time.monotonic() + 10
        while True:  # the writer refreshes its row after the flush, on its next loop
            samples = scrape(client)
            written = samples.get(("vivace_writer_records_written_total", frozenset(mine.items())))
            if written:
                break
            assert time.monotonic() < deadline, "the writer's health never showed up"
            time.sleep(0.05)

    assert value(samples, "vivace_flow_runs", state="COMPLETED") == 1
    assert value(samples, "vivace_task_runs", state="COMPLETED") == 4
    assert value(samples, "vivace_task_runs_finished_per_second") == pytest.approx(4 / 60)
    assert value(samples, "vivace_writers_alive") == 1


def test_request_latency_by_route_template(database_url: str) -> None:
    things = APIRouter()

    @things.get("/things/{thing_id}")
    def thing(thing_id: int) -> dict[str, int]:
        return {"id": thing_id}

    app = create_app(database_url)
    app.include_router(things, prefix="/api")
    with make_client(app) as client:
        for thing_id in (1, 2, 3):
            assert client.get(f"/api/things/{thing_id}").status_code == 200
        assert client.get("/api/things/not-a-number").status_code == 422
        assert client.get("/api/health").status_code == 200
        assert client.get("/no/such/page/123").status_code == 404
        assert client.request("BREW", "/api/health").status_code == 405
        samples = scrape(client)

    count = "vivace_http_request_duration_seconds_count"
    labels = {"route": "/api/things/{thing_id}", "method": "GET"}
    assert value(samples, count, **labels, status="200") == 3
    assert value(samples, count, **labels, status="422") == 1
    assert value(samples, count, route="/api/health", method="GET", status="200") == 1
    assert value(samples, count, route="<unrouted>", method="GET", status="404") == 1
    assert value(samples, count, route="/api/health", method="OTHER", status="405") == 1
    routes = {dict(labels)["route"] for name, labels in samples if name == count}
    assert not any("/1" in route or "123" in route for route in routes)


def test_each_app_has_its_own_registry(database_url: str) -> None:
    with (
        make_client(create_app(database_url)) as first,
        make_client(create_app(database_url)) as second,
    ):
        first.get("/api/health")
        first_samples = scrape(first)
        second_samples = scrape(second)
    count = (
        "vivace_http_request_duration_seconds_count",
        frozenset({"route": "/api/health", "method": "GET", "status": "200"}.items()),
    )
    assert first_samples[count] == 1
    assert count not in second_samples


def test_metrics_need_a_read_key_once_keys_exist(database_url: str, client: Any) -> None:
    _, key = create_api_key(database_url, "prometheus", "read")

    assert client.get("/metrics").status_code == 401
    samples = scrape(client, headers={"Authorization": f"Bearer {key}"})
    assert value(samples, "vivace_database_up") == 1


def test_an_unreachable_database_scrapes_as_down(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "prometheus-scrape-key-0123456789"
    monkeypatch.setenv("VIVACE_API_KEYS", f"read:{key}")  # checked without the database
    reset_settings()
    app = create_app("postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    with make_client(app) as client:
        samples = scrape(client, headers={"Authorization": f"Bearer {key}"})

    assert value(samples, "vivace_database_up") == 0
    assert "vivace_flow_runs" not in names(samples)
    assert "vivace_writers_alive" not in names(samples)


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        pytest.param("/api/health", "/api/health", "/api/health", id="top-level"),
        pytest.param("/health", "/api/health", "/api/health", id="prefixed"),
        pytest.param(
            "/flow-runs/{flow_run_id}",
            "/api/flow-runs/0199",
            "/api/flow-runs/{flow_run_id}",
            id="prefixed-with-parameter",
        ),
        # A catch-all matches the whole path, prefix included: its own template, still bounded.
        pytest.param("/{rest:path}", "/api/a/b/c", "/{rest:path}", id="catch-all"),
    ],
)
def test_route_template_puts_the_router_prefix_back(
    template: str, path: str, expected: str
) -> None:
    from starlette.routing import Route

    route = Route(template, endpoint=lambda request: None)
    assert route_template(route, path) == expected
    assert route_template(None, path) == "<unrouted>"
