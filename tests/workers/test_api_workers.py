"""``/api/workers``: the worker-facing endpoints, over a real server (``live_server``).

Claims go through the store's atomic claim; these tests check what the API adds: which runs a
worker of some queues and type is handed, what it is told to start them on, and the errors.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.workers.helpers import deploy, run_record, start_run
from vivace.settings import reset_settings
from vivace.store.work_queues import update_work_queue


def call(
    server: str, method: str, path: str, body: Any = None, key: str | None = None
) -> tuple[int, Any]:
    """``(status, JSON body or None)`` of one request to ``server``'s API."""
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{server}/api{path}", data=data, headers=headers, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            content = response.read()
            return response.status, json.loads(content) if content else None
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def register(server: str, queues: list[str], worker_type: str = "process") -> str:
    status, body = call(
        server, "POST", "/workers", {"name": "w", "type": worker_type, "queues": queues}
    )
    assert status == 201, body
    return str(body["id"])


def claim(server: str, worker: str, limit: int = 4, prefetch: float = 10) -> list[str]:
    status, body = call(
        server, "POST", f"/workers/{worker}/claim", {"limit": limit, "prefetch_seconds": prefetch}
    )
    assert status == 200, body
    return [run["id"] for run in body]


def claimed_run(server: str, url: str, project: Path) -> tuple[Any, str]:
    """A new run of a ``pipeline`` deployment and the id of a new worker of the default queue
    that claimed it."""
    run = start_run(url, deploy(url, project, "pipeline"))
    worker = register(server, ["default"])
    claim(server, worker)
    return run, worker


def test_a_claimed_run_comes_with_the_infrastructure_of_its_deployment_version(
    live_server: str, database_url: str, project: Path
) -> None:
    first = {"type": "process", "env": {"STAGE": "one"}}
    deployment = deploy(database_url, project, "pipeline", infrastructure=first)
    run = start_run(database_url, deployment)
    deploy(database_url, project, "pipeline", infrastructure={"type": "process"})  # version 2
    worker = register(live_server, ["default"])

    status, body = call(live_server, "POST", f"/workers/{worker}/claim", {"limit": 4})

    assert status == 200
    (claimed,) = body
    assert claimed["id"] == str(run.id) and claimed["name"] == run.name
    assert claimed["deployment_version"] == 1
    assert claimed["infrastructure"]["env"] == {"STAGE": "one"}
    assert claimed["expected_start_time"] is not None
    assert run_record(database_url, run.id).state_name == "Claimed"
    assert claim(live_server, worker) == []  # claimed once only


def test_claims_respect_queues_types_prefetch_pauses_and_concurrency_limits(
    live_server: str, database_url: str, project: Path
) -> None:
    from vivace.store.deployments import create_deployment_run

    deployment = deploy(database_url, project, "pipeline", queue="q")
    later, _ = create_deployment_run(
        database_url, deployment, parameters={}, expected_start_time=time.time() + 60
    )
    assert claim(live_server, register(live_server, ["other"])) == []
    assert claim(live_server, register(live_server, ["q"], worker_type="docker")) == []
    worker = register(live_server, ["q"])
    assert claim(live_server, worker, prefetch=10) == []
    assert claim(live_server, worker, prefetch=120) == [str(later.id)]

    update_work_queue(database_url, "q", paused=True, concurrency_limit=1)
    runs = [start_run(database_url, deployment) for _ in range(3)]
    assert claim(live_server, worker) == []  # paused
    update_work_queue(database_url, "q", paused=False)
    assert claim(live_server, worker) == []  # `later` holds the one slot
    update_work_queue(database_url, "q", concurrency_limit=2)
    assert claim(live_server, worker) == [str(runs[0].id)]
    assert claim(live_server, worker) == []


def test_launched_exited_and_heartbeat_report_a_runs_life(
    live_server: str, database_url: str, project: Path
) -> None:
    from vivace.store.run_control import request_cancellation

    deployment = deploy(database_url, project, "pipeline")
    crashing, cancelling = start_run(database_url, deployment), start_run(database_url, deployment)
    worker = register(live_server, ["default"])
    assert sorted(claim(live_server, worker)) == sorted([str(crashing.id), str(cancelling.id)])

    path = f"/workers/{worker}/runs/{crashing.id}"
    assert call(live_server, "POST", f"{path}/launched", {"infrastructure_id": "4242"}) == (
        204,
        None,
    )
    assert run_record(database_url, crashing.id).infrastructure_id == "4242"
    status, body = call(
        live_server, "POST", f"{path}/exited", {"exit_code": 3, "description": "process 4242"}
    )
    assert status == 200
    assert body["state_type"] == "CRASHED"
    assert body["state_message"].endswith("process 4242 exited with code 3")

    request_cancellation(database_url, cancelling.id)
    assert call(live_server, "POST", f"/workers/{worker}/heartbeat") == (
        200,
        {"cancel": [str(cancelling.id)]},
    )
    status, body = call(
        live_server,
        "POST",
        f"/workers/{worker}/runs/{cancelling.id}/exited",
        {"exit_code": -15, "description": "process 4243"},
    )
    assert (status, body["state_type"]) == (200, "CANCELLED")


