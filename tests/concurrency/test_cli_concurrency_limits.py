"""``vivace concurrency-limit ...`` through click's CliRunner, on SQLite and PostgreSQL."""

from __future__ import annotations

from click.testing import CliRunner, Result

import vivace
from vivace.cli import cli
from vivace.store import concurrency as store


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, ["concurrency-limit", *args])


def test_create_makes_tag_limits_and_global_ones(database_url: str) -> None:
    tag = invoke("create", "db", "3")  # the form: a TAG
    assert tag.exit_code == 0, tag.output
    assert "Created concurrency limit 'tag:db': 3 slots." in tag.output
    named = invoke("create", "--global", "warehouse", "2", "--inactive")
    assert named.exit_code == 0, named.output
    assert "'warehouse': 2 slots, inactive (not enforced)" in named.output
    assert invoke("create", "tag:gpu", "1").exit_code == 0  # the full name works too

    limits = {limit.name: limit for limit in store.read_limits(database_url)}
    assert (limits["tag:db"].limit, limits["tag:db"].active) == (3, True)
    assert (limits["warehouse"].limit, limits["warehouse"].active) == (2, False)
    assert "tag:gpu" in limits

    again = invoke("create", "db", "4")
    assert again.exit_code == 1 and "'tag:db' already exists" in again.output
    bad_name = invoke("create", "--global", "a/b", "1")
    assert bad_name.exit_code == 2 and "without '/'" in bad_name.output
    bad_limit = invoke("create", "db2", "-1")
    assert bad_limit.exit_code == 2
    tag_as_global = invoke("create", "--global", "tag:x", "2")
    assert tag_as_global.exit_code == 2
    assert "starts with 'tag:', which names a task tag's limit" in tag_as_global.output
    assert "vivace concurrency-limit create x 2" in tag_as_global.output
    assert store.read_limit(database_url, "tag:x") is None


def test_ls_and_inspect_show_the_slots_in_use_and_who_holds_them(database_url: str) -> None:
    assert invoke("ls").output.startswith("No concurrency limits yet")
    store.create_limit(database_url, "tag:db", 3)
    store.create_limit(database_url, "warehouse", 2)

    with vivace.concurrency("warehouse", occupy=2) as held:
        (lease_id,) = held.lease_ids
        listed = invoke("ls")
        inspected = invoke("inspect", "warehouse")
        by_tag = invoke("inspect", "db")  # a bare tag finds its limit

    assert listed.exit_code == 0, listed.output
    rows = {line.split("│")[1].strip(): line for line in listed.output.splitlines() if "│" in line}
    assert "task runs tagged 'db'" in rows["tag:db"]
    assert "vivace.concurrency('warehouse')" in rows["warehouse"]
    assert [cell.strip() for cell in rows["warehouse"].split("│")[3:6]] == ["2", "2", "yes"]
    assert inspected.exit_code == 0, inspected.output
    assert "2 slots; 2 slot(s) in use" in inspected.output
    assert str(lease_id) in inspected.output
    assert by_tag.exit_code == 0 and "No slot is held." in by_tag.output
    missing = invoke("inspect", "nope")
    assert missing.exit_code == 1 and "'nope' not found (nor 'tag:nope')" in missing.output


def test_update_reset_and_delete(database_url: str) -> None:
    store.create_limit(database_url, "tag:db", 3)

    changed = invoke("update", "db", "--limit", "5", "--inactive")
    assert changed.exit_code == 0, changed.output
    assert "'tag:db': 5 slots, inactive" in changed.output
    assert invoke("update", "tag:db", "--active").exit_code == 0
    limit = store.read_limit(database_url, "tag:db")
    assert limit is not None and (limit.limit, limit.active) == (5, True)
    nothing = invoke("update", "db")
    assert nothing.exit_code == 2 and "nothing to change" in nothing.output

    for holder in ("gone-1", "gone-2"):
        store.acquire(database_url, ["tag:db"], 1, holder, 30.0)
    reset = invoke("reset", "db")
    assert reset.exit_code == 0 and "dropped 2 lease(s)" in reset.output
    assert store.slots_in_use(database_url, ["tag:db"]) == {"tag:db": 0}

    deleted = invoke("delete", "db")
    assert deleted.exit_code == 0 and "Deleted concurrency limit 'tag:db'." in deleted.output
    assert store.read_limits(database_url) == []
    assert invoke("delete", "db").exit_code == 1
