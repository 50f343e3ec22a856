"""vivace.store.concurrency on SQLite and PostgreSQL: limits, and leases taken, renewed, given
back and expired. Expiry is tested by writing leases that are already past their time, never by
sleeping."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from vivace.exceptions import (
    ConcurrencyLimitError,
    ConcurrencyLimitNotFoundError,
    ConfigurationError,
)
from vivace.store import concurrency as store
from vivace.store import schema
from vivace.store.concurrency import Blocked
from vivace.store.database import get_engine, transaction

LEASE = 30.0


def _expire(url: str, lease_ids: list[uuid.UUID], seconds_ago: float = 1.0) -> None:
    """Make leases look like their holder stopped renewing them ``seconds_ago``."""
    leases = schema.concurrency_leases
    with transaction(get_engine(url)) as conn:
        conn.execute(
            sa.update(leases)
            .where(leases.c.id.in_(lease_ids))
            .values(expires=time.time() - seconds_ago)
        )


def _taken(got: Any) -> list[uuid.UUID]:
    assert isinstance(got, list), f"expected lease ids, got {got!r}"
    return got


def test_limits_are_created_read_updated_and_deleted(database_url: str) -> None:
    tag = store.create_limit(database_url, store.tag_limit_name("db"), 3)
    named = store.create_limit(database_url, "warehouse", 2, active=False)

    assert (tag.name, tag.tag, tag.limit, tag.active) == ("tag:db", "db", 3, True)
    assert (named.tag, named.active) == (None, False)
    assert [limit.name for limit in store.read_limits(database_url)] == ["tag:db", "warehouse"]
    assert store.find_limit(database_url, "db") == tag  # a bare tag finds its limit
    assert store.find_limit(database_url, "nope") is None

    changed = store.update_limit(database_url, "warehouse", limit=5)
    assert (changed.limit, changed.active) == (5, False)
    activated = store.update_limit(database_url, "warehouse", active=True)
    assert (activated.limit, activated.active) == (5, True)
    assert activated.updated >= named.updated

    assert store.delete_limit(database_url, "tag:db") is True
    assert store.delete_limit(database_url, "tag:db") is False
    assert [limit.name for limit in store.read_limits(database_url)] == ["warehouse"]


def test_a_taken_name_an_unknown_name_and_bad_values_are_refused(database_url: str) -> None:
    store.create_limit(database_url, "warehouse", 2)
    with pytest.raises(ConcurrencyLimitError, match="'warehouse' already exists"):
        store.create_limit(database_url, "warehouse", 4)
    with pytest.raises(ConcurrencyLimitNotFoundError, match="create --global nope"):
        store.update_limit(database_url, "nope", limit=1)
    with pytest.raises(ConcurrencyLimitNotFoundError, match="create gpu N"):
        store.reset_limit(database_url, "tag:gpu")
    for bad_name in ("", " ", "a/b", "tag:", "x" * 256):
        with pytest.raises(ConfigurationError, match=r"name .* is not valid"):
            store.create_limit(database_url, bad_name, 1)
    for bad_limit in (-1, 1.5, True, 2**31):
        with pytest.raises(ConfigurationError, match="whole number of slots"):
            store.create_limit(database_url, "other", bad_limit)  # type: ignore[arg-type]
    assert [limit.limit for limit in store.read_limits(database_url)] == [2]


def test_slots_are_taken_until_the_limit_then_given_back(database_url: str) -> None:
    store.create_limit(database_url, "warehouse", 3)

    first = _taken(store.acquire(database_url, ["warehouse"], 2, "a", LEASE))
    blocked = store.acquire(database_url, ["warehouse"], 2, "b", LEASE)
    second = _taken(store.acquire(database_url, ["warehouse"], 1, "c", LEASE))

    assert isinstance(blocked, Blocked)
    assert (blocked.name, blocked.limit, blocked.in_use) == ("warehouse", 3, 2)
    assert blocked.retry_at == pytest.approx(time.time() + LEASE, abs=5)
    assert store.slots_in_use(database_url, ["warehouse"]) == {"warehouse": 3}
    assert [(lease.holder, lease.occupy) for lease in store.read_leases(database_url, "warehouse")]
    assert store.has_room(database_url, ["warehouse"], 1) is not None

    assert store.release(database_url, first) == ["warehouse"]
    assert store.has_room(database_url, ["warehouse"], 2) is None
    _taken(store.acquire(database_url, ["warehouse"], 2, "b", LEASE))
    assert store.slots_in_use(database_url, ["warehouse"]) == {"warehouse": 3}
    store.release(database_url, second)
    assert store.release(database_url, second) == []  # twice is harmless


def test_several_limits_are_taken_all_or_nothing(database_url: str) -> None:
    store.create_limit(database_url, "a", 1)
    store.create_limit(database_url, "b", 1)
    holding_b = _taken(store.acquire(database_url, ["b"], 1, "first", LEASE))

    blocked = store.acquire(database_url, ["a", "b"], 1, "second", LEASE)

    assert isinstance(blocked, Blocked) and blocked.name == "b"
    assert store.slots_in_use(database_url, ["a", "b"]) == {"a": 0, "b": 1}  # nothing of "a"
    store.release(database_url, holding_b)
    both = _taken(store.acquire(database_url, ["b", "a", "b"], 1, "second", LEASE))
    assert len(both) == 2
    assert store.slots_in_use(database_url, ["a", "b"]) == {"a": 1, "b": 1}
    store.release(database_url, both)


def test_expired_leases_free_their_slots(database_url: str) -> None:
    store.create_limit(database_url, "warehouse", 1)
    dead = _taken(store.acquire(database_url, ["warehouse"], 1, "dead holder", LEASE))
    assert isinstance(store.acquire(database_url, ["warehouse"], 1, "waiter", LEASE), Blocked)

    _expire(database_url, dead)

    assert store.slots_in_use(database_url, ["warehouse"]) == {"warehouse": 0}
    assert store.read_leases(database_url, "warehouse") == []
    got = _taken(store.acquire(database_url, ["warehouse"], 1, "waiter", LEASE))
    # Its holder, back from a stall, renews too late: the lease is lost, not brought back.
    assert store.renew(database_url, dead, LEASE) == set()
    assert store.slots_in_use(database_url, ["warehouse"]) == {"warehouse": 1}
    store.release(database_url, got)


def test_renewal_keeps_a_lease_alive(database_url: str) -> None:
    store.create_limit(database_url, "warehouse", 1)
    held = _taken(store.acquire(database_url, ["warehouse"], 1, "live holder", LEASE))
    _expire(database_url, held, seconds_ago=-0.5)  # about to run out

    assert store.renew(database_url, held, LEASE) == set(held)

    (lease,) = store.read_leases(database_url, "warehouse")
    assert lease.expires.timestamp() == pytest.approx(time.time() + LEASE, abs=5)
    store.release(database_url, held)


def test_an_inactive_limit_takes_no_slot(database_url: str) -> None:
    store.create_limit(database_url, "warehouse", 1, active=False)
    store.create_limit(database_url, "api", 1)

    assert store.acquire(database_url, ["warehouse"], 1, "a", LEASE) == []
    assert store.acquire(database_url, ["warehouse"], 5, "b", LEASE) == []  # not even checked
    mixed = _taken(store.acquire(database_url, ["warehouse", "api"], 1, "c", LEASE))
    assert len(mixed) == 1
    assert store.slots_in_use(database_url, ["warehouse", "api"]) == {"warehouse": 0, "api": 1}
    store.release(database_url, mixed)


def test_a_missing_limit_raises_or_is_skipped(database_url: str) -> None:
    store.create_limit(database_url, "tag:db", 1)

    with pytest.raises(ConcurrencyLimitNotFoundError, match="no concurrency limit named 'nope'"):
        store.acquire(database_url, ["tag:db", "nope"], 1, "a", LEASE)
    assert store.slots_in_use(database_url, ["tag:db"]) == {"tag:db": 0}
    skipped = _taken(store.acquire(database_url, ["tag:db", "nope"], 1, "a", LEASE, missing="skip"))
    assert len(skipped) == 1
    store.release(database_url, skipped)


def test_asking_more_than_a_limit_has_is_an_error_not_a_wait(database_url: str) -> None:
    store.create_limit(database_url, "warehouse", 2)
    store.create_limit(database_url, "closed", 0)
    with pytest.raises(ConcurrencyLimitError, match="fewer than the 3 asked"):
        store.acquire(database_url, ["warehouse"], 3, "a", LEASE)
    with pytest.raises(ConcurrencyLimitError, match="'closed' has 0 slots"):
        store.acquire(database_url, ["closed"], 1, "a", LEASE)


def test_reset_drops_every_lease_and_delete_drops_them_too(database_url: str) -> None:
    store.create_limit(database_url, "warehouse", 5)
    store.create_limit(database_url, "other", 5)
    for holder in ("a", "b"):
        _taken(store.acquire(database_url, ["warehouse"], 1, holder, LEASE))
    kept = _taken(store.acquire(database_url, ["other"], 1, "c", LEASE))

    assert store.reset_limit(database_url, "warehouse") == 2
    assert store.slots_in_use(database_url, ["warehouse", "other"]) == {"warehouse": 0, "other": 1}
    assert store.delete_limit(database_url, "other")
    assert store.renew(database_url, kept, LEASE) == set()


def test_active_tag_limits_lists_the_tags_enforced(database_url: str) -> None:
    store.create_limit(database_url, "tag:db", 1)
    store.create_limit(database_url, "tag:gpu", 1, active=False)
    store.create_limit(database_url, "tag%x", 1)  # not a tag limit, though LIKE would match
    store.create_limit(database_url, "warehouse", 1)

    assert store.active_tag_limits(database_url) == frozenset({"db"})


def test_acquirers_racing_never_exceed_the_limit(database_url: str) -> None:
    """Eight threads, each with its own connection, take and give back slots of a limit of 2
    as fast as they can; the leases alive at once, counted inside each holder's turn, never
    exceed it."""
    store.create_limit(database_url, "race", 2)
    start = threading.Barrier(8)
    most: list[int] = []
    errors: list[BaseException] = []

    def hammer() -> None:
        try:
            start.wait()
            for _ in range(15):
                got = store.acquire(database_url, ["race"], 1, "racer", LEASE)
                if isinstance(got, list):
                    most.append(store.slots_in_use(database_url, ["race"])["race"])
                    store.release(database_url, got)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert most and max(most) <= 2
    assert store.slots_in_use(database_url, ["race"]) == {"race": 0}