def test_a_worker_can_give_back_a_run_and_report_one_it_could_not_start(
    live_server: str, database_url: str, project: Path
) -> None:
    run, worker = claimed_run(live_server, database_url, project)

    path = f"/workers/{worker}/runs/{run.id}"
    assert call(live_server, "POST", f"{path}/release") == (204, None)
    assert run_record(database_url, run.id).state_name == "Scheduled"
    assert claim(live_server, worker) == [str(run.id)]
    status, body = call(live_server, "POST", f"{path}/start-failed", {"message": "no such image"})
    assert status == 200
    assert body["state_type"] == "CRASHED"
    assert body["state_message"].endswith("could not be started: no such image")


def test_worker_endpoint_errors(live_server: str, database_url: str, project: Path) -> None:
    run, worker = claimed_run(live_server, database_url, project)
    other = register(live_server, ["default"])
    unknown = uuid.uuid4()

    def status_and_detail(method: str, path: str, body: Any = None) -> tuple[int, str]:
        status, answer = call(live_server, method, path, body)
        return status, answer["detail"]

    for method, path, body in [
        ("POST", f"/workers/{unknown}/claim", {"limit": 1}),
        ("POST", f"/workers/{unknown}/heartbeat", None),
        ("DELETE", f"/workers/{unknown}", None),
    ]:
        status, detail = status_and_detail(method, path, body)
        assert status == 404 and f"worker {unknown} not found" in detail
    status, detail = status_and_detail(
        "POST", f"/workers/{other}/runs/{run.id}/launched", {"infrastructure_id": "1"}
    )
    assert (status, detail) == (404, f"flow run {run.id} was not claimed by worker {other}")
    status, detail = status_and_detail(
        "POST", f"/workers/{worker}/runs/{unknown}/exited", {"exit_code": 1, "description": "x"}
    )
    assert (status, detail) == (404, f"flow run {unknown} not found")

    assert status_and_detail("POST", "/workers/nope/heartbeat")[0] == 422
    status, detail = status_and_detail("POST", f"/workers/{worker}/claim", {"limit": 0})
    assert status == 422 and "'limit'" in detail
    status, detail = status_and_detail(
        "POST", "/workers", {"name": "w", "type": "vm", "queues": ["default"]}
    )
    assert status == 422 and "'type'" in detail and "process, docker" in detail
    status, detail = status_and_detail("POST", "/workers", {"name": "w", "queues": []})
    assert status == 422 and "'queues'" in detail

    assert call(live_server, "DELETE", f"/workers/{worker}") == (204, None)
    assert status_and_detail("POST", f"/workers/{worker}/heartbeat")[0] == 404


def test_worker_endpoints_need_an_admin_key(
    database_url: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    read_key, admin_key = "r" * 24, "a" * 24
    monkeypatch.setenv("VIVACE_API_KEYS", f"read:{read_key},admin:{admin_key}")
    reset_settings()
    live_server = request.getfixturevalue("live_server")  # started with the keys in force
    registration = {"name": "w", "queues": ["default"]}

    assert call(live_server, "POST", "/workers", registration)[0] == 401
    assert call(live_server, "POST", "/workers", registration, key=read_key)[0] == 403
    assert call(live_server, "POST", "/workers", registration, key=admin_key)[0] == 201


def test_a_released_run_that_is_being_cancelled_ends_cancelled(
    live_server: str, database_url: str, project: Path
) -> None:
    from vivace.store.run_control import request_cancellation

    run, worker = claimed_run(live_server, database_url, project)
    request_cancellation(database_url, run.id)

    assert call(live_server, "POST", f"/workers/{worker}/runs/{run.id}/release") == (204, None)

    after = run_record(database_url, run.id)
    assert (after.state_type.value, after.state_message) == (
        "CANCELLED",
        "cancelled before it started",
    )


def test_a_forgotten_worker_registers_again_under_its_id_and_keeps_its_runs(
    live_server: str, database_url: str, project: Path
) -> None:
    run, worker = claimed_run(live_server, database_url, project)
    assert call(live_server, "DELETE", f"/workers/{worker}") == (204, None)
    exited = {"exit_code": 1, "description": "process 4242"}
    assert call(live_server, "POST", f"/workers/{worker}/runs/{run.id}/exited", exited)[0] == 404

    status, body = call(
        live_server, "POST", "/workers", {"name": "w", "queues": ["default"], "id": worker}
    )
    assert (status, body["id"]) == (201, worker)
    status, body = call(live_server, "POST", f"/workers/{worker}/runs/{run.id}/exited", exited)
    assert (status, body["state_type"]) == (200, "CRASHED")


def test_a_claim_takes_over_the_runs_a_silent_worker_did_not_launch(
    live_server: str, database_url: str, project: Path
) -> None:
    import sqlalchemy as sa

    from vivace.store import schema
    from vivace.store.database import get_engine, transaction

    deployment = deploy(database_url, project, "pipeline")
    run = start_run(database_url, deployment)
    silent, other = register(live_server, ["default"]), register(live_server, ["default"])
    assert claim(live_server, silent) == [str(run.id)]
    assert claim(live_server, other) == []
    # Silent for longer than three heartbeat intervals (0.3 s here) and than 30 s.
    workers = schema.workers
    with transaction(get_engine(database_url)) as conn:
        conn.execute(
            sa.update(workers)
            .where(workers.c.id == uuid.UUID(silent))
            .values(heartbeat=time.time() - 31)
        )

    assert claim(live_server, other) == [str(run.id)]
    assert str(run_record(database_url, run.id).worker_id) == other
