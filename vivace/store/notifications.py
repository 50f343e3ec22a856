"""Notification policies, and the deliveries of the notifications they call for.

A policy (``notification_policies``) says: when a flow run enters one of these states, optionally
only runs of these flows, with any of these tags, or of these deployments, send a notification
with this webhook block. A state in a policy is a name, matched like this: a state type's name
(``Failed``, ``Crashed``, ``Completed``, ``Cancelled``...) matches every state of that type, so
``Failed`` also catches a run that ``TimedOut``; any other name (``Late``, ``TimedOut``,
``Skipped``, ``Retrying``...) matches only the states so named. Input is case-insensitive and
stored spelled as vivace spells it.

A delivery (``notification_deliveries``) is one notification to send: one policy, one flow run,
one state of its history (its ``seq``). The unique index over those three makes creating a
delivery idempotent, so the service can look at the same states again and again (it re-reads a
window of recent history, because states arrive in batches from other processes) and two
services can race, and still each notification exists once.

Sending is claimed: :func:`claim_due_deliveries` takes due ``pending`` deliveries in one
transaction, counting the attempt and moving ``next_attempt`` forward by a lease, so another
service process does not take them while they are being sent; if the sender dies, the lease
runs out and the delivery is due again. :func:`record_delivery_outcome` then records the outcome
of that attempt (only while the claim is still the latest: a stale sender changes nothing).

Example::

    create_notification_policy(url, "failures", states=["failed", "crashed"], block_name="ops")
    enqueue_deliveries(url, since=time.time() - 300)   # what the service does each loop
    for due in claim_due_deliveries(url, now=time.time(), limit=50, lease_seconds=120):
        ...  # send, then record_delivery_outcome(url, due.id, due.attempt, ...)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from vivace._ids import uuid7
from vivace.engine.states import StateType
from vivace.exceptions import ConfigurationError
from vivace.store import schema
from vivace.store.database import conflict_insert, ensure_schema, transaction
from vivace.store.queries import Bind, _engine, _reading

if TYPE_CHECKING:
    from vivace.blocks.notifications import Webhook

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"
DELIVERY_STATUSES = (PENDING, DELIVERED, FAILED)

TYPE_NAMES: dict[str, StateType] = {member.value.title(): member for member in StateType}
"""A state type's name as policies spell it ("Failed") -> the type, whose every state it matches."""
VARIANT_NAMES = ("AwaitingRetry", "Claimed", "Late", "Resuming", "Retrying", "Skipped", "TimedOut")
"""Named states a flow run can enter, each matched by its own name only."""
STATE_NAMES = (*TYPE_NAMES, *VARIANT_NAMES)

_POLICY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")
_MAX_FILTER = 255  # characters of one flow name, tag or deployment name
_BY_LOWER = {name.lower(): name for name in STATE_NAMES}


@dataclasses.dataclass(frozen=True, slots=True)
class NotificationPolicyRecord:
    """A policy. A filter that is None lets every run through."""

    id: uuid.UUID
    name: str
    states: tuple[str, ...]
    flow_names: tuple[str, ...] | None
    tags: tuple[str, ...] | None
    deployment_names: tuple[str, ...] | None
    block_name: str
    active: bool
    created: dt.datetime
    updated: dt.datetime


@dataclasses.dataclass(frozen=True, slots=True)
class NotificationDeliveryRecord:
    """A delivery as listed: with its policy's name and its run's (None once they are gone)."""

    id: uuid.UUID
    policy_id: uuid.UUID
    policy_name: str | None
    flow_run_id: uuid.UUID
    flow_run_name: str | None
    flow_name: str | None
    state_seq: int
    state_name: str
    status: str
    attempts: int
    next_attempt: dt.datetime | None
    last_error: str | None
    created: dt.datetime
    delivered: dt.datetime | None


