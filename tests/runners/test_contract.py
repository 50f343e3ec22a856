"""The task runner contract: every runner passes every test here.

A new runner joins by adding one ``pytest.param(factory, id=...)`` to ``RUNNERS``; the factory is
called with no arguments and returns a runner instance (or is the runner class itself). A runner
that needs a cluster gives an :class:`OnCluster`: the cluster comes from a fixture (one per test
module, see ``conftest.py``), and the factory makes runners that reach it.
Runner-specific tests (concurrency, pools, clusters) go in their own modules and only add to this.

Tasks here talk to the test only through their results, their logs and the run records in the
store, never through shared memory: a runner may execute them in other processes (Dask, Ray).
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
import traceback
import uuid
import weakref
from collections.abc import Callable
from typing import Any

import pytest

from vivace import (
    State,
    StateType,
    VivaceFuture,
    as_completed,
    flow,
    get_run_logger,
    task,
    unmapped,
    wait,
)
from vivace.engine.context import current_context, current_task_run_id
from vivace.exceptions import UpstreamTaskError
from vivace.runners import ConcurrentTaskRunner, SequentialTaskRunner
from vivace.runners.base import TaskRunner

RunnerFactory = Callable[[], TaskRunner]


class OnCluster:
    """Runners reaching the cluster that the fixture named ``fixture`` started."""

    def __init__(self, fixture: str, make: Callable[[Any], TaskRunner]) -> None:
        self.fixture = fixture
        self.make = make


def _dask_runner(cluster: Any) -> TaskRunner:
    from vivace.runners import DaskTaskRunner

    return DaskTaskRunner(address=cluster.scheduler_address)


def _ray_runner(_: Any) -> TaskRunner:
    from vivace.runners import RayTaskRunner

    return RayTaskRunner()  # uses the Ray the fixture initialised in this process


RUNNERS = [
    pytest.param(SequentialTaskRunner, id="sequential"),
    pytest.param(ConcurrentTaskRunner, id="concurrent"),
    pytest.param(OnCluster("dask_cluster", _dask_runner), id="dask"),
    pytest.param(OnCluster("ray_local", _ray_runner), id="ray"),
]


@pytest.fixture(params=RUNNERS)
def runner(request: pytest.FixtureRequest) -> RunnerFactory:
    """A factory of fresh runners of one kind."""
    factory = request.param
    if isinstance(factory, OnCluster):
        cluster = request.getfixturevalue(factory.fixture)
        make = factory.make
        return lambda: make(cluster)
    return factory  # type: ignore[no-any-return]


class ReportError(Exception):
    """A user exception with state of its own, to check it crosses the runner intact."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@task
def add(x: int, y: int) -> int:
    return x + y


@task
def fail_report(code: int) -> None:
    raise ReportError(f"report {code} is broken", code)


@task
async def async_double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


def attempt_number() -> int:
    """Which attempt of its task run the calling task is in (1 on the first run)."""
    ctx = current_context()
    assert ctx is not None and ctx.task_run is not None
    return ctx.task_run.run_count


def run_flow(runner: RunnerFactory, body: Callable[[], Any], name: str = "contract") -> State:
    """Run ``body`` as a flow on a fresh runner; return the flow run's final state."""
    return flow(name=name, task_runner=runner())(body)(return_state=True)


# -- submit, result, futures ---------------------------------------------------------------------


def test_submit_returns_a_future_whose_result_is_the_value(runner: RunnerFactory) -> None:
    def body() -> int:
        future = add.submit(1, 2)
        assert isinstance(future, VivaceFuture)
        return future.result()

    assert run_flow(runner, body).result() == 3


def test_future_state_and_identity(runner: RunnerFactory, history: Any) -> None:
    seen: dict[str, Any] = {}

    @task
    def who() -> uuid.UUID | None:
        return current_task_run_id()

    def body() -> None:
        future = who.submit()
        final = future.wait()
        seen.update(
            future=future,
            final=final,
            result=future.result(),
            done=future.done(),
            state=future.state,
            get_state=future.get_state(),
        )

    flow_state = run_flow(runner, body)
    assert flow_state.is_completed()
    future = seen["future"]
    assert isinstance(future.task_run_id, uuid.UUID)
    assert seen["result"] == future.task_run_id
    assert seen["done"] is True
    assert seen["final"].is_completed() and seen["final"].is_final()
    assert seen["state"] is seen["final"] and seen["get_state"] is seen["final"]
    assert seen["final"].run_id == future.task_run_id
    assert [run.id for run in history.task_runs(flow_state.run_id)] == [future.task_run_id]


