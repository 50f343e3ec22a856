"""``@flow``: calling a flow, its records, subflows, flow retries and the flow's task runner."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from vivace import Flow, State, StateType, flow, task
from vivace.engine.context import current_context, current_flow_run_id
from vivace.runners import ConcurrentTaskRunner, SequentialTaskRunner


@task
def inc(x: int) -> int:
    return x + 1


@task
def fail(message: str) -> None:
    raise RuntimeError(message)


def test_bare_decorator_and_decorator_with_arguments_make_flows() -> None:
    def pipeline() -> int:
        return 1

    bare = flow(pipeline)
    named = flow(name="etl", retries=1)(pipeline)
    assert isinstance(bare, Flow) and isinstance(named, Flow)
    assert (bare.name, named.name, named.retries) == ("pipeline", "etl", 1)
    assert bare.fn is pipeline
    assert bare() == 1 and named() == 1


def test_default_task_runner_is_concurrent_and_a_class_is_accepted() -> None:
    assert isinstance(flow(lambda: None).task_runner, ConcurrentTaskRunner)
    assert isinstance(
        flow(task_runner=SequentialTaskRunner)(lambda: None).task_runner, SequentialTaskRunner
    )


def test_with_options_returns_a_changed_copy() -> None:
    def pipeline() -> None:
        pass

    original = flow(name="etl", retries=2, log_prints=True)(pipeline)
    copy = original.with_options(task_runner=SequentialTaskRunner(), timeout_seconds=9)
    assert copy is not original
    assert isinstance(copy.task_runner, SequentialTaskRunner)
    assert (copy.name, copy.retries, copy.log_prints, copy.timeout_seconds) == (
        "etl",
        2,
        True,
        9.0,
    )
    assert isinstance(original.task_runner, ConcurrentTaskRunner)
    assert original.timeout_seconds is None
    assert copy.fn is pipeline


def test_a_flow_returns_its_value_or_raises_its_exception() -> None:
    @flow
    def ok(x: int) -> int:
        return inc(x)

    @flow
    def broken() -> None:
        raise KeyError("missing")

    assert ok(1) == 2
    with pytest.raises(KeyError, match="missing"):
        broken()


def test_return_state_gives_the_final_state_of_the_flow_run() -> None:
    @flow
    def broken() -> None:
        raise KeyError("missing")

    state = broken(return_state=True)
    assert isinstance(state, State)
    assert state.is_failed()
    assert isinstance(state.result(raise_on_failure=False), KeyError)
    assert state.message == "KeyError: 'missing'"


def test_a_flow_that_raises_from_a_task_fails_with_that_exception() -> None:
    @flow
    def pipeline() -> None:
        fail("no data")

    state = pipeline(return_state=True)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, RuntimeError) and str(error) == "no data"


def test_a_flow_returning_a_failed_state_fails() -> None:
    @flow
    def pipeline() -> State:
        return fail("late", return_state=True)

    state = pipeline(return_state=True)
    assert state.is_failed()
    assert isinstance(state.result(raise_on_failure=False), RuntimeError)


def test_a_flow_returning_a_future_returns_its_value() -> None:
    @flow
    def pipeline() -> Any:
        return inc.submit(41)

    assert pipeline() == 42


def test_a_flow_run_is_recorded(database_url: str, history: Any) -> None:
    seen: list[Any] = []

    @flow(name="recorded-flow")
    def pipeline(n: int, label: str = "x") -> int:
        seen.append(current_flow_run_id())
        return inc(n)

    state = pipeline(3, return_state=True)
    assert state.result() == 4
    run = history.flow_run(state.run_id)
    assert run.id == seen[0]
    assert (run.flow_name, run.state_type, run.state_name) == (
        "recorded-flow",
        "COMPLETED",
        "Completed",
    )
    assert run.parameters == {"n": 3, "label": "x"}
    assert run.run_count == 1
    assert run.parent_flow_run_id is None and run.parent_task_run_id is None
    assert run.start_time is not None and run.end_time is not None
    assert run.start_time <= run.end_time
    states = history.flow_run_states(state.run_id)
    assert [(s.seq, s.type) for s in states] == [(1, "PENDING"), (2, "RUNNING"), (3, "COMPLETED")]
    assert [s.timestamp for s in states] == sorted(s.timestamp for s in states)


def test_a_failed_flow_run_is_recorded_with_the_error(database_url: str, history: Any) -> None:
    @flow
    def broken() -> None:
        raise ValueError("bad input file")

    state = broken(return_state=True)
    run = history.flow_run(state.run_id)
    assert (run.state_type, run.state_message) == ("FAILED", "ValueError: bad input file")
    assert [s.type for s in history.flow_run_states(state.run_id)] == [
        "PENDING",
        "RUNNING",
        "FAILED",
    ]


def test_several_runs_of_one_flow_share_one_flow_row(history: Any) -> None:
    @flow(name="again")
    def pipeline() -> None:
        pass

    first = pipeline(return_state=True)
    second = pipeline(return_state=True)
    runs = history.flow_runs("again")
    assert {run.id for run in runs} == {first.run_id, second.run_id}
    assert len({run.flow_id for run in runs}) == 1


def test_a_subflow_is_linked_to_its_parent_flow_run(database_url: str, history: Any) -> None:
    @flow
    def child(x: int) -> int:
        return inc(x)

    @flow
    def parent() -> int:
        return child(1) + child(2)

    state = parent(return_state=True)
    assert state.result() == 5
    children = history.flow_runs("child")
    assert len(children) == 2
    assert all(run.parent_flow_run_id == state.run_id for run in children)
    assert all(run.state_type == "COMPLETED" for run in children)
    child_tasks = history.task_runs(children[0].id)
    assert [run.name for run in child_tasks] == ["inc-0"]
    assert history.task_runs(state.run_id) == []


def test_a_subflow_called_in_a_task_records_the_task_run(history: Any) -> None:
    @flow
    def child() -> int:
        return 1

    @task
    def runs_a_flow() -> int:
        return child()

    @flow
    def parent() -> int:
        return runs_a_flow()

    state = parent(return_state=True)
    (task_run,) = history.task_runs(state.run_id)
    (child_run,) = history.flow_runs("child")
    assert child_run.parent_task_run_id == task_run.id
    assert child_run.parent_flow_run_id == state.run_id


def test_a_subflow_can_use_a_different_task_runner() -> None:
    threads: dict[str, int] = {}
    runners: dict[str, Any] = {}

    @task
    def where(label: str) -> None:
        threads[label] = threading.get_ident()

    @flow(task_runner=SequentialTaskRunner())
    def child() -> None:
        ctx = current_context()
        assert ctx is not None and ctx.flow is not None
        runners["child"] = ctx.flow.task_runner
        threads["child-flow"] = threading.get_ident()
        where.submit("child-task").result()

    @flow(task_runner=ConcurrentTaskRunner(max_workers=2))
    def parent() -> None:
        ctx = current_context()
        assert ctx is not None and ctx.flow is not None
        runners["parent"] = ctx.flow.task_runner
        threads["parent-flow"] = threading.get_ident()
        where.submit("parent-task").result()
        child()

    parent()
    assert isinstance(runners["parent"], ConcurrentTaskRunner)
    assert isinstance(runners["child"], SequentialTaskRunner)
    assert threads["parent-task"] != threads["parent-flow"]
    assert threads["child-task"] == threads["child-flow"]


def test_a_failed_subflow_raises_in_the_parent(history: Any) -> None:
    @flow
    def child() -> None:
        raise LookupError("child broke")

    @flow
    def parent() -> str:
        try:
            child()
        except LookupError:
            return "handled"
        return "not raised"

    assert parent() == "handled"
    (child_run,) = history.flow_runs("child")
    assert child_run.state_type == "FAILED"


def test_each_flow_run_gets_a_fresh_copy_of_the_task_runner() -> None:
    seen: list[Any] = []
    runner = ConcurrentTaskRunner(max_workers=3)

    @flow(task_runner=runner)
    def pipeline() -> None:
        ctx = current_context()
        assert ctx is not None and ctx.flow is not None
        seen.append(ctx.flow.task_runner)

    pipeline()
    pipeline()
    assert seen[0] is not seen[1]
    assert runner not in seen
    assert all(r.max_workers == 3 for r in seen)


def test_flow_retries_rerun_the_function(database_url: str, history: Any) -> None:
    attempts: list[int] = []

    @flow(retries=2)
    def flaky() -> str:
        attempts.append(len(attempts) + 1)
        if len(attempts) < 3:
            raise ConnectionError(f"attempt {len(attempts)}")
        return "done"

    state = flaky(return_state=True)
    assert state.result() == "done"
    assert attempts == [1, 2, 3]
    run = history.flow_run(state.run_id)
    assert (run.state_type, run.run_count) == ("COMPLETED", 3)
    assert [(s.type, s.name) for s in history.flow_run_states(state.run_id)] == [
        ("PENDING", "Pending"),
        ("RUNNING", "Running"),
        ("SCHEDULED", "AwaitingRetry"),
        ("RUNNING", "Retrying"),
        ("SCHEDULED", "AwaitingRetry"),
        ("RUNNING", "Retrying"),
        ("COMPLETED", "Completed"),
    ]


def test_flow_retries_run_out_and_the_flow_fails() -> None:
    attempts: list[int] = []

    @flow(retries=1)
    def broken() -> None:
        attempts.append(1)
        raise ConnectionError("down")

    with pytest.raises(ConnectionError, match="down"):
        broken()
    assert len(attempts) == 2


def test_flow_retry_waits_the_retry_delay() -> None:
    import time

    starts: list[float] = []

    @flow(retries=1, retry_delay_seconds=0.2)
    def flaky() -> None:
        starts.append(time.monotonic())
        if len(starts) == 1:
            raise ConnectionError("down")

    flaky()
    assert starts[1] - starts[0] >= 0.2


def test_flow_run_parameters_that_json_cannot_hold_are_recorded_as_repr(history: Any) -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    @flow
    def pipeline(thing: Any, n: int = 2) -> None:
        pass

    state = pipeline(Opaque(), return_state=True)
    assert history.flow_run(state.run_id).parameters == {"thing": "<opaque>", "n": 2}


def test_the_flow_run_state_type_is_a_state_type() -> None:
    @flow
    def pipeline() -> None:
        pass

    assert pipeline(return_state=True).type is StateType.COMPLETED


def test_futures_given_to_a_subflow_are_waited_for_and_passed_as_values(history: Any) -> None:
    @task
    def seven() -> int:
        return 7

    @flow
    def times_ten(x: int) -> int:
        return x * 10

    @flow
    def parent() -> int:
        return times_ten(seven.submit())

    assert parent() == 70
    (child_run,) = history.flow_runs("times_ten")
    assert child_run.parameters == {"x": 7}


def test_a_subflow_given_a_failed_future_fails_without_running(history: Any) -> None:
    ran = []

    @task
    def broken() -> int:
        raise ValueError("no value")

    @flow
    def child(x: int) -> int:
        ran.append(x)
        return x

    @flow
    def parent() -> tuple[str, str]:
        state = child(broken.submit(), return_state=True)
        return state.name, state.message or ""

    name, message = parent()
    assert name == "UpstreamFailed"
    assert "broken" in message
    assert ran == []
    (child_run,) = history.flow_runs("child")
    assert child_run.state_name == "UpstreamFailed"