@dataclasses.dataclass(frozen=True, slots=True)
class DueDelivery:
    """A delivery claimed for sending (``attempt``: which one this is, from 1), with what its
    notification says. ``flow_run_name`` is None when the run is no longer in the history."""

    id: uuid.UUID
    attempt: int
    policy_name: str
    block_name: str
    flow_run_id: uuid.UUID
    flow_run_name: str | None
    flow_name: str | None
    state_type: str | None
    state_name: str
    message: str | None
    timestamp: dt.datetime | None
    deployment_name: str | None
    tags: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class EnqueueResult:
    """What :func:`enqueue_deliveries` did. ``read_until``: when some policy had more new states
    than one batch, the time of the last state taken (read on from there); else None."""

    created: int
    read_until: float | None


# -- policies -----------------------------------------------------------------------------------


def check_state_names(values: Iterable[str]) -> tuple[str, ...]:
    """The state names, spelled as vivace spells them, each once; a ConfigurationError names any
    unknown one and lists the known."""
    if isinstance(values, str):
        values = [values]
    names: list[str] = []
    for value in values:
        name = _BY_LOWER.get(value.strip().lower()) if isinstance(value, str) else None
        if name is None:
            raise ConfigurationError(
                f"state {value!r} is not a state name vivace uses; expected one of "
                f"{', '.join(STATE_NAMES)} (any case)"
            )
        if name not in names:
            names.append(name)
    if not names:
        raise ConfigurationError(
            "a notification policy needs at least one state, such as Failed or Crashed"
        )
    return tuple(names)


def check_policy_name(name: str) -> str:
    """``name`` if it can name a policy, else a ConfigurationError saying what is expected."""
    if not isinstance(name, str) or not _POLICY_NAME.fullmatch(name):
        raise ConfigurationError(
            f"notification policy name {name!r} is not valid; expected 1 to 200 letters, "
            "digits, '-', '_' or '.', starting with a letter or digit"
        )
    return name


def create_notification_policy(
    bind: Bind,
    name: str,
    *,
    states: Iterable[str],
    block_name: str | None = None,
    webhook: Webhook | None = None,
    flow_names: Sequence[str] | None = None,
    tags: Sequence[str] | None = None,
    deployment_names: Sequence[str] | None = None,
    active: bool = True,
) -> NotificationPolicyRecord:
    """Create the policy; return it. It notifies of states entered from now on (while active).

    It sends with the Webhook block ``block_name``, or with ``webhook``, saved for it as the
    block ``<name>-webhook`` (:func:`webhook_block_name`). Raises ConfigurationError for a name
    already taken (the policy's, or the block's), an unknown state, a bad filter, or a
    ``block_name`` that is not a saved Webhook block.
    """
    from vivace.blocks.notifications import save_webhook, webhook_block_problem
    from vivace.blocks.store import delete_block
    from vivace.exceptions import BlockExistsError

    if (block_name is None) == (webhook is None):
        raise ConfigurationError(
            "a notification policy needs either the name of a Webhook block or a webhook"
        )
    check_policy_name(name)
    values: dict[str, Any] = {
        "states": list(check_state_names(states)),
        "flow_names": _filter(flow_names, "flow name"),
        "tags": _filter(tags, "tag"),
        "deployment_names": _filter(deployment_names, "deployment name"),
    }
    engine = _engine(bind)
    ensure_schema(engine)
    taken = ConfigurationError(
        f"a notification policy named {name!r} already exists; delete it first or choose "
        "another name"
    )
    if read_notification_policy(engine, name) is not None:
        raise taken
    if webhook is not None:
        block_name = webhook_block_name(name)
        try:
            save_webhook(engine, block_name, webhook)
        except BlockExistsError:
            raise ConfigurationError(
                f"a block named {block_name!r} already exists; send with it (block_name="
                f"{block_name!r}, --block {block_name}) or choose another policy name"
            ) from None
    else:
        assert block_name is not None
        problem = webhook_block_problem(engine, block_name)
        if problem is not None:
            raise ConfigurationError(problem)
    policies = schema.notification_policies
    now = time.time()
    try:
        with transaction(engine) as conn:
            conn.execute(
                sa.insert(policies).values(
                    id=uuid7(),
                    name=name,
                    block_name=block_name,
                    active=active,
                    created=now,
                    updated=now,
                    **values,
                )
            )
    except sa.exc.IntegrityError:
        if webhook is not None:  # another process took the name meanwhile: undo our block
            delete_block(engine, block_name)
        raise taken from None
    record = read_notification_policy(engine, name)
    assert record is not None
    return record