def test_result_and_wait_take_a_timeout_once_done(runner: RunnerFactory) -> None:
    def body() -> Any:
        future = add.submit(2, 2)
        return future.wait(timeout=30).type, future.result(timeout=30)

    assert run_flow(runner, body).result() == (StateType.COMPLETED, 4)


def test_exception_type_message_and_traceback_survive(runner: RunnerFactory) -> None:
    caught: list[ReportError] = []

    def body() -> None:
        future = fail_report.submit(7)
        try:
            future.result()
        except ReportError as error:
            caught.append(error)
        state = future.wait()
        assert state.is_failed() and state.name == "Failed"
        assert state.message == "ReportError: report 7 is broken"
        assert state.result(raise_on_failure=False) is caught[0]
        assert future.result(raise_on_failure=False) is caught[0]

    assert run_flow(runner, body).is_completed()
    (error,) = caught
    assert type(error) is ReportError
    assert str(error) == "report 7 is broken" and error.code == 7
    frames = [frame.name for frame in traceback.extract_tb(error.__traceback__)]
    assert "fail_report" in frames


def test_an_unhandled_task_failure_fails_the_flow_with_it(runner: RunnerFactory) -> None:
    def body() -> None:
        fail_report.submit(3).result()

    state = run_flow(runner, body)
    assert state.is_failed()
    assert isinstance(state.result(raise_on_failure=False), ReportError)


# -- map and unmapped ------------------------------------------------------------------------------


def test_map_submits_one_run_per_element(runner: RunnerFactory, history: Any) -> None:
    def body() -> list[int]:
        futures = add.map([1, 2, 3], unmapped(10))
        assert all(isinstance(f, VivaceFuture) for f in futures)
        return [f.result() for f in futures]

    state = run_flow(runner, body)
    assert state.result() == [11, 12, 13]
    assert len(history.task_runs(state.run_id)) == 3


def test_map_zips_several_iterables_and_keywords(runner: RunnerFactory) -> None:
    def body() -> list[int]:
        return [f.result() for f in add.map(x=(1, 2), y=iter([10, 20]))]

    assert run_flow(runner, body).result() == [11, 22]


def test_unmapped_passes_an_iterable_whole(runner: RunnerFactory) -> None:
    @task
    def scale(x: int, factors: list[int]) -> list[int]:
        return [x * f for f in factors]

    def body() -> list[list[int]]:
        return [f.result() for f in scale.map([1, 2], unmapped([1, 10]))]

    assert run_flow(runner, body).result() == [[1, 10], [2, 20]]


def test_map_over_the_result_of_a_future_records_the_upstream(
    runner: RunnerFactory, history: Any
) -> None:
    @task
    def numbers() -> list[int]:
        return [1, 2, 3]

    def body() -> list[int]:
        return [f.result() for f in async_double.map(numbers.submit())]

    state = run_flow(runner, body)
    assert state.result() == [2, 4, 6]
    runs = {run.name: run for run in history.task_runs(state.run_id)}
    upstream = str(runs["numbers-0"].id)
    for i in range(3):
        inputs = runs[f"async_double-{i}"].task_inputs
        assert [upstream] in inputs.values(), inputs


def test_map_in_batches_keeps_a_run_and_a_future_per_element(
    runner: RunnerFactory, history: Any
) -> None:
    def body() -> tuple[list[Any], list[State]]:
        offset = add.submit(10, 0)
        futures = add.map(range(7), offset, batch_size=3)
        assert len({id(f) for f in futures}) == 7
        failing = fail_report.map([1, 2, 3], batch_size=2)
        return [f.result() for f in futures], [f.wait() for f in failing]

    state = run_flow(runner, body)
    values, failed = state.result()
    assert values == [10, 11, 12, 13, 14, 15, 16]
    assert [s.type for s in failed] == [StateType.FAILED] * 3
    assert [s.result(raise_on_failure=False).code for s in failed] == [1, 2, 3]
    runs = history.task_runs(state.run_id)
    assert len(runs) == 1 + 7 + 3 and len({run.id for run in runs}) == 11
    assert sorted(run.state_type for run in runs) == ["COMPLETED"] * 8 + ["FAILED"] * 3


