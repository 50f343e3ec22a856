"""State changes of deployment runs made from outside the engine: cancel, crash, heartbeat.

The engine records a run's states through the writer (an upsert that only lands when its
``state_seq`` is newer). Everyone else who changes a flow run's state, the API cancelling it, a
worker claiming it or reporting that its infrastructure exited, does it here, in one conditional
UPDATE (the run must still be in one of the states the change is allowed from) that bumps
``state_seq`` and adds the state's row to the history, in one transaction: of two such changes
racing, exactly one lands, and a stale engine write can never undo it.

Who holds a run: a row with a ``heartbeat`` has been taken by an engine (``python -m
vivace.engine``), which alone writes its states from then on, including a SCHEDULED
``AwaitingRetry`` between two attempts of its flow's retries; a row without one is at most
claimed by a worker (PENDING ``Claimed``, ``worker_id``) or waiting in its queue (SCHEDULED).
(Every other flow run gets a heartbeat too once it runs, from its process's writer: it is its
engine's from the start. A run whose heartbeat stops is ended by the ``zombies`` service,
:mod:`vivace.store.run_health`.)

Cancelling (:func:`request_cancellation`) is for runs created from a deployment only: those are
the runs a worker or an engine's heartbeat watches. A run waiting in its queue (SCHEDULED, no
engine) is CANCELLED at once; any other run that has not ended (claimed by a worker, running, or
held by its engine between retries) becomes CANCELLING: its worker stops its infrastructure (it
learns of it on its heartbeat; a run it has not launched yet it ends CANCELLED itself) or the
engine notices on its own heartbeat (:func:`flow_run_heartbeat`) and stops itself; then it ends
CANCELLED. A plain flow call or a subflow is refused (FlowRunStateError): nothing would ever
notice its CANCELLING, and its engine's own final write would then be dropped (lower seq),
leaving it CANCELLING for good; stopping the process that runs it is the way.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from vivace.engine.states import FINAL_TYPES, StateType
from vivace.exceptions import FlowRunStateError
from vivace.store import schema
from vivace.store.database import ensure_schema, get_engine, transaction
from vivace.store.records import FlowRunRecord

Bind = sa.Engine | str

CANCELLING_NAME = "Cancelling"
CANCELLED_NAME = "Cancelled"
CRASHED_NAME = "Crashed"
AWAITING_RETRY_NAME = "AwaitingRetry"
CANCELLED_BEFORE_START = "cancelled before it started"
_ACTIVE = (StateType.PENDING, StateType.RUNNING, StateType.PAUSED)


def transition_flow_run(
    conn: sa.Connection,
    run_id: uuid.UUID,
    state_type: StateType,
    state_name: str,
    message: str | None,
    *,
    allowed_from: Iterable[StateType],
    values: dict[str, Any] | None = None,
    where: sa.ColumnElement[bool] | None = None,
) -> int | None:
    """Move the run to the state if it is in one of ``allowed_from`` (and matches ``where``);
    return the new state's seq, or None when the run is not there (or in another state).
    ``values`` sets more columns."""
    runs = schema.flow_runs
    now = time.time()
    changes: dict[str, Any] = {
        "state_type": state_type.value,
        "state_name": state_name,
        "state_timestamp": now,
        "state_message": message,
        "state_seq": runs.c.state_seq + 1,
        **(values or {}),
    }
    if state_type in FINAL_TYPES:
        changes["end_time"] = now
    conditions = [runs.c.id == run_id, runs.c.state_type.in_([s.value for s in allowed_from])]
    if where is not None:
        conditions.append(where)
    seq = conn.execute(
        sa.update(runs).where(*conditions).values(**changes).returning(runs.c.state_seq)
    ).scalar()
    if seq is None:
        return None
    conn.execute(
        sa.insert(schema.flow_run_states).values(
            flow_run_id=run_id,
            seq=seq,
            type=state_type.value,
            name=state_name,
            timestamp=now,
            message=message,
        )
    )
    return int(seq)


def cancel_if_cancelling(
    conn: sa.Connection,
    run_id: uuid.UUID,
    message: str,
    *,
    where: sa.ColumnElement[bool] | None = None,
) -> int | None:
    """Move the run to CANCELLED with ``message`` if it is CANCELLING (and matches ``where``):
    how a run being cancelled ends when nothing else will end it. The new state's seq, or
    None."""
    return transition_flow_run(
        conn,
        run_id,
        StateType.CANCELLED,
        CANCELLED_NAME,
        message,
        allowed_from=(StateType.CANCELLING,),
        where=where,
    )


def request_cancellation(bind: Bind, flow_run_id: uuid.UUID) -> FlowRunRecord:
    """Cancel a deployment's flow run: CANCELLED at once if it waits in its queue, else
    CANCELLING (see the module docstring).

    Returns the run afterwards (a run already CANCELLING or CANCELLED is returned as it is).
    Raises FlowRunStateError for an unknown id, for a run not created from a deployment, and for
    a run that ended otherwise.
    """
    from vivace.store.queries import read_flow_run

    engine = _engine(bind)
    ensure_schema(engine)
    runs = schema.flow_runs
    deployed = runs.c.deployment_id.is_not(None)
    with transaction(engine) as conn:
        done = transition_flow_run(
            conn,
            flow_run_id,
            StateType.CANCELLED,
            CANCELLED_NAME,
            CANCELLED_BEFORE_START,
            allowed_from=(StateType.SCHEDULED,),
            where=sa.and_(deployed, runs.c.heartbeat.is_(None)),
        )
        if done is None:
            # Claimed or running, or SCHEDULED between two attempts while its engine waits to
            # retry: its worker or its engine stops it.
            transition_flow_run(
                conn,
                flow_run_id,
                StateType.CANCELLING,
                CANCELLING_NAME,
                "cancellation requested",
                allowed_from=(StateType.SCHEDULED, *_ACTIVE),
                where=deployed,
            )
    record = read_flow_run(engine, flow_run_id)
    if record is None:
        raise FlowRunStateError(f"flow run {str(flow_run_id)!r} not found in the run history")
    label = f"flow run {record.name!r} ({record.id})"
    if record.state_type in FINAL_TYPES and record.state_type is not StateType.CANCELLED:
        raise FlowRunStateError(
            f"{label} already ended {record.state_name} ({record.state_type.value}); only a run "
            "that has not ended can be cancelled"
        )
    if record.deployment_id is None and record.state_type is not StateType.CANCELLED:
        raise FlowRunStateError(
            f"{label} was not created from a deployment, so nothing can stop it from here; stop "
            "the process running it"
        )
    return record


def end_flow_run_after_exit(
    bind: Bind,
    flow_run_id: uuid.UUID,
    exit_code: int | None,
    what: str,
    worker_id: uuid.UUID | None = None,
) -> FlowRunRecord | None:
    """The run's infrastructure (``what``: "process 1234") exited: if the engine recorded no final
    state, end the run, CANCELLED if it was being cancelled, else CRASHED naming the exit code.
    With ``worker_id``, only while that worker still has the run (a retry may have put it back
    in its queue since). Returns the run afterwards (None if it is gone)."""
    from vivace.store.queries import read_flow_run

    engine = _engine(bind)
    ensure_schema(engine)
    exited = f"{what} exited with code {exit_code}" if exit_code is not None else f"{what} is gone"
    mine = None if worker_id is None else schema.flow_runs.c.worker_id == worker_id
    with transaction(engine) as conn:
        cancelled = cancel_if_cancelling(conn, flow_run_id, f"cancelled: {exited}", where=mine)
        if cancelled is None:
            transition_flow_run(
                conn,
                flow_run_id,
                StateType.CRASHED,
                CRASHED_NAME,
                f"the flow run's infrastructure ended without a final state: {exited}",
                allowed_from=(StateType.SCHEDULED, *_ACTIVE),
                where=mine,
            )
    return read_flow_run(engine, flow_run_id)


def end_unstarted_flow_run(
    bind: Bind,
    flow_run_id: uuid.UUID,
    crashed_message: str,
    cancelled_message: str = CANCELLED_BEFORE_START,
    *,
    worker_id: uuid.UUID | None = None,
) -> None:
    """A run that will not start (its infrastructure could not be started, its process was
    stopped before its flow started): CRASHED with ``crashed_message`` if it is still PENDING,
    CANCELLED with ``cancelled_message`` if it is being cancelled; a run that has moved on (its
    engine ended it) is left as it is. With ``worker_id`` (the worker's report that it could not
    start the run), only while that worker has the run and no engine took it."""
    engine = _engine(bind)
    ensure_schema(engine)
    runs = schema.flow_runs
    mine = (
        None
        if worker_id is None
        else sa.and_(runs.c.worker_id == worker_id, runs.c.heartbeat.is_(None))
    )
    with transaction(engine) as conn:
        crashed = transition_flow_run(
            conn,
            flow_run_id,
            StateType.CRASHED,
            CRASHED_NAME,
            crashed_message,
            allowed_from=(StateType.PENDING,),
            where=mine,
        )
        if crashed is None:
            cancel_if_cancelling(conn, flow_run_id, cancelled_message, where=mine)


def release_flow_run(bind: Bind, flow_run_id: uuid.UUID, worker_id: uuid.UUID) -> None:
    """Give back a run the worker ``worker_id`` claimed and did not launch: SCHEDULED again,
    with no worker, for any worker to claim, or CANCELLED if it is being cancelled (nothing else
    would end it). A run an engine has taken, or that has moved on since, is left as it is."""
    from vivace.store.work_queues import SCHEDULED_NAME

    engine = _engine(bind)
    ensure_schema(engine)
    not_taken = schema.flow_runs.c.heartbeat.is_(None)  # no engine has it: never launched
    with transaction(engine) as conn:
        released = transition_flow_run(
            conn,
            flow_run_id,
            StateType.SCHEDULED,
            SCHEDULED_NAME,
            f"given back by worker {worker_id}, which did not launch it",
            allowed_from=(StateType.PENDING,),
            values={"worker_id": None},
            where=not_taken,
        )
        if released is None:
            cancel_if_cancelling(conn, flow_run_id, CANCELLED_BEFORE_START, where=not_taken)


def reschedule_flow_run(bind: Bind, record: FlowRunRecord) -> FlowRunRecord:
    """Put an ended deployment run back in its work queue as a new attempt (SCHEDULED
    ``AwaitingRetry``, due now, no worker), if it is still as ``record`` read it.

    A worker then claims it like a new run and its engine continues the same row: run count + 1,
    tasks an earlier attempt completed with a persisted result reused. One conditional UPDATE, so
    of two retries started together only one reschedules; the other gets FlowRunStateError.

    A run a schedule made keeps its scheduled time (due at once when that has passed): a run is
    unique per (schedule, scheduled time), so a new time could be that of another of the
    schedule's runs.
    """
    from vivace.store.queries import read_flow_run

    engine = _engine(bind)
    ensure_schema(engine)
    runs = schema.flow_runs
    due = {} if record.schedule_id is not None else {"expected_start_time": time.time()}
    with transaction(engine) as conn:
        seq = transition_flow_run(
            conn,
            record.id,
            StateType.SCHEDULED,
            AWAITING_RETRY_NAME,
            f"attempt {record.run_count + 1} requested",
            allowed_from=(StateType.FAILED, StateType.CRASHED, StateType.CANCELLED),
            values={
                **due,
                "worker_id": None,
                "infrastructure_id": None,
                "heartbeat": None,
                "end_time": None,
            },
            where=runs.c.run_count == record.run_count,
        )
    if seq is None:
        raise FlowRunStateError(
            f"flow run {record.name!r} ({record.id}) was retried or changed since it was read; "
            "only one retry of a run goes at a time"
        )
    after = read_flow_run(engine, record.id)
    assert after is not None
    return after


def flow_run_heartbeat(
    bind: Bind, flow_run_id: uuid.UUID, interval: float | None = None
) -> tuple[StateType, int] | None:
    """Record that the run's engine is alive, and beats every ``interval`` seconds (what the
    zombies service judges its silence by); return the run's state type and ``state_seq`` as
    the database has them (CANCELLING: stop), or None if the run is not there.

    Only a row an engine holds (its heartbeat set when the engine took it) is stamped: a run
    put back in its queue meanwhile (``reschedule_flow_run`` clears the heartbeat) must not look
    held by an engine again, or no worker would ever claim it. Its state is still returned.
    """
    engine = _engine(bind)
    ensure_schema(engine)
    runs = schema.flow_runs
    with transaction(engine) as conn:
        row = conn.execute(
            sa.update(runs)
            .where(runs.c.id == flow_run_id, runs.c.heartbeat.is_not(None))
            .values(
                heartbeat=time.time(),
                **({} if interval is None else {"heartbeat_interval": interval}),
            )
            .returning(runs.c.state_type, runs.c.state_seq)
        ).first()
        if row is None:
            row = conn.execute(
                sa.select(runs.c.state_type, runs.c.state_seq).where(runs.c.id == flow_run_id)
            ).first()
    return None if row is None else (StateType(row.state_type), int(row.state_seq))


def _engine(bind: Bind) -> sa.Engine:
    return get_engine(bind) if isinstance(bind, str) else bind