def webhook_block_name(policy_name: str) -> str:
    """The name of the block a policy created with a webhook saves it under."""
    return f"{policy_name}-webhook"


def read_notification_policy(bind: Bind, name: str) -> NotificationPolicyRecord | None:
    """The policy named ``name``, or None."""
    policies = schema.notification_policies
    with _reading(_engine(bind)) as conn:
        row = conn.execute(sa.select(policies).where(policies.c.name == name)).first()
    return None if row is None else _policy(row._mapping)


def read_notification_policies(
    bind: Bind, *, active_only: bool = False
) -> list[NotificationPolicyRecord]:
    """Every policy (or only the active ones), by name."""
    policies = schema.notification_policies
    query = sa.select(policies).order_by(policies.c.name)
    if active_only:
        query = query.where(policies.c.active.is_(True))
    with _reading(_engine(bind)) as conn:
        return [_policy(row._mapping) for row in conn.execute(query)]


def set_notification_policy_active(
    bind: Bind, name: str, active: bool
) -> NotificationPolicyRecord | None:
    """Pause (``active=False``) or resume the policy; return it afterwards, None if unknown.

    A paused policy makes no new deliveries and sends none of those still pending; once resumed
    it sends those, but never notifies of the states entered while it was paused.
    """
    engine = _engine(bind)
    ensure_schema(engine)
    policies = schema.notification_policies
    with transaction(engine) as conn:
        conn.execute(
            sa.update(policies)
            .where(policies.c.name == name)
            .values(active=active, updated=time.time())
        )
    return read_notification_policy(engine, name)


def delete_notification_policy(bind: Bind, name: str) -> bool:
    """Delete the policy and its deliveries; return whether it existed. Its webhook block stays."""
    engine = _engine(bind)
    ensure_schema(engine)
    policies, deliveries = schema.notification_policies, schema.notification_deliveries
    with transaction(engine) as conn:
        policy_id = conn.execute(
            sa.select(policies.c.id).where(policies.c.name == name)
        ).scalar_one_or_none()
        if policy_id is None:
            return False
        conn.execute(sa.delete(deliveries).where(deliveries.c.policy_id == policy_id))
        conn.execute(sa.delete(policies).where(policies.c.id == policy_id))
    return True


# -- matching states to policies ------------------------------------------------------------------


def enqueue_deliveries(
    bind: Bind, *, since: float, batch_size: int = 500, now: float | None = None
) -> EnqueueResult:
    """Create a pending delivery, due at ``now``, for each flow-run state written at or after
    ``since`` that an active policy asks for and that has none yet (at most ``batch_size`` per
    policy, in the order they were written). A policy only notifies of states entered while it
    is active: since it was created or last resumed (its ``updated`` time).

    "Written" is the row's ``recorded`` time, so a state that lands long after it was entered
    (its writer waited out a database outage) is still new when it lands."""
    now = time.time() if now is None else now
    engine = _engine(bind)
    ensure_schema(engine)
    created = 0
    read_until: float | None = None
    for policy in read_notification_policies(engine, active_only=True):
        query = _new_states(engine.dialect.name, policy, since, batch_size)
        with _reading(engine) as conn:
            rows = conn.execute(query).all()
        if not rows:
            continue
        if len(rows) == batch_size:
            last = rows[-1].landed.timestamp()
            read_until = last if read_until is None else min(read_until, last)
        created += _insert_deliveries(engine, policy.id, rows, now)
    return EnqueueResult(created, read_until)


