"""Concurrency limits and their leases: slots taken, renewed and given back, across processes.

A limit (``concurrency_limits``) lets at most ``limit`` slots be in use at once. A task tag's
limit is named ``tag:<tag>`` (:func:`tag_limit_name`); any other name is a limit for
``vivace.concurrency(name)``. An inactive limit is kept but not enforced: nothing waits for it.

A holder's slots of one limit are a lease (``concurrency_leases``): ``occupy`` slots until
``expires``. Its process renews it (:func:`renew`) while it lives, so the slots of a process that
died come back once its leases run out; nobody has to clean up after it. :func:`acquire` takes
slots of one or several limits in ONE transaction, all or nothing:

1. lock the limits' rows (PostgreSQL: ``SELECT ... FOR UPDATE`` in name order; SQLite:
   :func:`~vivace.store.database.transaction` is ``BEGIN IMMEDIATE``, one writer at a time), so
   two processes asking at once are served one after the other, and two holders asking for the
   same limits in different orders cannot deadlock;
2. add up the limits' live leases (an expired one no longer counts; those of a full limit are
   dropped);
3. if every limit has room, insert one lease per limit.

It answers the new lease ids, or a :class:`Blocked` saying which limit is full and when its first
lease runs out (a waiter need not look again before then, unless a slot is given back).

The lease transactions commit like any other (``synchronous_commit`` stays on, at ~2 ms a
commit on PostgreSQL): with it off, a crash of the database server could lose an acquire its
holder was told had succeeded, and the limit would be exceeded for as long as that holder runs.

What frees a slot (:func:`release`, :func:`reset_limit`, a raised limit, a deactivated or deleted
limit) sends ``NOTIFY vivace_concurrency`` on PostgreSQL, with the limits' names, delivered when
its transaction commits: waiters in other processes listen (:mod:`vivace.store.concurrency_slots`)
and try again at once. SQLite has no notifications; waiters there poll.

Example::

    create_limit(url, "warehouse", 2)
    got = acquire(url, ["warehouse"], 1, "host:123", lease_seconds=30)
    if isinstance(got, Blocked):
        ...  # full: wait, then try again
    else:
        release(url, got)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Literal, TypeVar

import sqlalchemy as sa

from vivace._ids import uuid7
from vivace.exceptions import (
    ConcurrencyLimitError,
    ConcurrencyLimitNotFoundError,
    ConfigurationError,
)
from vivace.store import schema
from vivace.store.database import ensure_schema, transaction
from vivace.store.queries import Bind, _engine, _reading

TAG_PREFIX = "tag:"
NOTIFY_CHANNEL = "vivace_concurrency"
MAX_NAME = 255
MAX_LIMIT = 2**31 - 1  # stored as a 32-bit integer
_DEADLOCK_RETRIES = 5

_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True, slots=True)
class ConcurrencyLimitRecord:
    id: uuid.UUID
    name: str
    limit: int
    active: bool
    created: dt.datetime
    updated: dt.datetime

    @property
    def tag(self) -> str | None:
        """The task tag this limit is for, or None for a limit of ``vivace.concurrency``."""
        return self.name[len(TAG_PREFIX) :] if self.name.startswith(TAG_PREFIX) else None


@dataclasses.dataclass(frozen=True, slots=True)
class LeaseRecord:
    """One holder's slots of one limit, live until ``expires`` unless renewed."""

    id: uuid.UUID
    limit_name: str
    occupy: int
    holder: str
    acquired: dt.datetime
    expires: dt.datetime


@dataclasses.dataclass(frozen=True, slots=True)
class Blocked:
    """No room: ``name`` has ``in_use`` of its ``limit`` slots taken; its first lease runs out
    at ``retry_at`` (Unix seconds), the latest a waiter needs to look again."""

    name: str
    limit: int
    in_use: int
    retry_at: float


# -- names and values ----------------------------------------------------------------------------


def tag_limit_name(tag: str) -> str:
    """The name of the limit on task runs tagged ``tag``."""
    return TAG_PREFIX + tag


def check_limit_name(name: str) -> str:
    """``name`` if it can name a limit, else a ConfigurationError saying what is expected."""
    if (
        not isinstance(name, str)
        or not name.strip()
        or len(name) > MAX_NAME
        or "/" in name
        or "\x00" in name
        or name == TAG_PREFIX
    ):
        raise ConfigurationError(
            f"concurrency limit name {name!r} is not valid; expected 1 to {MAX_NAME} characters "
            "without '/' (a task tag's limit is named 'tag:<tag>')"
        )
    return name


