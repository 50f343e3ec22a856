"""``@task``: the decorator, its options, and calling a task in a flow, in a task, or alone."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from vivace import State, Task, flow, task
from vivace.engine.context import current_task_run_id


@task
def add(x: int, y: int) -> int:
    return x + y


class RowError(Exception):
    pass


@task
def explode(row: int) -> None:
    raise RowError(f"bad row {row}")


def test_bare_decorator_and_decorator_with_arguments_make_tasks() -> None:
    def double(x: int) -> int:
        return 2 * x

    bare = task(double)
    empty = task()(double)
    named = task(name="twice", retries=2)(double)
    assert all(isinstance(t, Task) for t in (bare, empty, named))
    assert (bare.name, empty.name, named.name) == ("double", "double", "twice")
    assert (bare.retries, named.retries) == (0, 2)


def test_fn_is_the_original_function_and_the_task_looks_like_it() -> None:
    def load(path: str) -> str:
        """Load a file."""
        return path

    t = task(load)
    assert t.fn is load
    assert t.__name__ == "load"
    assert t.__doc__ == "Load a file."
    assert t.fn("a") == "a"


def test_with_options_returns_a_changed_copy_and_keeps_the_rest() -> None:
    def check(n: int) -> bool:
        return n > 0

    original = task(name="load", retries=1, retry_delay_seconds=[1, 2], tags=["etl"])(check)
    copy = original.with_options(retries=5, timeout_seconds=3, retry_condition_fn=check)
    assert copy is not original
    assert (copy.name, copy.retries, copy.timeout_seconds) == ("load", 5, 3.0)
    assert copy.retry_delay_seconds == [1, 2]
    assert copy.tags == ("etl",)
    assert copy.retry_condition_fn is check
    assert copy.fn is original.fn
    assert (original.retries, original.timeout_seconds, original.retry_condition_fn) == (
        1,
        None,
        None,
    )
    assert original.with_options(name="other").name == "other"


def test_with_options_can_set_an_option_back_to_none() -> None:
    t = task(timeout_seconds=5)(lambda: None)
    assert t.with_options(timeout_seconds=None).timeout_seconds is None


def test_a_task_called_in_a_flow_returns_its_value() -> None:
    @flow
    def pipeline() -> int:
        return add(add(1, 2), 3)

    assert pipeline() == 6


def test_a_task_called_in_a_flow_raises_its_exception() -> None:
    seen: list[BaseException] = []

    @flow
    def pipeline() -> None:
        try:
            explode(7)
        except RowError as error:
            seen.append(error)
            raise

    with pytest.raises(RowError, match="bad row 7") as raised:
        pipeline()
    assert raised.value is seen[0]


def test_return_state_gives_the_final_state() -> None:
    @flow
    def pipeline() -> tuple[State, State]:
        return add(1, 2, return_state=True), explode(3, return_state=True)

    ok, failed = pipeline()
    assert ok.is_completed() and ok.result() == 3
    assert failed.is_failed() and failed.name == "Failed"
    assert failed.message == "RowError: bad row 3"
    error = failed.result(raise_on_failure=False)
    assert isinstance(error, RowError)
    with pytest.raises(RowError, match="bad row 3"):
        failed.result()


def test_a_failed_task_state_does_not_fail_the_flow_when_handled() -> None:
    @flow
    def pipeline() -> str:
        explode(1, return_state=True)
        return "fine"

    assert pipeline() == "fine"


def test_task_runs_are_recorded_with_their_flow_run(database_url: str, history: Any) -> None:
    ids: list[uuid.UUID | None] = []

    @task(tags=["etl", "daily"])
    def tagged() -> None:
        ids.append(current_task_run_id())

    @flow
    def pipeline() -> None:
        add(1, 2)
        tagged()
        explode(1, return_state=True)

    state = pipeline(return_state=True)
    runs = {run.name: run for run in history.task_runs(state.run_id)}
    assert set(runs) == {"add-0", "tagged-0", "explode-0"}
    assert runs["add-0"].state_type == "COMPLETED"
    assert runs["explode-0"].state_type == "FAILED"
    assert runs["explode-0"].state_message == "RowError: bad row 1"
    assert runs["tagged-0"].id == ids[0]
    assert list(runs["tagged-0"].tags) == ["etl", "daily"]
    assert runs["add-0"].task_key.endswith("test_tasks.add")
    assert all(run.flow_run_id == state.run_id for run in runs.values())
    assert all(run.parent_task_run_id is None for run in runs.values())
    assert all(run.run_count == 1 for run in runs.values())


def test_run_names_count_per_task_within_a_flow_run(history: Any) -> None:
    @flow
    def pipeline() -> None:
        for i in range(3):
            add(i, i)

    state = pipeline(return_state=True)
    names = sorted(run.name for run in history.task_runs(state.run_id))
    assert names == ["add-0", "add-1", "add-2"]


def test_a_task_called_in_a_task_is_a_nested_task_run(database_url: str, history: Any) -> None:
    @task
    def outer(x: int) -> int:
        return add(x, 1) * 10

    @flow
    def pipeline() -> int:
        return outer(1)

    state = pipeline(return_state=True)
    assert state.result() == 20
    runs = {run.name: run for run in history.task_runs(state.run_id)}
    assert set(runs) == {"outer-0", "add-0"}
    assert runs["outer-0"].parent_task_run_id is None
    assert runs["add-0"].parent_task_run_id == runs["outer-0"].id
    assert runs["add-0"].flow_run_id == state.run_id


def test_a_submitted_task_calling_a_task_is_nested_too(history: Any) -> None:
    @task
    def outer(x: int) -> int:
        return add(x, 1)

    @flow
    def pipeline() -> int:
        return outer.submit(1).result()

    state = pipeline(return_state=True)
    runs = {run.name: run for run in history.task_runs(state.run_id)}
    assert runs["add-0"].parent_task_run_id == runs["outer-0"].id


def test_a_task_called_outside_a_flow_is_a_standalone_run(database_url: str, history: Any) -> None:
    assert add(2, 3) == 5
    (run,) = history.task_runs()
    assert run.flow_run_id is None
    assert run.parent_task_run_id is None
    assert run.state_type == "COMPLETED"
    states = history.task_run_states(run.id)
    assert [(s.seq, s.type) for s in states] == [(1, "PENDING"), (2, "RUNNING"), (3, "COMPLETED")]


def test_a_standalone_task_raises_and_can_return_its_state(history: Any) -> None:
    with pytest.raises(RowError, match="bad row 4"):
        explode(4)
    state = explode(5, return_state=True)
    assert state.is_failed()
    assert isinstance(state.result(raise_on_failure=False), RowError)
    assert sorted(run.state_type for run in history.task_runs()) == ["FAILED", "FAILED"]


def test_a_standalone_task_calling_a_task_records_the_nesting(history: Any) -> None:
    @task
    def outer() -> int:
        return add(1, 1)

    assert outer() == 2
    runs = {run.name.rsplit("-", 1)[0]: run for run in history.task_runs()}
    assert runs["add"].parent_task_run_id == runs["outer"].id
    assert runs["add"].flow_run_id is None


def test_arguments_without_futures_are_passed_as_they_are() -> None:
    """Arguments are walked, not rebuilt: a structure is copied only when it holds a future."""
    payload = {"rows": [1, 2], "meta": ("a", {"b"})}

    @task
    def same(value: Any) -> bool:
        return value is payload

    @flow
    def pipeline() -> list[bool]:
        return [same(payload), same.submit(payload).result(), same(value=payload)]

    assert pipeline() == [True, True, True]


def test_map_over_a_failed_future_ends_each_run_upstream_failed(history: Any) -> None:
    @task
    def broken() -> int:
        raise ValueError("no value")

    @task
    def add(x: int, y: int) -> int:
        return x + y

    @flow
    def mapping() -> list[str]:
        failed = broken.submit()
        futures = add.map([1, 2], y=failed)
        return [f.wait().name for f in futures]

    assert mapping() == ["UpstreamFailed", "UpstreamFailed"]


def test_map_over_a_future_holding_a_list_maps_its_items() -> None:
    @task
    def numbers() -> list[int]:
        return [1, 2, 3]

    @task
    def double(x: int) -> int:
        return 2 * x

    @flow
    def mapping() -> list[int]:
        return [f.result() for f in double.map(numbers.submit())]

    assert mapping() == [2, 4, 6]
