"""Async tasks and flows: first-class, on one state machine, async tasks on one shared loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from vivace import State, flow, task
from vivace.runners import ConcurrentTaskRunner, SequentialTaskRunner


@task
async def double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


@task
def inc(x: int) -> int:
    return x + 1


@task
async def broken() -> None:
    await asyncio.sleep(0)
    raise LookupError("async failure")


def test_an_async_flow_awaits_async_tasks_and_calls_sync_ones() -> None:
    @flow
    async def pipeline(x: int) -> int:
        doubled = await double(x)
        return inc(doubled)

    assert asyncio.run(pipeline(3)) == 7


def test_an_async_flow_call_returns_a_coroutine() -> None:
    @flow
    async def pipeline() -> int:
        return 1

    coroutine = pipeline()
    assert asyncio.iscoroutine(coroutine)
    assert asyncio.run(coroutine) == 1


def test_an_async_task_raises_its_exception_in_an_async_flow() -> None:
    @flow
    async def pipeline() -> None:
        with pytest.raises(LookupError, match="async failure"):
            await broken()
        state = await broken(return_state=True)
        assert state.is_failed()
        assert isinstance(state.result(raise_on_failure=False), LookupError)

    asyncio.run(pipeline())


def test_an_async_flow_fails_with_its_exception() -> None:
    @flow
    async def pipeline() -> None:
        await broken()

    with pytest.raises(LookupError):
        asyncio.run(pipeline())
    state = asyncio.run(pipeline(return_state=True))
    assert state.is_failed()


@pytest.mark.parametrize(
    "runner",
    [
        pytest.param(SequentialTaskRunner, id="sequential"),
        pytest.param(ConcurrentTaskRunner, id="concurrent"),
    ],
)
def test_submit_in_an_async_flow_and_await_the_future(runner: Any) -> None:
    @flow(task_runner=runner())
    async def pipeline() -> list[int]:
        futures = [double.submit(i) for i in range(3)] + [inc.submit(10)]
        return [await f for f in futures]

    assert asyncio.run(pipeline()) == [0, 2, 4, 11]


def test_an_async_flow_records_its_runs(database_url: str, history: Any) -> None:
    @flow
    async def pipeline() -> int:
        return await double(await double(1))

    state = asyncio.run(pipeline(return_state=True))
    assert state.result() == 4
    runs = {run.name: run for run in history.task_runs(state.run_id)}
    assert sorted(runs) == ["double-0", "double-1"]
    assert runs["double-1"].task_inputs is None  # awaited values are plain values, not futures
    for run in runs.values():
        assert [s.type for s in history.task_run_states(run.id)] == [
            "PENDING",
            "RUNNING",
            "COMPLETED",
        ]
    assert history.flow_run(state.run_id).state_type == "COMPLETED"


def test_async_tasks_called_from_a_sync_flow_run_on_one_shared_loop() -> None:
    loops: list[asyncio.AbstractEventLoop] = []

    @task
    async def which_loop() -> None:
        loops.append(asyncio.get_running_loop())

    @flow(task_runner=SequentialTaskRunner())
    def pipeline() -> None:
        which_loop()
        which_loop.submit().result()

    pipeline()
    pipeline()
    assert len(loops) == 4
    assert all(loop is loops[0] for loop in loops)


def test_concurrent_runner_runs_submitted_async_tasks_on_one_loop() -> None:
    loops: list[asyncio.AbstractEventLoop] = []
    threads: list[int] = []

    @task
    async def which_loop(i: int) -> int:
        loops.append(asyncio.get_running_loop())
        threads.append(threading.get_ident())
        return i

    @flow(task_runner=ConcurrentTaskRunner())
    def pipeline() -> list[int]:
        return [f.result() for f in which_loop.map(range(10))]

    assert pipeline() == list(range(10))
    assert len(loops) == 10
    assert all(loop is loops[0] for loop in loops)
    assert len(set(threads)) == 1 and threads[0] != threading.get_ident()


def test_an_async_task_called_in_a_sync_task_works() -> None:
    @task
    def outer(x: int) -> int:
        return double(x) + 1

    @flow(task_runner=ConcurrentTaskRunner())
    def pipeline() -> list[int]:
        return [outer(1), outer.submit(2).result()]

    assert pipeline() == [3, 5]


def test_an_async_task_awaiting_an_async_task_on_the_shared_loop() -> None:
    @task
    async def outer(x: int) -> int:
        return await double(x) + 1

    @flow(task_runner=ConcurrentTaskRunner())
    def pipeline() -> int:
        return outer.submit(5).result()

    assert pipeline() == 11


def test_a_standalone_async_task_is_awaited_and_recorded(history: Any) -> None:
    async def main() -> int:
        return await double(21)

    assert asyncio.run(main()) == 42
    (run,) = history.task_runs()
    assert (run.name.split("-")[0], run.flow_run_id, run.state_type) == (
        "double",
        None,
        "COMPLETED",
    )


def test_a_standalone_async_task_is_a_coroutine_to_await_like_any_async_function(
    history: Any,
) -> None:
    call = double(4)

    assert asyncio.iscoroutine(call)
    assert asyncio.run(call) == 8
    (run,) = history.task_runs()
    assert run.name.startswith("double")
    assert run.flow_run_id is None
    assert run.state_type == "COMPLETED"


def test_async_tasks_and_subflows_called_from_sync_code_run_to_the_end(history: Any) -> None:
    @flow
    async def child(x: int) -> int:
        return x + 100

    @flow
    def parent() -> tuple[int, int]:
        return double(4), child(1)

    assert parent() == (8, 101)
    (child_run,) = history.flow_runs("child")
    assert child_run.state_type == "COMPLETED"


def test_an_async_subflow_awaited_in_an_async_flow(history: Any) -> None:
    @flow
    async def child(x: int) -> int:
        return await double(x)

    @flow
    async def parent() -> int:
        return await child(2) + await child(3)

    state = asyncio.run(parent(return_state=True))
    assert state.result() == 10
    children = history.flow_runs("child")
    assert len(children) == 2
    assert all(run.parent_flow_run_id == state.run_id for run in children)


def test_cancelling_an_awaited_task_records_it_cancelled(history: Any) -> None:
    started = asyncio.Event()

    @task
    async def wait_forever() -> None:
        started.set()
        await asyncio.sleep(60)

    @flow
    async def pipeline() -> str:
        pending = asyncio.ensure_future(wait_forever())
        await started.wait()
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        return "went on"

    assert asyncio.run(pipeline()) == "went on"
    (run,) = history.task_runs()
    assert run.state_type == "CANCELLED"


def test_gathered_async_tasks_run_concurrently_in_an_async_flow() -> None:
    first, second = asyncio.Event(), asyncio.Event()

    @task
    async def ping() -> str:
        first.set()
        await asyncio.wait_for(second.wait(), 10)
        return "ping"

    @task
    async def pong() -> str:
        await asyncio.wait_for(first.wait(), 10)
        second.set()
        return "pong"

    @flow
    async def pipeline() -> list[str]:
        return list(await asyncio.gather(ping(), pong()))

    assert asyncio.run(pipeline()) == ["ping", "pong"]


def test_two_async_flows_gathered_keep_their_own_runs(history: Any) -> None:
    @flow
    async def child(x: int) -> tuple[Any, int]:
        from vivace.engine.context import current_flow_run_id

        value = await double(x)
        return current_flow_run_id(), value

    async def main() -> list[Any]:
        return list(await asyncio.gather(child(1, return_state=True), child(2, return_state=True)))

    states: list[State] = asyncio.run(main())
    for state in states:
        flow_run_id, _ = state.result()
        assert flow_run_id == state.run_id
        (task_run,) = history.task_runs(state.run_id)
        assert task_run.name == "double-0"