def check_limit_value(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_LIMIT:
        raise ConfigurationError(
            f"concurrency limit {limit!r} is not valid; expected a whole number of slots >= 0"
        )
    return limit


# -- limits --------------------------------------------------------------------------------------


def create_limit(
    bind: Bind, name: str, limit: int, *, active: bool = True
) -> ConcurrencyLimitRecord:
    """Create the limit ``name``; a ConcurrencyLimitError if one of that name exists."""
    check_limit_name(name)
    check_limit_value(limit)
    engine = _engine(bind)
    ensure_schema(engine)
    table = schema.concurrency_limits
    now = time.time()
    try:
        with transaction(engine) as conn:
            conn.execute(
                sa.insert(table).values(
                    id=uuid7(), name=name, limit=limit, active=active, created=now, updated=now
                )
            )
    except sa.exc.IntegrityError:
        raise ConcurrencyLimitError(
            f"concurrency limit {name!r} already exists; change it with "
            f"`vivace concurrency-limit update {name} --limit N`"
        ) from None
    return _found(engine, name)


def update_limit(
    bind: Bind, name: str, *, limit: int | None = None, active: bool | None = None
) -> ConcurrencyLimitRecord:
    """Change what is given of the limit's size and active flag; return the limit.

    Waiters are woken: a larger or deactivated limit may have room for them now.
    """
    if limit is not None:
        check_limit_value(limit)
    engine = _engine(bind)
    ensure_schema(engine)
    table = schema.concurrency_limits
    changes: dict[str, object] = {"updated": time.time()}
    if limit is not None:
        changes["limit"] = limit
    if active is not None:
        changes["active"] = active
    with transaction(engine) as conn:
        found = conn.execute(sa.update(table).where(table.c.name == name).values(**changes))
        if not found.rowcount:
            raise _not_found(name)
        _notify(conn, [name])
    return _found(engine, name)


def read_limit(bind: Bind, name: str) -> ConcurrencyLimitRecord | None:
    table = schema.concurrency_limits
    with _reading(_engine(bind)) as conn:
        row = conn.execute(sa.select(table).where(table.c.name == name)).first()
    return None if row is None else ConcurrencyLimitRecord(**row._mapping)


def read_limits(bind: Bind) -> list[ConcurrencyLimitRecord]:
    """Every limit, by name (tag limits, ``tag:...``, sort among the others by that name)."""
    table = schema.concurrency_limits
    with _reading(_engine(bind)) as conn:
        rows = conn.execute(sa.select(table).order_by(table.c.name)).all()
    return [ConcurrencyLimitRecord(**row._mapping) for row in rows]


def find_limit(bind: Bind, name: str) -> ConcurrencyLimitRecord | None:
    """The limit named ``name``, else the limit of the task tag ``name`` (``tag:<name>``)."""
    found = read_limit(bind, name)
    if found is None and not name.startswith(TAG_PREFIX):
        found = read_limit(bind, tag_limit_name(name))
    return found


def delete_limit(bind: Bind, name: str) -> bool:
    """Delete the limit and its leases (their holders run on unlimited); False if none."""
    engine = _engine(bind)
    ensure_schema(engine)
    limits, leases = schema.concurrency_limits, schema.concurrency_leases
    with transaction(engine) as conn:
        deleted = conn.execute(sa.delete(limits).where(limits.c.name == name)).rowcount
        conn.execute(sa.delete(leases).where(leases.c.limit_name == name))
        if deleted:
            _notify(conn, [name])
    return bool(deleted)


def reset_limit(bind: Bind, name: str) -> int:
    """Drop every lease of the limit (slots held by holders that are gone); how many.

    A live holder keeps running: its renewals then find its lease gone, and it logs a warning.
    """
    engine = _engine(bind)
    ensure_schema(engine)
    limits, leases = schema.concurrency_limits, schema.concurrency_leases
    with transaction(engine) as conn:
        if conn.execute(sa.select(limits.c.id).where(limits.c.name == name)).first() is None:
            raise _not_found(name)
        dropped = conn.execute(sa.delete(leases).where(leases.c.limit_name == name)).rowcount
        _notify(conn, [name])
    return int(dropped)


def active_tag_limits(bind: Bind) -> frozenset[str]:
    """The tags that have an active limit (what a task run's tags are checked against)."""
    table = schema.concurrency_limits
    query = sa.select(table.c.name).where(
        table.c.active.is_(True), table.c.name.startswith(TAG_PREFIX, autoescape=True)
    )
    with _reading(_engine(bind)) as conn:
        names = conn.execute(query).scalars().all()
    return frozenset(name[len(TAG_PREFIX) :] for name in names)


# -- leases --------------------------------------------------------------------------------------


def slots_in_use(bind: Bind, names: Collection[str]) -> dict[str, int]:
    """How many slots of each limit live leases hold now."""
    leases = schema.concurrency_leases
    counts = dict.fromkeys(names, 0)
    if not names:
        return counts
    query = (
        sa.select(leases.c.limit_name, sa.func.sum(leases.c.occupy))
        .where(leases.c.limit_name.in_(list(names)), leases.c.expires >= time.time())
        .group_by(leases.c.limit_name)
    )
    with _reading(_engine(bind)) as conn:
        for name, used in conn.execute(query):
            counts[name] = int(used)
    return counts


def read_leases(bind: Bind, name: str) -> list[LeaseRecord]:
    """The limit's live leases, oldest first: who holds its slots now."""
    leases = schema.concurrency_leases
    query = (
        sa.select(leases)
        .where(leases.c.limit_name == name, leases.c.expires >= time.time())
        .order_by(leases.c.acquired, leases.c.id)
    )
    with _reading(_engine(bind)) as conn:
        return [LeaseRecord(**row._mapping) for row in conn.execute(query)]


def acquire(
    bind: Bind,
    names: Sequence[str],
    occupy: int,
    holder: str,
    lease_seconds: float,
    *,
    missing: Literal["error", "skip"] = "error",
) -> list[uuid.UUID] | Blocked:
    """Take ``occupy`` slots of every limit in ``names`` at once (see the module docstring).

    An inactive limit takes no slot. A limit that does not exist raises
    ConcurrencyLimitNotFoundError, or takes no slot with ``missing="skip"`` (a task tag whose
    limit was just deleted). A limit smaller than ``occupy`` raises ConcurrencyLimitError: it
    could never grant it, and waiting would be forever.
    """
    engine = _engine(bind)
    ensure_schema(engine)
    wanted = sorted(set(names))

    def attempt() -> list[uuid.UUID] | Blocked:
        with transaction(engine) as conn:
            return _acquire(conn, wanted, occupy, holder, lease_seconds, missing)

    return _retrying_deadlocks(attempt)


def has_room(bind: Bind, names: Sequence[str], occupy: int) -> Blocked | None:
    """A read-only look (no lock): None if every limit has room for ``occupy`` now.

    What a waiter checks before it takes the write lock of :func:`acquire`; the answer may be
    stale by the time it acts, which :func:`acquire` settles.
    """
    limits, leases = schema.concurrency_limits, schema.concurrency_leases
    wanted = sorted(set(names))
    with _reading(_engine(bind)) as conn:
        rows = conn.execute(
            sa.select(limits.c.name, limits.c.limit).where(
                limits.c.name.in_(wanted), limits.c.active.is_(True)
            )
        ).all()
        return _first_full(conn, leases, {name: limit for name, limit in rows}, occupy, time.time())


def renew(bind: Bind, lease_ids: Collection[uuid.UUID], lease_seconds: float) -> set[uuid.UUID]:
    """Push the leases' expiry to ``lease_seconds`` from now; return the ids renewed.

    A lease missing from the answer was lost: it expired (its process stalled longer than the
    lease: others may have taken its slots since, so it is not brought back, it is dropped), or
    someone reset its limit.
    """
    if not lease_ids:
        return set()
    engine = _engine(bind)
    ensure_schema(engine)
    leases = schema.concurrency_leases
    ids = sorted(lease_ids)

    def attempt() -> set[uuid.UUID]:
        with transaction(engine) as conn:
            now = time.time()
            live = set(
                conn.execute(
                    sa.select(leases.c.id).where(leases.c.id.in_(ids), leases.c.expires >= now)
                ).scalars()
            )
            if len(live) < len(ids):
                conn.execute(sa.delete(leases).where(leases.c.id.in_(ids), leases.c.expires < now))
            if live:
                conn.execute(
                    sa.update(leases)
                    .where(leases.c.id.in_(sorted(live)))
                    .values(expires=now + lease_seconds)
                )
            return live

    return _retrying_deadlocks(attempt)


def release(
    bind: Bind, lease_ids: Collection[uuid.UUID], names: Collection[str] | None = None
) -> list[str]:
    """Give the leases' slots back (waiters are notified); return the limits they were of.

    ``names``: those limits, when the caller knows them (one statement less).
    """
    if not lease_ids:
        return []
    engine = _engine(bind)
    ensure_schema(engine)
    leases = schema.concurrency_leases
    ids = sorted(lease_ids)

    def attempt() -> list[str]:
        with transaction(engine) as conn:
            if names is None:
                found = conn.execute(sa.select(leases.c.limit_name).where(leases.c.id.in_(ids)))
                limits = sorted(set(found.scalars()))
            else:
                limits = sorted(set(names))
            conn.execute(sa.delete(leases).where(leases.c.id.in_(ids)))
            _notify(conn, limits)
            return limits

    return _retrying_deadlocks(attempt)


# -- inside the transaction ----------------------------------------------------------------------


def _acquire(
    conn: sa.Connection,
    wanted: list[str],
    occupy: int,
    holder: str,
    lease_seconds: float,
    missing: Literal["error", "skip"],
) -> list[uuid.UUID] | Blocked:
    limits, leases = schema.concurrency_limits, schema.concurrency_leases
    query = (
        sa.select(limits.c.name, limits.c.limit, limits.c.active)
        .where(limits.c.name.in_(wanted))
        .order_by(limits.c.name)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()  # in name order: no deadlock between two acquirers
    rows = conn.execute(query).all()
    if missing == "error" and len(rows) < len(wanted):
        found = {row.name for row in rows}
        raise _not_found(next(name for name in wanted if name not in found))
    enforced = {row.name: row.limit for row in rows if row.active}
    for name, limit in enforced.items():
        if occupy > limit:
            raise ConcurrencyLimitError(
                f"concurrency limit {name!r} has {limit} slot{'s' if limit != 1 else ''}, "
                f"fewer than the {occupy} asked: it can never grant them; ask for at most "
                f"{limit} or raise it with `vivace concurrency-limit update {name} --limit "
                f"{occupy}`"
            )
    if not enforced:
        return []
    now = time.time()
    blocked = _first_full(conn, leases, enforced, occupy, now)  # counts live leases only
    if blocked is not None:
        # Expired leases are never counted; dropping them is housekeeping, done when full.
        conn.execute(
            sa.delete(leases).where(leases.c.limit_name.in_(list(enforced)), leases.c.expires < now)
        )
        return blocked
    lease_ids = [uuid7() for _ in enforced]
    conn.execute(
        sa.insert(leases),
        [
            {
                "id": lease_id,
                "limit_name": name,
                "occupy": occupy,
                "holder": holder[:MAX_NAME],
                "acquired": now,
                "expires": now + lease_seconds,
            }
            for lease_id, name in zip(lease_ids, enforced, strict=True)
        ],
    )
    return lease_ids


def _first_full(
    conn: sa.Connection, leases: sa.Table, enforced: dict[str, int], occupy: int, now: float
) -> Blocked | None:
    """The first of the ``enforced`` limits without room for ``occupy`` more, or None."""
    if not enforced:
        return None
    usage = conn.execute(
        sa.select(
            leases.c.limit_name,
            sa.func.sum(leases.c.occupy),
            sa.func.min(leases.c.expires),
        )
        .where(leases.c.limit_name.in_(list(enforced)), leases.c.expires >= now)
        .group_by(leases.c.limit_name)
        .order_by(leases.c.limit_name)
    ).all()
    for name, used, first_expiry in usage:
        limit = enforced[name]
        if int(used) + occupy > limit:
            retry_at = first_expiry.timestamp() if first_expiry is not None else now
            return Blocked(name, limit, int(used), retry_at)
    return None


def _notify(conn: sa.Connection, names: Iterable[str]) -> None:
    """Tell the waiters of other processes that these limits may have room (on commit)."""
    if conn.dialect.name != "postgresql":
        return
    payload = "\n".join(names)[:7000]  # PostgreSQL caps a payload at 8000 bytes
    conn.execute(sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, payload)))


def _retrying_deadlocks(attempt: Callable[[], _T]) -> _T:
    """Run a transaction again when PostgreSQL aborts it as a deadlock or serialization failure
    (a renewal and an acquire dropping expired leases can cross on the same rows)."""
    for tries in range(_DEADLOCK_RETRIES):
        try:
            return attempt()
        except sa.exc.DBAPIError as error:
            sqlstate = getattr(error.orig, "sqlstate", None) or ""
            if not sqlstate.startswith("40") or tries == _DEADLOCK_RETRIES - 1:
                raise
            time.sleep(0.01 * (tries + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def _found(engine: sa.Engine, name: str) -> ConcurrencyLimitRecord:
    record = read_limit(engine, name)
    if record is None:  # deleted by someone else in between: say so like any other miss
        raise _not_found(name)
    return record


def _not_found(name: str) -> ConcurrencyLimitNotFoundError:
    if name.startswith(TAG_PREFIX):
        how = f"vivace concurrency-limit create {name[len(TAG_PREFIX) :]} N"
    else:
        how = f"vivace concurrency-limit create --global {name} N"
    return ConcurrencyLimitNotFoundError(
        f"no concurrency limit named {name!r}; create it with `{how}`"
    )
