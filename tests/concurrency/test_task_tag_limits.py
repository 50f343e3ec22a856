"""Task tag limits in one process, on SQLite and PostgreSQL: with ConcurrentTaskRunner (threads
and async tasks), at most N runs of a limited tag RUNNING at once, checked from the start and end
times the runs recorded; the waiting run stays PENDING and says so once in its logs; retries give
the slot back in between; untagged runs and tags without a limit take no slot."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import vivace
import vivace.concurrency_limits
from tests.concurrency.helpers import most_at_once, run_spans
from vivace import flow, task
from vivace.runners import ConcurrentTaskRunner
from vivace.store import concurrency as store
from vivace.store.concurrency_slots import held_lease_count

WAITING = "waiting for a slot of concurrency limit 'tag:db'"


@task(tags=["db"])
def query(i: int) -> int:
    time.sleep(0.05)
    return i


@task(tags=["db"])
async def query_async(i: int) -> int:
    await asyncio.sleep(0.05)
    return i


@task(tags=["other"])
def unlimited(i: int) -> int:
    time.sleep(0.05)
    return i


def test_twenty_tagged_runs_on_threads_never_exceed_the_limit(
    database_url: str, history: Any
) -> None:
    store.create_limit(database_url, "tag:db", 3)

    @flow(task_runner=ConcurrentTaskRunner(max_workers=10))
    def many() -> list[int]:
        return [future.result() for future in query.map(range(20))]

    state = many(return_state=True)

    assert state.result() == list(range(20))
    runs = history.task_runs(state.run_id)
    assert len(runs) == 20 and all(run.state_type == "COMPLETED" for run in runs)
    assert most_at_once(run_spans(runs)) == 3  # 10 threads: the limit did the limiting
    waiting = [log for log in history.logs(state.run_id) if WAITING in log.message]
    assert waiting and all(log.level == 20 for log in waiting)  # INFO
    assert len({log.task_run_id for log in waiting}) == len(waiting)  # one line per run at most
    assert store.slots_in_use(database_url, ["tag:db"]) == {"tag:db": 0}
    assert held_lease_count() == 0


def test_async_tagged_runs_wait_on_the_loop_and_never_exceed_the_limit(
    database_url: str, history: Any
) -> None:
    store.create_limit(database_url, "tag:db", 2)

    @flow(task_runner=ConcurrentTaskRunner())
    async def gathered() -> list[int]:
        called = await asyncio.gather(*(query_async(i) for i in range(12)))  # on this loop
        submitted = [future.result() for future in query_async.map(range(12, 20))]
        return [*called, *submitted]

    state = asyncio.run(gathered(return_state=True))

    assert state.result() == list(range(20))
    runs = history.task_runs(state.run_id)
    assert most_at_once(run_spans(runs)) == 2
    assert store.slots_in_use(database_url, ["tag:db"]) == {"tag:db": 0}


def test_a_waiting_run_stays_pending(database_url: str, history: Any) -> None:
    store.create_limit(database_url, "tag:db", 1)
    seen: dict[str, Any] = {}

    @flow(task_runner=ConcurrentTaskRunner(max_workers=4))
    def held_while_another_waits() -> None:
        with vivace.concurrency("tag:db"):  # the tag's only slot, held by the flow itself
            waiting = query.submit(1)
            deadline = time.monotonic() + 20
            while not any(WAITING in log.message for log in history.logs()):
                assert time.monotonic() < deadline, "the task never said it waits"
                time.sleep(0.02)
            seen["state"] = waiting.state.type.value
        waiting.result()

    state = held_while_another_waits(return_state=True)

    assert state.is_completed()
    assert seen["state"] == "PENDING"
    (run,) = history.task_runs(state.run_id)
    states = [s.type for s in history.task_run_states(run.id)]
    assert states == ["PENDING", "RUNNING", "COMPLETED"]


def test_retries_give_the_slot_back_between_attempts(database_url: str, history: Any) -> None:
    store.create_limit(database_url, "tag:db", 1)
    attempts: list[int] = []  # slots in use during each attempt; -1: the other task ran

    @task(tags=["db"], retries=2, retry_delay_seconds=0.2)
    def flaky() -> str:
        attempts.append(store.slots_in_use(database_url, ["tag:db"])["tag:db"])
        if attempts.count(1) < 3:
            raise RuntimeError("not yet")
        return "done"

    @task(tags=["db"])
    def other() -> None:
        attempts.append(-1)  # ran while flaky waited to retry: flaky did not hold the slot

    @flow(task_runner=ConcurrentTaskRunner(max_workers=4))
    def retrying() -> str:
        first = flaky.submit()
        while not attempts:
            time.sleep(0.01)
        other.submit().result()
        return first.result()

    assert retrying() == "done"
    assert attempts[0] == 1 and -1 in attempts and attempts.count(1) == 3
    assert store.slots_in_use(database_url, ["tag:db"]) == {"tag:db": 0}


def test_untagged_runs_and_unlimited_tags_take_no_slot(database_url: str, history: Any) -> None:
    store.create_limit(database_url, "tag:db", 1)

    @task
    def plain(i: int) -> int:
        return i

    @flow(task_runner=ConcurrentTaskRunner(max_workers=6))
    def mixed() -> int:
        with vivace.concurrency("tag:db"):  # "db" is full for the whole flow
            futures = [*plain.map(range(5)), *unlimited.map(range(5))]
            return sum(future.result() for future in futures)

    assert mixed() == 20
    assert held_lease_count() == 0


def test_a_tag_limit_of_zero_fails_the_run_clearly(database_url: str, history: Any) -> None:
    store.create_limit(database_url, "tag:db", 0)

    @flow
    def blocked() -> None:
        query(1)

    state = blocked(return_state=True)

    assert state.is_failed()
    (run,) = history.task_runs(state.run_id)
    assert run.state_type == "FAILED"
    assert "concurrency slots cannot be taken" in run.state_message
    assert "'tag:db' has 0 slots" in run.state_message


def test_an_inactive_tag_limit_is_not_enforced(database_url: str) -> None:
    store.create_limit(database_url, "tag:db", 1, active=False)

    @flow(task_runner=ConcurrentTaskRunner(max_workers=4))
    def free() -> list[int]:
        with vivace.concurrency("tag:db"):  # inactive: takes nothing, blocks nothing
            return [future.result() for future in query.map(range(4))]

    assert free() == [0, 1, 2, 3]


def test_a_tag_limit_created_later_is_read_after_the_refresh(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    @flow
    def once() -> int:
        return query(1)

    assert once() == 1  # no limit yet: this process now knows "db" has none
    store.create_limit(database_url, "tag:db", 1)
    with vivace.concurrency("tag:db"):
        assert once() == 1  # within TAG_LIMITS_REFRESH: not seen yet, so not waited for
        monkeypatch.setattr(vivace.concurrency_limits, "TAG_LIMITS_REFRESH", 0.0)

        @flow
        def must_wait() -> int:
            return query.with_options(name="q")(2)

        state = _in_thread_state(must_wait)
        assert not state["done"].wait(0.3)  # it waits for the slot now
    assert state["done"].wait(20) and state["result"] == 2


def _in_thread_state(fn: Any) -> dict[str, Any]:
    import threading

    state: dict[str, Any] = {"done": threading.Event()}

    def run() -> None:
        state["result"] = fn()
        state["done"].set()

    threading.Thread(target=run, daemon=True).start()
    return state


def test_runs_waiting_for_slots_do_not_keep_others_off_the_pool(database_url: str) -> None:
    """Two pool threads, both taken by runs waiting for a full tag: an untagged run still runs
    (a waiting thread lends the pool a thread, as when it waits on a future)."""
    store.create_limit(database_url, "tag:db", 1)

    @task
    def plain() -> str:
        return "ran"

    @flow(task_runner=ConcurrentTaskRunner(max_workers=2))
    def crowded() -> str:
        with vivace.concurrency("tag:db"):
            waiting = [query.submit(i) for i in range(2)]
            answer = plain.submit().result(timeout=20)
        assert [future.result() for future in waiting] == [0, 1]
        return answer

    assert crowded() == "ran"


def test_timed_out_and_crashed_runs_give_their_slots_back(database_url: str) -> None:
    store.create_limit(database_url, "tag:db", 1)

    @task(tags=["db"], timeout_seconds=0.1)
    def too_slow() -> None:
        for _ in range(100):
            time.sleep(0.01)

    @task(tags=["db"])
    def exits() -> None:
        raise SystemExit(3)

    @flow
    def timing_out() -> None:
        too_slow()

    @flow
    def crashing() -> None:
        exits()

    assert timing_out(return_state=True).is_failed()
    assert store.slots_in_use(database_url, ["tag:db"]) == {"tag:db": 0}
    with pytest.raises(SystemExit):
        crashing()
    assert store.slots_in_use(database_url, ["tag:db"]) == {"tag:db": 0}
    assert held_lease_count() == 0


def test_an_unreachable_database_means_no_tag_limits_known_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Tagged runs go on (the batched writer rides out the outage) rather than fail because
    the list of limited tags cannot be read; what was known before is kept."""
    from tests.conftest import free_port
    from vivace.concurrency_limits import _tag_limits, limited_tags, refresh_tag_limits

    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing"

    assert refresh_tag_limits(url, ("db",)) == []
    assert "cannot read which task tags have concurrency limits" in caplog.text
    assert limited_tags(url, ("db",)) == []  # not asked again before the refresh is due
    _tag_limits[url] = (0.0, frozenset({"db"}))  # known from before the outage, now stale
    assert refresh_tag_limits(url, ("db", "other")) == ["tag:db"]
