"""Late and zombie flow runs in the store: what the ``late_runs`` and ``zombies`` services do.

Late runs. A deployment's run waits in its work queue SCHEDULED ``Scheduled`` until a worker
claims it. One still waiting ``late_after`` seconds after its ``expected_start_time`` becomes
SCHEDULED ``Late`` (:func:`mark_late_runs`): its type stays SCHEDULED, so workers still claim it,
and the change goes through :func:`~vivace.store.run_control.transition_flow_run`, so the history
shows it. A deployment may say ``skip_late_after``: its waiting runs (``Scheduled`` or ``Late``)
late by more than that are not started at all but end CANCELLED ``Skipped``
(:func:`skip_too_late_runs`), so that a backlog piled up during an outage does not stampede when
the workers come back. The claim (:func:`vivace.store.work_queues.claim_flow_runs`) refuses the
same runs with the same condition (:func:`in_time`), so a worker never starts a run the service
has not looked at yet. A SCHEDULED run held by its engine between two attempts (it has a
``heartbeat``), and one waiting as ``AwaitingRetry`` (a retry asked for by hand), is neither.

Zombie runs. Every running flow run heartbeats: a deployment's run from its engine's heartbeat
thread (:mod:`vivace.engine.heartbeat`), any other from its process's writer
(:mod:`vivace.store.writer`). A run whose heartbeat is older than
``VIVACE_HEARTBEAT_MISSED_LIMIT`` intervals lost its process, or that process lost the database:
:func:`crash_zombie_runs` ends it CRASHED (CANCELLED if it was being cancelled) with its
unfinished task runs, naming when the heartbeat stopped. That covers RUNNING and CANCELLING runs,
SCHEDULED ones an engine held between two attempts (an ``AwaitingRetry`` with a heartbeat), and
PENDING ones an engine took but died before the flow started (it beats while it fetches the code
and imports the flow: :mod:`vivace.deployments.execute`).
Each run is judged by its own interval, the ``heartbeat_interval`` its process stamps with each
heartbeat, so a process set to beat less often than the server's ``VIVACE_HEARTBEAT_INTERVAL`` is
not taken for dead; a row stamped without one (a worker's engine before its first beat) is
judged by the server's. A run that entered its state less than that silence ago is left alone
whatever its heartbeat (it may not have had its first beat yet, or carries one from an earlier
attempt), and so is a run without a heartbeat (written by a vivace older than heartbeats for
every run). A run claimed by a worker but not taken by an engine (PENDING, no heartbeat) is not
a zombie: a lost worker's claims are given back by the claim itself
(:mod:`vivace.store.work_queues`); a CRASHED run no longer occupies its queue's or deployment's
slots, and the worker's later report that its process exited changes nothing (those transitions
only leave a state that has not ended).

Every function changes at most ``limit`` runs in one transaction and returns their ids, oldest
first; the services call them again until a batch comes back short. On PostgreSQL the rows are
picked with ``FOR UPDATE SKIP LOCKED``: a row a claim or another service holds is left for the
next loop rather than waited for, so two services (or a service and a claim) never deadlock.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Any

import sqlalchemy as sa

from vivace.engine.states import FINAL_TYPES, StateType
from vivace.store import schema
from vivace.store.database import ensure_schema, transaction
from vivace.store.queries import Bind, _engine
from vivace.store.run_control import (
    CANCELLED_NAME,
    CRASHED_NAME,
    cancel_if_cancelling,
    transition_flow_run,
)

SCHEDULED_NAME = "Scheduled"
LATE_NAME = "Late"
SKIPPED_NAME = "Skipped"
WAITING_NAMES = (SCHEDULED_NAME, LATE_NAME)
"""The names of a SCHEDULED run waiting for its first start (what ``skip_late_after`` skips)."""
BATCH = 100
"""Runs changed per transaction by default."""

_UNFINISHED_TASKS = [kind.value for kind in StateType if kind not in FINAL_TYPES]


def in_time(now: float, dialect: str) -> sa.ColumnElement[bool]:
    """True for a run that its deployment's ``skip_late_after`` does not skip at ``now``.

    The query must join ``deployments`` on the run's deployment (an outer join is fine: a run
    without one is in time).
    """
    runs, deployments = schema.flow_runs, schema.deployments
    return sa.or_(
        deployments.c.skip_late_after.is_(None),
        runs.c.state_name.not_in(WAITING_NAMES),
        runs.c.expected_start_time >= _seconds_before(now, deployments.c.skip_late_after, dialect),
    )


def skip_too_late_runs(
    bind: Bind, *, now: float | None = None, limit: int = BATCH
) -> list[uuid.UUID]:
    """End CANCELLED ``Skipped`` up to ``limit`` waiting runs late by more than their
    deployment's ``skip_late_after`` (see the module docstring); their ids."""
    now = time.time() if now is None else now
    engine = _engine(bind)
    ensure_schema(engine)
    runs, deployments = schema.flow_runs, schema.deployments
    dialect = engine.dialect.name
    query = (
        sa.select(
            runs.c.id,
            runs.c.expected_start_time,
            deployments.c.name,
            deployments.c.skip_late_after,
        )
        .select_from(runs.join(deployments, deployments.c.id == runs.c.deployment_id))
        .where(
            *_waiting(now),
            deployments.c.skip_late_after.is_not(None),
            sa.not_(in_time(now, dialect)),
        )
        .order_by(runs.c.expected_start_time, runs.c.id)
        .limit(limit)
    )
    changed: list[uuid.UUID] = []
    with transaction(engine) as conn:
        for run_id, expected, name, skip_after in conn.execute(_skip_locked(query, dialect)).all():
            late = now - expected.timestamp()
            message = (
                f"skipped: not started {late:.0f} s after its scheduled time "
                f"{_moment(expected)}, later than its deployment {name!r} allows "
                f"(skip_late_after {skip_after:g} s)"
            )
            seq = transition_flow_run(
                conn,
                run_id,
                StateType.CANCELLED,
                SKIPPED_NAME,
                message,
                allowed_from=(StateType.SCHEDULED,),
                where=_still_waiting(),
            )
            if seq is not None:
                changed.append(run_id)
    return changed


