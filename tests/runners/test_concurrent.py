"""ConcurrentTaskRunner only: ordering and dependency-aware submission, held with Events.

These add to the runner contract (test_contract.py); they need runs that overlap in time.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from vivace import StateType, flow, task
from vivace.exceptions import ConfigurationError
from vivace.runners import ConcurrentTaskRunner

TIMEOUT = 10


@task
def hold(gate: threading.Event, value: Any = None) -> Any:
    assert gate.wait(TIMEOUT), "the test never opened the gate"
    return value


@task
def record(order: list[str], label: str) -> str:
    order.append(label)
    return label


def test_wait_for_holds_the_downstream_until_the_upstream_is_done() -> None:
    order: list[str] = []

    @flow(task_runner=ConcurrentTaskRunner())
    def pipeline() -> None:
        gate = threading.Event()
        upstream = hold.submit(gate, "up")
        downstream = record.submit(order, "down", wait_for=[upstream])
        assert downstream.state.type is StateType.PENDING
        assert order == []
        order.append("released")
        gate.set()
        downstream.result()

    pipeline()
    assert order == ["released", "down"]


def test_tasks_run_concurrently_up_to_max_workers() -> None:
    """Every run gets a thread while the pool is below max_workers (repeated: it was a race)."""

    @task
    def meet(barrier: threading.Barrier) -> int:
        return barrier.wait()

    @flow(task_runner=ConcurrentTaskRunner(max_workers=4))
    def pipeline() -> list[int]:
        barrier = threading.Barrier(4, timeout=TIMEOUT)
        return sorted(f.result() for f in [meet.submit(barrier) for _ in range(4)])

    for _ in range(30):
        assert pipeline() == [0, 1, 2, 3]


def test_a_downstream_does_not_take_a_worker_while_it_waits() -> None:
    """Dependency-aware submission: one worker, a downstream submitted before its upstream runs."""

    @flow(task_runner=ConcurrentTaskRunner(max_workers=1))
    def pipeline() -> list[Any]:
        gate = threading.Event()
        first = hold.submit(gate, 1)
        chain = [first]
        for _i in range(5):
            chain.append(hold.submit(_opened(), value=chain[-1]))
        gate.set()
        return [f.result() for f in chain]

    assert pipeline() == [1] * 6


def _opened() -> threading.Event:
    event = threading.Event()
    event.set()
    return event


def test_the_pool_never_exceeds_max_workers() -> None:
    running: set[int] = set()
    peak: list[int] = []
    lock = threading.Lock()

    @task
    def work(i: int) -> None:
        with lock:
            running.add(i)
            peak.append(len(running))
        with lock:
            running.discard(i)

    @flow(task_runner=ConcurrentTaskRunner(max_workers=2))
    def pipeline() -> set[str]:
        futures = work.map(range(50))
        for f in futures:
            f.result()
        return {t.name for t in threading.enumerate() if t.name.startswith("vivace-task")}

    names = pipeline()
    assert max(peak) <= 2
    assert len(names) <= 2


def test_async_tasks_share_one_event_loop_and_run_concurrently() -> None:
    import asyncio

    loops: list[asyncio.AbstractEventLoop] = []
    first, second = asyncio.Event(), asyncio.Event()

    @task
    async def ping() -> None:
        loops.append(asyncio.get_running_loop())
        first.set()
        await asyncio.wait_for(second.wait(), TIMEOUT)

    @task
    async def pong() -> None:
        loops.append(asyncio.get_running_loop())
        await asyncio.wait_for(first.wait(), TIMEOUT)
        second.set()

    @flow(task_runner=ConcurrentTaskRunner())
    def pipeline() -> None:
        futures = [ping.submit(), pong.submit()]
        for f in futures:
            f.result()

    pipeline()
    pipeline()
    assert len(loops) == 4
    assert all(loop is loops[0] for loop in loops)


def test_threads_stop_with_the_flow_run() -> None:
    @flow(task_runner=ConcurrentTaskRunner(max_workers=4))
    def pipeline() -> list[threading.Thread]:
        futures = [hold.submit(_opened(), i) for i in range(8)]
        for f in futures:
            f.result()
        return [t for t in threading.enumerate() if t.name.startswith("vivace-task")]

    threads = pipeline()
    assert threads
    assert not any(t.is_alive() for t in threads)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "4"])
def test_max_workers_must_be_a_positive_whole_number(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"max_workers .* got"):
        ConcurrentTaskRunner(max_workers=bad)


def test_duplicate_keeps_the_configuration() -> None:
    runner = ConcurrentTaskRunner(max_workers=3)
    copy = runner.duplicate()
    assert copy is not runner and copy.max_workers == 3
    assert repr(copy) == "ConcurrentTaskRunner(max_workers=3)"


def test_runner_is_a_context_manager() -> None:
    with ConcurrentTaskRunner(max_workers=1) as runner:
        assert isinstance(runner, ConcurrentTaskRunner)


def test_runs_left_when_a_flow_times_out_are_cancelled_not_left_pending(history: Any) -> None:
    """The running task finishes on its own; queued ones and their downstreams end CANCELLED."""
    gate = threading.Event()
    futures: dict[str, Any] = {}

    @task
    def downstream(value: Any) -> Any:
        return value

    @flow(task_runner=ConcurrentTaskRunner(max_workers=1), timeout_seconds=0.3)
    def pipeline() -> None:
        futures["running"] = hold.submit(gate, "ran")
        futures["queued"] = hold.submit(gate, "queued")
        futures["waiting"] = downstream.submit(futures["running"])
        futures["running"].result()

    try:
        state = pipeline(return_state=True)
        assert state.name == "TimedOut"
        assert futures["queued"].state.type is StateType.CANCELLED
        assert futures["waiting"].state.type is StateType.PENDING
    finally:
        gate.set()
    assert futures["running"].result(timeout=TIMEOUT) == "ran"
    waiting = futures["waiting"].wait(timeout=TIMEOUT)
    assert waiting.type is StateType.CANCELLED
    assert waiting.message == "the flow run ended first"
    from vivace.store.writer import get_writer

    get_writer().flush()
    records = {run.name: run.state_type for run in history.task_runs(state.run_id)}
    assert records == {"hold-0": "COMPLETED", "hold-1": "CANCELLED", "downstream-0": "CANCELLED"}


@task
def child(value: int) -> int:
    return value + 1


@task
def waits_on_its_child(value: int) -> int:
    # Blocks a pool thread on a future it submitted itself.
    return int(child.submit(value).result(timeout=TIMEOUT))


def test_a_task_waiting_on_a_task_it_submitted_does_not_deadlock_a_full_pool() -> None:
    @flow(task_runner=ConcurrentTaskRunner(max_workers=1))
    def nested() -> list[int]:
        futures = [waits_on_its_child.submit(i) for i in range(3)]
        return [f.result(timeout=TIMEOUT) for f in futures]

    assert nested() == [1, 2, 3]
