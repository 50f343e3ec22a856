"""Futures while runs are still going: non-blocking state, timeouts, ``wait`` and ``as_completed``.

Runs are held with Events (never sleeps) on the ConcurrentTaskRunner, so the tests can look at a
future before its run is done.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from vivace import StateType, VivaceFuture, as_completed, flow, task, wait
from vivace.runners import ConcurrentTaskRunner

TIMEOUT = 10  # seconds a test waits for an event that must come; never reached when correct


@task
def hold(gate: threading.Event, started: threading.Event | None = None, value: Any = None) -> Any:
    if started is not None:
        started.set()
    assert gate.wait(TIMEOUT), "the test never opened the gate"
    return value


def in_flow(body: Any) -> Any:
    return flow(task_runner=ConcurrentTaskRunner(max_workers=4))(body)()


def test_state_is_read_without_blocking_while_the_run_goes_on() -> None:
    def body() -> None:
        gate, started = threading.Event(), threading.Event()
        future = hold.submit(gate, started, value="v")
        assert started.wait(TIMEOUT)
        assert future.state.type is StateType.RUNNING
        assert future.get_state().type is StateType.RUNNING
        assert not future.done()
        gate.set()
        assert future.result() == "v"
        assert future.done() and future.state.is_completed()

    in_flow(body)


def test_a_run_waiting_for_its_upstream_is_pending() -> None:
    def body() -> None:
        gate, started = threading.Event(), threading.Event()
        upstream = hold.submit(gate, started, value=1)
        downstream = hold.submit(_open(), value=upstream)
        assert started.wait(TIMEOUT)
        assert downstream.state.type is StateType.PENDING
        gate.set()
        assert downstream.result() == 1

    in_flow(body)


def _open() -> threading.Event:
    event = threading.Event()
    event.set()
    return event


def test_wait_and_result_with_a_timeout_on_an_unfinished_run() -> None:
    def body() -> None:
        gate = threading.Event()
        future = hold.submit(gate)
        state = future.wait(timeout=0.05)
        assert not state.is_final()
        with pytest.raises(TimeoutError, match="hold-0"):
            future.result(timeout=0.05)
        gate.set()
        assert future.wait(timeout=TIMEOUT).is_completed()

    in_flow(body)


def test_wait_splits_done_from_not_done_at_the_timeout() -> None:
    def body() -> None:
        gate = threading.Event()
        finished = hold.submit(_open(), value=1)
        finished.wait()
        blocked = hold.submit(gate)
        done, not_done = wait([finished, blocked], timeout=0.05)
        assert (done, not_done) == ({finished}, {blocked})
        gate.set()
        done, not_done = wait([finished, blocked])
        assert (done, not_done) == ({finished, blocked}, set())

    in_flow(body)


def test_as_completed_yields_in_the_order_runs_finish() -> None:
    def body() -> None:
        gates = [threading.Event() for _ in range(3)]
        futures = [hold.submit(gate, value=i) for i, gate in enumerate(gates)]
        order: list[int] = []
        iterator = as_completed(futures)
        for i in (2, 0, 1):
            gates[i].set()
            order.append(next(iterator).result())
        assert order == [2, 0, 1]
        with pytest.raises(StopIteration):
            next(iterator)

    in_flow(body)


def test_as_completed_raises_timeout_error_when_runs_do_not_finish() -> None:
    def body() -> None:
        gate = threading.Event()
        futures = [hold.submit(_open(), value=1), hold.submit(gate)]
        futures[0].wait()
        seen: list[VivaceFuture] = []
        with pytest.raises(TimeoutError, match="1 of 2"):
            seen.extend(as_completed(futures, timeout=0.1))
        assert seen == [futures[0]]
        gate.set()

    in_flow(body)


def test_done_callbacks_run_once_whenever_they_are_added() -> None:
    def body() -> None:
        gate = threading.Event()
        future = hold.submit(gate, value=3)
        calls: list[Any] = []
        future.add_done_callback(calls.append)
        assert calls == []
        gate.set()
        future.wait()
        future.add_done_callback(calls.append)  # already done: called at once
        assert calls == [future, future]

    in_flow(body)


def test_await_a_future_from_a_thread_runner_in_an_async_flow() -> None:
    import asyncio

    @flow(task_runner=ConcurrentTaskRunner())
    async def pipeline() -> Any:
        gate = threading.Event()
        future = hold.submit(gate, value="awaited")
        asyncio.get_running_loop().call_soon(gate.set)  # opened only once the flow awaits
        return await future

    assert asyncio.run(pipeline()) == "awaited"


def test_repr_names_the_task_run_and_state() -> None:
    def body() -> None:
        future = hold.submit(_open(), value=1)
        future.wait()
        assert repr(future) == "VivaceFuture(task_run='hold-0', state=Completed(type=COMPLETED))"

    in_flow(body)
