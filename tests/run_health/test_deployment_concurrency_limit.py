"""A deployment's concurrency limit in the claim: at most that many of its runs claimed and not
over, counted like a work queue's limit, held when workers of one queue, or of two queues the
deployment's runs wait in, claim at the same moment.

On SQLite and PostgreSQL; no server, no engine process.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest

from tests.run_health.helpers import deployment, scheduled_run
from vivace.engine.states import StateType
from vivace.store import work_queues
from vivace.store.database import get_engine, transaction
from vivace.store.run_control import transition_flow_run
from vivace.store.work_queues import claim_flow_runs, register_worker


def claim(url: str, worker: Any, queues: list[str], limit: int = 10) -> list[uuid.UUID]:
    claimed = claim_flow_runs(url, worker_id=worker.id, queues=queues, limit=limit)
    return [run.id for run in claimed]


def move(url: str, run_id: uuid.UUID, to: StateType, *from_: StateType) -> None:
    with transaction(get_engine(url)) as conn:
        assert transition_flow_run(conn, run_id, to, to.value.title(), None, allowed_from=from_)


def test_a_full_deployment_does_not_hold_up_the_runs_behind_it(database_url: str) -> None:
    limited = deployment(database_url, "limited", concurrency_limit=2)
    free = deployment(database_url, "free")
    limited_runs = [scheduled_run(database_url, limited, seconds_ago=60 - n) for n in range(5)]
    free_runs = [scheduled_run(database_url, free, seconds_ago=10 - n) for n in range(2)]
    worker = register_worker(database_url, "w", "process", ["default"])

    # The three oldest due runs are the limited deployment's; it has room for two of them.
    assert claim(database_url, worker, ["default"], limit=3) == [
        limited_runs[0].id,
        limited_runs[1].id,
        free_runs[0].id,
    ]
    assert claim(database_url, worker, ["default"]) == [free_runs[1].id]

    # Slots free up as its runs end; a RUNNING one still holds its slot.
    move(database_url, limited_runs[0].id, StateType.RUNNING, StateType.PENDING)
    assert claim(database_url, worker, ["default"]) == []
    move(database_url, limited_runs[0].id, StateType.COMPLETED, StateType.RUNNING)
    assert claim(database_url, worker, ["default"]) == [limited_runs[2].id]


def test_a_limit_of_zero_holds_every_run(database_url: str) -> None:
    held = deployment(database_url, "held", concurrency_limit=0)
    run = scheduled_run(database_url, held)
    worker = register_worker(database_url, "w", "process", ["default"])

    assert claim(database_url, worker, ["default"]) == []
    assert deployment(database_url, "held").concurrency_limit is None  # redeployed: no limit
    assert claim(database_url, worker, ["default"]) == [run.id]


def race(url: str, claimers: list[tuple[Any, list[str]]]) -> list[uuid.UUID]:
    """Every claimer claims at the same moment, again until none gets anything; all claimed."""
    start = threading.Barrier(len(claimers))
    claimed: list[uuid.UUID] = []
    errors: list[BaseException] = []

    def claim_until_none_left(worker: Any, queues: list[str]) -> None:
        try:
            start.wait()
            while got := claim(url, worker, queues, limit=2):
                claimed.extend(got)
        except BaseException as error:  # reported below, not lost in the thread
            errors.append(error)

    threads = [threading.Thread(target=claim_until_none_left, args=c) for c in claimers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    return claimed


def test_workers_of_one_queue_claiming_together_keep_to_the_limit(database_url: str) -> None:
    limited = deployment(database_url, "limited", concurrency_limit=3)
    runs = {scheduled_run(database_url, limited).id for _ in range(30)}
    workers = [register_worker(database_url, f"w{n}", "process", ["default"]) for n in range(4)]

    claimed = race(database_url, [(worker, ["default"]) for worker in workers])

    assert len(claimed) == 3 and set(claimed) <= runs


def test_workers_of_two_queues_claiming_together_keep_to_the_limit(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The deployment moved to another queue: its runs wait in both, served by workers whose
    # claims lock different queue rows. The first claim stops before it commits; the second
    # must wait for it (rather than count the same free slots) and then find none left.
    before = deployment(database_url, "limited", queue="a", concurrency_limit=4)
    runs = {scheduled_run(database_url, before).id for _ in range(6)}
    after = deployment(database_url, "limited", queue="b", concurrency_limit=4)
    runs |= {scheduled_run(database_url, after).id for _ in range(6)}
    worker_a = register_worker(database_url, "a", "process", ["a"])
    worker_b = register_worker(database_url, "b", "process", ["b"])
    a_claimed, release = threading.Event(), threading.Event()
    original = work_queues._Claim.claim_from

    def claim_then_hold(self: Any, conn: Any, queue: str, room: int) -> None:
        original(self, conn, queue, room)
        if queue == "a":
            a_claimed.set()
            release.wait(timeout=30)

    monkeypatch.setattr(work_queues._Claim, "claim_from", claim_then_hold)
    got: dict[str, list[uuid.UUID]] = {}
    first = threading.Thread(target=lambda: got.update(a=claim(database_url, worker_a, ["a"])))
    second = threading.Thread(target=lambda: got.update(b=claim(database_url, worker_b, ["b"])))
    first.start()
    assert a_claimed.wait(timeout=30)
    second.start()
    second.join(timeout=1.0)  # long enough for a claim that does not wait to finish
    release.set()
    first.join(timeout=30)
    second.join(timeout=30)

    assert len(got["a"]) == 4 and got["b"] == [] and set(got["a"]) <= runs
