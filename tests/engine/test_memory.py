"""Memory: the engine keeps nothing of a finished task but what the user's future holds.

The per-runner check (a submitted task's result dies with its future) is in the runner contract
suite; these cover direct calls, the flow's bookkeeping and many finished tasks.
"""

from __future__ import annotations

import gc
import time
import weakref
from typing import Any

import pytest

from vivace import flow, task
from vivace.engine.context import current_context
from vivace.runners import ConcurrentTaskRunner, SequentialTaskRunner


class Payload:
    """A result object whose lifetime the tests follow with weak references."""

    def __init__(self, size: int = 0) -> None:
        self.data = bytearray(size)


@task
def produce(size: int = 0) -> Payload:
    return Payload(size)


def collected(ref: weakref.ref[Any], seconds: float = 10) -> bool:
    """True once ``ref`` is dead; collects garbage while waiting (worker frames unwind async)."""
    deadline = time.monotonic() + seconds
    while ref() is not None and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.005)
    return ref() is None


def test_a_direct_call_result_lives_only_as_long_as_the_caller_keeps_it() -> None:
    @flow
    def pipeline() -> None:
        ref = weakref.ref(produce())
        assert collected(ref), gc.get_referrers(ref())

    pipeline()


def test_a_direct_call_state_result_lives_only_as_long_as_the_state() -> None:
    @flow
    def pipeline() -> None:
        state = produce(return_state=True)
        ref = weakref.ref(state.result())
        del state
        assert collected(ref), gc.get_referrers(ref())

    pipeline()


@pytest.mark.parametrize(
    "runner",
    [
        pytest.param(SequentialTaskRunner, id="sequential"),
        pytest.param(ConcurrentTaskRunner, id="concurrent"),
    ],
)
def test_the_flow_forgets_finished_futures(runner: Any) -> None:
    @flow(task_runner=runner())
    def pipeline() -> int:
        ctx = current_context()
        assert ctx is not None and ctx.flow is not None
        futures = produce.map([0] * 20)
        for future in futures:
            future.wait()
        deadline = time.monotonic() + 10
        while ctx.flow.pending and time.monotonic() < deadline:
            time.sleep(0.005)
        return len(ctx.flow.pending)

    assert pipeline() == 0


@pytest.mark.parametrize(
    "runner",
    [
        pytest.param(SequentialTaskRunner, id="sequential"),
        pytest.param(ConcurrentTaskRunner, id="concurrent"),
    ],
)
def test_results_of_many_finished_tasks_are_not_kept(runner: Any) -> None:
    """2,000 tasks of 64 KiB each: only the results of futures still held stay alive."""
    alive: weakref.WeakSet[Payload] = weakref.WeakSet()

    @task
    def big(i: int) -> Payload:
        payload = Payload(64 * 1024)
        alive.add(payload)
        return payload

    @flow(task_runner=runner())
    def pipeline() -> int:
        kept = []
        for i in range(2000):
            future = big.submit(i)
            future.result()
            if i % 500 == 0:
                kept.append(future)
        del future
        deadline = time.monotonic() + 10
        while len(alive) > len(kept) and time.monotonic() < deadline:
            gc.collect()
            time.sleep(0.01)
        return len(alive)

    assert pipeline() <= 4


def test_results_are_not_kept_while_records_wait_for_the_writer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Records queued for the database hold no results, however long the flush interval."""
    from vivace.settings import reset_settings

    monkeypatch.setenv("VIVACE_RECORDER_FLUSH_INTERVAL", "60")
    reset_settings()

    @flow(task_runner=ConcurrentTaskRunner())
    def pipeline() -> None:
        future = produce.submit()
        ref = weakref.ref(future.result())
        del future
        assert collected(ref, seconds=2), gc.get_referrers(ref())

    pipeline()
