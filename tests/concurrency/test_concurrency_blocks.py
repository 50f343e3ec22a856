"""``with vivace.concurrency(...)`` and ``async with``, in one process, on SQLite and PostgreSQL:
holders are ordered with events, never with sleeps; "it waited" is shown by the waiter not having
got in while the holder held, and getting in once it let go."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

import vivace
from vivace import flow, task
from vivace.exceptions import (
    ConcurrencyLimitError,
    ConcurrencyLimitNotFoundError,
    ConcurrencySlotTimeoutError,
    ConfigurationError,
)
from vivace.store import concurrency as store
from vivace.store.concurrency_slots import held_lease_count

WAIT = 20  # seconds any step may take, at most, before the test fails


def _in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def test_a_waiter_gets_in_when_the_holder_leaves(database_url: str) -> None:
    store.create_limit(database_url, "warehouse", 1)
    waiting, got_in, done = threading.Event(), threading.Event(), threading.Event()

    def waiter() -> None:
        waiting.set()
        with vivace.concurrency("warehouse"):
            got_in.set()
        done.set()

    with vivace.concurrency("warehouse") as held:
        assert len(held.lease_ids) == 1 and held_lease_count() == 1
        thread, errors = _in_thread(waiter)
        assert waiting.wait(WAIT)
        assert not got_in.wait(0.2)  # the only slot is taken
        assert store.slots_in_use(database_url, ["warehouse"]) == {"warehouse": 1}
    assert got_in.wait(WAIT) and done.wait(WAIT)
    thread.join(WAIT)
    assert errors == []
    assert store.slots_in_use(database_url, ["warehouse"]) == {"warehouse": 0}
    assert held_lease_count() == 0


def test_threads_never_exceed_the_limit(database_url: str) -> None:
    store.create_limit(database_url, "pool", 2)
    inside = 0
    most = 0
    lock = threading.Lock()
    start = threading.Barrier(6)

    def worker() -> None:
        nonlocal inside, most
        start.wait()
        for _ in range(3):
            with vivace.concurrency("pool"):
                with lock:
                    inside += 1
                    most = max(most, inside)
                with lock:
                    inside -= 1

    started = [_in_thread(worker) for _ in range(6)]
    for thread, errors in started:
        thread.join(WAIT)
        assert not thread.is_alive() and errors == []
    assert 1 <= most <= 2


def test_the_slots_are_given_back_when_the_block_raises(database_url: str) -> None:
    store.create_limit(database_url, "warehouse", 1)
    with pytest.raises(KeyError), vivace.concurrency("warehouse"):
        raise KeyError("boom")
    assert store.slots_in_use(database_url, ["warehouse"]) == {"warehouse": 0}


def test_a_timeout_names_the_full_limit(database_url: str) -> None:
    store.create_limit(database_url, "warehouse", 2)
    with (
        vivace.concurrency("warehouse", occupy=2),
        pytest.raises(ConcurrencySlotTimeoutError) as raised,
        vivace.concurrency("warehouse", timeout=0.2),
    ):
        pytest.fail("entered a full limit")
    message = str(raised.value)
    assert "'warehouse'" in message and "0.2 seconds" in message and "2 of its 2" in message
    assert isinstance(raised.value, TimeoutError)
    with vivace.concurrency("warehouse", timeout=0):  # free now: no wait needed
        pass


def test_unknown_names_and_impossible_requests_fail_at_once(database_url: str) -> None:
    store.create_limit(database_url, "warehouse", 2)
    with (
        pytest.raises(ConcurrencyLimitNotFoundError) as unknown,
        vivace.concurrency(["warehouse", "wherehouse"]),
    ):
        pytest.fail("entered with an unknown limit")
    assert "'wherehouse'" in str(unknown.value)
    assert "vivace concurrency-limit create --global wherehouse N" in str(unknown.value)
    with (
        pytest.raises(ConcurrencyLimitError, match="fewer than the 3 asked"),
        vivace.concurrency("warehouse", occupy=3),
    ):
        pytest.fail("entered with more slots than the limit has")
    assert store.slots_in_use(database_url, ["warehouse"]) == {"warehouse": 0}


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        pytest.param({"names": []}, "non-empty list", id="no-names"),
        pytest.param({"names": ["a", 3]}, "non-empty list", id="not-a-name"),
        pytest.param({"names": "a", "occupy": 0}, "occupy", id="occupy-zero"),
        pytest.param({"names": "a", "occupy": 1.5}, "occupy", id="occupy-float"),
        pytest.param({"names": "a", "timeout": -1}, "timeout", id="negative-timeout"),
    ],
)
def test_bad_arguments_are_refused_when_given(arguments: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        vivace.concurrency(**arguments)


def test_an_inactive_limit_lets_everyone_in(database_url: str) -> None:
    store.create_limit(database_url, "warehouse", 1, active=False)
    with vivace.concurrency("warehouse") as first, vivace.concurrency("warehouse") as second:
        assert first.lease_ids == [] and second.lease_ids == []


def test_one_object_is_for_one_block_at_a_time(database_url: str) -> None:
    store.create_limit(database_url, "warehouse", 5)
    slots = vivace.concurrency("warehouse")
    with slots, pytest.raises(ConfigurationError, match="already held"), slots:
        pass
    with slots:  # after the block, it can be used again
        pass


def test_two_holders_asking_in_opposite_orders_do_not_deadlock(database_url: str) -> None:
    store.create_limit(database_url, "a", 1)
    store.create_limit(database_url, "b", 1)
    rounds = 10
    start = threading.Barrier(2)

    def holder(names: list[str]) -> None:
        start.wait()
        for _ in range(rounds):
            with vivace.concurrency(names, timeout=WAIT):
                pass

    one = _in_thread(lambda: holder(["a", "b"]))
    other = _in_thread(lambda: holder(["b", "a"]))
    for thread, errors in (one, other):
        thread.join(WAIT * 2)
        assert not thread.is_alive() and errors == []


def test_the_async_form_waits_without_blocking_the_loop(database_url: str) -> None:
    store.create_limit(database_url, "warehouse", 1)

    async def main() -> list[str]:
        events: list[str] = []
        released = asyncio.Event()

        async def holder() -> None:
            async with vivace.concurrency("warehouse"):
                events.append("holder in")
                await released.wait()
            events.append("holder out")

        async def waiter() -> None:
            async with vivace.concurrency("warehouse"):
                events.append("waiter in")

        holding = asyncio.create_task(holder())
        while "holder in" not in events:
            await asyncio.sleep(0.01)
        waiting = asyncio.create_task(waiter())
        # The loop keeps running other coroutines while the waiter waits.
        for _ in range(20):
            await asyncio.sleep(0.01)
        events.append("loop ran")
        released.set()
        await asyncio.wait_for(asyncio.gather(holding, waiting), WAIT)
        return events

    events = asyncio.run(main())

    assert events[:2] == ["holder in", "loop ran"]  # the waiter got in only after the holder
    assert sorted(events[2:]) == ["holder out", "waiter in"]
    assert store.slots_in_use(database_url, ["warehouse"]) == {"warehouse": 0}


def test_a_cancelled_async_waiter_holds_nothing(database_url: str) -> None:
    store.create_limit(database_url, "warehouse", 1)

    async def main() -> None:
        async with vivace.concurrency("warehouse"):
            waiting = asyncio.create_task(vivace.concurrency("warehouse").__aenter__())
            await asyncio.sleep(0.1)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting

    asyncio.run(main())
    assert store.slots_in_use(database_url, ["warehouse"]) == {"warehouse": 0}
    assert held_lease_count() == 0


def test_inside_a_flow_and_a_task_the_holder_names_the_run(database_url: str) -> None:
    store.create_limit(database_url, "warehouse", 2)
    holders: list[str] = []

    def record() -> None:
        holders.extend(lease.holder for lease in store.read_leases(database_url, "warehouse"))

    @task
    def in_a_task() -> None:
        with vivace.concurrency("warehouse"):
            record()

    @flow
    def in_a_flow() -> None:
        with vivace.concurrency("warehouse"):
            record()
        in_a_task()

    state = in_a_flow(return_state=True)

    assert state.is_completed()
    assert " flow run " in holders[0] and str(state.run_id) in holders[0]
    assert " task run " in holders[1]
