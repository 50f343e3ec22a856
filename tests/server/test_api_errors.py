"""Health, error responses and the OpenAPI document of the history API.

Every bad request is a 4xx JSON ``{"detail": ...}``; an unexpected exception a 500 that tells
nothing but "internal error" while the traceback goes to the log.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import socket
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import APIRouter, FastAPI

from vivace import __version__
from vivace.exceptions import ConfigurationError
from vivace.server import errors
from vivace.server.api import models
from vivace.server.app import create_app
from vivace.settings import reset_settings
from vivace.store import records


def client(app: FastAPI, **options: Any) -> Any:
    with warnings.catch_warnings():  # as in the `api` fixture: Starlette prefers httpx2
        warnings.filterwarnings(
            "ignore", "Using `httpx` with `starlette.testclient`", category=UserWarning
        )
        from fastapi.testclient import TestClient

    return TestClient(app, **options)


def crafted_cursor(kind: str, value: Any) -> str:
    text = json.dumps([kind, value, uuid.UUID(int=1).hex])
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.fixture
def failing_app(database_url: str) -> Iterator[Any]:
    """The real app plus routes that raise, to see what the handlers make of each error."""
    app = create_app(database_url)
    extra = APIRouter()

    @extra.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals: password=hunter2")

    @extra.get("/bad-value")
    def bad_value() -> None:
        raise ConfigurationError("widget 'x' is not a widget; expected a gadget")

    @extra.get("/database-refuses")
    def database_refuses() -> None:
        raise sa.exc.DataError("SELECT 1", {}, ValueError("integer out of range"))

    app.include_router(extra, prefix="/test")
    with client(app) as test_client:
        yield test_client


# -- health -------------------------------------------------------------------------------------


def test_health(api: Any) -> None:
    response = api.get("/api/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": __version__, "database": "ok"}


def test_health_is_503_when_the_database_cannot_be_reached(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/nowhere"

    with client(create_app(url)) as test_client, caplog.at_level(logging.WARNING):
        response = test_client.get("/api/health")

    assert response.status_code == 503
    assert response.json() == {"detail": errors.UNAVAILABLE}
    assert str(port) not in response.text  # the reason is logged, not shown to anyone
    assert f"127.0.0.1:{port}" in caplog.text


def test_liveness_answers_without_a_key_while_the_database_is_unreachable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("VIVACE_API_KEYS", "admin:" + "k" * 32)
    reset_settings()
    app = create_app(f"postgresql+psycopg://postgres@127.0.0.1:{port}/nowhere")

    with client(app) as test_client:
        live = test_client.get("/api/health/live")
        ready = test_client.get("/api/health")

    assert (live.status_code, live.json()) == (200, {"status": "ok", "version": __version__})
    assert ready.status_code == 503


# -- error handlers -----------------------------------------------------------------------------


def test_an_unexpected_exception_is_a_500_that_leaks_nothing(
    failing_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="vivace.server.errors"):
        response = failing_app.get("/test/boom")

    assert (response.status_code, response.json()) == (500, {"detail": "internal error"})
    assert "hunter2" not in response.text
    (record,) = [r for r in caplog.records if r.name == "vivace.server.errors"]
    assert "GET /test/boom" in record.getMessage()
    assert record.exc_info is not None and "hunter2" in str(record.exc_info[1])


def test_a_failure_outside_the_error_middleware_is_still_a_json_500(database_url: str) -> None:
    app = create_app(database_url)

    @app.middleware("http")
    async def broken(request: Any, call_next: Any) -> Any:
        raise RuntimeError("middleware bug")

    # Starlette re-raises after answering (for the server to log); the test client must not.
    with client(app, raise_server_exceptions=False) as test_client:
        response = test_client.get("/api/health")

    assert (response.status_code, response.json()) == (500, {"detail": "internal error"})


def test_a_configuration_error_is_a_422_with_its_message(failing_app: Any) -> None:
    response = failing_app.get("/test/bad-value")

    assert (response.status_code, response.json()) == (
        422,
        {"detail": "widget 'x' is not a widget; expected a gadget"},
    )


def test_a_value_the_database_refuses_is_a_422(failing_app: Any) -> None:
    response = failing_app.get("/test/database-refuses")

    assert response.status_code == 422
    assert "cannot compare" in response.json()["detail"]


def test_a_nul_in_a_crafted_cursor_is_a_422_on_postgres(postgres_url: str) -> None:
    # PostgreSQL text cannot hold NUL; SQLite compares it like any character.
    cursor = crafted_cursor("flow_runs:name_asc", "a\x00b")

    with client(create_app(postgres_url)) as test_client:
        response = test_client.get("/api/flow-runs", params={"sort": "name_asc", "cursor": cursor})

    assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(1e308, id="seconds-past-year-9999"),
        pytest.param(-1e308, id="seconds-before-year-1"),
        pytest.param(10**30, id="huge-integer"),
        pytest.param("0001-01-01T00:00:00+05:00", id="before-year-1-in-utc"),
        pytest.param("2026-01-01T00:00:00", id="no-timezone"),
        pytest.param([1], id="not-a-time"),
    ],
)
def test_a_crafted_cursor_with_an_impossible_time_is_a_422(api: Any, value: Any) -> None:
    response = api.get(
        "/api/flow-runs", params={"cursor": crafted_cursor("flow_runs:start_time_desc", value)}
    )

    assert response.status_code == 422, response.text
    assert "is not a cursor of this list" in response.json()["detail"]


def test_several_bad_parameters_are_named_in_one_message(api: Any) -> None:
    response = api.get("/api/flow-runs", params={"limit": 0, "sort": "x", "state": ["A", "FAILED"]})

    detail = response.json()["detail"]
    assert response.status_code == 422
    assert "query parameter 'limit' = '0'" in detail
    assert "query parameter 'sort' = 'x'" in detail
    assert "query parameter 'state' (item 1) = 'A'" in detail
    assert detail.count(";") == 2


def test_an_unknown_path_is_a_json_404(api: Any) -> None:
    response = api.get("/api/no-such-thing")

    assert (response.status_code, response.json()) == (404, {"detail": "Not Found"})


@pytest.mark.parametrize(
    ("error", "message"),
    [
        pytest.param(
            {"type": "missing", "loc": ("query", "limit"), "msg": "Field required"},
            "query parameter 'limit' is required",
            id="missing",
        ),
        pytest.param(
            {"type": "uuid_parsing", "loc": ("path", "task_run_id"), "msg": "x", "input": "7"},
            "task run id '7' is not a valid id; expected a UUID such as",
            id="uuid",
        ),
        pytest.param(
            {"type": "int_parsing", "loc": ("query", "limit"), "msg": "no", "input": "a" * 200},
            "query parameter 'limit' = 'aaaaa",
            id="long-input-cut",
        ),
    ],
)
def test_validation_messages(error: dict[str, Any], message: str) -> None:
    described = errors.describe_validation_errors([error])

    assert described.startswith(message)
    assert len(described) < 200


# -- the OpenAPI document -----------------------------------------------------------------------

API_PATHS = {
    "/api/health",
    "/api/flows",
    "/api/flow-runs",
    "/api/flow-runs/counts",
    "/api/flow-runs/{flow_run_id}",
    "/api/flow-runs/{flow_run_id}/states",
    "/api/flow-runs/{flow_run_id}/subflow-runs",
    "/api/flow-runs/{flow_run_id}/task-runs",
    "/api/flow-runs/{flow_run_id}/graph",
    "/api/flow-runs/{flow_run_id}/logs",
    "/api/flow-runs/{flow_run_id}/logs/download",
    "/api/task-runs/{task_run_id}",
    "/api/task-runs/{task_run_id}/states",
    "/api/task-runs/{task_run_id}/logs",
}


def test_the_openapi_document_describes_every_route_and_its_errors(api: Any) -> None:
    document = api.get("/api/openapi.json").json()
    paths = {path: spec for path, spec in document["paths"].items() if path in API_PATHS}

    assert set(paths) == API_PATHS
    for path, spec in paths.items():
        responses = spec["get"]["responses"]
        assert "200" in responses, path
        for code in ("404", "422"):
            if code in responses:
                schema = responses[code]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorMessage"}, (path, code)
    list_parameters = {p["name"]: p for p in paths["/api/flow-runs"]["get"]["parameters"]}
    assert list_parameters["limit"]["schema"]["maximum"] == 1000
    state_items = list_parameters["state"]["schema"]["anyOf"][0]["items"]
    assert document["components"]["schemas"][state_items["$ref"].rsplit("/", 1)[1]]["enum"][0] == (
        "SCHEDULED"
    )


@pytest.mark.parametrize(
    ("record", "model"),
    [
        pytest.param(records.FlowRecord, models.Flow, id="flow"),
        pytest.param(records.FlowRunRecord, models.FlowRun, id="flow-run"),
        pytest.param(records.TaskRunRecord, models.TaskRun, id="task-run"),
        pytest.param(records.StateRecord, models.State, id="state"),
        pytest.param(records.LogRecord, models.Log, id="log"),
    ],
)
def test_every_column_a_record_has_is_in_the_api(record: type, model: type[Any]) -> None:
    missing = {field.name for field in dataclasses.fields(record)} - set(model.model_fields)

    assert not missing, f"add {sorted(missing)} to {model.__name__} in vivace/server/api/models.py"
