"""Deployments' schedules in the database, and the scheduler's loop that creates their runs.

A deployment has zero or more schedules (``deployment_schedules``), each a
:class:`vivace.schedules.Schedule` stored as its ``to_dict()``, with its own run parameters, an
``active`` flag and two times kept by the scheduler:

``filled_until``
    the latest scheduled time a run was created for (None: none yet, or paused since);
``due_at``
    when the scheduler must next look at the schedule (None while paused, or when the schedule
    has no more times): the moment its earliest future run starts when it has its
    ``max_runs`` runs ahead, else the moment the horizon (``now + max_scheduled_time``) reaches
    its next time.

A loop (:func:`run_scheduler_loop`) reads only the schedules with ``due_at <= now``, through an
index, in batches: its cost follows what is due, not how many schedules or runs exist, and a
loop with nothing due is one indexed query. For each, it creates SCHEDULED runs
(``expected_start_time``: when the run should start) for the schedule's next times, so that the
schedule has at most ``max_runs`` runs ahead within ``max_scheduled_time``. Its runs ahead are
counted from the schedule itself (its times between now and ``filled_until``), never from the
runs table, where runs get claimed, deleted or cancelled.

Idempotent across processes: a run is unique per (schedule, scheduled time) (a unique index);
inserts skip a time that exists (``ON CONFLICT DO NOTHING``), and only the runs actually inserted
get their first state row. On PostgreSQL a loop locks the schedule rows it fills (``FOR UPDATE
SKIP LOCKED``: two loops share the work), and a redeploy, pause or deployment delete locks the
rows it changes (``FOR UPDATE``), so it waits for a loop filling them and then removes that
loop's runs too. On SQLite every write transaction holds the database's write lock.

Redeploys (:func:`replace_deployment_schedules`, inside ``save_deployment``'s transaction): a
schedule with the same definition and parameters as one the deployment has keeps its row (its
id, ``filled_until``, runs and paused state); one not in the new list is deleted with its runs
that have not started (SCHEDULED waiting for a first start, not claimed, not held by an engine;
a run retried by hand keeps its schedule and time, and stays); new ones are due now.

Example::

    created = run_scheduler_loop(url)                        # what the scheduler service does
    for record in read_deployment_schedules(url, deployment.id):
        print(record.position, record.schedule.describe(), record.active)
    set_schedule_active(url, record.id, False)               # pause: its waiting runs go
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import json
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any, cast

import sqlalchemy as sa

from vivace._ids import uuid7
from vivace.engine.states import StateType
from vivace.exceptions import ConfigurationError, ScheduleNotFoundError
from vivace.schedules import Schedule, schedule_from_dict
from vivace.settings import get_settings
from vivace.store import schema
from vivace.store.database import conflict_insert, ensure_schema, transaction
from vivace.store.queries import Bind, _engine, _reading
from vivace.store.run_health import WAITING_NAMES

UTC = dt.UTC
AUTO_SCHEDULED_TAG = "auto-scheduled"
"""The tag every run the scheduler creates carries, besides its deployment's tags."""
BATCH_SIZE = 200
"""Schedules read per transaction: short locks, bounded memory."""
RUNS_PER_TRANSACTION = 2000
"""A transaction ends once it has this many runs to insert (a first fill of many schedules
would otherwise hold SQLite's write lock for seconds); the rest of its batch stays due."""
# How far past the horizon to look for a schedule's next time (the rarest cron, Feb 29 on a
# Monday, recurs within 28 years).
_NEXT_TIME_WITHIN = dt.timedelta(days=366 * 40)
_ID_CHUNK = 1000  # ids per IN (...) list
# When a schedule that cannot be computed is looked at again.
_RETRY_BROKEN_AFTER = 3600.0

logger = logging.getLogger("vivace.scheduler")


@dataclasses.dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """One schedule of a deployment, as stored."""

    id: uuid.UUID
    deployment_id: uuid.UUID
    # Its place among the deployment's schedules, from 0, as deployed.
    position: int
    # The definition, with this row's ``active`` and ``parameters``.
    schedule: Schedule
    parameters: dict[str, Any] | None
    active: bool
    filled_until: dt.datetime | None
    due_at: dt.datetime | None
    created: dt.datetime
    updated: dt.datetime