def test_map_with_a_future_passed_to_every_run(runner: RunnerFactory, history: Any) -> None:
    def body() -> list[int]:
        offset = add.submit(10, 0)
        return [f.result() for f in add.map([1, 2], offset)]

    state = run_flow(runner, body)
    assert state.result() == [11, 12]
    runs = {run.name: run for run in history.task_runs(state.run_id)}
    upstream = str(runs["add-0"].id)
    for name in ("add-1", "add-2"):
        assert [upstream] in runs[name].task_inputs.values(), runs[name].task_inputs


def test_map_over_an_empty_iterable_submits_nothing(runner: RunnerFactory) -> None:
    def body() -> list[Any]:
        return add.map([], unmapped(1))

    assert run_flow(runner, body).result() == []


# -- futures as arguments --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape",
    [
        pytest.param(lambda a, b: [a, b], id="list"),
        pytest.param(lambda a, b: (a, b), id="tuple"),
        pytest.param(lambda a, b: {"a": a, "b": b}, id="dict"),
        pytest.param(lambda a, b: {a, b}, id="set"),
        pytest.param(lambda a, b: [(a, {"deep": [b]})], id="nested"),
    ],
)
def test_futures_nested_in_arguments_are_resolved_and_recorded(
    runner: RunnerFactory, shape: Callable[[Any, Any], Any], history: Any
) -> None:
    @task
    def consume(values: Any, plain: int) -> Any:
        return values

    def body() -> tuple[Any, list[uuid.UUID]]:
        a, b = add.submit(1, 1), add.submit(2, 2)
        return consume.submit(shape(a, b), plain=5).result(), [a.task_run_id, b.task_run_id]

    state = run_flow(runner, body)
    received, upstream_ids = state.result()
    assert received == shape(2, 4)
    runs = {run.name: run for run in history.task_runs(state.run_id)}
    assert set(runs["consume-0"].task_inputs) == {"values"}
    assert sorted(runs["consume-0"].task_inputs["values"]) == sorted(map(str, upstream_ids))


def test_a_future_passed_directly_is_resolved_and_recorded(
    runner: RunnerFactory, database_url: str, history: Any
) -> None:
    def body() -> int:
        first = add.submit(1, 2)
        return add.submit(first, y=add.submit(3, 4)).result()

    state = run_flow(runner, body)
    assert state.result() == 10
    runs = {run.name: run for run in history.task_runs(state.run_id)}
    assert runs["add-2"].task_inputs == {"x": [str(runs["add-0"].id)], "y": [str(runs["add-1"].id)]}
    assert runs["add-0"].task_inputs in (None, {})


def test_a_state_passed_as_an_argument_is_resolved_and_recorded(
    runner: RunnerFactory, history: Any
) -> None:
    def body() -> int:
        state = add(1, 2, return_state=True)
        return add.submit(state, 10).result()

    flow_state = run_flow(runner, body)
    assert flow_state.result() == 13
    runs = {run.name: run for run in history.task_runs(flow_state.run_id)}
    assert runs["add-1"].task_inputs == {"x": [str(runs["add-0"].id)]}


def test_plain_containers_are_passed_as_they_are(runner: RunnerFactory, history: Any) -> None:
    @task
    def keep(values: Any) -> Any:
        return values

    payload = {"rows": [1, 2], "meta": ("a", {"b"}), "text": "abc"}

    def body() -> Any:
        return keep.submit(payload).result()

    state = run_flow(runner, body)
    assert state.result() == payload
    (run,) = history.task_runs(state.run_id)
    assert run.task_inputs is None


def test_a_task_may_submit_tasks_that_the_flow_then_waits_for(
    runner: RunnerFactory, history: Any
) -> None:
    @task
    def parent() -> str:
        for i in range(3):
            add.submit(i, i)  # not waited on by the parent
        return "parent done"

    def body() -> str:
        return parent.submit().result()

    state = run_flow(runner, body)
    assert state.result() == "parent done"
    flow_run = history.flow_run(state.run_id)
    runs = {run.name: run for run in history.task_runs(state.run_id)}
    assert sorted(runs) == ["add-0", "add-1", "add-2", "parent-0"]
    assert all(runs[f"add-{i}"].parent_task_run_id == runs["parent-0"].id for i in range(3))
    assert all(run.state_type == "COMPLETED" for run in runs.values())
    assert all(run.end_time <= flow_run.end_time for run in runs.values())


# -- wait_for and upstream failures ----------------------------------------------------------------