def _new_states(
    dialect: str, policy: NotificationPolicyRecord, since: float, limit: int
) -> sa.Select[Any]:
    """The states written at or after ``since``, and entered since ``policy`` is active, that it
    matches and has no delivery for yet; ``landed``: when the row was written."""
    states, runs = schema.flow_run_states, schema.flow_runs
    deliveries, deployments = schema.notification_deliveries, schema.deployments
    types = [TYPE_NAMES[name].value for name in policy.states if name in TYPE_NAMES]
    variants = [name for name in policy.states if name not in TYPE_NAMES]
    matches: list[sa.ColumnElement[bool]] = []
    if types:
        matches.append(states.c.type.in_(types))
    if variants:
        matches.append(states.c.name.in_(variants))
    known = sa.exists().where(
        deliveries.c.policy_id == policy.id,
        deliveries.c.flow_run_id == states.c.flow_run_id,
        deliveries.c.state_seq == states.c.seq,
    )
    query = (
        sa.select(
            states.c.flow_run_id,
            states.c.seq,
            states.c.name,
            states.c.timestamp,
            states.c.recorded.label("landed"),
        )
        .select_from(states.join(runs, runs.c.id == states.c.flow_run_id))
        .where(
            # By the index on the time written, in its order: the first rows are the answer.
            states.c.recorded >= since,
            states.c.timestamp >= policy.updated.timestamp(),
            sa.or_(*matches),
            ~known,
        )
        .order_by(states.c.recorded, states.c.flow_run_id, states.c.seq)
        .limit(limit)
    )
    if policy.flow_names is not None:
        query = query.where(runs.c.flow_name.in_(policy.flow_names))
    if policy.deployment_names is not None:
        named = sa.select(deployments.c.id).where(deployments.c.name.in_(policy.deployment_names))
        query = query.where(runs.c.deployment_id.in_(named))
    if policy.tags is not None:
        query = query.where(_has_any_tag(dialect, runs.c.tags, policy.tags))
    return query


def _has_any_tag(
    dialect: str, column: sa.Column[Any], tags: Sequence[str]
) -> sa.ColumnElement[bool]:
    if dialect == "postgresql":
        # One JSONB containment per tag: the GIN index on flow_runs.tags answers each.
        as_jsonb = sa.type_coerce(column, postgresql.JSONB)
        return sa.or_(*(as_jsonb.contains([tag]) for tag in tags))
    each = sa.func.json_each(column).table_valued("value")
    return sa.exists(sa.select(1).select_from(each).where(each.c.value.in_(list(tags))))


def _insert_deliveries(
    engine: sa.Engine, policy_id: uuid.UUID, rows: Sequence[Any], now: float
) -> int:
    """Insert one pending delivery per state row, skipping those another process inserted, and
    none if the policy was deleted since it was read (its deliveries would stay forever)."""
    deliveries, policies = schema.notification_deliveries, schema.notification_policies
    values = [
        {
            "id": uuid7(),
            "policy_id": policy_id,
            "flow_run_id": row.flow_run_id,
            "state_seq": row.seq,
            "state_name": row.name,
            "status": PENDING,
            "attempts": 0,
            "next_attempt": now,
            "last_error": None,
            "created": now,
            "delivered": None,
        }
        for row in rows
    ]
    statement = (
        conflict_insert(engine.dialect.name, deliveries)
        .values(values)
        .on_conflict_do_nothing(index_elements=["policy_id", "flow_run_id", "state_seq"])
    )
    # The policy's row, locked against a delete until the deliveries are in (on SQLite the
    # transaction is a write lock already): a delete then takes them with it.
    policy = sa.select(policies.c.id).where(policies.c.id == policy_id)
    if engine.dialect.name == "postgresql":
        policy = policy.with_for_update(read=True)
    with transaction(engine) as conn:
        if conn.execute(policy).first() is None:
            return 0
        # RETURNING counts what was inserted on both backends (rowcount may be -1 here).
        return len(conn.execute(statement.returning(deliveries.c.id)).all())


# -- sending --------------------------------------------------------------------------------------