# -- reads ----------------------------------------------------------------------------------------


def read_deployment_schedules(bind: Bind, deployment_id: uuid.UUID) -> list[ScheduleRecord]:
    """The deployment's schedules, by position."""
    table = schema.deployment_schedules
    query = (
        sa.select(table)
        .where(table.c.deployment_id == deployment_id)
        .order_by(table.c.position, table.c.id)
    )
    with _reading(_engine(bind)) as conn:
        return [_record(row) for row in conn.execute(query)]


def read_schedules_of_deployments(
    bind: Bind, deployment_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[ScheduleRecord]]:
    """The schedules of each of these deployments (by position), in one query per
    ``_ID_CHUNK`` ids: what a page listing deployments shows, without a query per deployment.
    Every id asked is a key (with an empty list when it has no schedule)."""
    found: dict[uuid.UUID, list[ScheduleRecord]] = {key: [] for key in deployment_ids}
    if not found:
        return found
    table = schema.deployment_schedules
    ids = list(found)
    with _reading(_engine(bind)) as conn:
        for start in range(0, len(ids), _ID_CHUNK):
            query = (
                sa.select(table)
                .where(table.c.deployment_id.in_(ids[start : start + _ID_CHUNK]))
                .order_by(table.c.deployment_id, table.c.position, table.c.id)
            )
            for row in conn.execute(query):
                found[row.deployment_id].append(_record(row))
    return found


def read_schedule(bind: Bind, schedule_id: uuid.UUID) -> ScheduleRecord | None:
    """The schedule with this id, or None."""
    table = schema.deployment_schedules
    with _reading(_engine(bind)) as conn:
        row = conn.execute(sa.select(table).where(table.c.id == schedule_id)).first()
    return None if row is None else _record(row)


def _record(row: sa.Row[Any]) -> ScheduleRecord:
    values = row._mapping
    definition = schedule_from_dict(values["schedule"])
    schedule = dataclasses.replace(
        cast(Any, definition), active=bool(values["active"]), parameters=values["parameters"]
    )
    return ScheduleRecord(
        id=values["id"],
        deployment_id=values["deployment_id"],
        position=values["position"],
        schedule=schedule,
        parameters=values["parameters"],
        active=bool(values["active"]),
        filled_until=values["filled_until"],
        due_at=values["due_at"],
        created=values["created"],
        updated=values["updated"],
    )


# -- changes --------------------------------------------------------------------------------------


def set_schedule_active(
    bind: Bind, schedule_id: uuid.UUID, active: bool
) -> tuple[ScheduleRecord, int]:
    """Pause (``active=False``) or resume a schedule; return it and how many runs were deleted.

    Pausing deletes the schedule's runs that have not started and forgets ``filled_until``;
    resuming makes it due now, so the next loop fills it again. Either is idempotent. Raises
    ScheduleNotFoundError naming the id when there is no such schedule.
    """
    engine = _engine(bind)
    ensure_schema(engine)
    table = schema.deployment_schedules
    deleted = 0
    with transaction(engine) as conn:
        query = sa.select(table.c.active).where(table.c.id == schedule_id)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        found = conn.execute(query).first()
        if found is None:
            raise ScheduleNotFoundError(
                f"no deployment schedule with id {schedule_id}; `vivace deployment schedule ls "
                "DEPLOYMENT` lists a deployment's schedules"
            )
        now = time.time()
        if not active:
            deleted = _delete_unstarted_runs(conn, [schedule_id])
            conn.execute(
                sa.update(table)
                .where(table.c.id == schedule_id)
                .values(active=False, due_at=None, filled_until=None, updated=now)
            )
        elif not found.active:
            conn.execute(
                sa.update(table)
                .where(table.c.id == schedule_id)
                .values(active=True, due_at=now, filled_until=None, updated=now)
            )
    record = read_schedule(engine, schedule_id)
    assert record is not None
    return record, deleted


