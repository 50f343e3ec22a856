"""``/api/concurrency-limits`` and the ``/concurrency-limits`` page, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import vivace
from vivace import flow, task
from vivace.store import concurrency as store
from vivace.store.api_keys import create_api_key


def test_limits_are_listed_with_their_slots_in_use(api: Any, database_url: str) -> None:
    assert api.get("/api/concurrency-limits").json() == []
    store.create_limit(database_url, "tag:db", 3)
    store.create_limit(database_url, "warehouse", 2, active=False)

    with vivace.concurrency("tag:db", occupy=2) as held:
        (lease_id,) = held.lease_ids
        listed = api.get("/api/concurrency-limits").json()
        one = api.get("/api/concurrency-limits/tag:db").json()
        by_tag = api.get("/api/concurrency-limits/db").json()

    assert [(x["name"], x["tag"], x["limit"], x["active"], x["slots_in_use"]) for x in listed] == [
        ("tag:db", "db", 3, True, 2),
        ("warehouse", None, 2, False, 0),
    ]
    assert one == by_tag
    (lease,) = one["leases"]
    assert lease["id"] == str(lease_id) and lease["occupy"] == 2
    assert lease["holder"] and lease["expires"] > lease["acquired"]
    missing = api.get("/api/concurrency-limits/nope")
    assert missing.status_code == 404 and "'nope'" in missing.json()["detail"]


def test_admin_creates_updates_resets_and_deletes(api: Any, database_url: str) -> None:
    created = api.post("/api/concurrency-limits", json={"tag": "db", "limit": 3})
    assert created.status_code == 201, created.text
    assert (created.json()["name"], created.json()["slots_in_use"]) == ("tag:db", 0)
    named = api.post("/api/concurrency-limits", json={"name": "warehouse", "limit": 1})
    assert named.status_code == 201 and named.json()["tag"] is None
    taken = api.post("/api/concurrency-limits", json={"tag": "db", "limit": 5})
    assert taken.status_code == 409 and "already exists" in taken.json()["detail"]

    changed = api.patch("/api/concurrency-limits/db", json={"limit": 4, "active": False})
    assert changed.status_code == 200
    assert (changed.json()["limit"], changed.json()["active"]) == (4, False)
    kept = api.patch("/api/concurrency-limits/tag:db", json={"active": True}).json()
    assert (kept["limit"], kept["active"]) == (4, True)

    store.acquire(database_url, ["warehouse"], 1, "gone", 30.0)
    reset = api.post("/api/concurrency-limits/warehouse/reset")
    assert reset.status_code == 200 and reset.json() == {"name": "warehouse", "dropped": 1}

    assert api.delete("/api/concurrency-limits/warehouse").status_code == 204
    assert api.delete("/api/concurrency-limits/warehouse").status_code == 404
    assert [limit.name for limit in store.read_limits(database_url)] == ["tag:db"]


BAD_BODIES = [
    ({"limit": 3}, "exactly one of 'name' and 'tag'"),
    ({"name": "a", "tag": "b", "limit": 3}, "exactly one"),
    ({"tag": "db", "limit": -1}, "'limit'"),
    ({"tag": "db", "limit": 2**31}, "'limit'"),
    ({"tag": "db", "limit": 1, "slots": 2}, "'slots'"),
    ({"name": "a/b", "limit": 1}, "without '/'"),
]


def test_bad_bodies_are_422_naming_the_problem(api: Any, database_url: str) -> None:
    for body, named in BAD_BODIES:
        refused = api.post("/api/concurrency-limits", json=body)
        assert refused.status_code == 422, body
        assert named in refused.json()["detail"], (body, refused.json())
    assert store.read_limits(database_url) == []


def test_changes_need_an_admin_key(api: Any, database_url: str) -> None:
    _, read_key = create_api_key(database_url, "dashboard", "read")
    _, admin_key = create_api_key(database_url, "ops", "admin")
    reader = {"Authorization": f"Bearer {read_key}"}
    admin = {"Authorization": f"Bearer {admin_key}"}
    body = {"tag": "db", "limit": 3}

    assert api.post("/api/concurrency-limits", json=body, headers=reader).status_code == 403
    assert api.post("/api/concurrency-limits", json=body, headers=admin).status_code == 201
    assert api.get("/api/concurrency-limits/db", headers=reader).status_code == 200
    for method, path in [
        ("patch", "/api/concurrency-limits/db"),
        ("delete", "/api/concurrency-limits/db"),
        ("post", "/api/concurrency-limits/db/reset"),
    ]:
        kwargs: dict[str, Any] = {"json": {"limit": 1}} if method == "patch" else {}
        assert getattr(api, method)(path, headers=reader, **kwargs).status_code == 403
    assert store.read_limit(database_url, "tag:db") is not None


def test_the_page_shows_limits_and_links_holders_to_their_runs(api: Any, database_url: str) -> None:
    empty = api.get("/concurrency-limits")
    assert empty.status_code == 200 and "No concurrency limit yet" in empty.text
    store.create_limit(database_url, "tag:<db>", 1)
    store.create_limit(database_url, "warehouse", 2, active=False)
    pages: list[str] = []

    @task(tags=["<db>"])
    def look() -> None:
        pages.append(api.get("/concurrency-limits").text)

    @flow
    def holding() -> None:
        look()

    state = holding(return_state=True)

    assert state.is_completed()
    (page,) = pages
    assert 'task runs tagged <span class="tag">&lt;db&gt;</span>' in page  # escaped
    assert "<b>tag:&lt;db&gt;</b>" in page and ">full</span>" in page
    assert ">inactive</span>" in page
    assert "/task-runs/" in page and "task run " in page
    assert "No slot is held now." in api.get("/concurrency-limits").text