def test_wait_for_orders_runs_without_passing_data(runner: RunnerFactory, history: Any) -> None:
    @task
    def first() -> None:
        time.sleep(0.05)  # long enough that a runner ignoring wait_for would start second first

    @task
    def second() -> None:
        pass

    def body() -> None:
        done = first.submit()
        second.submit(wait_for=[done]).result()

    state = run_flow(runner, body)
    assert state.is_completed()
    runs = {run.name: run for run in history.task_runs(state.run_id)}
    assert runs["first-0"].end_time <= runs["second-0"].start_time
    assert runs["second-0"].task_inputs == {"__wait_for__": [str(runs["first-0"].id)]}


def test_wait_for_works_on_direct_calls_and_map(runner: RunnerFactory, history: Any) -> None:
    @task
    def step(label: str) -> str:
        time.sleep(0.01)
        return label

    def body() -> None:
        gate = step.submit("gate")
        mapped = step.map(["m1", "m2"], wait_for=[gate])
        step("direct", wait_for=mapped)

    state = run_flow(runner, body)
    runs = {run.name: run for run in history.task_runs(state.run_id)}
    gate, m1, m2, direct = (runs[f"step-{i}"] for i in range(4))
    assert gate.end_time <= min(m1.start_time, m2.start_time)
    assert max(m1.end_time, m2.end_time) <= direct.start_time
    assert sorted(direct.task_inputs["__wait_for__"]) == sorted([str(m1.id), str(m2.id)])


def test_a_downstream_of_a_failed_upstream_never_runs(
    runner: RunnerFactory, database_url: str, history: Any
) -> None:
    @task
    def downstream(value: Any) -> None:
        get_run_logger().info("downstream ran")

    def body() -> None:
        upstream = fail_report.submit(1)
        downstream.submit(upstream).wait()

    flow_state = run_flow(runner, body)
    assert not any(log.message == "downstream ran" for log in history.logs(flow_state.run_id))
    runs = {run.name: run for run in history.task_runs(flow_state.run_id)}
    down = runs["downstream-0"]
    assert (down.state_type, down.state_name) == ("FAILED", "UpstreamFailed")
    assert "fail_report-0" in down.state_message
    assert down.run_count == 0 and down.start_time is None
    assert [s.type for s in history.task_run_states(down.id)] == ["PENDING", "FAILED"]


def test_upstream_failed_is_reported_at_result(runner: RunnerFactory) -> None:
    @task
    def downstream(values: Any) -> None:
        raise AssertionError("must not run")

    def body() -> None:
        ok = add.submit(1, 1)
        upstream = fail_report.submit(2)
        future = downstream.submit([ok, {"bad": upstream}])
        state = future.wait()
        assert state.is_failed() and state.name == "UpstreamFailed"
        assert "fail_report-0" in (state.message or "")
        with pytest.raises(UpstreamTaskError, match="fail_report-0"):
            future.result()

    assert run_flow(runner, body).is_completed()


def test_upstream_failure_through_wait_for_and_a_chain(runner: RunnerFactory, history: Any) -> None:
    @task
    def step(label: str) -> None:
        pass

    def body() -> tuple[State, State]:
        bad = fail_report.submit(3)
        middle = step.submit("middle", wait_for=[bad])
        last = step.submit("last", wait_for=[middle])
        return middle.wait(), last.wait()

    flow_state = run_flow(runner, body)
    middle, last = flow_state.result()
    runs = {run.name: run for run in history.task_runs(flow_state.run_id)}
    assert runs["step-0"].run_count == runs["step-1"].run_count == 0
    assert middle.name == last.name == "UpstreamFailed"
    assert "fail_report-0" in (middle.message or "")
    assert "step-0" in (last.message or "")


def test_a_failed_direct_call_state_as_upstream(runner: RunnerFactory) -> None:
    def body() -> tuple[State]:
        failed = fail_report(4, return_state=True)
        return (add.submit(failed, 1).wait(),)  # a tuple: a State returned would be the flow's

    (state,) = run_flow(runner, body).result()
    assert state.name == "UpstreamFailed"
    assert isinstance(state.result(raise_on_failure=False), UpstreamTaskError)


# -- retries -------------------------------------------------------------------------------------