def replace_deployment_schedules(
    conn: sa.Connection, deployment_id: uuid.UUID, schedules: Sequence[Schedule], now: float
) -> None:
    """Make the deployment's schedules exactly ``schedules``, in this order (inside the deploy's
    transaction).

    A schedule whose definition and parameters match one the deployment has keeps that row (id,
    ``filled_until``, runs, active or paused); the others are deleted with their runs that have
    not started; new ones are inserted (due now when active).
    """
    table = schema.deployment_schedules
    query = sa.select(table.c.id, table.c.schedule, table.c.parameters).where(
        table.c.deployment_id == deployment_id
    )
    if conn.dialect.name == "postgresql":
        # Wait for a loop filling them: it commits its runs before they can be removed.
        query = query.order_by(table.c.id).with_for_update()
    existing: dict[tuple[str, str], list[uuid.UUID]] = {}
    for row in conn.execute(query):
        key = (schedule_from_dict(row.schedule).definition_key(), _canonical(row.parameters))
        existing.setdefault(key, []).append(row.id)
    inserts: list[dict[str, Any]] = []
    for position, schedule in enumerate(schedules):
        kept = existing.get((schedule.definition_key(), _canonical(schedule.parameters)))
        if kept:
            conn.execute(
                sa.update(table).where(table.c.id == kept.pop(0)).values(position=position)
            )
            continue
        inserts.append(
            {
                "id": uuid7(),
                "deployment_id": deployment_id,
                "position": position,
                "schedule": schedule.to_dict(),
                "parameters": schedule.parameters,
                "active": schedule.active,
                "filled_until": None,
                "due_at": now if schedule.active else None,
                "created": now,
                "updated": now,
            }
        )
    removed = [schedule_id for ids in existing.values() for schedule_id in ids]
    if removed:
        _delete_unstarted_runs(conn, removed)
        conn.execute(sa.delete(table).where(table.c.id.in_(removed)))
    if inserts:
        conn.execute(sa.insert(table), inserts)


def refresh_waiting_runs(
    conn: sa.Connection,
    deployment_id: uuid.UUID,
    version: int,
    *,
    parameters: dict[str, Any],
    tags: Sequence[str],
    work_queue_name: str,
    infrastructure_type: str,
) -> None:
    """Make the runs the deployment's schedules made ahead, and that have not started, runs of
    its new ``version`` (inside the deploy's transaction, after the schedules are replaced).

    They were made from the version deployed then; a redeploy that changes the code, the
    parameters, the tags or the work queue (whose old queue may have no worker any more) applies
    to them too, as to the runs the scheduler makes next. A run someone created by hand keeps
    the version it was created for; so does a scheduled run retried by hand.
    """
    table, runs = schema.deployment_schedules, schema.flow_runs
    query = sa.select(table.c.id, table.c.parameters).where(table.c.deployment_id == deployment_id)
    if conn.dialect.name == "postgresql":
        # As replace_deployment_schedules: a loop filling them commits first; later loops skip
        # them until this deploy commits, then make runs of the new version.
        query = query.order_by(table.c.id).with_for_update()
    run_tags = list(dict.fromkeys([*tags, AUTO_SCHEDULED_TAG]))
    for schedule_id, schedule_parameters in conn.execute(query).all():
        conn.execute(
            sa.update(runs)
            .where(runs.c.schedule_id == schedule_id, *_waiting_for_first_start(runs))
            .values(
                deployment_version=version,
                parameters={**parameters, **(schedule_parameters or {})},
                tags=run_tags,
                work_queue_name=work_queue_name,
                infrastructure_type=infrastructure_type,
            )
        )


def drop_deployment_schedules(conn: sa.Connection, deployment_id: uuid.UUID) -> int:
    """Delete the deployment's schedules and their runs that have not started (inside the
    deployment delete's transaction); return how many runs were deleted."""
    table = schema.deployment_schedules
    query = sa.select(table.c.id).where(table.c.deployment_id == deployment_id)
    if conn.dialect.name == "postgresql":
        query = query.order_by(table.c.id).with_for_update()
    ids = list(conn.execute(query).scalars())
    if not ids:
        return 0
    deleted = _delete_unstarted_runs(conn, ids)
    conn.execute(sa.delete(table).where(table.c.id.in_(ids)))
    return deleted


