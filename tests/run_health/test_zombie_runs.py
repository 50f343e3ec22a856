"""Zombie runs in the store: a flow run whose heartbeat stopped ends CRASHED (CANCELLED if it was
being cancelled) with its unfinished task runs; a run that beats, one that just entered its state,
and one without a heartbeat (an older vivace's) are left alone.

On SQLite and PostgreSQL; rows are backdated by hand (the processes are in test_run_heartbeats).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from tests.run_health.helpers import deployment, scheduled_run, states
from vivace.deployments.execute import _take
from vivace.engine.states import StateType
from vivace.services.zombies import SERVICE
from vivace.settings import reset_settings
from vivace.store import schema
from vivace.store.database import get_engine, transaction
from vivace.store.queries import read_flow_run, read_task_runs
from vivace.store.run_control import (
    end_flow_run_after_exit,
    request_cancellation,
    transition_flow_run,
)
from vivace.store.run_health import crash_zombie_runs
from vivace.store.work_queues import claim_flow_runs, count_active_runs, register_worker

MISSED, INTERVAL = 3, 10.0  # silent for 30 s


def running_run(url: str, heartbeat_ago: float | None, entered_ago: float = 600.0) -> Any:
    """A deployment's run its engine took and runs (RUNNING), with two task runs (one running,
    one completed); its heartbeat and the time it entered RUNNING backdated."""
    record = deployment(url)
    run = scheduled_run(url, record)
    worker = register_worker(url, "w", "process", ["default"])
    claim_flow_runs(url, worker_id=worker.id, queues=["default"], limit=1)
    taken = _take(url, read_flow_run(url, run.id), str(worker.id))  # type: ignore[arg-type]
    assert taken is not None
    with transaction(get_engine(url)) as conn:
        transition_flow_run(
            conn, run.id, StateType.RUNNING, "Running", None, allowed_from=[StateType.PENDING]
        )
    backdate(url, run.id, heartbeat_ago, entered_ago)
    add_task_run(url, run.id, StateType.RUNNING)
    add_task_run(url, run.id, StateType.COMPLETED)
    return read_flow_run(url, run.id)


def backdate(url: str, run_id: uuid.UUID, heartbeat_ago: float | None, entered_ago: float) -> None:
    runs = schema.flow_runs
    now = time.time()
    with transaction(get_engine(url)) as conn:
        conn.execute(
            sa.update(runs)
            .where(runs.c.id == run_id)
            .values(
                heartbeat=None if heartbeat_ago is None else now - heartbeat_ago,
                state_timestamp=now - entered_ago,
            )
        )


def add_task_run(url: str, flow_run_id: uuid.UUID, state_type: StateType) -> uuid.UUID:
    task_run_id = uuid.uuid4()
    now = time.time()
    with transaction(get_engine(url)) as conn:
        conn.execute(
            sa.insert(schema.task_runs).values(
                id=task_run_id,
                flow_run_id=flow_run_id,
                task_key="etl.load",
                name=f"load-{state_type.value.lower()}",
                state_type=state_type.value,
                state_name=state_type.value.title(),
                state_timestamp=now,
                state_seq=2,
                created=now,
            )
        )
    return task_run_id


def task_states(url: str, flow_run_id: uuid.UUID) -> dict[str, tuple[str, str | None]]:
    return {
        run.name: (run.state_type.value, run.state_message)
        for run in read_task_runs(url, flow_run_id)[0]
    }


def test_a_run_whose_heartbeat_stopped_ends_crashed_with_its_tasks(database_url: str) -> None:
    zombie = running_run(database_url, heartbeat_ago=45)

    assert crash_zombie_runs(database_url, MISSED, INTERVAL) == [zombie.id]
    assert crash_zombie_runs(database_url, MISSED, INTERVAL) == []  # once

    after = read_flow_run(database_url, zombie.id)
    assert after is not None
    assert (after.state_type, after.state_name) == (StateType.CRASHED, "Crashed")
    assert after.end_time is not None
    message = after.state_message
    assert message is not None
    assert message.startswith("its heartbeat stopped at ")
    assert message.endswith(
        "(silent for more than 30 s); the process running it died or lost the database"
    )
    assert states(database_url, zombie.id)[-2:] == [("RUNNING", "Running"), ("CRASHED", "Crashed")]
    tasks = task_states(database_url, zombie.id)
    assert tasks["load-running"] == ("CRASHED", f"its flow run ended Crashed: {message}")
    assert tasks["load-completed"] == ("COMPLETED", None)
    crashed_task = next(
        run for run in read_task_runs(database_url, zombie.id)[0] if run.name == "load-running"
    )
    history = schema.task_run_states
    with get_engine(database_url).connect() as conn:
        rows = conn.execute(
            sa.select(history.c.seq, history.c.type).where(history.c.task_run_id == crashed_task.id)
        ).all()
    assert [tuple(row) for row in rows] == [(3, "CRASHED")]


def test_its_slot_is_free_and_its_workers_exit_report_changes_nothing(database_url: str) -> None:
    zombie = running_run(database_url, heartbeat_ago=45)
    assert count_active_runs(database_url, ["default"]) == {"default": 1}

    crash_zombie_runs(database_url, MISSED, INTERVAL)

    assert count_active_runs(database_url, ["default"]) == {"default": 0}
    before = states(database_url, zombie.id)
    end_flow_run_after_exit(database_url, zombie.id, -9, "process 4242", zombie.worker_id)
    assert states(database_url, zombie.id) == before
    after = read_flow_run(database_url, zombie.id)
    assert after is not None and after.worker_id == zombie.worker_id  # who ran it, kept


@pytest.mark.parametrize(
    ("heartbeat_ago", "entered_ago"),
    [
        pytest.param(5.0, 600.0, id="beating"),
        pytest.param(45.0, 5.0, id="just-entered-running"),
        pytest.param(None, 600.0, id="no-heartbeat"),
    ],
)
def test_runs_that_are_not_zombies_are_left_alone(
    database_url: str, heartbeat_ago: float | None, entered_ago: float
) -> None:
    run = running_run(database_url, heartbeat_ago, entered_ago)

    assert crash_zombie_runs(database_url, MISSED, INTERVAL) == []
    assert read_flow_run(database_url, run.id).state_type is StateType.RUNNING  # type: ignore[union-attr]


def test_a_run_being_cancelled_whose_heartbeat_stopped_ends_cancelled(database_url: str) -> None:
    run = running_run(database_url, heartbeat_ago=None)
    assert request_cancellation(database_url, run.id).state_type is StateType.CANCELLING
    backdate(database_url, run.id, heartbeat_ago=45, entered_ago=45)

    assert crash_zombie_runs(database_url, MISSED, INTERVAL) == [run.id]

    after = read_flow_run(database_url, run.id)
    assert after is not None
    assert (after.state_type, after.state_name) == (StateType.CANCELLED, "Cancelled")
    assert after.state_message is not None
    assert after.state_message.startswith("cancelled: its heartbeat stopped at ")
    assert "while it was being cancelled" in after.state_message
    assert task_states(database_url, run.id)["load-running"][0] == "CANCELLED"


def test_a_run_whose_engine_died_waiting_to_retry_ends_crashed(database_url: str) -> None:
    run = running_run(database_url, heartbeat_ago=None)
    with transaction(get_engine(database_url)) as conn:
        transition_flow_run(
            conn,
            run.id,
            StateType.SCHEDULED,
            "AwaitingRetry",
            None,
            allowed_from=[StateType.RUNNING],
        )
    backdate(database_url, run.id, heartbeat_ago=45, entered_ago=45)
    waiting = scheduled_run(database_url, deployment(database_url, "other"), seconds_ago=3600)

    assert crash_zombie_runs(database_url, MISSED, INTERVAL) == [run.id]

    after = read_flow_run(database_url, run.id)
    assert after is not None and after.state_type is StateType.CRASHED
    assert after.state_message is not None and "while it waited to retry" in after.state_message
    # A run waiting in its queue has no heartbeat: not a zombie, however late.
    assert read_flow_run(database_url, waiting.id).state_type is StateType.SCHEDULED  # type: ignore[union-attr]


def test_the_service_loop_uses_the_heartbeat_settings(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIVACE_HEARTBEAT_INTERVAL", "2")
    monkeypatch.setenv("VIVACE_HEARTBEAT_MISSED_LIMIT", "5")  # silent for 10 s
    reset_settings()
    silent = running_run(database_url, heartbeat_ago=12)
    beating = running_run(database_url, heartbeat_ago=8)

    assert SERVICE.loop(database_url) == "1 flow run whose heartbeat stopped ended"
    assert SERVICE.loop(database_url) is None
    assert read_flow_run(database_url, silent.id).state_type is StateType.CRASHED  # type: ignore[union-attr]
    assert read_flow_run(database_url, beating.id).state_type is StateType.RUNNING  # type: ignore[union-attr]


def test_each_run_is_judged_by_the_interval_stamped_with_its_heartbeat(database_url: str) -> None:
    # Both silent for 45 s; the server beats every 10 s (silent for 30 s means dead).
    slow = running_run(database_url, heartbeat_ago=45)
    quick = running_run(database_url, heartbeat_ago=45)
    runs = schema.flow_runs
    with transaction(get_engine(database_url)) as conn:
        for run, every in ((slow, 60.0), (quick, 1.0)):
            conn.execute(
                sa.update(runs).where(runs.c.id == run.id).values(heartbeat_interval=every)
            )

    # The slow one's process beats every 60 s: 45 s is less than three of its beats.
    assert crash_zombie_runs(database_url, MISSED, INTERVAL) == [quick.id]
    assert read_flow_run(database_url, slow.id).state_type is StateType.RUNNING  # type: ignore[union-attr]
    message = read_flow_run(database_url, quick.id).state_message  # type: ignore[union-attr]
    assert message is not None and "(silent for more than 3 s)" in message


def test_a_run_whose_engine_died_before_its_flow_started_ends_crashed(database_url: str) -> None:
    # Taken by an engine (PENDING with a heartbeat) that died fetching the code or importing.
    record = deployment(database_url)
    run = scheduled_run(database_url, record, seconds_ago=120)
    claimed_only = scheduled_run(database_url, record, seconds_ago=120)
    worker = register_worker(database_url, "w", "process", ["default"])
    claim_flow_runs(database_url, worker_id=worker.id, queues=["default"], limit=2)
    taken = _take(database_url, read_flow_run(database_url, run.id), str(worker.id))  # type: ignore[arg-type]
    assert taken is not None
    backdate(database_url, run.id, heartbeat_ago=45, entered_ago=45)
    backdate(database_url, claimed_only.id, heartbeat_ago=None, entered_ago=45)

    assert crash_zombie_runs(database_url, MISSED, INTERVAL) == [run.id]

    after = read_flow_run(database_url, run.id)
    assert after is not None and after.state_type is StateType.CRASHED
    assert after.state_message is not None and "before its flow started" in after.state_message
    # Claimed by a worker, not taken by an engine: the lost-worker rule is the claim's, not ours.
    still = read_flow_run(database_url, claimed_only.id)
    assert still is not None and still.state_type is StateType.PENDING