def test_retries_happen_where_the_task_runs(runner: RunnerFactory, history: Any) -> None:
    @task(retries=3)
    def flaky() -> str:
        attempt = attempt_number()
        get_run_logger().info("attempt %d on %d:%d", attempt, os.getpid(), threading.get_ident())
        if attempt < 3:
            raise ConnectionError(f"attempt {attempt}")
        return "ok"

    def body() -> str:
        return flaky.submit().result()

    state = run_flow(runner, body)
    assert state.result() == "ok"
    (run,) = history.task_runs(state.run_id)
    places = [
        log.message.split(" on ")[1]
        for log in history.logs(task_run_id=run.id)
        if log.message.startswith("attempt ")
    ]
    assert len(places) == 3 and len(set(places)) == 1  # every retry where the first attempt ran
    assert (run.state_type, run.run_count) == ("COMPLETED", 3)
    assert [(s.type, s.name) for s in history.task_run_states(run.id)] == [
        ("PENDING", "Pending"),
        ("RUNNING", "Running"),
        ("SCHEDULED", "AwaitingRetry"),
        ("RUNNING", "Retrying"),
        ("SCHEDULED", "AwaitingRetry"),
        ("RUNNING", "Retrying"),
        ("COMPLETED", "Completed"),
    ]


def test_a_task_that_runs_out_of_retries_fails(runner: RunnerFactory, history: Any) -> None:
    @task(retries=2)
    def broken() -> None:
        raise ConnectionError(f"down at attempt {attempt_number()}")

    def body() -> tuple[State]:
        return (broken.submit().wait(),)

    flow_state = run_flow(runner, body)
    (state,) = flow_state.result()
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, ConnectionError) and str(error) == "down at attempt 3"
    (run,) = history.task_runs(flow_state.run_id)
    assert (run.state_type, run.run_count) == ("FAILED", 3)


# -- timeouts --------------------------------------------------------------------------------------


def test_a_task_timeout_fails_the_run_and_the_flow_goes_on(
    runner: RunnerFactory, history: Any
) -> None:
    @task(timeout_seconds=0.3)
    def spin() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # pure Python: the timeout interrupts it
            time.sleep(0.001)

    def body() -> int:
        state = spin.submit().wait()
        assert state.is_failed() and state.name == "TimedOut"
        return add.submit(1, 1).result()

    flow_state = run_flow(runner, body)
    assert flow_state.result() == 2
    runs = {run.name: run for run in history.task_runs(flow_state.run_id)}
    assert (runs["spin-0"].state_type, runs["spin-0"].state_name) == ("FAILED", "TimedOut")


# -- waiting on many futures -----------------------------------------------------------------------


def test_wait_returns_done_and_not_done(runner: RunnerFactory) -> None:
    def body() -> None:
        futures = [add.submit(i, i) for i in range(5)]
        done, not_done = wait(futures)
        assert done == set(futures) and not_done == set()
        assert sorted(f.result() for f in done) == [0, 2, 4, 6, 8]

    assert run_flow(runner, body).is_completed()


def test_as_completed_yields_every_future_once(runner: RunnerFactory) -> None:
    def body() -> list[int]:
        futures = [add.submit(i, 0) for i in range(6)]
        seen = list(as_completed(futures + futures[:2]))
        assert len(seen) == 6 and set(seen) == set(futures)
        assert all(f.done() for f in seen)
        return sorted(f.result() for f in seen)

    assert run_flow(runner, body).result() == [0, 1, 2, 3, 4, 5]


# -- async tasks ---------------------------------------------------------------------------------


def test_async_tasks_are_submitted_and_mapped(runner: RunnerFactory) -> None:
    def body() -> tuple[int, list[int]]:
        return async_double.submit(4).result(), [f.result() for f in async_double.map([1, 2])]

    assert run_flow(runner, body).result() == (8, [2, 4])


def test_async_tasks_in_an_async_flow(runner: RunnerFactory) -> None:
    @flow(task_runner=runner())
    async def pipeline() -> list[int]:
        first = async_double.submit(1)
        direct = await async_double(first)
        awaited = await async_double.submit(direct)
        sync_result = add.submit(awaited, 1).result()
        return [await first, direct, awaited, sync_result]

    assert asyncio.run(pipeline()) == [2, 4, 8, 9]


def test_a_failing_async_task_keeps_its_exception(runner: RunnerFactory) -> None:
    @task
    async def broken() -> None:
        raise ReportError("async broke", 9)

    def body() -> None:
        with pytest.raises(ReportError, match="async broke") as raised:
            broken.submit().result()
        assert raised.value.code == 9

    assert run_flow(runner, body).is_completed()


# -- the flow waits for its tasks; what gets recorded ---------------------------------------------