def _delete_unstarted_runs(conn: sa.Connection, schedule_ids: Sequence[uuid.UUID]) -> int:
    """Delete the schedules' runs that have not started, with their state rows; how many.

    Not started: waiting for its first start (SCHEDULED ``Scheduled`` or ``Late``; not an
    ``AwaitingRetry`` run someone retried, which has a history), not claimed by a worker and not
    held by an engine. Each run row is deleted (and so locked) before its states, so a worker
    claiming it at that moment either finds it gone or keeps it whole.
    """
    runs, states = schema.flow_runs, schema.flow_run_states
    deleted: list[uuid.UUID] = []
    for start in range(0, len(schedule_ids), _ID_CHUNK):
        chunk = list(schedule_ids[start : start + _ID_CHUNK])
        deleted += conn.execute(
            sa.delete(runs)
            .where(runs.c.schedule_id.in_(chunk), *_waiting_for_first_start(runs))
            .returning(runs.c.id)
        ).scalars()
    for start in range(0, len(deleted), _ID_CHUNK):
        chunk = deleted[start : start + _ID_CHUNK]
        conn.execute(sa.delete(states).where(states.c.flow_run_id.in_(chunk)))
    return len(deleted)


def _waiting_for_first_start(runs: sa.Table) -> tuple[sa.ColumnElement[bool], ...]:
    """A run that has not started: SCHEDULED ``Scheduled`` or ``Late`` (not ``AwaitingRetry``),
    not claimed by a worker, not held by an engine."""
    return (
        runs.c.state_type == StateType.SCHEDULED.value,
        runs.c.state_name.in_(WAITING_NAMES),
        runs.c.worker_id.is_(None),
        runs.c.heartbeat.is_(None),
    )


# -- the scheduler's loop -------------------------------------------------------------------------


def run_scheduler_loop(
    bind: Bind,
    *,
    now: float | None = None,
    max_runs: int | None = None,
    max_scheduled_time: dt.timedelta | None = None,
    time_budget: float | None = None,
) -> int:
    """Create the runs of every due schedule; return how many runs were created.

    ``now`` (Unix seconds; default: the clock), ``max_runs`` and ``max_scheduled_time`` default
    to the settings ``VIVACE_SCHEDULER_MAX_RUNS`` and ``VIVACE_SCHEDULER_MAX_SCHEDULED_TIME``.
    ``time_budget``: seconds after which no new transaction starts (None: go on until nothing is
    due); the schedules left are still due, the most overdue first, for the next call
    (:func:`has_due_schedules` tells). Safe to run in several threads or processes at once.
    """
    engine = _engine(bind)
    ensure_schema(engine)
    settings = get_settings()
    if max_runs is not None and max_runs < 1:
        raise ConfigurationError(f"max_runs={max_runs!r} is not valid; expected at least 1")
    if max_scheduled_time is not None and max_scheduled_time <= dt.timedelta(0):
        raise ConfigurationError(
            f"max_scheduled_time={max_scheduled_time!r} is not valid; expected a positive timedelta"
        )
    moment = time.time() if now is None else now
    limits = _Limits(
        now=dt.datetime.fromtimestamp(moment, UTC),
        max_runs=settings.scheduler_max_runs if max_runs is None else max_runs,
        ahead=(
            settings.scheduler_max_scheduled_time
            if max_scheduled_time is None
            else max_scheduled_time
        ),
    )
    # Nothing due: one read of the due_at index, without taking SQLite's write lock.
    if not has_due_schedules(engine, now=moment):
        return 0
    created = 0
    started = time.monotonic()
    while True:
        with transaction(engine) as conn:
            due = _lock_due_schedules(conn, moment)
            inserted, filled = _fill(conn, due, limits, moment)
            created += inserted
        if filled == len(due) < BATCH_SIZE:
            return created
        if time_budget is not None and time.monotonic() - started >= time_budget:
            return created


def has_due_schedules(bind: Bind, *, now: float | None = None) -> bool:
    """Whether a schedule is due at ``now`` (default: the clock): one read of the due_at index."""
    moment = time.time() if now is None else now
    table = schema.deployment_schedules
    with _reading(_engine(bind)) as conn:
        found = conn.execute(sa.select(table.c.id).where(table.c.due_at <= moment).limit(1))
        return found.first() is not None


@dataclasses.dataclass(frozen=True, slots=True)
class _Limits:
    now: dt.datetime
    max_runs: int
    ahead: dt.timedelta


