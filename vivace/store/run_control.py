"""State changes of deployment runs made from outside the engine: cancel, crash, heartbeat.

The engine records a run's states through the writer (an upsert that only lands when its
``state_seq`` is newer). Everyone else who changes a flow run's state, the API cancelling it, a
worker claiming it or reporting that its infrastructure exited, does it here, in one conditional
UPDATE (the run must still be in one of the states the change is allowed from) that bumps
``state_seq`` and adds the state's row to the history, in one transaction: of two such changes
racing, exactly one lands, and a stale engine write can never undo it.

Cancelling (:func:`request_cancellation`): a run that has not started (SCHEDULED, or PENDING not
yet claimed by a worker) is CANCELLED at once; a claimed or running one becomes CANCELLING and
its worker stops its infrastructure (it learns of it on its heartbeat) or the engine notices on
its own heartbeat (:func:`flow_run_heartbeat`) and stops itself; then it ends CANCELLED.
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


def request_cancellation(bind: Bind, flow_run_id: uuid.UUID) -> FlowRunRecord:
    """Cancel a flow run: CANCELLED at once if it has not started, else CANCELLING.

    Returns the run afterwards (a run already CANCELLING or CANCELLED is returned as it is).
    Raises FlowRunStateError for an unknown id and for a run that ended otherwise.
    """
    from vivace.store.queries import read_flow_run

    engine = _engine(bind)
    ensure_schema(engine)
    with transaction(engine) as conn:
        done = transition_flow_run(
            conn,
            flow_run_id,
            StateType.CANCELLED,
            CANCELLED_NAME,
            "cancelled before it started",
            allowed_from=(StateType.SCHEDULED,),
        )
        if done is None:
            # Not claimed by any worker yet (a PENDING run of a flow called in-process has no
            # worker either): only its own engine can stop it, so it is asked to, like a
            # running one.
            transition_flow_run(
                conn,
                flow_run_id,
                StateType.CANCELLING,
                CANCELLING_NAME,
                "cancellation requested",
                allowed_from=_ACTIVE,
            )
    record = read_flow_run(engine, flow_run_id)
    if record is None:
        raise FlowRunStateError(f"flow run {str(flow_run_id)!r} not found in the run history")
    if record.state_type in FINAL_TYPES and record.state_type is not StateType.CANCELLED:
        raise FlowRunStateError(
            f"flow run {record.name!r} ({record.id}) already ended {record.state_name} "
            f"({record.state_type.value}); only a run that has not ended can be cancelled"
        )
    return record


def end_flow_run_after_exit(
    bind: Bind, flow_run_id: uuid.UUID, exit_code: int | None, what: str
) -> FlowRunRecord | None:
    """The run's infrastructure (``what``: "process 1234") exited: if the engine recorded no final
    state, end the run, CANCELLED if it was being cancelled, else CRASHED naming the exit code.
    Returns the run afterwards (None if it is gone)."""
    from vivace.store.queries import read_flow_run

    engine = _engine(bind)
    ensure_schema(engine)
    exited = f"{what} exited with code {exit_code}" if exit_code is not None else f"{what} is gone"
    with transaction(engine) as conn:
        cancelled = transition_flow_run(
            conn,
            flow_run_id,
            StateType.CANCELLED,
            CANCELLED_NAME,
            f"cancelled: {exited}",
            allowed_from=(StateType.CANCELLING,),
        )
        if cancelled is None:
            transition_flow_run(
                conn,
                flow_run_id,
                StateType.CRASHED,
                CRASHED_NAME,
                f"the flow run's infrastructure ended without a final state: {exited}",
                allowed_from=(StateType.SCHEDULED, *_ACTIVE),
            )
    return read_flow_run(engine, flow_run_id)


def reschedule_flow_run(bind: Bind, record: FlowRunRecord) -> FlowRunRecord:
    """Put an ended deployment run back in its work queue as a new attempt (SCHEDULED
    ``AwaitingRetry``, due now, no worker), if it is still as ``record`` read it.

    A worker then claims it like a new run and its engine continues the same row: run count + 1,
    tasks an earlier attempt completed with a persisted result reused. One conditional UPDATE, so
    of two retries started together only one reschedules; the other gets FlowRunStateError.
    """
    from vivace.store.queries import read_flow_run

    engine = _engine(bind)
    ensure_schema(engine)
    runs = schema.flow_runs
    with transaction(engine) as conn:
        seq = transition_flow_run(
            conn,
            record.id,
            StateType.SCHEDULED,
            AWAITING_RETRY_NAME,
            f"attempt {record.run_count + 1} requested",
            allowed_from=(StateType.FAILED, StateType.CRASHED, StateType.CANCELLED),
            values={
                "expected_start_time": time.time(),
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


def flow_run_heartbeat(bind: Bind, flow_run_id: uuid.UUID) -> tuple[StateType, int] | None:
    """Record that the run's engine is alive; return the run's state type and ``state_seq`` as
    the database has them (CANCELLING: stop), or None if the run is not there."""
    engine = _engine(bind)
    ensure_schema(engine)
    runs = schema.flow_runs
    with transaction(engine) as conn:
        row = conn.execute(
            sa.update(runs)
            .where(runs.c.id == flow_run_id)
            .values(heartbeat=time.time())
            .returning(runs.c.state_type, runs.c.state_seq)
        ).first()
    return None if row is None else (StateType(row.state_type), int(row.state_seq))


def _engine(bind: Bind) -> sa.Engine:
    return get_engine(bind) if isinstance(bind, str) else bind