def mark_late_runs(
    bind: Bind, late_after: float, *, now: float | None = None, limit: int = BATCH
) -> list[uuid.UUID]:
    """Move to SCHEDULED ``Late`` up to ``limit`` runs still SCHEDULED ``Scheduled`` more than
    ``late_after`` seconds after their expected start; their ids."""
    now = time.time() if now is None else now
    engine = _engine(bind)
    ensure_schema(engine)
    runs = schema.flow_runs
    query = (
        sa.select(runs.c.id, runs.c.expected_start_time)
        .where(*_waiting(now - late_after), runs.c.state_name == SCHEDULED_NAME)
        .order_by(runs.c.expected_start_time, runs.c.id)
        .limit(limit)
    )
    changed: list[uuid.UUID] = []
    with transaction(engine) as conn:
        rows = conn.execute(_skip_locked(query, engine.dialect.name)).all()
        for run_id, expected in rows:
            late = now - expected.timestamp()
            seq = transition_flow_run(
                conn,
                run_id,
                StateType.SCHEDULED,
                LATE_NAME,
                f"not started {late:.0f} s after its scheduled time {_moment(expected)} "
                f"(late after {late_after:g} s)",
                allowed_from=(StateType.SCHEDULED,),
                where=sa.and_(runs.c.state_name == SCHEDULED_NAME, runs.c.heartbeat.is_(None)),
            )
            if seq is not None:
                changed.append(run_id)
    return changed


def crash_zombie_runs(
    bind: Bind,
    missed_limit: int,
    interval: float,
    *,
    now: float | None = None,
    limit: int = BATCH,
) -> list[uuid.UUID]:
    """End up to ``limit`` runs whose heartbeat has been silent for more than ``missed_limit``
    of their intervals (the ``heartbeat_interval`` stamped with their heartbeat; ``interval``
    for a row without one): CRASHED, or CANCELLED if they were being cancelled, with their
    unfinished task runs (see the module docstring); their ids."""
    now = time.time() if now is None else now
    engine = _engine(bind)
    ensure_schema(engine)
    runs = schema.flow_runs
    silent_for = missed_limit * sa.func.coalesce(runs.c.heartbeat_interval, float(interval))
    cutoff = _seconds_before(now, silent_for, engine.dialect.name)
    # One index range each (state_type, expected_start_time): a SCHEDULED run an engine holds
    # has its start behind it (a deployment's) or none at all (a plain flow's), so the runs
    # scheduled ahead are never read.
    kinds: list[tuple[sa.ColumnElement[bool], ...]] = [
        (runs.c.state_type == StateType.RUNNING.value,),
        (runs.c.state_type == StateType.CANCELLING.value,),
        (
            runs.c.state_type == StateType.SCHEDULED.value,
            runs.c.expected_start_time.is_(None),
        ),
        (
            runs.c.state_type == StateType.SCHEDULED.value,
            runs.c.expected_start_time < now,
        ),
        # Taken by an engine (python -m vivace.engine) that died while it fetched the code or
        # imported the flow: the heartbeat says so (a worker's claim alone sets none).
        (
            runs.c.state_type == StateType.PENDING.value,
            runs.c.expected_start_time < now,
        ),
    ]
    changed: list[uuid.UUID] = []
    with transaction(engine) as conn:
        for kind in kinds:
            room = limit - len(changed)
            if room <= 0:
                break
            query = (
                sa.select(runs.c.id, runs.c.state_type, runs.c.heartbeat, runs.c.heartbeat_interval)
                .where(*kind, runs.c.heartbeat < cutoff, runs.c.state_timestamp < cutoff)
                .order_by(runs.c.heartbeat, runs.c.id)
                .limit(room)
            )
            for run_id, state_type, heartbeat, beats_every in conn.execute(
                _skip_locked(query, engine.dialect.name)
            ).all():
                silence = missed_limit * (interval if beats_every is None else beats_every)
                if _end_zombie(conn, run_id, StateType(state_type), heartbeat, cutoff, silence):
                    changed.append(run_id)
    return changed