def _lock_due_schedules(conn: sa.Connection, moment: float) -> list[sa.Row[Any]]:
    """A batch of due schedules with what their runs need of their deployments, locked."""
    table, deployments = schema.deployment_schedules, schema.deployments
    query = (
        sa.select(
            table.c.id,
            table.c.deployment_id,
            table.c.schedule,
            table.c.parameters,
            table.c.active,
            table.c.filled_until,
            deployments.c.version,
            deployments.c.flow_name,
            deployments.c.parameters.label("deployment_parameters"),
            deployments.c.tags,
            deployments.c.work_queue_name,
            deployments.c.infrastructure,
        )
        .join(deployments, deployments.c.id == table.c.deployment_id)
        .where(table.c.due_at <= moment)
        .order_by(table.c.due_at)
        .limit(BATCH_SIZE)
    )
    if conn.dialect.name == "postgresql":
        # Two loops at once each take schedules the other has not.
        query = query.with_for_update(of=table, skip_locked=True)
    return list(conn.execute(query))


def _fill(
    conn: sa.Connection, due: list[sa.Row[Any]], limits: _Limits, moment: float
) -> tuple[int, int]:
    """Insert the runs of the ``due`` schedules and move their ``filled_until`` and ``due_at``,
    stopping after the schedule that brings the runs to ``RUNS_PER_TRANSACTION``; return how
    many runs were inserted and how many schedules were filled."""
    from vivace.engine.names import random_run_name
    from vivace.store.deployments import deployment_run_rows

    runs: list[dict[str, Any]] = []
    states: dict[uuid.UUID, dict[str, Any]] = {}
    updates: list[dict[str, Any]] = []
    for row in due:
        if len(runs) >= RUNS_PER_TRANSACTION:
            break
        try:
            schedule = schedule_from_dict(row.schedule)
            times, filled_until, due_at = (
                _plan(row.id, schedule, row.filled_until, limits)
                if row.active
                else ([], None, None)
            )
        except Exception:
            # A definition this process cannot compute (a time zone its tzdata no longer has,
            # a cron a newer croniter refuses): the other schedules are filled all the same.
            logger.exception(
                "deployment schedule %s (%s) cannot be computed; trying again in %.0f s",
                row.id,
                row.schedule,
                _RETRY_BROKEN_AFTER,
            )
            updates.append(
                {
                    "b_id": row.id,
                    "b_filled_until": row.filled_until,
                    "b_due_at": moment + _RETRY_BROKEN_AFTER,
                }
            )
            continue
        updates.append({"b_id": row.id, "b_filled_until": filled_until, "b_due_at": due_at})
        parameters = {**(row.deployment_parameters or {}), **(row.parameters or {})}
        tags = list(dict.fromkeys([*(row.tags or ()), AUTO_SCHEDULED_TAG]))
        infrastructure_type = str((row.infrastructure or {}).get("type", "process"))
        for moment_due in times:
            run_id = uuid7()
            run, state = deployment_run_rows(
                run_id=run_id,
                deployment_id=row.deployment_id,
                deployment_version=row.version,
                flow_name=row.flow_name,
                work_queue_name=row.work_queue_name,
                infrastructure_type=infrastructure_type,
                parameters=parameters,
                tags=tags,
                expected_start_time=moment_due.timestamp(),
                now=moment,
                name=random_run_name(),
                schedule_id=row.id,
            )
            runs.append(run)
            states[run_id] = state
    inserted = _insert_new_runs(conn, runs)
    if inserted:
        conn.execute(sa.insert(schema.flow_run_states), [states[run_id] for run_id in inserted])
    if updates:
        table = schema.deployment_schedules
        conn.execute(
            sa.update(table)
            .where(table.c.id == sa.bindparam("b_id"))
            .values(filled_until=sa.bindparam("b_filled_until"), due_at=sa.bindparam("b_due_at")),
            updates,
        )
    return len(inserted), len(updates)


def _insert_new_runs(conn: sa.Connection, runs: list[dict[str, Any]]) -> list[uuid.UUID]:
    """Insert the runs whose (schedule, time) has none yet; return the ids of those inserted.

    ``ON CONFLICT DO NOTHING`` on the unique (schedule, time) index skips a time another loop
    filled. Which runs went in is read back by their ids (new ones: only this insert can have
    made them) rather than with ``RETURNING``, which would make SQLAlchemy send one statement of
    every row's values, that psycopg parses anew each time (a third of a loop's time).
    """
    if not runs:
        return []
    runs_table = schema.flow_runs
    statement = conflict_insert(conn.dialect.name, runs_table).on_conflict_do_nothing(
        index_elements=["schedule_id", "expected_start_time"]
    )
    conn.execute(statement, runs)
    inserted: list[uuid.UUID] = []
    ids = [run["id"] for run in runs]
    for start in range(0, len(ids), _ID_CHUNK):
        chunk = ids[start : start + _ID_CHUNK]
        inserted += conn.execute(
            sa.select(runs_table.c.id).where(runs_table.c.id.in_(chunk))
        ).scalars()
    return inserted


