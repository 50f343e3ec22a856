"""``apply_state``: the one pure transition function, checked by whole before/after snapshots."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from vivace.engine.runs import FLOW_RUN_COLUMNS, TASK_RUN_COLUMNS, FlowRun, TaskRun, apply_state
from vivace.engine.states import AWAITING_RETRY, RETRYING, State, StateType

RUN_ID = uuid.UUID("01900000-0000-7000-8000-000000000001")
FLOW_RUN_ID = uuid.UUID("01900000-0000-7000-8000-000000000002")
FLOW_ID = uuid.UUID("01900000-0000-7000-8000-000000000003")


def task_run() -> TaskRun:
    return TaskRun(
        RUN_ID,
        "module.load",
        "load-0",
        FLOW_RUN_ID,
        None,
        ("etl",),
        {"x": ["some-id"]},
        State(StateType.PENDING, timestamp=100.0),
    )


def flow_run() -> FlowRun:
    return FlowRun(
        RUN_ID,
        FLOW_ID,
        "etl",
        "brisk-heron",
        None,
        None,
        None,
        {"n": 1},
        State(StateType.PENDING, timestamp=100.0),
    )


def snapshot(run: TaskRun | FlowRun) -> dict[str, Any]:
    columns = TASK_RUN_COLUMNS if isinstance(run, TaskRun) else FLOW_RUN_COLUMNS
    row = run.snapshot()
    assert len(row) == len(columns)
    return dict(zip(columns, row, strict=True))


def step(run: TaskRun | FlowRun, state: State) -> tuple[dict[str, Any], dict[str, Any]]:
    before = snapshot(run)
    apply_state(run, state)
    return before, snapshot(run)


def state_columns(state: State) -> dict[str, Any]:
    return {
        "state_type": state.type.value,
        "state_name": state.name,
        "state_timestamp": state.timestamp,
        "state_message": state.message,
    }


def test_a_new_task_run_is_pending_with_seq_1_and_no_attempts() -> None:
    assert snapshot(task_run()) == {
        "id": RUN_ID,
        "flow_run_id": FLOW_RUN_ID,
        "parent_task_run_id": None,
        "task_key": "module.load",
        "name": "load-0",
        "state_type": "PENDING",
        "state_name": "Pending",
        "state_timestamp": 100.0,
        "state_message": None,
        "state_seq": 1,
        "start_time": None,
        "end_time": None,
        "run_count": 0,
        "tags": ("etl",),
        "task_inputs": {"x": ["some-id"]},
        "created": 100.0,
        "dynamic_key": None,
        "cache_key": None,
        "result_storage": None,
        "result_key": None,
        "result_serializer": None,
    }


@pytest.mark.parametrize("make", [task_run, flow_run], ids=["task-run", "flow-run"])
def test_pending_to_running_starts_the_first_attempt(make: Any) -> None:
    run = make()
    running = State(StateType.RUNNING, timestamp=101.0)
    before, after = step(run, running)
    assert after == {
        **before,
        **state_columns(running),
        "state_seq": 2,
        "run_count": 1,
        "start_time": 101.0,
    }
    assert running.run_id == RUN_ID


@pytest.mark.parametrize("make", [task_run, flow_run], ids=["task-run", "flow-run"])
def test_running_to_completed_sets_the_end_time_only(make: Any) -> None:
    run = make()
    apply_state(run, State(StateType.RUNNING, timestamp=101.0))
    completed = State(StateType.COMPLETED, timestamp=102.5, data=42)
    before, after = step(run, completed)
    assert after == {**before, **state_columns(completed), "state_seq": 3, "end_time": 102.5}
    assert run.state is completed


@pytest.mark.parametrize(
    "kind", [StateType.FAILED, StateType.CRASHED, StateType.CANCELLED], ids=str.lower
)
def test_every_final_state_sets_the_end_time(kind: StateType) -> None:
    run = task_run()
    apply_state(run, State(StateType.RUNNING, timestamp=101.0))
    final = State(kind, message="why", timestamp=103.0)
    before, after = step(run, final)
    assert after == {**before, **state_columns(final), "state_seq": 3, "end_time": 103.0}


def test_a_retry_counts_a_second_attempt_and_keeps_the_first_start_time() -> None:
    run = task_run()
    apply_state(run, State(StateType.RUNNING, timestamp=101.0))
    awaiting = State(StateType.SCHEDULED, name=AWAITING_RETRY, message="boom", timestamp=102.0)
    before, after = step(run, awaiting)
    assert after == {**before, **state_columns(awaiting), "state_seq": 3}
    retrying = State(StateType.RUNNING, name=RETRYING, timestamp=103.0)
    before, after = step(run, retrying)
    assert after == {**before, **state_columns(retrying), "state_seq": 4, "run_count": 2}
    assert after["start_time"] == 101.0


def test_failing_before_running_records_no_attempt() -> None:
    run = task_run()
    failed = State(StateType.FAILED, name="UpstreamFailed", message="upstream", timestamp=100.5)
    before, after = step(run, failed)
    assert after == {**before, **state_columns(failed), "state_seq": 2, "end_time": 100.5}
    assert after["run_count"] == 0
    assert after["start_time"] is None


def test_flow_run_snapshot_has_its_parameters_and_lineage() -> None:
    assert snapshot(flow_run()) == {
        "id": RUN_ID,
        "flow_id": FLOW_ID,
        "flow_name": "etl",
        "name": "brisk-heron",
        "parent_flow_run_id": None,
        "parent_task_run_id": None,
        "state_type": "PENDING",
        "state_name": "Pending",
        "state_timestamp": 100.0,
        "state_message": None,
        "state_seq": 1,
        "start_time": None,
        "end_time": None,
        "run_count": 0,
        "tags": None,
        "parameters": {"n": 1},
        "created": 100.0,
        "entrypoint": None,
        "opaque_parameters": None,
        "result_storage": None,
        "result_key": None,
        "result_serializer": None,
    }