def claim_due_deliveries(
    bind: Bind, *, now: float, limit: int, lease_seconds: float
) -> list[DueDelivery]:
    """Claim up to ``limit`` pending deliveries due at ``now`` of active policies, oldest due
    first (see the module docstring); return them with their notifications' content."""
    engine = _engine(bind)
    ensure_schema(engine)
    deliveries, policies = schema.notification_deliveries, schema.notification_policies
    due = (
        sa.select(deliveries.c.id)
        .select_from(deliveries.join(policies, policies.c.id == deliveries.c.policy_id))
        .where(
            deliveries.c.status == PENDING,
            deliveries.c.next_attempt <= now,
            policies.c.active.is_(True),
        )
        .order_by(deliveries.c.next_attempt, deliveries.c.id)
        .limit(limit)
    )
    # A plain read first: most loops find nothing due and need no write lock.
    with _reading(engine) as conn:
        if conn.execute(due.limit(1)).first() is None:
            return []
    if engine.dialect.name == "postgresql":
        due = due.with_for_update(of=deliveries, skip_locked=True)
    with transaction(engine) as conn:
        ids = list(conn.execute(due).scalars())
        if not ids:
            return []
        claimed = conn.execute(
            sa.update(deliveries)
            .where(
                deliveries.c.id.in_(ids),
                deliveries.c.status == PENDING,
                deliveries.c.next_attempt <= now,
            )
            .values(attempts=deliveries.c.attempts + 1, next_attempt=now + lease_seconds)
            .returning(deliveries.c.id, deliveries.c.attempts)
        ).all()
    return _due_deliveries(engine, {row.id: row.attempts for row in claimed})


def _due_deliveries(engine: sa.Engine, attempts: dict[uuid.UUID, int]) -> list[DueDelivery]:
    if not attempts:
        return []
    deliveries, policies = schema.notification_deliveries, schema.notification_policies
    runs, states, deployments = schema.flow_runs, schema.flow_run_states, schema.deployments
    query = (
        sa.select(
            deliveries.c.id,
            policies.c.name.label("policy_name"),
            policies.c.block_name,
            deliveries.c.flow_run_id,
            runs.c.name.label("flow_run_name"),
            runs.c.flow_name,
            runs.c.tags,
            states.c.type.label("state_type"),
            deliveries.c.state_name,
            states.c.message,
            states.c.timestamp,
            deployments.c.name.label("deployment_name"),
        )
        .select_from(
            deliveries.join(policies, policies.c.id == deliveries.c.policy_id)
            .outerjoin(runs, runs.c.id == deliveries.c.flow_run_id)
            .outerjoin(
                states,
                sa.and_(
                    states.c.flow_run_id == deliveries.c.flow_run_id,
                    states.c.seq == deliveries.c.state_seq,
                ),
            )
            .outerjoin(deployments, deployments.c.id == runs.c.deployment_id)
        )
        .where(deliveries.c.id.in_(list(attempts)))
        .order_by(deliveries.c.next_attempt, deliveries.c.id)
    )
    with _reading(engine) as conn:
        rows = conn.execute(query).all()
    return [
        DueDelivery(
            id=row.id,
            attempt=attempts[row.id],
            policy_name=row.policy_name,
            block_name=row.block_name,
            flow_run_id=row.flow_run_id,
            flow_run_name=row.flow_run_name,
            flow_name=row.flow_name,
            state_type=row.state_type,
            state_name=row.state_name,
            message=row.message,
            timestamp=row.timestamp,
            deployment_name=row.deployment_name,
            tags=tuple(row.tags or ()),
        )
        for row in rows
    ]