def _end_zombie(
    conn: sa.Connection,
    run_id: uuid.UUID,
    state_type: StateType,
    heartbeat: dt.datetime,
    cutoff: sa.ColumnElement[Any],
    silent_for: float,
) -> bool:
    """End one run whose heartbeat stopped, and its unfinished task runs; whether it ended.

    ``cutoff``: the row's moment of death, evaluated again by the UPDATE, so that a beat that
    lands meanwhile saves the run."""
    runs = schema.flow_runs
    still_silent = runs.c.heartbeat < cutoff
    stopped = (
        f"its heartbeat stopped at {_moment(heartbeat)} (silent for more than {silent_for:g} s)"
    )
    cause = "the process running it died or lost the database"
    if state_type is StateType.CANCELLING:
        ended_type, ended_name = StateType.CANCELLED, CANCELLED_NAME
        message = f"cancelled: {stopped} while it was being cancelled; {cause}"
        seq = cancel_if_cancelling(conn, run_id, message, where=still_silent)
    else:
        ended_type, ended_name = StateType.CRASHED, CRASHED_NAME
        waiting = {
            StateType.SCHEDULED: " while it waited to retry",
            StateType.PENDING: " before its flow started",
        }.get(state_type, "")
        message = f"{stopped}{waiting}; {cause}"
        seq = transition_flow_run(
            conn,
            run_id,
            StateType.CRASHED,
            CRASHED_NAME,
            message,
            allowed_from=(state_type,),
            where=still_silent,
        )
    if seq is None:
        return False
    _end_unfinished_task_runs(
        conn, run_id, ended_type, ended_name, f"its flow run ended {ended_name}: {message}"
    )
    return True


def _end_unfinished_task_runs(
    conn: sa.Connection,
    flow_run_id: uuid.UUID,
    state_type: StateType,
    state_name: str,
    message: str,
) -> None:
    """The flow run's task runs that have not ended go down with it (as its engine would have
    recorded them), each with its state's row in the history."""
    tasks = schema.task_runs
    now = time.time()
    ended = conn.execute(
        sa.update(tasks)
        .where(tasks.c.flow_run_id == flow_run_id, tasks.c.state_type.in_(_UNFINISHED_TASKS))
        .values(
            state_type=state_type.value,
            state_name=state_name,
            state_timestamp=now,
            state_message=message,
            state_seq=tasks.c.state_seq + 1,
            end_time=now,
        )
        .returning(tasks.c.id, tasks.c.state_seq)
    ).all()
    if ended:
        conn.execute(
            sa.insert(schema.task_run_states),
            [
                {
                    "task_run_id": task_run_id,
                    "seq": seq,
                    "type": state_type.value,
                    "name": state_name,
                    "timestamp": now,
                    "message": message,
                }
                for task_run_id, seq in sorted(ended)
            ],
        )


def _waiting(before: float) -> tuple[sa.ColumnElement[bool], ...]:
    """A run waiting in its queue (no engine holds it) that should have started before
    ``before``: an index range on (state_type, expected_start_time)."""
    runs = schema.flow_runs
    return (
        runs.c.state_type == StateType.SCHEDULED.value,
        runs.c.expected_start_time < before,
        runs.c.state_name.in_(WAITING_NAMES),
        runs.c.heartbeat.is_(None),
    )


def _still_waiting() -> sa.ColumnElement[bool]:
    runs = schema.flow_runs
    return sa.and_(runs.c.state_name.in_(WAITING_NAMES), runs.c.heartbeat.is_(None))


def _seconds_before(
    now: float, seconds: sa.ColumnElement[Any], dialect: str
) -> sa.ColumnElement[Any]:
    """The moment ``seconds`` (a column) before ``now``, comparable with a time column: Unix
    seconds on SQLite, a ``timestamptz`` on PostgreSQL."""
    moment = sa.literal(now, sa.Float) - seconds
    return sa.func.to_timestamp(moment) if dialect == "postgresql" else moment


def _skip_locked(query: sa.Select[Any], dialect: str) -> sa.Select[Any]:
    """On PostgreSQL, lock the picked flow runs, skipping those another transaction holds."""
    if dialect != "postgresql":
        return query
    return query.with_for_update(skip_locked=True, of=schema.flow_runs)


def _moment(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
