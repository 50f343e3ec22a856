"""``/api/work-queues`` and ``GET /api/workers``, on SQLite and PostgreSQL: queues with their
settings and the runs claimed and waiting in them, changing a queue's settings (admin key), and
the registered workers; also ``VivaceClient.read_work_queues`` and ``read_workers``."""

from __future__ import annotations

from typing import Any

import pytest

from tests.workers.helpers import stored_deployment
from vivace.client import VivaceClient
from vivace.store.api_keys import create_api_key
from vivace.store.deployments import create_deployment_run
from vivace.store.work_queues import (
    claim_flow_runs,
    read_work_queues,
    read_workers,
    register_worker,
    update_work_queue,
)


def test_queues_are_listed_in_serving_order_with_their_runs(api: Any, database_url: str) -> None:
    urgent = stored_deployment(database_url, "urgent", "urgent")
    nightly = stored_deployment(database_url)
    update_work_queue(database_url, "urgent", priority=1, concurrency_limit=3)
    for _ in range(3):
        create_deployment_run(database_url, nightly, parameters={})
    create_deployment_run(database_url, urgent, parameters={})
    worker = register_worker(database_url, "w1", "process", ["default"])
    claimed = claim_flow_runs(database_url, worker_id=worker.id, queues=["default"], limit=1)
    assert len(claimed) == 1

    queues = api.get("/api/work-queues").json()

    assert [(q["name"], q["priority"], q["concurrency_limit"]) for q in queues] == [
        ("urgent", 1, 3),
        ("default", 10, None),
    ]
    assert [(q["active_runs"], q["scheduled_runs"]) for q in queues] == [(0, 1), (1, 2)]
    assert queues[1]["last_polled"] is not None and queues[0]["last_polled"] is None
    one = api.get("/api/work-queues/default").json()
    assert one == queues[1]
    missing = api.get("/api/work-queues/nope")
    assert missing.status_code == 404 and "'nope'" in missing.json()["detail"]


def test_no_queue_lists_empty(api: Any) -> None:
    assert api.get("/api/work-queues").json() == []
    assert api.get("/api/workers").json() == []


def test_patch_changes_only_what_it_is_given(api: Any, database_url: str) -> None:
    stored_deployment(database_url)

    changed = api.patch("/api/work-queues/default", json={"concurrency_limit": 2, "paused": True})
    assert changed.status_code == 200
    assert (changed.json()["concurrency_limit"], changed.json()["paused"]) == (2, True)
    kept = api.patch("/api/work-queues/default", json={"priority": 5}).json()
    assert (kept["priority"], kept["concurrency_limit"], kept["paused"]) == (5, 2, True)
    removed = api.patch("/api/work-queues/default", json={"concurrency_limit": None}).json()
    assert (removed["priority"], removed["concurrency_limit"], removed["paused"]) == (5, None, True)
    resumed = api.patch("/api/work-queues/default", json={"paused": False}).json()
    assert resumed["paused"] is False

    (stored,) = read_work_queues(database_url)
    assert (stored.priority, stored.concurrency_limit, stored.paused) == (5, None, False)


@pytest.mark.parametrize(
    ("body", "named"),
    [
        pytest.param({"concurrency_limit": -1}, "'concurrency_limit'", id="negative-limit"),
        pytest.param({"priority": "high"}, "'priority'", id="priority-text"),
        pytest.param({"priority": 2**40}, "'priority'", id="priority-too-big"),
        pytest.param({"paused": "maybe"}, "'paused'", id="paused-text"),
        pytest.param({"limit": 3}, "'limit'", id="unknown-field"),
    ],
)
def test_patch_refuses_bad_values_naming_them(
    api: Any, database_url: str, body: dict[str, Any], named: str
) -> None:
    stored_deployment(database_url)
    refused = api.patch("/api/work-queues/default", json=body)
    assert refused.status_code == 422 and named in refused.json()["detail"]
    (stored,) = read_work_queues(database_url)
    assert (stored.priority, stored.concurrency_limit, stored.paused) == (10, None, False)


def test_patch_of_an_unknown_queue_is_404_and_creates_nothing(api: Any, database_url: str) -> None:
    refused = api.patch("/api/work-queues/nope", json={"paused": True})
    assert refused.status_code == 404 and "'nope'" in refused.json()["detail"]
    assert read_work_queues(database_url) == []


def test_patch_needs_an_admin_key(api: Any, database_url: str) -> None:
    _, read_key = create_api_key(database_url, "dashboard", "read")
    _, admin_key = create_api_key(database_url, "ops", "admin")
    stored_deployment(database_url)

    reader = {"Authorization": f"Bearer {read_key}"}
    assert api.get("/api/work-queues", headers=reader).status_code == 200
    refused = api.patch("/api/work-queues/default", json={"paused": True}, headers=reader)
    assert refused.status_code == 403
    admin = {"Authorization": f"Bearer {admin_key}"}
    paused = api.patch("/api/work-queues/default", json={"paused": True}, headers=admin)
    assert paused.status_code == 200 and paused.json()["paused"] is True


def test_workers_are_listed_oldest_first(api: Any, database_url: str) -> None:
    first = register_worker(database_url, "first", "process", ["default"])
    register_worker(database_url, "second", "docker", ["gpu", "default"])

    workers = api.get("/api/workers").json()

    assert [(w["name"], w["type"], w["queues"]) for w in workers] == [
        ("first", "process", ["default"]),
        ("second", "docker", ["gpu", "default"]),
    ]
    assert workers[0]["id"] == str(first.id) and workers[0]["pid"] == first.pid
    assert workers[0]["hostname"] == first.hostname and workers[0]["heartbeat"]


def test_the_client_reads_queues_and_workers(live_server: str, database_url: str) -> None:
    stored_deployment(database_url)
    register_worker(database_url, "w", "process", ["default", "other"])
    client = VivaceClient(live_server)

    assert client.read_work_queues() == read_work_queues(database_url)
    assert client.read_workers() == read_workers(database_url)
