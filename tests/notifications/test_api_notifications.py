"""``/api/notifications`` and the ``/notifications`` page, on SQLite and PostgreSQL: policies
listed with their deliveries, created, paused and deleted with an admin key."""

from __future__ import annotations

from typing import Any

from tests.notifications.conftest import Receiver
from tests.notifications.notify_helpers import deployment, ended_run, webhook_policy
from vivace.blocks.notifications import load_webhook
from vivace.services.notifications import notify
from vivace.store.api_keys import create_api_key
from vivace.store.notifications import read_notification_policy


def test_policies_are_listed_with_their_latest_deliveries(
    api: Any, database_url: str, receiver: Receiver
) -> None:
    webhook_policy(database_url, receiver.url, "ops", states=("Crashed",), tags=["prod"])
    run_id = ended_run(database_url, deployment(database_url), tags=("prod",))
    receiver.answer(404)
    notify(database_url)

    (policy,) = api.get("/api/notifications").json()

    assert (policy["name"], policy["states"], policy["tags"]) == ("ops", ["Crashed"], ["prod"])
    assert (policy["flow_names"], policy["block_name"], policy["active"]) == (
        None,
        "ops-hook",
        True,
    )
    assert policy["delivery_counts"] == {"pending": 0, "delivered": 0, "failed": 1}
    (delivery,) = policy["deliveries"]
    assert (delivery["flow_run_id"], delivery["flow_name"], delivery["state_name"]) == (
        str(run_id),
        "etl",
        "Crashed",
    )
    assert (delivery["policy"], delivery["status"], delivery["attempts"]) == ("ops", "failed", 1)
    assert "HTTP 404" in delivery["last_error"]
    one = api.get("/api/notifications/ops", params={"limit": 1}).json()
    assert one == policy
    missing = api.get("/api/notifications/nope")
    assert missing.status_code == 404 and "'nope'" in missing.json()["detail"]
    assert api.get("/api/notifications/ops", params={"limit": 0}).status_code == 422


def test_create_pause_and_delete(api: Any, database_url: str) -> None:
    body = {
        "name": "ops",
        "states": ["failed", "LATE"],
        "flow_names": ["etl"],
        "webhook": {"url": "https://hooks.example/T0/SECRET", "format": "slack"},
    }

    created = api.post("/api/notifications", json=body)

    assert created.status_code == 201, created.text
    assert created.json()["states"] == ["Failed", "Late"]
    assert created.json()["block_name"] == "ops-webhook"
    assert "SECRET" not in created.text
    assert load_webhook(database_url, "ops-webhook").format == "slack"
    assert api.post("/api/notifications", json=body).status_code == 409
    no_target = api.post("/api/notifications", json={**body, "name": "ops2", "webhook": None})
    assert no_target.status_code == 422  # neither a block nor a webhook
    by_block = api.post(
        "/api/notifications",
        json={"name": "ops2", "states": ["Crashed"], "block_name": "ops-webhook"},
    )
    assert by_block.status_code == 201, by_block.text
    api.delete("/api/notifications/ops")
    block_taken = api.post("/api/notifications", json=body)  # the block ops-webhook stayed
    assert block_taken.status_code == 409
    assert "block named 'ops-webhook' already exists" in block_taken.json()["detail"]
    with_block = {**body, "webhook": None, "block_name": "ops-webhook"}
    assert api.post("/api/notifications", json=with_block).status_code == 201

    paused = api.patch("/api/notifications/ops", json={"active": False})
    assert paused.status_code == 200 and paused.json()["active"] is False
    assert api.patch("/api/notifications/nope", json={"active": False}).status_code == 404

    deleted = api.delete("/api/notifications/ops")
    assert deleted.status_code == 200 and deleted.json()["name"] == "ops"
    assert read_notification_policy(database_url, "ops") is None
    assert api.delete("/api/notifications/ops").status_code == 404


def test_bad_policies_are_answered_422_naming_the_problem(api: Any, database_url: str) -> None:
    webhook = {"url": "https://hooks.example/x"}
    cases = [
        ({"states": ["Borked"], "webhook": webhook}, "state 'Borked' is not a state name"),
        ({"states": ["Failed"], "block_name": "nope"}, "no block named 'nope' is saved"),
        (
            {"states": ["Failed"], "webhook": {"url": "ftp://hooks.example/SECRET"}},
            "webhook is not valid (url: Value error, expected an http:// or https:// URL",
        ),
        ({"states": [], "webhook": webhook}, "states"),
    ]
    for changes, message in cases:
        answer = api.post("/api/notifications", json={"name": "ops", **changes})
        assert answer.status_code == 422, answer.text
        assert message in answer.json()["detail"] and "SECRET" not in answer.text


def test_changes_need_an_admin_key(api: Any, database_url: str) -> None:
    _, read_key = create_api_key(database_url, "viewer", "read")
    _, admin_key = create_api_key(database_url, "ops", "admin")
    body = {"name": "ops", "states": ["Failed"], "webhook": {"url": "https://hooks.example/x"}}
    reader = {"Authorization": f"Bearer {read_key}"}
    admin = {"Authorization": f"Bearer {admin_key}"}

    assert api.post("/api/notifications", json=body, headers=reader).status_code == 403
    assert api.post("/api/notifications", json=body, headers=admin).status_code == 201
    assert api.get("/api/notifications", headers=reader).status_code == 200
    assert (
        api.patch("/api/notifications/ops", json={"active": False}, headers=reader).status_code
        == 403
    )
    assert api.delete("/api/notifications/ops", headers=reader).status_code == 403
    assert api.delete("/api/notifications/ops", headers=admin).status_code == 200


def test_the_page_lists_policies_and_deliveries_with_their_errors(
    api: Any, database_url: str, receiver: Receiver
) -> None:
    empty = api.get("/notifications")
    assert empty.status_code == 200
    assert "No notification policy yet" in empty.text and "Nothing sent yet" in empty.text

    webhook_policy(database_url, receiver.url, "ops", states=("Crashed",), tags=["a<b>"])
    run_id = ended_run(database_url, deployment(database_url), tags=("a<b>",))
    receiver.answer(500)
    notify(database_url)

    page = api.get("/notifications")
    assert page.status_code == 200
    assert 'aria-current="page"' in page.text and ">Notifications<" in page.text
    assert "a&lt;b&gt;" in page.text and "a<b>" not in page.text
    assert 'id="policy-ops"' in page.text and "ops-hook" in page.text
    assert f'href="/flow-runs/{run_id}"' in page.text
    assert "HTTP 500 Internal Server Error from 127.0.0.1" in page.text
    assert "pending" in page.text and "Crashed" in page.text