def _plan(
    schedule_id: uuid.UUID,
    schedule: Schedule,
    filled: dt.datetime | None,
    limits: _Limits,
) -> tuple[list[dt.datetime], dt.datetime | None, float | None]:
    """The times to create runs for, the new ``filled_until`` and the new ``due_at``."""
    now, max_runs = limits.now, limits.max_runs
    horizon = now + limits.ahead
    _TIMES.forget_before(schedule_id, now)
    ahead = 0
    if filled is not None and filled > now:
        ahead = len(_TIMES.between(schedule_id, schedule, now, filled, max_runs))
    start = now if filled is None else max(filled, now)
    times = []
    if ahead < max_runs:
        times = _TIMES.between(schedule_id, schedule, start, horizon, max_runs - ahead)
    if times:
        filled = times[-1]
    if ahead + len(times) >= max_runs:
        # Full: it needs a run again when its earliest run ahead starts.
        assert filled is not None
        earliest = _TIMES.between(schedule_id, schedule, now, filled, 1)
        return times, filled, earliest[0].timestamp()
    # Every time up to the horizon has its run: it needs one when the horizon reaches the next.
    beyond = horizon if filled is None else max(filled, horizon)
    following = _TIMES.between(schedule_id, schedule, beyond, beyond + _NEXT_TIME_WITHIN, 1)
    due_at = (following[0] - limits.ahead).timestamp() if following else None
    return times, filled, due_at


class _TimesMemo:
    """The times of the schedules this process fills, kept between loops.

    Counting a schedule's runs ahead means computing up to ``max_runs`` of its times; a loop in
    the steady state needs one new time per schedule. Keeping each schedule's known times (all
    of its times in ``(low, high]``) makes a loop cost what is new. A schedule row's definition
    never changes (a changed one is a new row), so the schedule's id is the key; the definition
    is checked anyway. Bounded: the oldest entries go first.
    """

    MAX_ENTRIES = 10_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[uuid.UUID, tuple[str, dt.datetime, dt.datetime, list[dt.datetime]]] = {}

    def between(
        self, key: uuid.UUID, schedule: Schedule, after: dt.datetime, until: dt.datetime, limit: int
    ) -> list[dt.datetime]:
        """``schedule.next_times(after, until, limit)``, from what is known where it can."""
        if limit <= 0 or until <= after:
            return []
        definition = schedule.definition_key()
        with self._lock:
            entry = self._entries.get(key)
        if entry is None or entry[0] != definition or not entry[1] <= after <= entry[2]:
            entry = (definition, after, after, [])
        _, low, high, known = entry
        have = known[bisect.bisect_right(known, after) :]
        if high >= until:
            return [moment for moment in have if moment <= until][:limit]
        if len(have) >= limit:
            return have[:limit]
        missing = limit - len(have)
        more = schedule.next_times(high, until, missing)
        high = until if len(more) < missing else more[-1]
        self._store(key, (definition, low, high, known + more))
        return (have + more)[:limit]

    def forget_before(self, key: uuid.UUID, moment: dt.datetime) -> None:
        """Drop the known times up to ``moment`` (loops only move forward)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[1] >= moment:
                return
            definition, _, high, known = entry
            if high <= moment:
                del self._entries[key]
                return
            kept = known[bisect.bisect_right(known, moment) :]
            self._entries[key] = (definition, moment, high, kept)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _store(
        self, key: uuid.UUID, entry: tuple[str, dt.datetime, dt.datetime, list[dt.datetime]]
    ) -> None:
        with self._lock:
            self._entries.pop(key, None)
            while len(self._entries) >= self.MAX_ENTRIES:
                del self._entries[next(iter(self._entries))]
            self._entries[key] = entry


_TIMES = _TimesMemo()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