def record_delivery_outcome(
    bind: Bind,
    delivery_id: uuid.UUID,
    attempt: int,
    *,
    now: float,
    error: str | None,
    retry_at: float | None = None,
) -> bool:
    """Record how attempt ``attempt`` went: delivered (``error`` None), to try again at
    ``retry_at``, or failed for good (an error and no ``retry_at``). Returns False, changing
    nothing, when the delivery was claimed again since (this attempt's lease ran out)."""
    engine = _engine(bind)
    ensure_schema(engine)
    deliveries = schema.notification_deliveries
    changes: dict[str, Any]
    if error is None:
        changes = {"status": DELIVERED, "delivered": now, "next_attempt": None, "last_error": None}
    elif retry_at is not None:
        changes = {"status": PENDING, "next_attempt": retry_at, "last_error": error}
    else:
        changes = {"status": FAILED, "next_attempt": None, "last_error": error}
    with transaction(engine) as conn:
        updated = conn.execute(
            sa.update(deliveries)
            .where(
                deliveries.c.id == delivery_id,
                deliveries.c.attempts == attempt,
                deliveries.c.status == PENDING,
            )
            .values(**changes)
        ).rowcount
    return bool(updated)


# -- listing --------------------------------------------------------------------------------------


def read_notification_deliveries(
    bind: Bind, *, policy_name: str | None = None, limit: int = 50
) -> list[NotificationDeliveryRecord]:
    """The latest deliveries (of one policy, when named), newest first."""
    if not isinstance(limit, int) or limit < 1:
        raise ConfigurationError(f"limit {limit!r} is not valid; expected a whole number >= 1")
    deliveries, policies, runs = (
        schema.notification_deliveries,
        schema.notification_policies,
        schema.flow_runs,
    )
    query = (
        sa.select(
            deliveries,
            policies.c.name.label("policy_name"),
            runs.c.name.label("flow_run_name"),
            runs.c.flow_name,
        )
        .select_from(
            deliveries.outerjoin(policies, policies.c.id == deliveries.c.policy_id).outerjoin(
                runs, runs.c.id == deliveries.c.flow_run_id
            )
        )
        .order_by(deliveries.c.created.desc(), deliveries.c.id.desc())
        .limit(limit)
    )
    if policy_name is not None:
        query = query.where(policies.c.name == policy_name)
    fields = [field.name for field in dataclasses.fields(NotificationDeliveryRecord)]
    with _reading(_engine(bind)) as conn:
        return [
            NotificationDeliveryRecord(**{field: row._mapping[field] for field in fields})
            for row in conn.execute(query)
        ]


def count_notification_deliveries(bind: Bind, *, since: float) -> dict[uuid.UUID, dict[str, int]]:
    """Per policy id, how many deliveries created at or after ``since`` are in each status."""
    deliveries = schema.notification_deliveries
    query = (
        sa.select(deliveries.c.policy_id, deliveries.c.status, sa.func.count())
        .where(deliveries.c.created >= since)
        .group_by(deliveries.c.policy_id, deliveries.c.status)
    )
    counts: dict[uuid.UUID, dict[str, int]] = {}
    with _reading(_engine(bind)) as conn:
        for policy_id, status, count in conn.execute(query):
            counts.setdefault(policy_id, dict.fromkeys(DELIVERY_STATUSES, 0))[status] = count
    return counts


def _filter(values: Sequence[str] | None, what: str) -> list[str] | None:
    """A filter's values, each once, or None (no filter) for none."""
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    kept: list[str] = []
    for value in values:
        if not isinstance(value, str) or not value or len(value) > _MAX_FILTER or "\x00" in value:
            raise ConfigurationError(
                f"{what} {value!r} is not valid; expected 1 to {_MAX_FILTER} characters"
            )
        if value not in kept:
            kept.append(value)
    return kept or None


def _policy(row: Any) -> NotificationPolicyRecord:
    def names(value: Any) -> tuple[str, ...] | None:
        return None if value is None else tuple(value)

    return NotificationPolicyRecord(
        id=row["id"],
        name=row["name"],
        states=tuple(row["states"]),
        flow_names=names(row["flow_names"]),
        tags=names(row["tags"]),
        deployment_names=names(row["deployment_names"]),
        block_name=row["block_name"],
        active=row["active"],
        created=row["created"],
        updated=row["updated"],
    )
