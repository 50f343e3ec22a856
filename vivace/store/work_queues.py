"""Work queues, workers, and the atomic claim of due flow runs.

A work queue is where a deployment's runs wait for a worker. It is created on first use (a deploy
or a worker naming it) and has a priority (lower is served first), an optional concurrency limit
(runs claimed and not yet over) and a paused flag (a paused queue hands out nothing).

:func:`claim_flow_runs` is how a worker takes runs: in one transaction it reads the due SCHEDULED
runs of its queues (those whose expected start is within the prefetch window), in queue priority
then start order, within each queue's free slots, each deployment's free slots (its
``concurrency_limit``: its runs claimed and not over, counted like a queue's) and the worker's
own free slots, and moves each to PENDING ``Claimed`` with the worker's id in one conditional
UPDATE. A run is claimed by exactly one worker: the UPDATE only matches a run still SCHEDULED and
not held by an engine (a SCHEDULED ``AwaitingRetry`` row with a ``heartbeat`` is its engine's,
waiting to retry its flow). A run later than its deployment's ``skip_late_after`` is never
claimed: the ``late_runs`` service ends it ``Skipped`` (:mod:`vivace.store.run_health`), and the
claim does not wait for it to look. On SQLite the transaction holds the write lock from its
start; on PostgreSQL the queue rows, then the rows of the limited deployments with due runs, are
locked first, so two workers never both count the same free slot.

Lost workers: a worker killed with ``kill -9`` (or whose machine died) never gives back the runs
it claimed and had not launched yet. The same claim transaction first puts such runs of the
claiming worker's queues back: PENDING ``Claimed`` runs no engine took (no ``heartbeat``) whose
worker is gone or has not heartbeated for ``lost_after`` seconds (the API passes three heartbeat
intervals) become SCHEDULED again, with a message naming the lost worker, and are then claimed
like any other. It reads only the PENDING runs of those queues (an index range), never the
history. A run that was launched and whose engine then died (RUNNING, heartbeat stopped) is not
handled here: detecting zombie runs is the job of a separate service.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import socket
import time
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from vivace._ids import uuid7
from vivace.engine.states import StateType
from vivace.exceptions import ConfigurationError
from vivace.store import schema
from vivace.store.database import (
    conflict_insert,
    connect,
    ensure_schema,
    get_engine,
    transaction,
)
from vivace.store.records import FlowRunRecord

Bind = sa.Engine | str

DEFAULT_PRIORITY = 10
CLAIMED_NAME = "Claimed"
SCHEDULED_NAME = "Scheduled"
# Claimed and not over: what a queue's concurrency limit counts.
_OCCUPYING = (StateType.PENDING, StateType.RUNNING, StateType.CANCELLING, StateType.PAUSED)


def _occupying() -> tuple[sa.ColumnElement[bool], ...]:
    """A run that holds one of its queue's (or deployment's) slots: claimed and not over, or
    SCHEDULED while its engine waits to retry it (its process still runs). Two conditions, each
    one index range on (queue or deployment, state_type): as one OR, SQLite reads every run the
    queue or deployment ever had."""
    runs = schema.flow_runs
    return (
        runs.c.state_type.in_([s.value for s in _OCCUPYING]),
        sa.and_(runs.c.state_type == StateType.SCHEDULED.value, runs.c.heartbeat.is_not(None)),
    )


def _count_occupying(
    conn: sa.Connection, column: sa.Column[Any], keys: Sequence[Any]
) -> dict[Any, int]:
    """How many runs of each of ``keys`` (values of ``column``: queue names, deployment ids)
    hold a slot."""
    counts = dict.fromkeys(keys, 0)
    for condition in _occupying():
        query = (
            sa.select(column, sa.func.count())
            .where(column.in_(list(keys)), condition)
            .group_by(column)
        )
        for key, count in conn.execute(query):
            counts[key] += count
    return counts


_MAX_NAME = 255


@dataclasses.dataclass(frozen=True, slots=True)
class WorkQueueRecord:
    id: uuid.UUID
    name: str
    priority: int
    concurrency_limit: int | None
    paused: bool
    created: dt.datetime
    last_polled: dt.datetime | None


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerRecord:
    id: uuid.UUID
    name: str
    type: str
    queues: list[str]
    hostname: str
    pid: int
    started: dt.datetime
    heartbeat: dt.datetime


def check_queue_name(name: str) -> str:
    """``name`` if it can name a work queue, else a ConfigurationError saying what is expected."""
    if not isinstance(name, str) or not name.strip() or len(name) > _MAX_NAME:
        raise ConfigurationError(
            f"work queue name {name!r} is not valid; expected 1 to {_MAX_NAME} characters"
        )
    return name


def ensure_work_queue(conn: sa.Connection, name: str) -> None:
    """Create the queue ``name`` (default priority, no limit, not paused) unless it exists.

    One ``INSERT ... ON CONFLICT DO NOTHING``: a worker registering and a deploy creating the
    same new queue at once (two transactions that each found no row) both succeed.
    """
    queues = schema.work_queues
    check_queue_name(name)
    conn.execute(
        conflict_insert(conn.dialect.name, queues)
        .values(
            id=uuid7(),
            name=name,
            priority=DEFAULT_PRIORITY,
            concurrency_limit=None,
            paused=False,
            created=time.time(),
        )
        .on_conflict_do_nothing(index_elements=["name"])
    )


def update_work_queue(
    bind: Bind,
    name: str,
    *,
    priority: int | None = None,
    concurrency_limit: int | object | None = ...,
    paused: bool | None = None,
) -> WorkQueueRecord:
    """Create the queue if it is new, then set what is given (``concurrency_limit=None``
    removes the limit; leave it out to keep it); return the queue."""
    if priority is not None and not isinstance(priority, int):
        raise ConfigurationError(f"work queue priority {priority!r} is not an integer")
    if (
        concurrency_limit is not ...
        and concurrency_limit is not None
        and (not isinstance(concurrency_limit, int) or concurrency_limit < 0)
    ):
        raise ConfigurationError(
            f"work queue concurrency limit {concurrency_limit!r} is not valid; "
            "expected a whole number >= 0, or none for no limit"
        )
    engine = _engine(bind)
    ensure_schema(engine)
    changes: dict[str, Any] = {}
    if priority is not None:
        changes["priority"] = priority
    if concurrency_limit is not ...:
        changes["concurrency_limit"] = concurrency_limit
    if paused is not None:
        changes["paused"] = paused
    queues = schema.work_queues
    with transaction(engine) as conn:
        ensure_work_queue(conn, name)
        if changes:
            conn.execute(sa.update(queues).where(queues.c.name == name).values(**changes))
    record = read_work_queue(engine, name)
    assert record is not None
    return record


def read_work_queue(bind: Bind, name: str) -> WorkQueueRecord | None:
    queues = schema.work_queues
    engine = _engine(bind)
    ensure_schema(engine)
    with connect(engine) as conn:
        row = conn.execute(sa.select(queues).where(queues.c.name == name)).first()
    return None if row is None else WorkQueueRecord(**row._mapping)


def read_work_queues(bind: Bind) -> list[WorkQueueRecord]:
    """Every work queue, in the order workers serve them (priority, then name)."""
    queues = schema.work_queues
    engine = _engine(bind)
    ensure_schema(engine)
    with connect(engine) as conn:
        rows = conn.execute(sa.select(queues).order_by(queues.c.priority, queues.c.name))
        return [WorkQueueRecord(**row._mapping) for row in rows]


def count_active_runs(bind: Bind, names: Sequence[str]) -> dict[str, int]:
    """How many runs of each queue are claimed and not over (what its limit counts)."""
    engine = _engine(bind)
    ensure_schema(engine)
    with connect(engine) as conn:
        return _count_occupying(conn, schema.flow_runs.c.work_queue_name, names)


def count_waiting_runs(bind: Bind, names: Sequence[str]) -> dict[str, int]:
    """How many runs of each queue are SCHEDULED, waiting for a worker to claim them (not
    those their engine holds between two attempts)."""
    runs = schema.flow_runs
    return _count_runs_by_queue(
        bind,
        names,
        runs.c.state_type == StateType.SCHEDULED.value,
        runs.c.heartbeat.is_(None),
    )


def _count_runs_by_queue(
    bind: Bind, names: Sequence[str], *conditions: sa.ColumnElement[bool]
) -> dict[str, int]:
    """How many runs of each of the queues ``names`` match every one of ``conditions``."""
    runs = schema.flow_runs
    engine = _engine(bind)
    ensure_schema(engine)
    query = (
        sa.select(runs.c.work_queue_name, sa.func.count())
        .where(runs.c.work_queue_name.in_(list(names)), *conditions)
        .group_by(runs.c.work_queue_name)
    )
    counts = dict.fromkeys(names, 0)
    with connect(engine) as conn:
        for name, count in conn.execute(query):
            counts[name] = count
    return counts


def register_worker(
    bind: Bind,
    name: str,
    worker_type: str,
    queues: Sequence[str],
    worker_id: uuid.UUID | None = None,
) -> WorkerRecord:
    """Record a starting worker (its queues are created if new); return its record.

    ``worker_id``: register under this id (a worker the server forgot registering again, so
    that the runs it claimed stay its own); a worker already known by it is updated.
    """
    engine = _engine(bind)
    ensure_schema(engine)
    now = time.time()
    worker_id = worker_id or uuid7()
    workers = schema.workers
    values = {
        "name": name,
        "type": worker_type,
        "queues": list(queues),
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "heartbeat": now,
    }
    with transaction(engine) as conn:
        for queue in queues:
            ensure_work_queue(conn, queue)
        updated = conn.execute(
            sa.update(workers).where(workers.c.id == worker_id).values(**values)
        ).rowcount
        if not updated:
            conn.execute(sa.insert(workers).values(id=worker_id, started=now, **values))
    with connect(engine) as conn:
        row = conn.execute(sa.select(workers).where(workers.c.id == worker_id)).one()
    return WorkerRecord(**row._mapping)


def worker_heartbeat(bind: Bind, worker_id: uuid.UUID) -> list[uuid.UUID]:
    """Record that the worker is alive; return the ids of its runs now CANCELLING (to stop)."""
    engine = _engine(bind)
    ensure_schema(engine)
    workers, runs = schema.workers, schema.flow_runs
    with transaction(engine) as conn:
        conn.execute(
            sa.update(workers).where(workers.c.id == worker_id).values(heartbeat=time.time())
        )
        found = conn.execute(
            sa.select(runs.c.id).where(
                runs.c.worker_id == worker_id,
                runs.c.state_type == StateType.CANCELLING.value,
            )
        ).scalars()
        return list(found)


def remove_worker(bind: Bind, worker_id: uuid.UUID) -> None:
    """Forget a worker that stopped."""
    engine = _engine(bind)
    ensure_schema(engine)
    with transaction(engine) as conn:
        conn.execute(sa.delete(schema.workers).where(schema.workers.c.id == worker_id))


def read_workers(bind: Bind) -> list[WorkerRecord]:
    workers = schema.workers
    engine = _engine(bind)
    ensure_schema(engine)
    with connect(engine) as conn:
        rows = conn.execute(sa.select(workers).order_by(workers.c.started))
        return [WorkerRecord(**row._mapping) for row in rows]


def claim_flow_runs(
    bind: Bind,
    *,
    worker_id: uuid.UUID,
    queues: Sequence[str],
    limit: int,
    prefetch_seconds: float = 10.0,
    infrastructure_types: Sequence[str] | None = None,
    lost_after: float | None = None,
) -> list[FlowRunRecord]:
    """Claim up to ``limit`` due runs of ``queues`` for the worker (see the module docstring).

    ``infrastructure_types``: only runs whose deployment starts on one of these (None: any).
    ``lost_after``: first give back the runs of ``queues`` claimed by workers silent for this
    many seconds (None: do not). Runs are returned in the order they should start.
    """
    from vivace.store.queries import read_flow_run

    if limit <= 0 or not queues:
        return []
    engine = _engine(bind)
    ensure_schema(engine)
    table = schema.work_queues
    now = time.time()
    claim = _Claim(
        engine.dialect.name, worker_id, now, now + prefetch_seconds, infrastructure_types
    )
    with transaction(engine) as conn:
        conn.execute(sa.update(table).where(table.c.name.in_(list(queues))).values(last_polled=now))
        if lost_after is not None:
            _give_back_lost_claims(conn, queues, now - lost_after)
        query = (
            sa.select(table.c.name, table.c.concurrency_limit)
            .where(table.c.name.in_(list(queues)), table.c.paused.is_(False))
            .order_by(table.c.priority, table.c.name)
        )
        if claim.postgres:
            query = query.with_for_update()
        open_queues = conn.execute(query).all()
        claim.read_deployment_rooms(conn, [name for name, _ in open_queues])
        for queue_name, queue_limit in open_queues:
            room = limit - len(claim.claimed)
            if room <= 0:
                break
            if queue_limit is not None:
                runs = schema.flow_runs
                active = _count_occupying(conn, runs.c.work_queue_name, [queue_name])
                room = min(room, queue_limit - active[queue_name])
            if room > 0:
                claim.claim_from(conn, queue_name, room)
    records = [read_flow_run(engine, run_id) for run_id in claim.claimed]
    return [record for record in records if record is not None]


class _Claim:
    """One worker's claim, inside its transaction: the due runs it takes, queue by queue, within
    the free slots of their deployments' concurrency limits, skipping runs their deployment says
    are too late to start (:func:`vivace.store.run_health.in_time`).

    A deployment's limit is counted like a queue's (its runs claimed and not over). Its runs may
    wait in several queues (a redeploy can move the deployment to another queue), so two workers
    of different queues may claim them at once: on PostgreSQL the rows of the limited deployments
    that have due runs are locked (in id order, after the queues) before their runs are counted.
    """

    def __init__(
        self,
        dialect: str,
        worker_id: uuid.UUID,
        now: float,
        horizon: float,
        infrastructure_types: Sequence[str] | None,
    ) -> None:
        self.dialect = dialect
        self.postgres = dialect == "postgresql"
        self.worker_id = worker_id
        self.now = now
        self.horizon = horizon
        self.infrastructure_types = infrastructure_types
        self.claimed: list[uuid.UUID] = []
        # Free slots of each limited deployment that has due runs in the open queues.
        self.deployment_rooms: dict[uuid.UUID, int] = {}

    def _due(self, *conditions: sa.ColumnElement[bool]) -> sa.ColumnElement[bool]:
        runs = schema.flow_runs
        due = sa.and_(
            runs.c.state_type == StateType.SCHEDULED.value,
            runs.c.expected_start_time <= self.horizon,
            runs.c.heartbeat.is_(None),
            *conditions,
        )
        if self.infrastructure_types is not None:
            due = sa.and_(due, runs.c.infrastructure_type.in_(list(self.infrastructure_types)))
        return due

    def read_deployment_rooms(self, conn: sa.Connection, queues: Sequence[str]) -> None:
        """Lock (PostgreSQL) and count the limited deployments with due runs in ``queues``."""
        if not queues:
            return
        runs, deployments = schema.flow_runs, schema.deployments
        having_due = sa.select(runs.c.deployment_id).where(
            self._due(runs.c.work_queue_name.in_(list(queues)))
        )
        query = (
            sa.select(deployments.c.id, deployments.c.concurrency_limit)
            .where(deployments.c.concurrency_limit.is_not(None), deployments.c.id.in_(having_due))
            .order_by(deployments.c.id)
        )
        if self.postgres:
            query = query.with_for_update(of=deployments)
        limits: dict[uuid.UUID, int] = {key: value for key, value in conn.execute(query)}
        if not limits:
            return
        active = _count_occupying(conn, runs.c.deployment_id, list(limits))
        self.deployment_rooms = {key: limits[key] - active[key] for key in limits}

    def claim_from(self, conn: sa.Connection, queue: str, room: int) -> None:
        """Claim up to ``room`` due runs of ``queue``, in start order, within the deployments'
        free slots: a batch of due runs at a time, leaving out the deployments found full."""
        from vivace.store.run_control import transition_flow_run
        from vivace.store.run_health import in_time

        runs, deployments = schema.flow_runs, schema.deployments
        while room > 0:
            requested = room
            full = [key for key, left in self.deployment_rooms.items() if left <= 0]
            query = (
                sa.select(runs.c.id, runs.c.deployment_id, deployments.c.concurrency_limit)
                .select_from(runs.outerjoin(deployments, deployments.c.id == runs.c.deployment_id))
                .where(
                    self._due(runs.c.work_queue_name == queue),
                    in_time(self.now, self.dialect),
                )
                .order_by(runs.c.expected_start_time, runs.c.id)
                .limit(room)
            )
            if full:
                query = query.where(runs.c.deployment_id.not_in(full))
            found = conn.execute(query).all()
            became_full = False
            for run_id, deployment_id, deployment_limit in found:
                if deployment_limit is not None:
                    left = self.deployment_rooms.get(deployment_id)
                    if left is None:
                        continue  # limited (or due) since its slots were counted: next claim
                    if left <= 0:
                        became_full = True
                        continue
                seq = transition_flow_run(
                    conn,
                    run_id,
                    StateType.PENDING,
                    CLAIMED_NAME,
                    None,
                    allowed_from=(StateType.SCHEDULED,),
                    values={"worker_id": self.worker_id},
                    where=runs.c.heartbeat.is_(None),
                )
                if seq is None:
                    continue
                self.claimed.append(run_id)
                room -= 1
                if deployment_limit is not None:
                    self.deployment_rooms[deployment_id] -= 1
            # Runs passed over because their deployment filled up meanwhile: look again without
            # that deployment (each pass leaves out one more, so this ends).
            if not became_full or len(found) < requested:
                return


def _give_back_lost_claims(conn: sa.Connection, queues: Sequence[str], silent_since: float) -> None:
    """PENDING ``Claimed`` runs of ``queues`` that no engine took, claimed by a worker that is gone
    or has not heartbeated since ``silent_since``: SCHEDULED again (see the module docstring);
    those being cancelled meanwhile (CANCELLING, which only that worker would have ended):
    CANCELLED."""
    from vivace.store.run_control import cancel_if_cancelling, transition_flow_run

    runs, workers = schema.flow_runs, schema.workers
    lost = conn.execute(
        sa.select(runs.c.id, runs.c.worker_id, workers.c.name)
        .select_from(runs.outerjoin(workers, workers.c.id == runs.c.worker_id))
        .where(
            runs.c.work_queue_name.in_(list(queues)),
            runs.c.state_type.in_([StateType.PENDING.value, StateType.CANCELLING.value]),
            runs.c.heartbeat.is_(None),
            runs.c.worker_id.is_not(None),
            sa.or_(workers.c.id.is_(None), workers.c.heartbeat < silent_since),
        )
    ).all()
    for run_id, worker_id, name in lost:
        who = f"worker {name!r} ({worker_id})" if name is not None else f"worker {worker_id}"
        still_its = sa.and_(runs.c.heartbeat.is_(None), runs.c.worker_id == worker_id)
        cancelled = cancel_if_cancelling(
            conn,
            run_id,
            f"cancelled before it started: {who}, which claimed it, stopped heartbeating",
            where=still_its,
        )
        if cancelled is not None:
            continue
        transition_flow_run(
            conn,
            run_id,
            StateType.SCHEDULED,
            SCHEDULED_NAME,
            f"given back: {who}, which claimed it, stopped heartbeating before launching it",
            allowed_from=(StateType.PENDING,),
            values={"worker_id": None},
            where=still_its,
        )


def record_infrastructure_id(bind: Bind, flow_run_id: uuid.UUID, infrastructure_id: str) -> None:
    """Remember what the worker launched for the run (a pid, a container id, a job name)."""
    engine = _engine(bind)
    ensure_schema(engine)
    runs = schema.flow_runs
    with transaction(engine) as conn:
        conn.execute(
            sa.update(runs)
            .where(runs.c.id == flow_run_id)
            .values(infrastructure_id=infrastructure_id[:255])
        )


def _engine(bind: Bind) -> sa.Engine:
    return get_engine(bind) if isinstance(bind, str) else bind