def test_a_flow_waits_for_every_submitted_task(runner: RunnerFactory, history: Any) -> None:
    futures: list[VivaceFuture] = []

    @task
    def work(i: int) -> int:
        time.sleep(0.01)
        return i

    def body() -> None:
        futures.extend(work.submit(i) for i in range(4))  # never waited on by the function

    state = run_flow(runner, body)
    assert state.is_completed()
    assert all(f.done() and f.state.is_completed() for f in futures)
    flow_run = history.flow_run(state.run_id)
    task_runs = history.task_runs(state.run_id)
    assert len(task_runs) == 4 and all(run.state_type == "COMPLETED" for run in task_runs)
    assert all(run.end_time <= flow_run.end_time for run in task_runs)


def test_every_task_run_and_its_states_are_recorded(
    runner: RunnerFactory, database_url: str, history: Any
) -> None:
    count = 25

    def body() -> int:
        futures = [add.submit(i, 1) for i in range(count)]
        futures += async_double.map(range(count))
        return sum(f.result() for f in futures)

    state = run_flow(runner, body, name="recorded")
    assert state.result() == sum(range(1, count + 1)) + 2 * sum(range(count))
    task_runs = history.task_runs(state.run_id)
    assert len(task_runs) == 2 * count
    assert len({run.id for run in task_runs}) == 2 * count
    for run in task_runs:
        assert (run.state_type, run.run_count, run.flow_run_id) == ("COMPLETED", 1, state.run_id)
        assert run.start_time <= run.end_time
        states = history.task_run_states(run.id)
        assert [(s.seq, s.type) for s in states] == [
            (1, "PENDING"),
            (2, "RUNNING"),
            (3, "COMPLETED"),
        ]
        assert states[0].timestamp <= states[1].timestamp <= states[2].timestamp
    assert [s.type for s in history.flow_run_states(state.run_id)] == [
        "PENDING",
        "RUNNING",
        "COMPLETED",
    ]
    assert history.flow_run(state.run_id).state_type == "COMPLETED"


def test_logs_of_submitted_tasks_carry_their_run_ids(runner: RunnerFactory, history: Any) -> None:
    from vivace import get_run_logger

    @task
    def chatty(i: int) -> uuid.UUID | None:
        get_run_logger().info("hello from %d", i)
        return current_task_run_id()

    def body() -> list[Any]:
        return [f.result() for f in chatty.map(range(3))]

    state = run_flow(runner, body)
    task_run_ids = state.result()
    logs = [log for log in history.logs(state.run_id) if log.message.startswith("hello from")]
    assert sorted((log.task_run_id, log.message) for log in logs) == sorted(
        (task_run_ids[i], f"hello from {i}") for i in range(3)
    )


# -- crashes and memory ----------------------------------------------------------------------------


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit], ids=lambda e: e.__name__)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_an_interrupt_in_a_submitted_task_crashes_task_and_flow(
    runner: RunnerFactory, interrupt: type[BaseException], kind: str, history: Any
) -> None:
    if kind == "sync":

        @task
        def stop() -> None:
            raise interrupt()

    else:

        @task
        async def stop() -> None:
            raise interrupt()

    def body() -> None:
        stop.submit().result()

    with pytest.raises(interrupt):
        flow(name="crashing", task_runner=runner())(body)()
    (flow_run,) = history.flow_runs("crashing")
    (task_run,) = history.task_runs(flow_run.id)
    assert task_run.state_type == "CRASHED"
    assert interrupt.__name__ in task_run.state_message
    assert flow_run.state_type == "CRASHED"
    # The runner's machinery survives: the next flow runs async and sync tasks as usual.
    assert run_flow(runner, lambda: async_double.submit(add.submit(1, 2)).result()).result() == 6


def test_a_finished_result_lives_only_as_long_as_its_future(runner: RunnerFactory) -> None:
    class Payload:
        pass

    @task
    def produce() -> Payload:
        return Payload()

    def body() -> None:
        future = produce.submit()
        ref = weakref.ref(future.result())
        kept = produce.submit()
        kept_ref = weakref.ref(kept.result())
        del future
        deadline = time.monotonic() + 10
        while ref() is not None and time.monotonic() < deadline:
            gc.collect()
            time.sleep(0.01)
        assert ref() is None, f"the result is still referenced by {gc.get_referrers(ref())}"
        assert kept_ref() is not None

    assert run_flow(runner, body).is_completed()
