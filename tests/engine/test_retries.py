"""Task retries: how many, how long between them (number, list, callable, jitter), and when not."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from vivace import State, flow, task
from vivace.engine import task_engine
from vivace.engine.runs import TaskRun
from vivace.engine.task_engine import retry_delay
from vivace.engine.tasks import Task


def flaky_task(failures: int, **options: Any) -> tuple[Any, list[float]]:
    """A task that fails ``failures`` times, then returns "ok"; and its attempt start times."""
    starts: list[float] = []

    @task(**options)
    def flaky() -> str:
        starts.append(time.monotonic())
        if len(starts) <= failures:
            raise ConnectionError(f"attempt {len(starts)}")
        return "ok"

    return flaky, starts


def run(t: Any) -> State:
    @flow
    def pipeline() -> tuple[State]:
        return (t(return_state=True),)

    return pipeline()[0]


# -- the delay rule, as a pure function -----------------------------------------------------------


def test_a_number_is_the_delay_after_every_attempt() -> None:
    assert [retry_delay(2.5, attempt, None) for attempt in (1, 2, 3)] == [2.5, 2.5, 2.5]


def test_a_list_gives_one_delay_per_retry_and_its_last_repeats() -> None:
    assert [retry_delay([1, 5, 10], attempt, None) for attempt in (1, 2, 3, 4)] == [1, 5, 10, 10]
    assert retry_delay([], 1, None) == 0


def test_a_callable_gets_the_attempt_number() -> None:
    assert [retry_delay(lambda n: n * 1.5, attempt, None) for attempt in (1, 2, 3)] == [
        1.5,
        3.0,
        4.5,
    ]


def test_jitter_spreads_delays_within_the_factor() -> None:
    random.seed(1234)
    delays = [retry_delay(10, 1, 0.2) for _ in range(500)]
    assert all(8.0 <= d <= 12.0 for d in delays)
    assert max(delays) - min(delays) > 2.0  # really spread, not a constant
    assert 9.5 < sum(delays) / len(delays) < 10.5


def test_jitter_never_makes_a_negative_delay() -> None:
    random.seed(99)
    assert all(0 <= retry_delay(1, 1, 3.0) <= 4.0 for _ in range(200))


# -- retries in the engine ------------------------------------------------------------------------


def test_a_task_is_retried_until_it_succeeds(history: Any) -> None:
    flaky, starts = flaky_task(2, retries=2)
    state = run(flaky)
    assert state.result() == "ok"
    assert len(starts) == 3
    (task_run,) = history.task_runs()
    assert (task_run.run_count, task_run.state_type) == (3, "COMPLETED")
    messages = [
        s.message for s in history.task_run_states(task_run.id) if s.name == "AwaitingRetry"
    ]
    assert messages == [
        "attempt 1 of 3 failed: ConnectionError: attempt 1",
        "attempt 2 of 3 failed: ConnectionError: attempt 2",
    ]


def test_retries_run_out_and_the_last_error_is_kept() -> None:
    flaky, starts = flaky_task(5, retries=2)
    state = run(flaky)
    assert state.is_failed() and len(starts) == 3
    assert str(state.result(raise_on_failure=False)) == "attempt 3"


def test_the_engine_waits_each_delay_of_a_list() -> None:
    flaky, starts = flaky_task(2, retries=2, retry_delay_seconds=[0.05, 0.15])
    assert run(flaky).is_completed()
    assert starts[1] - starts[0] >= 0.05
    assert starts[2] - starts[1] >= 0.15


def test_the_engine_asks_a_callable_for_each_delay() -> None:
    asked: list[int] = []

    def delay(attempt: int) -> float:
        asked.append(attempt)
        return 0.01 * attempt

    flaky, starts = flaky_task(3, retries=3, retry_delay_seconds=delay)
    assert run(flaky).is_completed()
    assert asked == [1, 2, 3]
    assert starts[3] - starts[2] >= 0.03


def test_the_engine_applies_jitter_itself(monkeypatch: pytest.MonkeyPatch, history: Any) -> None:
    """Jitter happens where the task runs (it silently did nothing client-side in Prefect)."""
    bounds: list[tuple[float, float]] = []

    class HighestRandom:
        @staticmethod
        def uniform(low: float, high: float) -> float:
            bounds.append((low, high))
            return high

    monkeypatch.setattr(task_engine, "random", HighestRandom)
    flaky, starts = flaky_task(1, retries=1, retry_delay_seconds=0.1, retry_jitter_factor=0.5)
    assert run(flaky).is_completed()
    assert bounds == [(0.5, 1.5)]
    assert starts[1] - starts[0] >= 0.15
    assert any("retrying in 0.15 s" in log.message for log in history.logs())


def test_retry_condition_false_stops_retrying() -> None:
    calls: list[tuple[Any, Any, State]] = []

    def only_connection_errors(t: Task[Any, Any], task_run: TaskRun, state: State) -> bool:
        calls.append((t, task_run, state))
        return isinstance(state.result(raise_on_failure=False), ConnectionError)

    attempts: list[int] = []

    @task(retries=5, retry_condition_fn=only_connection_errors)
    def picky() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("transient")
        raise ValueError("permanent")

    state = run(picky)
    assert state.is_failed()
    assert isinstance(state.result(raise_on_failure=False), ValueError)
    assert len(attempts) == 2
    (first_task, task_run, first_state), (_, _, second_state) = calls
    assert first_task.name == "picky" and first_task.fn is picky.fn
    assert isinstance(task_run, TaskRun) and task_run.name == "picky-0"
    assert first_state.is_failed() and second_state.is_failed()
    assert isinstance(first_state.result(raise_on_failure=False), ConnectionError)


def test_a_retry_condition_that_raises_means_no_retry(history: Any) -> None:
    def broken_condition(*args: Any) -> bool:
        raise RuntimeError("condition bug")

    flaky, starts = flaky_task(1, retries=3, retry_condition_fn=broken_condition)
    state = run(flaky)
    assert state.is_failed() and len(starts) == 1
    assert any("condition bug" in log.message for log in history.logs())


def test_async_tasks_retry_too() -> None:
    import asyncio

    attempts: list[int] = []

    @task(retries=2, retry_delay_seconds=0.01)
    async def flaky() -> int:
        attempts.append(1)
        await asyncio.sleep(0)
        if len(attempts) < 3:
            raise ConnectionError("again")
        return len(attempts)

    @flow
    async def pipeline() -> int:
        return await flaky()

    assert asyncio.run(pipeline()) == 3


def test_with_options_changes_the_retries() -> None:
    flaky, starts = flaky_task(1)
    assert run(flaky).is_failed()
    starts.clear()
    assert run(flaky.with_options(retries=1)).is_completed()
    assert len(starts) == 2
