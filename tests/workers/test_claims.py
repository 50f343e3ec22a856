"""Who holds a deployment's run, in the store: claims racing, a run its engine holds between
retries, the claims of a lost worker, and a claimed run given back after it was cancelled.

On SQLite and PostgreSQL; no server, no engine process (the engine's take is
``vivace.deployments.execute._take``, its writes are made here as it would make them).
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from tests.workers.helpers import stored_deployment
from vivace.deployments.execute import _take
from vivace.engine.states import StateType
from vivace.store import schema
from vivace.store.database import get_engine, transaction
from vivace.store.deployments import create_deployment_run
from vivace.store.queries import read_flow_run, read_flow_run_states
from vivace.store.run_control import (
    end_flow_run_after_exit,
    flow_run_heartbeat,
    request_cancellation,
    reschedule_flow_run,
    transition_flow_run,
)
from vivace.store.work_queues import (
    claim_flow_runs,
    count_active_runs,
    count_waiting_runs,
    register_worker,
    remove_worker,
    update_work_queue,
)


def new_runs(url: str, count: int) -> list[Any]:
    record = stored_deployment(url)
    return [create_deployment_run(url, record, parameters={})[0] for _ in range(count)]


def history(url: str, run_id: uuid.UUID) -> list[tuple[str, str]]:
    return [(state.type.value, state.name) for state in read_flow_run_states(url, run_id)]


def claim(url: str, worker: Any, limit: int = 10, **options: Any) -> list[uuid.UUID]:
    claimed = claim_flow_runs(url, worker_id=worker.id, queues=["default"], limit=limit, **options)
    return [run.id for run in claimed]


def test_threads_claiming_together_claim_each_run_once(database_url: str) -> None:
    runs = new_runs(database_url, 200)
    workers = [register_worker(database_url, f"w{n}", "process", ["default"]) for n in range(4)]
    claimed: dict[uuid.UUID, list[uuid.UUID]] = {worker.id: [] for worker in workers}
    start = threading.Barrier(len(workers))
    errors: list[BaseException] = []

    def claim_until_none_left(worker: Any) -> None:
        try:
            start.wait()
            while got := claim(database_url, worker, limit=7):
                claimed[worker.id].extend(got)
        except BaseException as error:  # reported below, not lost in the thread
            errors.append(error)

    threads = [threading.Thread(target=claim_until_none_left, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=100)

    assert errors == []
    every = [run_id for got in claimed.values() for run_id in got]
    assert sorted(every) == sorted(run.id for run in runs)  # each run once, none left out
    for worker in workers:
        for run_id in claimed[worker.id]:
            assert read_flow_run(database_url, run_id).worker_id == worker.id
    assert history(database_url, runs[0].id) == [("SCHEDULED", "Scheduled"), ("PENDING", "Claimed")]


def awaiting_retry(url: str) -> Any:
    """A run its engine took, whose first attempt failed: SCHEDULED ``AwaitingRetry`` with the
    engine's heartbeat, as the engine's writer leaves it."""
    (run,) = new_runs(url, 1)
    taken = _take(url, run, None)
    assert taken is not None and taken.heartbeat is not None
    with transaction(get_engine(url)) as conn:
        for state_type, name in [
            (StateType.RUNNING, "Running"),
            (StateType.SCHEDULED, "AwaitingRetry"),
        ]:
            transition_flow_run(conn, run.id, state_type, name, None, allowed_from=list(StateType))
    return read_flow_run(url, run.id)


def test_a_run_its_engine_holds_between_retries_is_not_claimed_nor_taken(
    database_url: str,
) -> None:
    run = awaiting_retry(database_url)
    before = history(database_url, run.id)
    worker = register_worker(database_url, "w", "process", ["default"])

    assert claim(database_url, worker) == []
    assert _take(database_url, run, str(worker.id)) is None
    assert _take(database_url, run, None) is None

    after = read_flow_run(database_url, run.id)
    assert (after.state_name, after.worker_id) == ("AwaitingRetry", None)
    assert history(database_url, run.id) == before  # the refused take left nothing behind

    # It still holds its queue's slot: its engine's process runs.
    update_work_queue(database_url, "default", concurrency_limit=1)
    new_runs(database_url, 1)
    assert claim(database_url, worker) == []
    assert count_active_runs(database_url, ["default"]) == {"default": 1}
    assert count_waiting_runs(database_url, ["default"]) == {"default": 1}


def test_cancelling_a_run_its_engine_holds_between_retries_asks_its_engine(
    database_url: str,
) -> None:
    held = awaiting_retry(database_url)
    (waiting,) = new_runs(database_url, 1)

    assert request_cancellation(database_url, held.id).state_type is StateType.CANCELLING
    assert request_cancellation(database_url, waiting.id).state_type is StateType.CANCELLED


def test_the_runs_a_lost_worker_claimed_and_did_not_launch_go_back_to_the_queue(
    database_url: str,
) -> None:
    silent, gone, alive = (
        register_worker(database_url, name, "process", ["default"])
        for name in ("silent", "gone", "alive")
    )
    runs = new_runs(database_url, 5)
    silent_runs = claim(database_url, silent, limit=2)
    (launched,) = claim(database_url, silent, limit=1)
    assert _take(database_url, read_flow_run(database_url, launched), str(silent.id))
    gone_runs = claim(database_url, gone, limit=1)
    alive_runs = claim(database_url, alive, limit=1)
    workers = schema.workers
    with transaction(get_engine(database_url)) as conn:
        conn.execute(
            sa.update(workers).where(workers.c.id == silent.id).values(heartbeat=time.time() - 60)
        )
    remove_worker(database_url, gone.id)

    newcomer = register_worker(database_url, "newcomer", "process", ["default"])
    assert claim(database_url, newcomer, lost_after=None) == []  # not asked to look
    got = claim(database_url, newcomer, lost_after=30)

    assert sorted(got) == sorted([*silent_runs, *gone_runs])
    assert read_flow_run(database_url, launched).worker_id == silent.id  # its engine has it
    assert read_flow_run(database_url, alive_runs[0]).worker_id == alive.id
    assert {run.id for run in runs} == {*got, launched, *alive_runs}
    states = read_flow_run_states(database_url, silent_runs[0])
    assert [(s.type.value, s.name) for s in states] == [
        ("SCHEDULED", "Scheduled"),
        ("PENDING", "Claimed"),
        ("SCHEDULED", "Scheduled"),
        ("PENDING", "Claimed"),
    ]
    assert states[2].message == (
        f"given back: worker 'silent' ({silent.id}), which claimed it, stopped heartbeating "
        "before launching it"
    )
    gone_states = read_flow_run_states(database_url, gone_runs[0])
    assert gone_states[2].message is not None and f"worker {gone.id}," in gone_states[2].message


def test_a_lost_workers_claim_that_is_being_cancelled_ends_cancelled(database_url: str) -> None:
    gone = register_worker(database_url, "gone", "process", ["default"])
    (run,) = new_runs(database_url, 1)
    claim(database_url, gone, limit=1)
    assert request_cancellation(database_url, run.id).state_type is StateType.CANCELLING
    remove_worker(database_url, gone.id)

    newcomer = register_worker(database_url, "newcomer", "process", ["default"])
    assert claim(database_url, newcomer, lost_after=30) == []

    after = read_flow_run(database_url, run.id)
    assert after is not None and after.state_type is StateType.CANCELLED
    assert after.state_message is not None and "stopped heartbeating" in after.state_message


def test_an_engines_late_heartbeat_leaves_a_run_put_back_in_its_queue_claimable(
    database_url: str,
) -> None:
    worker = register_worker(database_url, "w", "process", ["default"])
    (run,) = new_runs(database_url, 1)
    claim(database_url, worker, limit=1)
    assert _take(database_url, read_flow_run(database_url, run.id), str(worker.id))
    with transaction(get_engine(database_url)) as conn:
        transition_flow_run(
            conn, run.id, StateType.FAILED, "Failed", None, allowed_from=[StateType.PENDING]
        )
    failed = read_flow_run(database_url, run.id)
    assert failed is not None
    reschedule_flow_run(database_url, failed)

    # The engine that ran the failed attempt beats once more on its way out.
    last_seq = read_flow_run_states(database_url, run.id)[-1].seq
    assert flow_run_heartbeat(database_url, run.id) == (StateType.SCHEDULED, last_seq)
    # The exit report of that attempt's process does not touch the new attempt either.
    end_flow_run_after_exit(database_url, run.id, 1, "process 1", worker.id)

    assert read_flow_run(database_url, run.id).heartbeat is None  # type: ignore[union-attr]
    assert claim(database_url, worker, limit=1) == [run.id]


@pytest.mark.parametrize("known", [True, False], ids=["updated", "new"])
def test_a_worker_registers_again_under_its_own_id(database_url: str, known: bool) -> None:
    first = register_worker(database_url, "w", "process", ["default"])
    if not known:
        remove_worker(database_url, first.id)

    again = register_worker(database_url, "w2", "process", ["default", "other"], first.id)

    assert (again.id, again.name, again.queues) == (first.id, "w2", ["default", "other"])


def test_a_worker_registering_a_queue_a_deploy_is_creating_at_once_succeeds(
    database_url: str,
) -> None:
    from vivace.store.work_queues import ensure_work_queue, read_work_queues

    engine = get_engine(database_url)
    read_work_queues(engine)  # migrated before the two transactions start
    created, release = threading.Event(), threading.Event()

    def deploy_creating_the_queue() -> None:
        with transaction(engine) as conn:
            ensure_work_queue(conn, "fresh")
            created.set()
            release.wait(30)  # committed only once the worker is waiting on it

    deploying = threading.Thread(target=deploy_creating_the_queue)
    deploying.start()
    assert created.wait(30)
    registered: list[object] = []
    worker = threading.Thread(
        target=lambda: registered.append(register_worker(database_url, "w", "process", ["fresh"]))
    )
    worker.start()
    worker.join(0.5)  # it waits for the deploy's uncommitted queue row (or the write lock)
    release.set()
    deploying.join(30)
    worker.join(30)

    assert len(registered) == 1
    assert [queue.name for queue in read_work_queues(database_url)].count("fresh") == 1
